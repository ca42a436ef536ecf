//! The PTX that build.rs compiled from `kernels/`, loaded per device, and typed launchers.
use super::Gpu;
use crate::error::{Error, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, CudaView, LaunchConfig, PushKernelArg};
use half::f16;
use std::sync::Arc;

const PTX_SM80: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels_sm_80.ptx"));
const PTX_SM90: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels_sm_90.ptx"));

/// Largest batch the GEMV kernels take (one FP32 accumulator per batch row per lane).
pub const GEMV_MAX_M: usize = 8;
/// Warps per GEMV block: 8 rows per block keeps 64 KiB of weight loads in flight per SM
/// at full occupancy while the grid (n / 8 blocks) still covers every SM for n ≥ 1056.
const GEMV_WARPS: u32 = 8;

pub struct Kernels {
    gemv: Vec<CudaFunction>,
    dequant: CudaFunction,
    pub(crate) scatter: CudaFunction,
    pub(crate) check_decoded: CudaFunction,
}

impl Kernels {
    pub(crate) fn load(ctx: &Arc<CudaContext>, (major, minor): (i32, i32)) -> Result<Self> {
        if major < 8 {
            return Err(Error::Gpu(format!("compute capability {major}.{minor} is too old: the kernels need sm_80 or newer")));
        }
        let ptx = if major >= 9 { PTX_SM90 } else { PTX_SM80 };
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
            .map_err(|e| Error::Gpu(format!("loading the kernels' PTX failed: {e}")))?;
        let f = |name: &str| module.load_function(name).map_err(|e| Error::Gpu(format!("kernel {name} missing from the PTX: {e}")));
        Ok(Kernels {
            gemv: (1..=GEMV_MAX_M).map(|m| f(&format!("gemv_w8a16_m{m}"))).collect::<Result<_>>()?,
            dequant: f("dequant_i8_f16")?,
            scatter: f("scatter_chunks")?,
            check_decoded: f("check_decoded")?,
        })
    }
}

/// A quantized weight matrix resident on the device: INT8 `[rows, cols]` row-major and
/// f32 scales `[rows, groups]` (see docs/FORMAT.md).
pub struct Int8Weights<'a> {
    pub q: CudaView<'a, u8>,
    pub scales: CudaView<'a, f32>,
    pub rows: usize,
    pub cols: usize,
    pub group_size: usize,
}

impl Int8Weights<'_> {
    pub fn groups(&self) -> usize {
        self.cols.div_ceil(self.group_size)
    }
    fn check(&self) -> Result<()> {
        if self.q.len() < self.rows * self.cols || self.scales.len() < self.rows * self.groups() || self.group_size == 0 {
            return Err(Error::Invalid(format!("INT8 weights of {}×{} need {} bytes and {} scales", self.rows, self.cols, self.rows * self.cols, self.rows * self.groups())));
        }
        if self.rows > u32::MAX as usize || self.cols > u32::MAX as usize {
            return Err(Error::Invalid("weight dimensions exceed 2^32".into()));
        }
        Ok(())
    }
}

impl Gpu {
    /// `y[m, n] = Σ_k x[m, k] · q[n, k] · s[n, k / group]`: FP16 in and out, FP32 accumulation,
    /// the weights dequantized in registers. `x` is `[m, cols]`, `y` is `[m, rows]`, row-major.
    pub fn linear(&self, x: &CudaSlice<f16>, m: usize, w: &Int8Weights, y: &mut CudaSlice<f16>, stream: &Arc<CudaStream>) -> Result<()> {
        w.check()?;
        if x.len() < m * w.cols || y.len() < m * w.rows {
            return Err(Error::Invalid(format!("linear: x needs {} and y {} elements, got {} and {}", m * w.cols, m * w.rows, x.len(), y.len())));
        }
        let (n, k, group, groups) = (w.rows as u32, w.cols as u32, w.group_size as u32, w.groups() as u32);
        let cfg = LaunchConfig { grid_dim: (n.div_ceil(GEMV_WARPS), 1, 1), block_dim: (32 * GEMV_WARPS, 1, 1), shared_mem_bytes: 0 };
        // Batches beyond GEMV_MAX_M run as consecutive GEMV launches over row blocks of x.
        let mut m0 = 0;
        while m0 < m {
            let mb = (m - m0).min(GEMV_MAX_M);
            let xs = x.slice(m0 * w.cols..);
            let mut ys = y.slice_mut(m0 * w.rows..);
            let mut launch = stream.launch_builder(&self.kernels.gemv[mb - 1]);
            launch.arg(&xs).arg(&w.q).arg(&w.scales).arg(&mut ys).arg(&n).arg(&k).arg(&group).arg(&groups);
            // SAFETY: sizes checked above; the kernel reads x[mb, k], q[n, k], s[n, groups]
            // and writes y[mb, n] only.
            unsafe { launch.launch(cfg) }?;
            m0 += mb;
        }
        Ok(())
    }

    /// Materializes `q · s` as FP16 `[rows, cols]`.
    pub fn dequantize(&self, w: &Int8Weights, out: &mut CudaSlice<f16>, stream: &Arc<CudaStream>) -> Result<()> {
        w.check()?;
        let total = w.rows * w.cols;
        if out.len() < total {
            return Err(Error::Invalid(format!("dequantize: output needs {total} elements, got {}", out.len())));
        }
        let (rows, cols, group, groups) = (w.rows as u32, w.cols as u32, w.group_size as u32, w.groups() as u32);
        let blocks = total.div_ceil(256);
        if blocks > i32::MAX as usize {
            return Err(Error::Invalid("dequantize: matrix too large for one launch".into()));
        }
        let cfg = LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let mut launch = stream.launch_builder(&self.kernels.dequant);
        launch.arg(&w.q).arg(&w.scales).arg(out).arg(&rows).arg(&cols).arg(&group).arg(&groups);
        // SAFETY: sizes checked above; one thread per output element.
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }
}
