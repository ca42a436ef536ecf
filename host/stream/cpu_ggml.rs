//! The CPU's product with GGUF blocks as stored: `y = x · Wᵀ` over a tensor's blocks in the
//! kernels' planes (`gpu::ggml_planes`), each block's values made in registers by the same
//! block logic the GPU runs (`gpu::ggml_blocks`, whose values are `codec::ggml::dequantize`'s
//! bit for bit) and never written out: a Q4_K weight takes 4.5 bits of RAM, where the CPU
//! forward held GGUF tensors as 32-bit f32 before (SmolLM2's Q4_1 GGUF: 650 → 301 MB
//! resident, the same decode speed on a 2-core machine: the dequantization costs what the
//! bytes saved).
//!
//! ```text
//! y[i, r] = Σ_k x[i, k] · dequantize(W)[r, k]        i < m, r < rows
//! ```
//!
//! Rows are shared out over rayon in runs of `ROWS_PER_TASK`; within a row each block's
//! tasks (32 or 64 values) are read once for all `m` activation rows. The sums are f32 in a
//! fixed order (eight running sums a row, one a value slot of the 8-value groups, added
//! pairwise at the end), so the result does not depend on the thread count. No crate
//! computes on GGUF's block layouts (ggml does, in C), hence this file.
use crate::abi::GGML_LAYOUTS;
use crate::error::{Error, Result};
use crate::gpu::ggml_blocks::{quant, value, Blocks, Mem, Planes, Task, Q2_K, Q3_K, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0};
use crate::stream::cpu_gemv::Kernel;
use rayon::prelude::*;

/// A `[rows, cols]` matrix of GGUF blocks in the kernels' planes (`abi::GgmlLayout`).
pub struct GgmlMatrix {
    /// Index in `abi::GGML_LAYOUTS`.
    pub layout: usize,
    pub planes: Vec<u8>,
    pub rows: usize,
    pub cols: usize,
}

impl GgmlMatrix {
    /// `blocks` (row-major, as a GGUF file holds them) of a `[rows, cols]` matrix.
    pub fn from_blocks(layout: usize, blocks: &[u8], rows: usize, cols: usize) -> Result<Self> {
        let l = GGML_LAYOUTS.get(layout).ok_or_else(|| Error::Invalid(format!("no GPU layout {layout} for GGUF blocks")))?;
        let e = l.block_elems as usize;
        if !cols.is_multiple_of(e) || blocks.len() != rows * cols / e * l.block_bytes() as usize {
            return Err(Error::Invalid(format!(
                "{} blocks of {} bytes do not make a {rows}×{cols} matrix (rows of whole {e}-value blocks)",
                l.name,
                blocks.len()
            )));
        }
        Ok(GgmlMatrix { layout, planes: crate::gpu::ggml_planes(layout, blocks)?, rows, cols })
    }

    pub fn view(&self) -> GgmlView<'_> {
        GgmlView { layout: self.layout, planes: &self.planes, rows: self.rows, cols: self.cols }
    }
}

/// A `[rows, cols]` matrix of GGUF blocks in the kernels' planes, borrowed (a `GgmlMatrix`,
/// or a tensor's planes in the streaming engine's host arena).
#[derive(Clone, Copy)]
pub struct GgmlView<'a> {
    /// Index in `abi::GGML_LAYOUTS`.
    pub layout: usize,
    pub planes: &'a [u8],
    pub rows: usize,
    pub cols: usize,
}

impl GgmlView<'_> {
    /// The layout, after checking that the planes are exactly a `rows × cols` matrix of it.
    pub fn check(&self) -> Result<&'static crate::abi::GgmlLayout> {
        let l = GGML_LAYOUTS.get(self.layout).ok_or_else(|| Error::Invalid(format!("no GPU layout {} for GGUF blocks", self.layout)))?;
        let e = l.block_elems as usize;
        if !self.cols.is_multiple_of(e) || self.planes.len() as u64 != l.bytes((self.rows * (self.cols / e)) as u64) {
            return Err(Error::Invalid(format!("cpu_ggml: {} planes of {} bytes are not a {}×{} matrix", l.name, self.planes.len(), self.rows, self.cols)));
        }
        Ok(l)
    }
}

/// Plain little-endian reads of the planes in host memory.
struct Host;
impl Mem for Host {
    unsafe fn v4(p: *const u8) -> [u32; 4] {
        let b = std::ptr::read_unaligned(p as *const [u8; 16]);
        std::array::from_fn(|i| u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]))
    }
    unsafe fn word(p: *const u8) -> u32 {
        u32::from_le_bytes(std::ptr::read_unaligned(p as *const [u8; 4]))
    }
    unsafe fn half(p: *const u8) -> f32 {
        half::f16::from_bits(u16::from_le_bytes(std::ptr::read_unaligned(p as *const [u8; 2]))).to_f32()
    }
}

/// Output rows a rayon task computes (a 4096-wide Q4_K row is 2.3 KB: ~37 KB a task).
const ROWS_PER_TASK: usize = 16;
/// Activation rows one pass over a row's blocks serves (larger batches take several).
const MAX_M: usize = 8;

/// `y[i · w.rows + r] = Σ_k x[i · w.cols + k] · W[r, k]` for `i < m`, with the fastest
/// build this CPU runs.
pub fn gemv_ggml(w: &GgmlMatrix, x: &[f32], m: usize, y: &mut [f32]) -> Result<()> {
    gemv_ggml_with(Kernel::best(), w, x, m, y)
}

/// `gemv_ggml` over rows `rows` of `w` only: `y[i · rows.len() + r - rows.start]`, on the
/// current rayon pool.
pub fn gemv_ggml_rows(w: &GgmlView, rows: std::ops::Range<usize>, x: &[f32], m: usize, y: &mut [f32]) -> Result<()> {
    product(Kernel::best(), w, rows, x, m, y)
}

/// `gemv_ggml` with a given build: `Scalar` the portable one, `Avx2` and `Avx512` the one
/// compiled for AVX2 and FMA (the 8-value groups fill 256-bit registers; AVX-512 adds
/// nothing to them). Every build gives the same bits.
pub fn gemv_ggml_with(kernel: Kernel, w: &GgmlMatrix, x: &[f32], m: usize, y: &mut [f32]) -> Result<()> {
    product(kernel, &w.view(), 0..w.rows, x, m, y)
}

fn product(kernel: Kernel, w: &GgmlView, rows: std::ops::Range<usize>, x: &[f32], m: usize, y: &mut [f32]) -> Result<()> {
    if !kernel.is_supported() {
        return Err(Error::Invalid(format!("cpu_ggml: this CPU does not support the {} kernel", kernel.name())));
    }
    let vectorized = kernel != Kernel::Scalar;
    w.check()?;
    if rows.start > rows.end || rows.end > w.rows {
        return Err(Error::Invalid(format!("cpu_ggml: rows {rows:?} of a {}-row matrix", w.rows)));
    }
    if x.len() < m * w.cols || y.len() < m * rows.len() {
        return Err(Error::Invalid(format!("cpu_ggml: x holds {} of {m}×{}, y {} of {m}×{}", x.len(), w.cols, y.len(), rows.len())));
    }
    match w.layout {
        0 => rows_of::<Q4_0>(w, rows, x, m, y, vectorized),
        1 => rows_of::<Q4_1>(w, rows, x, m, y, vectorized),
        2 => rows_of::<Q5_0>(w, rows, x, m, y, vectorized),
        3 => rows_of::<Q5_1>(w, rows, x, m, y, vectorized),
        4 => rows_of::<Q8_0>(w, rows, x, m, y, vectorized),
        5 => rows_of::<Q4_K>(w, rows, x, m, y, vectorized),
        6 => rows_of::<Q5_K>(w, rows, x, m, y, vectorized),
        7 => rows_of::<Q6_K>(w, rows, x, m, y, vectorized),
        8 => rows_of::<Q2_K>(w, rows, x, m, y, vectorized),
        _ => rows_of::<Q3_K>(w, rows, x, m, y, vectorized),
    }
    Ok(())
}

// The dispatch above names each layout's type by its index.
const _: () = {
    const fn is(i: usize, name: &str) -> bool {
        crate::abi::same_name(GGML_LAYOUTS[i].name, name)
    }
    assert!(is(0, "Q4_0") && is(1, "Q4_1") && is(2, "Q5_0") && is(3, "Q5_1") && is(4, "Q8_0"));
    assert!(is(5, "Q4_K") && is(6, "Q5_K") && is(7, "Q6_K") && is(8, "Q2_K") && is(9, "Q3_K") && GGML_LAYOUTS.len() == 10);
    assert!(Q4_0::LAYOUT == 0 && Q4_1::LAYOUT == 1 && Q5_0::LAYOUT == 2 && Q5_1::LAYOUT == 3 && Q8_0::LAYOUT == 4);
    assert!(Q4_K::LAYOUT == 5 && Q5_K::LAYOUT == 6 && Q6_K::LAYOUT == 7 && Q2_K::LAYOUT == 8 && Q3_K::LAYOUT == 9);
};

/// The checked product for type `F` over `rows`: runs of rows in parallel, each into its own
/// slice of a row-major `[rows, m]` transpose, scattered into `y` after.
fn rows_of<F: Blocks>(w: &GgmlView, range: std::ops::Range<usize>, x: &[f32], m: usize, y: &mut [f32], vectorized: bool) {
    let (n, first) = (range.len(), range.start);
    let mut yt = vec![0f32; n * m];
    #[cfg(not(target_arch = "x86_64"))]
    let _ = vectorized; // only x86-64 has the vector build
    yt.par_chunks_mut(ROWS_PER_TASK * m).enumerate().for_each(|(c, out)| {
        #[cfg(target_arch = "x86_64")]
        if vectorized {
            // SAFETY: `product` checked that the CPU has AVX2 and FMA.
            return unsafe { rows_avx2::<F>(w, first + c * ROWS_PER_TASK, x, m, out) };
        }
        rows::<F>(w, first + c * ROWS_PER_TASK, x, m, out)
    });
    for (r, v) in yt.chunks(m).enumerate() {
        for (i, &s) in v.iter().enumerate() {
            y[i * n + r] = s;
        }
    }
}

/// Rows `r0..` (as many as `out` holds, m values each) into `out`.
#[inline(always)]
fn rows<F: Blocks>(w: &GgmlView, r0: usize, x: &[f32], m: usize, out: &mut [f32]) {
    for (i, yr) in out.chunks_mut(m).enumerate() {
        row::<F>(w, r0 + i, x, m, yr);
    }
}

/// `rows` compiled for AVX2 and FMA, which the compiler vectorizes the 8-value groups to
/// (per-lane shifts take the quants apart, 8 f32 a register); the same arithmetic, so the
/// same bits as `rows`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2<F: Blocks>(w: &GgmlView, r0: usize, x: &[f32], m: usize, out: &mut [f32]) {
    rows::<F>(w, r0, x, m, out)
}

/// Row `r`'s products with `m` activation rows into `out[..m]`.
#[inline(always)]
fn row<F: Blocks>(w: &GgmlView, r: usize, x: &[f32], m: usize, out: &mut [f32]) {
    let e = GGML_LAYOUTS[F::LAYOUT].block_elems as usize;
    let bpr = w.cols / e;
    let planes = Planes { base: w.planes.as_ptr(), blocks: (w.rows * bpr) as u64 };
    for i0 in (0..m).step_by(MAX_M) {
        let mb = (m - i0).min(MAX_M);
        // Eight partial sums a batch row, one a value slot of a group: independent adds that
        // vectorize (a single running sum would be one long dependent chain).
        let mut acc = [[0f32; 8]; MAX_M];
        for b in 0..bpr {
            for part in 0..F::TASKS {
                // SAFETY: `product` checked that the planes hold rows · bpr blocks, and
                // b < bpr, r < rows, part < TASKS.
                let t = unsafe { F::load::<Host>(&planes, (r * bpr + b) as u64, part) };
                let x0 = i0 * w.cols + b * e;
                task::<F>(&t, part, &x[x0..], w.cols, mb, &mut acc);
            }
        }
        for (o, a) in out[i0..i0 + mb].iter_mut().zip(&acc) {
            *o = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
        }
    }
}

/// One task's products into `acc[..mb]`, x's rows `cols` apart from `x` (its block's first
/// value): each group's values as the kernels make them (`ggml_blocks::value`).
#[inline(always)]
fn task<F: Blocks>(t: &Task, part: u32, x: &[f32], cols: usize, mb: usize, acc: &mut [[f32; 8]; MAX_M]) {
    macro_rules! group {
        ($($g:literal),*) => {$(
            if $g < F::GROUPS {
                let q = F::quants::<$g>(t, part);
                let (scale, off) = (t.scale[$g / F::SUB], t.off[$g / F::SUB]);
                let v: [f32; 8] = std::array::from_fn(|j| value::<F>(quant::<F>(q, j), scale, off));
                let xo = F::x_index(part, $g) as usize;
                for (i, a) in acc.iter_mut().enumerate().take(mb) {
                    let xs: &[f32; 8] = x[i * cols + xo..i * cols + xo + 8].try_into().expect("8 values");
                    for j in 0..8 {
                        a[j] += v[j] * xs[j];
                    }
                }
            }
        )*};
    }
    group!(0, 1, 2, 3, 4, 5, 6, 7);
}
