//! The fused W8A16 linears and their launch plans: `y = x · (q · s)ᵀ` with FP16
//! activations and INT8 weights dequantized in registers (`kernels/src/gemv.rs`, `gemm.rs`),
//! and the cuBLAS FP16 product every benchmark and the FP16 mode compare against.
use super::Gpu;
use crate::abi::{GEMM_TILES, GEMV_MAX_M, WGMMA_BK, WGMMA_TILES};
use crate::error::{Error, Result};
use cudarc::driver::{CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};
use half::f16;
use std::sync::Arc;

/// Blocks a GEMM launch should reach before splitting K: 4 per SM on a 132-SM H100 keeps
/// enough weight loads in flight to cover DRAM latency.
const GEMM_TARGET_BLOCKS: usize = 528;
/// The same for the Hopper GEMM, whose blocks (256 threads, 128 channels, ≥ 96 KiB of
/// shared memory) fit at most two to an SM: two waves' worth on 132 SMs.
const WGMMA_TARGET_BLOCKS: usize = 264;
/// Batches from which `plan` dequantizes to FP16 and calls cuBLAS: at M = 256 our GEMM
/// ran at 0.21–0.31× cuBLAS FP16 on H200 (BENCHMARKS.md), so even a dequantization costing
/// as much as the product itself leaves this path ≥ 1.5× faster; between 64 and 256 the
/// measured margins are too thin to decide without `bench kernels --tune`.
pub const DEQUANT_CUBLAS_MIN_M: usize = 256;
/// Weight elements one dequantized band holds (32 MiB of FP16 scratch): ≥ 4096 rows of a
/// 4096-column matrix, so each band's cuBLAS call is a full-size GEMM, and the band stays
/// in a Hopper L2 (50 MiB) between the dequantization writing it and cuBLAS reading it.
pub const DEQUANT_BAND_ELEMS: usize = 1 << 24;
/// Rows of a dequantized band are a multiple of this, so each band's columns of `y` start
/// 256-byte aligned: cuBLAS leaves its tensor-core kernels for misaligned FP16 pointers
/// (H200, M = 4096, 4096×14336 in bands of 1170 rows: 2089 µs, 0.29× cuBLAS on the whole
/// matrix, where 4096-row bands of 14336×4096 ran at 0.81×).
const DEQUANT_BAND_ROW_MULTIPLE: usize = 128;
/// Warps per GEMV block: 8 rows per block keeps 64 KiB of weight loads in flight per SM
/// at full occupancy while the grid (n / 8 blocks) still covers every SM for n ≥ 1056.
const GEMV_WARPS: u32 = 8;

// Indices into `GEMM_TILES` that `plan` picks from.
const REG_MT1: usize = 0;
const REG_MT2: usize = 1;
const REG_MT4: usize = 2;
const SMEM_MT1: usize = 3;
const SMEM_MT2: usize = 4;
const _: () = assert!(GEMM_TILES[REG_MT1].mt == 1 && GEMM_TILES[REG_MT2].mt == 2 && GEMM_TILES[REG_MT4].mt == 4 && !GEMM_TILES[REG_MT4].smem);
const _: () = assert!(GEMM_TILES[SMEM_MT1].smem && GEMM_TILES[SMEM_MT1].mt == 1 && GEMM_TILES[SMEM_MT2].smem && GEMM_TILES[SMEM_MT2].mt == 2);

/// Writes rows `r0..r0 + rows` of a weight matrix as FP16 into the view (`banded_cublas`).
pub(super) type BandDequant<'a> = dyn FnMut(usize, usize, &mut CudaViewMut<f16>) -> Result<()> + 'a;

/// How `linear` computes one product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearPlan {
    /// One warp per output row, up to `GEMV_MAX_M` batch rows per launch.
    Gemv,
    /// Tensor cores: `GEMM_TILES[tile]`, K split `splits` ways (0: chosen from the shape).
    Gemm { tile: usize, splits: usize },
    /// Dequantize bands of rows to FP16 scratch and multiply each with cuBLAS: large
    /// batches, where cuBLAS's tensor-core GEMM outruns our fused one.
    DequantCublas,
    /// Hopper tensor cores (`wgmma`, sm_90a PTX, compute capability 9.0 only):
    /// `WGMMA_TILES[tile]`, K split `splits` ways (0: chosen from the shape). Needs
    /// k % 16 == 0 and per-channel scales or groups that are multiples of 16. Not picked by
    /// `plan` (not yet run on a GPU); `bench kernels --tune` measures it.
    Wgmma { tile: usize, splits: usize },
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
            return Err(Error::Invalid(format!(
                "INT8 weights of {}×{} need {} bytes and {} scales",
                self.rows,
                self.cols,
                self.rows * self.cols,
                self.rows * self.groups()
            )));
        }
        if self.rows > u32::MAX as usize || self.cols > u32::MAX as usize {
            return Err(Error::Invalid("weight dimensions exceed 2^32".into()));
        }
        Ok(())
    }
}

/// Quantized weights in VRAM as a linear reads them (a streamed unit's slot, a decoded
/// buffer): INT8 with scales, or GGUF blocks in the kernels' planes.
pub enum WeightsView<'a> {
    Int8(Int8Weights<'a>),
    Ggml(super::GgmlWeights<'a>),
}

impl<'a> WeightsView<'a> {
    pub fn int8(&self) -> Option<&Int8Weights<'a>> {
        match self {
            WeightsView::Int8(w) => Some(w),
            WeightsView::Ggml(_) => None,
        }
    }
    pub fn rows(&self) -> usize {
        match self {
            WeightsView::Int8(w) => w.rows,
            WeightsView::Ggml(w) => w.rows,
        }
    }
}

impl Gpu {
    /// `linear` or `ggml_linear`, whichever the weights are.
    pub fn linear_view(&self, x: &CudaSlice<f16>, m: usize, w: &WeightsView, y: &mut CudaSlice<f16>, stream: &Arc<CudaStream>) -> Result<()> {
        match w {
            WeightsView::Int8(w) => self.linear(x, m, w, y, stream),
            WeightsView::Ggml(w) => self.ggml_linear(x, m, w, y, stream),
        }
    }

    /// `y[m, n] = Σ_k x[m, k] · q[n, k] · s[n, k / group]`: FP16 in and out, FP32 accumulation,
    /// the weights dequantized in registers. `x` is `[m, cols]`, `y` is `[m, rows]`, row-major.
    ///
    /// Products that split K share one FP32 workspace per `Gpu`: issue them on one stream.
    pub fn linear(&self, x: &CudaSlice<f16>, m: usize, w: &Int8Weights, y: &mut CudaSlice<f16>, stream: &Arc<CudaStream>) -> Result<()> {
        self.linear_planned(x, m, w, y, stream, Gpu::plan(m, w.rows, w.cols))
    }

    /// The plan `linear` uses for an `[m, k] × [n, k]ᵀ` product: the fastest measured per
    /// batch and weight size class by `bench kernels --tune` on H100
    /// (docs/bench/2026-11-26-h100-tune.json, BENCHMARKS.md).
    pub fn plan(m: usize, n: usize, k: usize) -> LinearPlan {
        let weights = n * k;
        let (small, big) = (weights < 1 << 22, weights >= 1 << 25);
        if !k.is_multiple_of(16) || m <= 2 || (m <= GEMV_MAX_M && small) {
            return LinearPlan::Gemv;
        }
        if m >= DEQUANT_CUBLAS_MIN_M {
            return LinearPlan::DequantCublas;
        }
        let gemm = |tile, splits| LinearPlan::Gemm { tile, splits };
        match m {
            _ if small && m <= 256 => gemm(REG_MT1, 0),
            3..=16 => gemm(if big { SMEM_MT1 } else { REG_MT1 }, 0),
            17..=64 => gemm(if big { SMEM_MT2 } else { REG_MT2 }, 0),
            _ => gemm(SMEM_MT2, 1),
        }
    }

    /// `linear` with an explicit plan (benchmarks compare plans with this).
    pub fn linear_planned(
        &self,
        x: &CudaSlice<f16>,
        m: usize,
        w: &Int8Weights,
        y: &mut CudaSlice<f16>,
        stream: &Arc<CudaStream>,
        plan: LinearPlan,
    ) -> Result<()> {
        w.check()?;
        check_xy(x.len(), y.len(), m, w.rows, w.cols)?;
        match plan {
            LinearPlan::Gemm { tile, splits } if w.cols.is_multiple_of(16) && tile < GEMM_TILES.len() => self.gemm(x, m, w, y, stream, tile, splits),
            LinearPlan::Gemm { .. } => Err(Error::Invalid(format!("linear: no GEMM plan {plan:?} for k = {}", w.cols))),
            LinearPlan::Gemv => self.gemv(x, m, w, y, stream),
            LinearPlan::DequantCublas => self.dequant_cublas(x, m, w, y, stream),
            LinearPlan::Wgmma { tile, splits } => self.wgmma(x, m, w, y, stream, tile, splits),
        }
    }

    /// Large batches: bands of rows dequantized to FP16 and multiplied by cuBLAS.
    fn dequant_cublas(&self, x: &CudaSlice<f16>, m: usize, w: &Int8Weights, y: &mut CudaSlice<f16>, stream: &Arc<CudaStream>) -> Result<()> {
        let (k, groups) = (w.cols, w.groups());
        self.banded_cublas(x, m, w.rows, k, y, stream, &mut |r0, rb, out| {
            let band = Int8Weights {
                q: w.q.slice(r0 * k..(r0 + rb) * k),
                scales: w.scales.slice(r0 * groups..(r0 + rb) * groups),
                rows: rb,
                cols: k,
                group_size: w.group_size,
            };
            self.dequantize(&band, out, stream)
        })
    }

    /// `y[m, n] = x[m, k] · Wᵀ` for a `W` that `dequant(r0, rows, out)` writes as FP16
    /// `[rows, k]`, band by band: each band of `DEQUANT_BAND_ELEMS` weights goes into one
    /// FP16 scratch buffer and cuBLAS multiplies it into its columns of `y` (`ldc` = n), so
    /// the scratch stays small whatever the matrix (a streamed model has little VRAM). The
    /// caller checked x `[m, k]` and y `[m, n]`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn banded_cublas(
        &self,
        x: &CudaSlice<f16>,
        m: usize,
        n: usize,
        k: usize,
        y: &mut CudaSlice<f16>,
        stream: &Arc<CudaStream>,
        dequant: &mut BandDequant<'_>,
    ) -> Result<()> {
        use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig};
        if m > i32::MAX as usize || k > i32::MAX as usize || n > i32::MAX as usize {
            return Err(Error::Invalid(format!("linear: [{m}, {k}] × [{n}, {k}] is too large for cuBLAS")));
        }
        let band_rows = (DEQUANT_BAND_ELEMS / k.max(1) / DEQUANT_BAND_ROW_MULTIPLE * DEQUANT_BAND_ROW_MULTIPLE).max(DEQUANT_BAND_ROW_MULTIPLE).min(n.max(1));
        let mut scratch = self.dequant_scratch.lock().unwrap_or_else(|p| p.into_inner());
        if scratch.as_ref().is_none_or(|b| b.len() < band_rows * k) {
            // Grows once to the largest band seen; never in steady state.
            *scratch = Some(stream.alloc_zeros::<f16>(band_rows * k)?);
        }
        let scratch = scratch.as_mut().unwrap();
        let mut blas = self.blas.lock().unwrap_or_else(|p| p.into_inner());
        let blas = match &mut *blas {
            Some(b) => b,
            none => none.insert(CudaBlas::new(stream.clone())?),
        };
        // SAFETY: the handle is only used under this lock, for work ordered on `stream`.
        unsafe { blas.set_stream(stream.clone()) }?;
        let mut r0 = 0;
        while r0 < n {
            let rb = band_rows.min(n - r0);
            dequant(r0, rb, &mut scratch.slice_mut(..rb * k))?;
            // Row-major band [rb, k] is column-major k×rb (op Aᵀ); x [m, k] is k×m; y's
            // columns r0.. are column-major rb×m with leading dimension n.
            let cfg = GemmConfig {
                transa: cublasOperation_t::CUBLAS_OP_T,
                transb: cublasOperation_t::CUBLAS_OP_N,
                m: rb as i32,
                n: m as i32,
                k: k as i32,
                alpha: f16::ONE,
                lda: k as i32,
                ldb: k as i32,
                beta: f16::ZERO,
                ldc: n as i32,
            };
            // SAFETY: the caller checked x [m, k] and y [m, n]; the band holds rb·k values
            // and the last element written, r0 + (m-1)·n + rb-1, is inside y.
            unsafe { blas.gemm(cfg, &scratch.slice(..rb * k), x, &mut y.slice_mut(r0..)) }?;
            r0 += rb;
        }
        Ok(())
    }

    /// `y[rows] = x[cols] · wᵀ` for FP16 weights `[rows, cols]` (M = 1): one warp per output
    /// row (the FP16 mode's decode steps; larger batches go to cuBLAS, which the kernel only
    /// beats at M = 1).
    pub fn fp16_gemv(&self, x: &CudaSlice<f16>, w: &CudaSlice<f16>, rows: usize, cols: usize, y: &mut CudaSlice<f16>, stream: &Arc<CudaStream>) -> Result<()> {
        if w.len() < rows * cols || x.len() < cols || y.len() < rows || rows > u32::MAX as usize || cols > u32::MAX as usize {
            return Err(Error::Invalid(format!("FP16 GEMV: [1, {cols}] × [{rows}, {cols}]ᵀ with {} and {} elements of x and y", x.len(), y.len())));
        }
        let (n, k) = (rows as u32, cols as u32);
        let cfg = LaunchConfig { grid_dim: (n.div_ceil(GEMV_WARPS), 1, 1), block_dim: (32 * GEMV_WARPS, 1, 1), shared_mem_bytes: 0 };
        let mut launch = stream.launch_builder(&self.kernels.gemv_f16);
        launch.arg(x).arg(w).arg(y).arg(&n).arg(&k);
        // SAFETY: sizes checked above; the kernel reads x[k] and w[n, k] (16-byte loads only
        // when k % 8 == 0, on allocations' aligned starts) and writes y[n].
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }

    /// Small batches: one warp per output row, `GEMV_MAX_M` batch rows per launch.
    fn gemv(&self, x: &CudaSlice<f16>, m: usize, w: &Int8Weights, y: &mut CudaSlice<f16>, stream: &Arc<CudaStream>) -> Result<()> {
        let (n, k, group, groups) = (w.rows as u32, w.cols as u32, w.group_size as u32, w.groups() as u32);
        let cfg = LaunchConfig { grid_dim: (n.div_ceil(GEMV_WARPS), 1, 1), block_dim: (32 * GEMV_WARPS, 1, 1), shared_mem_bytes: 0 };
        // Batches beyond GEMV_MAX_M (only when k % 16 != 0 rules out the GEMM) run as
        // consecutive launches over row blocks of x.
        gemv_batches(m, |m0, mb| {
            let xs = x.slice(m0 * w.cols..);
            let mut ys = y.slice_mut(m0 * w.rows..);
            let mut launch = stream.launch_builder(&self.kernels.gemv[mb - 1]);
            launch.arg(&xs).arg(&w.q).arg(&w.scales).arg(&mut ys).arg(&n).arg(&k).arg(&group).arg(&groups);
            // SAFETY: sizes checked by `linear`; the kernel reads x[mb, k], q[n, k],
            // s[n, groups] and writes y[mb, n] only.
            unsafe { launch.launch(cfg) }?;
            Ok(())
        })
    }

    /// `linear` for one row over one to three matrices that share `cols` and the scale
    /// grouping (a block's q, k and v, or gate and up), in one launch: the same values as
    /// one `linear` per matrix, a fraction of the launch cost; outputs may be views (a
    /// band of the logits).
    pub fn linear_m1_fused(&self, x: &CudaSlice<f16>, parts: &mut [(&Int8Weights, CudaViewMut<f16>)], stream: &Arc<CudaStream>) -> Result<()> {
        let Some((first, _)) = parts.first() else { return Err(Error::Invalid("linear_m1_fused: no matrices".into())) };
        let (cols, group, groups) = (first.cols, first.group_size, first.groups());
        if parts.len() > 3 || parts.iter().any(|(w, _)| w.cols != cols || w.group_size != group) {
            return Err(Error::Invalid("linear_m1_fused: up to three matrices with the same columns and scale groups".into()));
        }
        for (w, y) in parts.iter() {
            w.check()?;
            check_xy(x.len(), y.len(), 1, w.rows, w.cols)?;
        }
        // Raw addresses, so that absent matrices can be null with zero rows.
        let mut args = [(0u64, 0u64, 0u64, 0u32); 3];
        for (a, (w, y)) in args.iter_mut().zip(parts.iter_mut()) {
            *a = (w.q.device_ptr(stream).0, w.scales.device_ptr(stream).0, y.device_ptr_mut(stream).0, w.rows as u32);
        }
        let rows: u32 = args.iter().map(|a| a.3).sum();
        let (k, g, groups) = (cols as u32, group as u32, groups as u32);
        let cfg = LaunchConfig { grid_dim: (rows.div_ceil(GEMV_WARPS), 1, 1), block_dim: (32 * GEMV_WARPS, 1, 1), shared_mem_bytes: 0 };
        let mut launch = stream.launch_builder(&self.kernels.gemv3);
        launch.arg(x);
        for a in &args {
            launch.arg(&a.0).arg(&a.1).arg(&a.2).arg(&a.3);
        }
        launch.arg(&k).arg(&g).arg(&groups);
        // SAFETY: every present matrix passed `check` and its output holds its rows; absent
        // ones have zero rows, so the kernel never touches their null addresses.
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }

    /// Larger batches on tensor cores; K is split when the tiles alone would leave SMs idle.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        x: &CudaSlice<f16>,
        m: usize,
        w: &Int8Weights,
        y: &mut CudaSlice<f16>,
        stream: &Arc<CudaStream>,
        variant: usize,
        splits: usize,
    ) -> Result<()> {
        let tile = GEMM_TILES[variant];
        let (n, k) = (w.rows, w.cols);
        let tiles_n = n.div_ceil(tile.warps * 8 * tile.nt);
        let tiles_m = m.div_ceil(16 * tile.mt);
        let (splits, k_per_split) = split_k(k, tile.k_step, tiles_n * tiles_m, GEMM_TARGET_BLOCKS, splits);
        if tiles_m > 65_535 {
            return Err(Error::Invalid(format!("linear: batch {m} is too large for one launch")));
        }
        let cfg = LaunchConfig { grid_dim: (tiles_n as u32, tiles_m as u32, splits as u32), block_dim: (32 * tile.warps as u32, 1, 1), shared_mem_bytes: 0 };
        let (mu, nu, ku, group, groups, kps) = (m as u32, n as u32, k as u32, w.group_size as u32, w.groups() as u32, k_per_split as u32);
        let mut workspace = self.split_workspace.lock().unwrap_or_else(|p| p.into_inner());
        let partial_ptr = split_partials(&mut workspace, splits, m, n, stream)?;
        let mut launch = stream.launch_builder(&self.kernels.gemm[variant]);
        launch.arg(x).arg(&w.q).arg(&w.scales).arg(&mut *y).arg(&partial_ptr).arg(&mu).arg(&nu).arg(&ku).arg(&group).arg(&groups).arg(&kps);
        // SAFETY: sizes checked by `linear`; k % 16 == 0 as the kernel requires; with
        // splits > 1 the workspace holds splits·m·n floats.
        unsafe { launch.launch(cfg) }?;
        self.reduce_splits(partial_ptr, splits, m, w, y, stream)
    }

    /// `y = Σ_split partial[split] (· per-channel s)` after a split-K launch; nothing for one split.
    fn reduce_splits(&self, partial_ptr: u64, splits: usize, m: usize, w: &Int8Weights, y: &mut CudaSlice<f16>, stream: &Arc<CudaStream>) -> Result<()> {
        if splits <= 1 {
            return Ok(());
        }
        let (mu, nu, splits_u, groups) = (m as u32, w.rows as u32, splits as u32, w.groups() as u32);
        let mut launch = stream.launch_builder(&self.kernels.reduce_splits);
        launch.arg(&partial_ptr).arg(&w.scales).arg(&mut *y).arg(&mu).arg(&nu).arg(&splits_u).arg(&groups);
        // SAFETY: reads splits·m·n partials (the caller's split launch wrote them all), writes m·n outputs.
        unsafe { launch.launch(LaunchConfig::for_num_elems((m * w.rows) as u32)) }?;
        Ok(())
    }

    /// Hopper tensor cores (`kernels/src/wgmma.rs`): blocks of `bn` channels × `bm` batch
    /// rows, K split when the tiles alone would leave SMs idle (as `gemm`).
    #[allow(clippy::too_many_arguments)]
    fn wgmma(
        &self,
        x: &CudaSlice<f16>,
        m: usize,
        w: &Int8Weights,
        y: &mut CudaSlice<f16>,
        stream: &Arc<CudaStream>,
        variant: usize,
        splits: usize,
    ) -> Result<()> {
        let plan = LinearPlan::Wgmma { tile: variant, splits };
        let Some(tile) = WGMMA_TILES.get(variant) else { return Err(Error::Invalid(format!("linear: no Hopper GEMM variant {plan:?}"))) };
        let kernels = self.kernels.wgmma().map_err(|why| Error::Invalid(format!("linear: {plan:?} is unavailable here: {why}")))?;
        let (n, k, group, groups) = (w.rows, w.cols, w.group_size, w.groups());
        if !k.is_multiple_of(16) {
            return Err(Error::Invalid(format!("linear: {plan:?} needs k % 16 == 0 (16-byte rows for cp.async), got k = {k}")));
        }
        if groups > 1 && !group.is_multiple_of(16) {
            return Err(Error::Invalid(format!("linear: {plan:?} needs per-channel scales or groups that are multiples of 16, got group {group} of k = {k}")));
        }
        // cp.async moves 16-byte pieces: every row of x and q starts 16-aligned (k % 16 == 0),
        // so the bases must be too (views into larger buffers may not be).
        let (x_ptr, q_ptr) = (x.device_ptr(stream).0, w.q.device_ptr(stream).0);
        if !x_ptr.is_multiple_of(16) || !q_ptr.is_multiple_of(16) {
            return Err(Error::Invalid(format!("linear: {plan:?} needs 16-byte aligned x and weights")));
        }
        if m == 0 || n == 0 {
            return Ok(());
        }
        let tiles_n = n.div_ceil(tile.bn());
        let tiles_m = m.div_ceil(tile.bm);
        let (splits, k_per_split) = split_k(k, WGMMA_BK, tiles_n * tiles_m, WGMMA_TARGET_BLOCKS, splits);
        if tiles_m > 65_535 || splits > 65_535 || tiles_n > u32::MAX as usize {
            return Err(Error::Invalid(format!("linear: batch {m} is too large for one launch")));
        }
        let cfg = LaunchConfig {
            grid_dim: (tiles_n as u32, tiles_m as u32, splits as u32),
            block_dim: (tile.threads() as u32, 1, 1),
            shared_mem_bytes: tile.smem_bytes() as u32,
        };
        let (mu, nu, ku, group, groups, kps) = (m as u32, n as u32, k as u32, group as u32, groups as u32, k_per_split as u32);
        let mut workspace = self.split_workspace.lock().unwrap_or_else(|p| p.into_inner());
        let partial_ptr = split_partials(&mut workspace, splits, m, n, stream)?;
        let mut launch = stream.launch_builder(&kernels[variant]);
        launch.arg(x).arg(&w.q).arg(&w.scales).arg(&mut *y).arg(&partial_ptr).arg(&mu).arg(&nu).arg(&ku).arg(&group).arg(&groups).arg(&kps);
        // SAFETY: sizes checked by `linear`; k % 16 == 0, groups of 16s and 16-byte aligned
        // bases as the kernel requires; the function's dynamic shared-memory limit was raised
        // to `smem_bytes` when it was loaded; with splits > 1 the workspace holds splits·m·n
        // floats.
        unsafe { launch.launch(cfg) }?;
        self.reduce_splits(partial_ptr, splits, m, w, y, stream)
    }

    /// Materializes `q · s` as FP16 `[rows, cols]`.
    pub fn dequantize(&self, w: &Int8Weights, out: &mut CudaViewMut<f16>, stream: &Arc<CudaStream>) -> Result<()> {
        w.check()?;
        let total = w.rows * w.cols;
        if out.len() < total {
            return Err(Error::Invalid(format!("dequantize: output needs {total} elements, got {}", out.len())));
        }
        let (rows, cols, group, groups) = (w.rows as u32, w.cols as u32, w.group_size as u32, w.groups() as u32);
        if w.rows > i32::MAX as usize {
            return Err(Error::Invalid("dequantize: matrix too large for one launch".into()));
        }
        if total == 0 {
            return Ok(());
        }
        // One block per row; 256 threads × 16 weights cover a 4096-wide row in one pass.
        let cfg = LaunchConfig { grid_dim: (rows, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let mut launch = stream.launch_builder(&self.kernels.dequant);
        launch.arg(&w.q).arg(&w.scales).arg(out).arg(&rows).arg(&cols).arg(&group).arg(&groups);
        // SAFETY: sizes checked above; block r writes row r's `cols` outputs (the kernel
        // takes its 16-byte path only on aligned rows).
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }
}

/// That activations `x` and outputs `y` (lengths) hold `[m, cols]` and `[m, rows]`.
pub(super) fn check_xy(x: usize, y: usize, m: usize, rows: usize, cols: usize) -> Result<()> {
    if x < m * cols || y < m * rows {
        return Err(Error::Invalid(format!("linear: x needs {} and y {} elements, got {x} and {y}", m * cols, m * rows)));
    }
    Ok(())
}

/// `launch(m0, mb)` for the consecutive row blocks of a batch of `m` that the GEMVs take,
/// `GEMV_MAX_M` rows at most each.
pub(super) fn gemv_batches(m: usize, mut launch: impl FnMut(usize, usize) -> Result<()>) -> Result<()> {
    let mut m0 = 0;
    while m0 < m {
        let mb = (m - m0).min(GEMV_MAX_M);
        launch(m0, mb)?;
        m0 += mb;
    }
    Ok(())
}

/// How a GEMM of `tiles` output tiles splits its `k` columns (in steps of `k_step`): the
/// `requested` number of splits (0: as many as bring the launch to `target_blocks`, each
/// split keeping at least 256 columns so its overhead stays small), as (splits, columns
/// per split), the splits recounted so none is empty.
fn split_k(k: usize, k_step: usize, tiles: usize, target_blocks: usize, requested: usize) -> (usize, usize) {
    let k_blocks = k.div_ceil(k_step);
    let splits = if requested > 0 { requested.min(k_blocks) } else { target_blocks.div_ceil(tiles).clamp(1, (k / 256).max(1)) };
    let k_per_split = k_blocks.div_ceil(splits) * k_step;
    (k.div_ceil(k_per_split), k_per_split)
}

/// The FP32 partial sums of a `splits`-way split-K product into `workspace` (grown once to
/// the largest seen, never in steady state): its device address, or 0 (null: the kernel
/// writes `y` itself) for one split.
fn split_partials(workspace: &mut Option<CudaSlice<f32>>, splits: usize, m: usize, n: usize, stream: &Arc<CudaStream>) -> Result<u64> {
    if splits <= 1 {
        return Ok(0);
    }
    let need = splits * m * n;
    if workspace.as_ref().is_none_or(|ws| ws.len() < need) {
        *workspace = Some(stream.alloc_zeros::<f32>(need)?);
    }
    Ok(workspace.as_ref().map_or(0, |ws| ws.device_ptr(stream).0))
}

/// `y[m, n] = x[m, k] · Wᵀ` with cuBLAS in FP16 (FP32 accumulation) for a row-major `[n, k]`
/// weight: the FP16 baseline every benchmark and the FP16 model mode use.
pub fn cublas_fp16_linear<W: DevicePtr<f16>>(
    blas: &cudarc::cublas::CudaBlas,
    w: &W,
    x: &CudaSlice<f16>,
    y: &mut CudaSlice<f16>,
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    use cudarc::cublas::{sys::cublasOperation_t, Gemm, GemmConfig};
    if w.len() < n * k || x.len() < m * k || y.len() < m * n {
        return Err(Error::Invalid(format!("cuBLAS linear: buffers too small for [{m}, {k}] × [{n}, {k}]ᵀ")));
    }
    // Row-major W [n, k] is column-major k×n: op(A) = Aᵀ; x [m, k] is column-major k×m;
    // y [m, n] is column-major n×m.
    let cfg = GemmConfig {
        transa: cublasOperation_t::CUBLAS_OP_T,
        transb: cublasOperation_t::CUBLAS_OP_N,
        m: n as i32,
        n: m as i32,
        k: k as i32,
        alpha: f16::ONE,
        lda: k as i32,
        ldb: k as i32,
        beta: f16::ZERO,
        ldc: n as i32,
    };
    // SAFETY: sizes checked above.
    unsafe { blas.gemm(cfg, w, x, y) }?;
    Ok(())
}
