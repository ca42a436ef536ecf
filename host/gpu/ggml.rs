//! GGUF block tensors computed on as stored (`kernels/src/ggml.rs`): the planes layout the
//! kernels read (`abi::GgmlLayout`, built on the CPU at load by [`ggml_planes`]) and the
//! linear over it, a fused GEMV for small batches and dequantize-then-cuBLAS for large ones.
use super::linear::check_xy;
use super::Gpu;
use crate::abi::{ggml_layout, GgmlLayout, GGML_GEMV_BATCH, GGML_LAYOUTS, GGML_MMA_ROWS, GGML_MMA_TILES, GGML_MMA_WARPS};
use crate::codec::ggml::GgmlType;
use crate::error::{Error, Result};
use crate::import::WeightSource;
use cudarc::driver::{CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};
use half::f16;
use std::sync::Arc;

/// Rows of x one tensor-core GEMV launch takes (`abi::GGML_MMA_TILES` n8 tiles).
const MMA_MAX_M: usize = 8 * GGML_MMA_TILES;

/// Batches up to which `ggml_linear` runs the GEMVs rather than dequantizing to FP16 for
/// cuBLAS: one tensor-core launch. Measured (H200, 2026-12-02, `bench kernels --ggml`): at
/// M = 16 one launch takes 0.6–1.3× the time of cuBLAS alone on the dequantized weights
/// (Q4_K 14336×4096: 54 µs against 37), and the dequantization adds writing and reading
/// 4 bytes a weight (~40 µs there at the D2D copy rate, by its bytes; not timed alone); at
/// M = 32 two launches take 1.2–3× cuBLAS's time.
pub const GGML_GEMV_MAX_BATCH: usize = MMA_MAX_M;

/// The kernels' layout for ggml type `ty`, if they have one (`abi::GGML_LAYOUTS` index).
pub fn gpu_layout(ty: GgmlType) -> Option<usize> {
    ggml_layout(ty.id())
}

/// The kernels' layout and the matrix shape `(layout, rows, cols)` of tensor `name` when
/// `src` holds it as GGUF blocks the GPU computes on as they are (`abi::GGML_LAYOUTS`:
/// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q2_K to Q6_K); other block types are converted to
/// INT8 at load.
pub fn native_blocks(src: &dyn WeightSource, name: &str) -> Option<(usize, usize, usize)> {
    let layout = gpu_layout(src.ggml_type(name)?)?;
    let [rows, cols] = src.shape(name)?[..] else { return None };
    Some((layout, rows, cols))
}

/// `blocks` (whole blocks of `GGML_LAYOUTS[layout]`, row-major) rearranged into the
/// layout's planes: field f of block b at `plane(f, blocks) + b · fields[f]`, the padding
/// zero.
pub fn ggml_planes(layout: usize, blocks: &[u8]) -> Result<Vec<u8>> {
    use rayon::prelude::*;
    let l = layout_at(layout)?;
    let size = l.block_bytes() as usize;
    if !blocks.len().is_multiple_of(size) {
        return Err(Error::Invalid(format!("{} blocks are {size} bytes; {} bytes are not whole blocks", l.name, blocks.len())));
    }
    let count = (blocks.len() / size) as u64;
    let mut out = vec![0u8; l.bytes(count) as usize];
    // Split `out` into runs of each plane, PLANE_RUN blocks a run, and fill them in
    // parallel: a tensor has only 2–5 planes, too few to share out whole (on 2 cores,
    // 14336×4096 tensors: Q4_K 2.3 → 2.6–3.8 GB/s of blocks, Q6_K 1.2 → 1.7–2.2, Q8_0
    // 1.1 → 2.2–2.5; one core fills ~1–1.6 GB/s, much of it first touches of `out`).
    const PLANE_RUN: usize = 16384;
    let mut runs = Vec::new();
    let mut rest = out.as_mut_slice();
    let mut field_offset = 0;
    for (f, &len) in l.fields.iter().enumerate() {
        let len = len as usize;
        let plane_len = (l.plane(f + 1, count) - l.plane(f, count)) as usize;
        let (plane, tail) = rest.split_at_mut(plane_len);
        let values = &mut plane[..count as usize * len];
        runs.extend(values.chunks_mut(PLANE_RUN * len).zip(blocks.chunks(PLANE_RUN * size)).map(|(dst, src)| (dst, src, field_offset, len)));
        field_offset += len;
        rest = tail;
    }
    runs.into_par_iter().for_each(|(dst, src, offset, len)| match len {
        2 => gather::<2>(dst, src, size, offset),
        4 => gather::<4>(dst, src, size, offset),
        12 => gather::<12>(dst, src, size, offset),
        16 => gather::<16>(dst, src, size, offset),
        32 => gather::<32>(dst, src, size, offset),
        64 => gather::<64>(dst, src, size, offset),
        128 => gather::<128>(dst, src, size, offset),
        _ => {
            for (d, b) in dst.chunks_exact_mut(len).zip(src.chunks_exact(size)) {
                d.copy_from_slice(&b[offset..offset + len]);
            }
        }
    });
    Ok(out)
}

/// Field `offset..offset + L` of each `size`-byte block of `src` into `dst`, one after
/// another: with the length a constant each copy is a few moves rather than a `memcpy`
/// call (1.05–1.2× on one core).
fn gather<const L: usize>(dst: &mut [u8], src: &[u8], size: usize, offset: usize) {
    for (d, b) in dst.chunks_exact_mut(L).zip(src.chunks_exact(size)) {
        if let (Ok(d), Some(Ok(b))) = (<&mut [u8; L]>::try_from(d), b.get(offset..offset + L).map(<&[u8; L]>::try_from)) {
            *d = *b;
        }
    }
}

fn layout_at(layout: usize) -> Result<&'static GgmlLayout> {
    GGML_LAYOUTS.get(layout).ok_or_else(|| Error::Invalid(format!("no GPU layout {layout} for GGUF blocks")))
}

/// A GGUF block tensor in VRAM, `[rows, cols]`, in its layout's planes.
pub struct GgmlWeights<'a> {
    /// Index in `abi::GGML_LAYOUTS`.
    pub layout: usize,
    pub planes: CudaView<'a, u8>,
    pub rows: usize,
    pub cols: usize,
}

impl GgmlWeights<'_> {
    fn check(&self) -> Result<&'static GgmlLayout> {
        let l = layout_at(self.layout)?;
        if !self.cols.is_multiple_of(l.block_elems as usize) || self.rows > u32::MAX as usize || self.cols > u32::MAX as usize {
            return Err(Error::Invalid(format!("{} weights of {}×{}: rows must be whole blocks of {} values", l.name, self.rows, self.cols, l.block_elems)));
        }
        // Exactly: the kernels place each plane from the block count.
        let need = l.values_bytes((self.rows * self.cols) as u64);
        if self.planes.len() as u64 != need {
            return Err(Error::Invalid(format!("{} weights of {}×{} are {need} bytes of planes, got {}", l.name, self.rows, self.cols, self.planes.len())));
        }
        Ok(l)
    }
}

impl Gpu {
    /// `y[m, rows] = x[m, cols] · Wᵀ` with `W` the blocks' reference dequantization: FP16 in
    /// and out, FP32 accumulation.
    pub fn ggml_linear(&self, x: &CudaSlice<f16>, m: usize, w: &GgmlWeights, y: &mut CudaSlice<f16>, stream: &Arc<CudaStream>) -> Result<()> {
        w.check()?;
        // 16-byte activation loads and row strides of whole blocks.
        if x.device_ptr(stream).0 % 16 != 0 {
            return Err(Error::Invalid("linear: the activations must be 16-byte aligned".into()));
        }
        check_xy(x.len(), y.len(), m, w.rows, w.cols)?;
        if m > GGML_GEMV_MAX_BATCH {
            return self.banded_cublas(x, m, w.rows, w.cols, y, stream, &mut |r0, rows, out| self.ggml_dequantize(w, r0, rows, out, stream));
        }
        // Exact integer weights up to abi::GGML_GEMV_BATCH; above, weights rounded to FP16.
        if m <= GGML_GEMV_BATCH as usize {
            return self.ggml_gemv(x, m, &mut [(w, y.slice_mut(..))], stream);
        }
        let (n, k) = (w.rows as u32, w.cols as u32);
        let cfg = LaunchConfig { grid_dim: (n.div_ceil(GGML_MMA_ROWS), 1, 1), block_dim: (32 * GGML_MMA_WARPS, 1, 1), shared_mem_bytes: 0 };
        // FP16 weights on tensor cores, the batch in launches of up to MMA_MAX_M rows.
        let mut m0 = 0;
        while m0 < m {
            let mb = (m - m0).min(MMA_MAX_M);
            let (xs, mut ys, mb32) = (x.slice(m0 * w.cols..), y.slice_mut(m0 * w.rows..), mb as u32);
            let mut launch = stream.launch_builder(&self.kernels.ggml_mma[w.layout][mb.div_ceil(8) - 1]);
            launch.arg(&xs).arg(&w.planes).arg(&mut ys).arg(&n).arg(&k).arg(&mb32);
            // SAFETY: `check` and the sizes above; the kernel reads x[mb, k] (mb ≤ 8 · its
            // tiles) and the planes of n·k values, and writes y[mb, n] only.
            unsafe { launch.launch(cfg) }?;
            m0 += mb;
        }
        Ok(())
    }

    /// `y_i[m, rows_i] = x[m, cols] · W_iᵀ` for several matrices of one width at m ≤
    /// `abi::GGML_GEMV_BATCH` (a decode step's q, k and v, or gate and up), exactly as
    /// `ggml_linear` computes each: one launch for each run of consecutive matrices in the
    /// same layout, up to three a launch. Alone, a 1024-row k or v fills 64 blocks of the
    /// GPU's 2 · SMs (an H200: 264).
    pub fn ggml_gemv(&self, x: &CudaSlice<f16>, m: usize, parts: &mut [(&GgmlWeights, CudaViewMut<f16>)], stream: &Arc<CudaStream>) -> Result<()> {
        let Some((first, _)) = parts.first() else { return Err(Error::Invalid("ggml_gemv: no matrices".into())) };
        let cols = first.cols;
        if m == 0 || m > GGML_GEMV_BATCH as usize {
            return Err(Error::Invalid(format!("ggml_gemv: batch {m}, not 1..={GGML_GEMV_BATCH}")));
        }
        // 16-byte activation loads and row strides of whole blocks.
        if x.device_ptr(stream).0 % 16 != 0 {
            return Err(Error::Invalid("linear: the activations must be 16-byte aligned".into()));
        }
        for (w, y) in parts.iter() {
            let l = w.check()?;
            if w.cols != cols {
                return Err(Error::Invalid(format!("ggml_gemv: matrices of {cols} and {} columns in one launch", w.cols)));
            }
            check_xy(x.len(), y.len(), m, w.rows, w.cols)?;
            // The activations' sub-block sums (Q4_1, Q5_1), within the 48 KiB a launch gets
            // without opting in: rows up to 196608 values.
            let shared = l.gemv_shared_bytes(w.cols as u64);
            if shared > 48 << 10 {
                return Err(Error::Invalid(format!(
                    "{} weights of {}×{}: rows wider than the batch-{m} GEMV takes ({shared} bytes of activation sums)",
                    l.name, w.rows, w.cols
                )));
            }
        }
        let (k, m32) = (cols as u32, m as u32);
        let mut rest = &mut parts[..];
        while !rest.is_empty() {
            let layout = rest[0].0.layout;
            let run = rest.iter().take(3).take_while(|(w, _)| w.layout == layout).count();
            let (now, later) = rest.split_at_mut(run);
            // Raw addresses, so that absent matrices can be null with zero rows.
            let mut args = [(0u64, 0u64, 0u32); 3];
            for (a, (w, y)) in args.iter_mut().zip(now.iter_mut()) {
                *a = (w.planes.device_ptr(stream).0, y.device_ptr_mut(stream).0, w.rows as u32);
            }
            rest = later;
            let tiles: u32 = args.iter().map(|a| a.2.div_ceil(GGML_MMA_ROWS)).sum();
            if tiles == 0 {
                continue;
            }
            let shared = GGML_LAYOUTS[layout].gemv_shared_bytes(cols as u64) as u32;
            let cfg = LaunchConfig { grid_dim: (tiles, 1, 1), block_dim: (32 * GGML_MMA_WARPS, 1, 1), shared_mem_bytes: shared };
            let mut launch = stream.launch_builder(&self.kernels.ggml_gemv[layout]);
            launch.arg(x);
            for a in &args {
                launch.arg(&a.0).arg(&a.1).arg(&a.2);
            }
            launch.arg(&k).arg(&m32);
            // SAFETY: every present matrix passed `check` and the sizes above, and its
            // output holds its m · rows; absent ones have zero rows and no tiles, so the
            // kernel never touches their null addresses. It reads x[m, k] (m ≤
            // GGML_GEMV_BATCH), and its x sums fill the dynamic shared memory given.
            unsafe { launch.launch(cfg) }?;
        }
        Ok(())
    }

    /// Rows `row0..row0 + rows` of `w` dequantized to FP16 into `out` (`[rows, cols]`),
    /// bit for bit the CPU's `codec::ggml::dequantize` rounded to FP16.
    pub fn ggml_dequantize(&self, w: &GgmlWeights, row0: usize, rows: usize, out: &mut CudaViewMut<f16>, stream: &Arc<CudaStream>) -> Result<()> {
        w.check()?;
        if row0 + rows > w.rows || out.len() < rows * w.cols {
            return Err(Error::Invalid(format!("dequantize: rows {row0}..{} of {} into {} elements", row0 + rows, w.rows, out.len())));
        }
        if rows == 0 || w.cols == 0 {
            return Ok(());
        }
        // The kernel stores 16 bytes at a time (rows are whole 32-value blocks: 64 bytes).
        if out.device_ptr(stream).0 % 16 != 0 {
            return Err(Error::Invalid("dequantize: the FP16 output must be 16-byte aligned".into()));
        }
        let (n, k, r0) = (w.rows as u32, w.cols as u32, row0 as u32);
        // One block per row; 128 threads take a 4096-wide row's 64 (K-quant) or 128 tasks
        // in one or two passes.
        let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
        let mut launch = stream.launch_builder(&self.kernels.ggml_dequant[w.layout]);
        launch.arg(&w.planes).arg(out).arg(&n).arg(&k).arg(&r0);
        // SAFETY: checked above; block i writes row i of `out` (cols values) only.
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }
}
