//! The CPU half of a row-split streamed linear: `y = x · Wᵀ` for INT8 weights `W` (one
//! scale per row, or per group of columns) and f32 activations, over a range of `W`'s
//! rows, straight from the INT8 bytes in host RAM.
//!
//! When a layer is streamed to the GPU, the GPU computes its share of the output rows
//! from the bytes it received while the CPU computes the other rows from the same bytes
//! in RAM, at the same time. At small batches a GEMV is bound by memory bandwidth, so the
//! kernels read each weight byte from RAM exactly once per call whatever the batch `m`,
//! and keep the activations in L1 while the weights stream past; nothing is allocated in
//! the hot path, and the arithmetic stays f32 (the activations are not quantized), so the
//! result differs from the exact one only by f32 rounding.
//!
//! ```text
//! y[i, r − rows.start] = Σ_k x[i, k] · q[r, k] · scales[r, k / group_size]    i < m, r ∈ rows
//! ```
//!
//! Three implementations ([`Kernel`]), picked at run time by [`Kernel::best`] (CPUID via
//! `is_x86_feature_detected!`), or forced with [`gemv_int8_with`]:
//! - `Avx512` (AVX-512 F + BW + VL): 16 columns per vector: `vpmovsxbd` + `vcvtdq2ps`
//!   (times the group scale when there are groups) + `vfmadd231ps`; ragged ends of rows,
//!   groups and panels by masked loads;
//! - `Avx2` (AVX2 + FMA): the same with 8 columns per vector, ragged ends through a
//!   zero-padded copy and `vmaskmovps`;
//! - `Scalar`: portable Rust, eight independent accumulators per activation row (which
//!   the compiler vectorizes for the baseline ISA); the only one off x86-64.
//!
//! How the work is laid out (see `gemv_int8_with`): rows are split into tasks of about
//! 128 KiB of weights, run on a rayon pool (the one passed in, or the current one:
//! rayon's global pool unless the caller is inside `pool.install`; a streaming engine
//! would keep a dedicated pool sized to the cores it may use, so the CPU share does not
//! compete with the threads that feed the GPU). Within a task, `R` weight rows (up to 4)
//! go through the vector registers together, so one activation load serves `R` rows, with
//! `M · R · U` accumulators for `M` activation rows (up to 12 on AVX-512, 8 on AVX2;
//! larger batches take several passes, the later ones reading the task's rows from L2).
//! With one activation row the rows stream whole, each prefetching 1 KiB ahead of itself.
//! With several, the columns are cut into panels whose activations fit in 16 KiB of L1
//! (copied with a padded stride: rows `cols · 4` bytes apart, a multiple of 4 KiB, would
//! share L1 sets), the task's rows walk each panel in turn, and since that order defeats
//! the hardware prefetcher each row visit prefetches the one 4 KiB of weights later. Each
//! output element is computed by the same code whatever the partition, so the results
//! are bitwise identical for any thread count or row split.
//!
//! Accuracy: every path forms the same products and sums them in some order. With
//! `n = cols`, `G` groups, `P ≤ ⌈n/64⌉` panels and `u = 2⁻²⁴`, a product passes through at
//! most `D = ⌈n/8⌉ + ⌈n/64⌉ + G + 32` roundings on its way to the result: the scale
//! product `q·s` and the `x·w` product (FMA or not); within a panel every path has at
//! least 8 independent lanes, each taking at most `⌈len/8⌉` terms of a group piece of
//! length `len` (one more per ragged end, so `⌈n/8⌉ + G + 1` in all); at most 3 to merge
//! the unrolled accumulators and `P` to add the panel's partial sums; 4 for the pairwise
//! lane sum and 1 for the row's scale. The standard bound then gives
//! `|ŷ − y| ≤ γ(D) · Σ_k |x_k q_k s_k|` with `γ(D) = D·u / (1 − D·u)` ([`error_bound`]), so
//! `‖ŷ − y‖₂ ≤ γ(D) · ‖Σ|x q s|‖₂` over the outputs (for `n = 4096`: `γ ≈ 3.3·10⁻⁵`; the
//! measured errors are ~10⁻⁷–10⁻⁶ relative). `tests/cpu_gemv.rs` checks both against an
//! f64 reference for every supported path, and the SIMD paths against the scalar one.
//!
//! ```no_run
//! use codecllm::stream::cpu_gemv::{gemv_int8, Int8View};
//! # fn main() -> codecllm::error::Result<()> {
//! # let (q, scales, x) = (vec![0i8; 8 * 64], vec![1f32; 8], vec![0f32; 2 * 64]);
//! let w = Int8View::new(&q, &scales, 64, 64)?; // [8, 64] INT8, one scale per row
//! let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
//! let mut y = vec![0f32; 2 * 5]; // m = 2 activation rows × rows 3..8
//! gemv_int8(&w, 3..8, &x, 2, &mut y, Some(&pool))?;
//! # Ok(()) }
//! ```
use crate::error::{Error, Result};
use rayon::prelude::*;
use rayon::ThreadPool;
use std::ops::Range;

/// Which implementation computes the rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Portable Rust; every machine.
    Scalar,
    /// x86-64 with AVX2 and FMA.
    Avx2,
    /// x86-64 with AVX-512 F, BW and VL.
    Avx512,
}

impl Kernel {
    pub const ALL: [Kernel; 3] = [Kernel::Scalar, Kernel::Avx2, Kernel::Avx512];

    /// Whether this machine can run it (CPUID, checked at run time).
    pub fn is_supported(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512vl"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The fastest supported one.
    pub fn best() -> Kernel {
        [Kernel::Avx512, Kernel::Avx2].into_iter().find(|k| k.is_supported()).unwrap_or(Kernel::Scalar)
    }

    /// Every supported one, `Scalar` first.
    pub fn supported() -> Vec<Kernel> {
        Kernel::ALL.into_iter().filter(|k| k.is_supported()).collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512 => "avx512",
        }
    }

    /// Most activation rows one pass over the weights handles (more take several passes
    /// over each task's rows, the later ones from L2, so RAM still sees them once).
    fn max_batch(self) -> usize {
        match self {
            Kernel::Scalar => 16,
            Kernel::Avx2 => 8,
            Kernel::Avx512 => 12,
        }
    }
}

/// An INT8 weight matrix in host RAM, borrowed (the device-side counterpart is
/// [`crate::gpu::Int8Weights`]): `q` row-major `[rows, cols]`, `scales`
/// row-major `[rows, ⌈cols / group_size⌉]` (the layout of [`crate::codec::Int8Matrix`]).
/// `group_size ≥ cols` means one scale per row. Any group size works; multiples of 16
/// (and of 8 on AVX2) keep every vector inside one group.
#[derive(Clone, Copy, Debug)]
pub struct Int8View<'a> {
    q: &'a [i8],
    scales: &'a [f32],
    rows: usize,
    cols: usize,
    group_size: usize,
    groups: usize,
}

impl<'a> Int8View<'a> {
    /// An `Error::Invalid` when `cols` or `group_size` is zero, `q.len()` is not a multiple
    /// of `cols`, or `scales.len()` is not `rows · ⌈cols / group_size⌉`.
    pub fn new(q: &'a [i8], scales: &'a [f32], cols: usize, group_size: usize) -> Result<Self> {
        if cols == 0 || group_size == 0 {
            return Err(Error::Invalid(format!("cpu_gemv: zero cols ({cols}) or group size ({group_size})")));
        }
        if !q.len().is_multiple_of(cols) {
            return Err(Error::Invalid(format!("cpu_gemv: {} INT8 values do not make rows of {cols}", q.len())));
        }
        let rows = q.len() / cols;
        let group_size = group_size.min(cols);
        let groups = cols.div_ceil(group_size);
        if scales.len() != rows * groups {
            return Err(Error::Invalid(format!("cpu_gemv: {rows} rows × {groups} groups need as many scales, got {}", scales.len())));
        }
        Ok(Int8View { q, scales, rows, cols, group_size, groups })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Columns per scale (`cols` for one scale per row).
    pub fn group_size(&self) -> usize {
        self.group_size
    }

    pub fn groups(&self) -> usize {
        self.groups
    }
}

impl<'a> TryFrom<&'a crate::codec::Int8Matrix> for Int8View<'a> {
    type Error = Error;
    fn try_from(m: &'a crate::codec::Int8Matrix) -> Result<Self> {
        Int8View::new(&m.q, &m.scales, m.cols, m.group_size)
    }
}

/// `y = x · W[rows]ᵀ` with the fastest kernel this machine supports ([`gemv_int8_with`]).
pub fn gemv_int8(w: &Int8View, rows: Range<usize>, x: &[f32], m: usize, y: &mut [f32], pool: Option<&ThreadPool>) -> Result<()> {
    gemv_int8_with(Kernel::best(), w, rows, x, m, y, pool)
}

/// `y[i · rows.len() + (r − rows.start)] = Σ_k x[i · cols + k] · q[r, k] · s[r, k / group_size]`
/// for `i < m`, `r ∈ rows`: `x` is row-major `[m, cols]`, `y` row-major `[m, rows.len()]`,
/// every element of `y` is written. Runs on `pool`, or on the current rayon pool when
/// `None`. Any `m` works (the streaming engine uses 1..=16); `m = 0` or empty `rows` do
/// nothing.
///
/// An `Error::Invalid` when `kernel` is not supported here, `rows` is not inside the
/// matrix, or `x` / `y` do not have `m · cols` / `m · rows.len()` elements.
pub fn gemv_int8_with(kernel: Kernel, w: &Int8View, rows: Range<usize>, x: &[f32], m: usize, y: &mut [f32], pool: Option<&ThreadPool>) -> Result<()> {
    let invalid = |msg: String| Err(Error::Invalid(format!("cpu_gemv: {msg}")));
    if !kernel.is_supported() {
        return invalid(format!("this CPU does not support the {} kernel", kernel.name()));
    }
    if rows.start > rows.end || rows.end > w.rows {
        return invalid(format!("rows {rows:?} outside a matrix of {} rows", w.rows));
    }
    let (cols, nr) = (w.cols, rows.len());
    if x.len() != m * cols || y.len() != m * nr {
        return invalid(format!("x must be [m = {m}, cols = {cols}] and y [m, rows = {nr}], got {} and {} elements", x.len(), y.len()));
    }
    if m == 0 || nr == 0 {
        return Ok(());
    }
    let scaled = w.groups > 1;
    let plan = Plan::new(kernel, m, scaled);
    let threads = pool.map_or_else(rayon::current_num_threads, |p| p.current_num_threads());
    let block = rows_per_block(nr, cols, threads);
    let out = OutPtr(y.as_mut_ptr());
    let out = &out;
    // One task: rows b0..b1. For each pass over a chunk of activation rows, the rows go in
    // groups whose partial sums fit `part`, and each group is walked panel by panel
    // (columns whose activations fit L1; a single activation row takes whole rows), the
    // group's rows against the panel `R` at a time (each activation load serves `R` weight
    // rows). With several activation rows the panel is first copied into `xbuf` with a
    // padded stride: rows `cols · 4` bytes apart (a multiple of 4 KiB for the usual widths)
    // would all fall in the same L1 sets and evict each other. Each weight byte is read
    // from RAM once (later passes find the task's rows in L2).
    let run = |b: usize| {
        let (b0, b1) = (rows.start + b * block, rows.end.min(rows.start + (b + 1) * block));
        let mut part = [0f32; PART];
        let mut xbuf = Aligned([0f32; XBUF]);
        let xbuf = &mut xbuf.0;
        for c in 0..plan.chunks {
            let (i0, pass) = plan.chunk(c);
            let mc = pass.m;
            let xs = &x[i0 * cols..(i0 + mc) * cols];
            let (per_row, kp) = (mc * LANES, panel_cols(mc, cols));
            let group = PART / per_row;
            let panels = cols.div_ceil(kp);
            // Walking rows panel by panel defeats the hardware prefetcher, so on the first
            // pass (the one that reads RAM) each row visit prefetches the one `ahead`
            // visits later: rows (in the group) in the inner loop, panels in the outer.
            let ahead = if c == 0 && panels > 1 { PREFETCH_BYTES.div_ceil(kp) } else { 0 };
            for g0 in (b0..b1).step_by(group) {
                let g1 = b1.min(g0 + group);
                let part = &mut part[..(g1 - g0) * per_row];
                part.fill(0.0);
                let (mut pf_panel, mut pf_row) = (ahead / (g1 - g0), g0 + ahead % (g1 - g0));
                for p0 in (0..cols).step_by(kp) {
                    let (p1, group) = (cols.min(p0 + kp), p0 / w.group_size);
                    let (xp, ldx) = if mc == 1 {
                        (&xs[p0..], cols)
                    } else {
                        let ldx = kp + X_PAD;
                        assert!(mc * ldx <= XBUF, "cpu_gemv: activation panel too large");
                        for (i, dst) in xbuf.chunks_exact_mut(ldx).take(mc).enumerate() {
                            dst[..p1 - p0].copy_from_slice(&xs[i * cols + p0..i * cols + p1]);
                        }
                        (&xbuf[..], ldx)
                    };
                    for r in (g0..g1).step_by(pass.r) {
                        let rr = pass.r.min(g1 - r);
                        if ahead > 0 {
                            for _ in 0..rr {
                                if pf_panel < panels {
                                    let k = pf_row * cols + pf_panel * kp;
                                    prefetch(&w.q[k..k + kp.min(cols - pf_panel * kp)]);
                                }
                                pf_row += 1;
                                if pf_row == g1 {
                                    (pf_panel, pf_row) = (pf_panel + 1, g0);
                                }
                            }
                        }
                        let q = &w.q[r * cols..(r + rr) * cols];
                        let s = &w.scales[r * w.groups..(r + rr) * w.groups];
                        let rows = Rows { q, n: cols, s, groups: w.groups, gs: w.group_size, group, x: xp, ldx, ahead: c == 0 && panels == 1 };
                        let pr = &mut part[(r - g0) * per_row..(r - g0 + rr) * per_row];
                        // SAFETY: the function needs only the CPU features `kernel` stands
                        // for, checked above; it asserts its contract on the arguments.
                        unsafe { (pass.f[rr - 1])(&rows, p0..p1, pr) };
                    }
                }
                for (r, pr) in (g0..g1).zip(part.chunks_exact(per_row)) {
                    for (i, lanes) in pr.chunks_exact(LANES).enumerate() {
                        let t = sum_lanes(lanes);
                        let v = if scaled { t } else { t * w.scales[r] };
                        // SAFETY: i0 + i < m and r − rows.start < nr, so the index is
                        // inside `y` (m · nr elements, borrowed mutably for this whole
                        // call); tasks partition `rows`, so no two threads write the same
                        // element and none reads it.
                        unsafe { out.write((i0 + i) * nr + (r - rows.start), v) };
                    }
                }
            }
        }
    };
    par_blocks(pool, nr.div_ceil(block), run);
    Ok(())
}

/// The worst-case rounding-error factor of every kernel here for `cols` columns in
/// `groups` groups: `|ŷ − y| ≤ error_bound(cols, groups) · Σ_k |x_k q_k s_k|` per output
/// (see the module documentation for the derivation).
pub fn error_bound(cols: usize, groups: usize) -> f64 {
    let d = (cols.div_ceil(8) + cols.div_ceil(64) + groups + 32) as f64;
    let u = f64::powi(2.0, -24);
    d * u / (1.0 - d * u)
}

/// Partial-sum slots per activation row (one AVX-512 vector; AVX2 and scalar use 8).
const LANES: usize = 16;
/// Partial sums per task: 16 KiB, so they stay in L1 with the activation panel.
const PART: usize = 4096;
/// Activation bytes per panel.
const X_PANEL_BYTES: usize = 16 << 10;
/// Padding (f32) after each activation row of a copied panel: 64 bytes, so successive
/// rows start in different L1 sets.
const X_PAD: usize = 16;
/// The copied panel: at most 16 rows (`max_batch`) of `panel_cols(m, _) + X_PAD`.
const XBUF: usize = X_PANEL_BYTES / 4 + 16 * X_PAD;
/// How far ahead (in weight bytes) a panel walk prefetches.
const PREFETCH_BYTES: usize = 4 << 10;
/// How far ahead in its row each of the `R` rows streamed together prefetches (the
/// hardware prefetchers follow one stream better than `R` interleaved ones).
const ROW_PREFETCH_BYTES: usize = 1 << 10;

/// Panel width for `m` activation rows: a multiple of 64 columns whose `m` rows of f32
/// take `X_PANEL_BYTES`, or whole rows for one activation row (it meets `R` weight rows
/// per load, so even from L2 it costs little, and whole rows stream best from RAM).
fn panel_cols(m: usize, cols: usize) -> usize {
    if m == 1 {
        return cols;
    }
    (X_PANEL_BYTES / (4 * m) / 64 * 64).max(64)
}

/// Asks for `bytes` to be brought into L1 ahead of use (x86-64; elsewhere nothing).
#[inline]
fn prefetch(bytes: &[i8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch is a hint: it reads nothing the program sees and cannot
        // fault (and the address is inside `bytes` anyway).
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// Cache-line alignment, so that no vector load of a copied panel straddles two lines.
#[repr(C, align(64))]
struct Aligned<T>(T);

/// `R` consecutive weight rows and the activations of a panel `cols` of them: row `j` is
/// `q[j · n..(j + 1) · n]` with scales `s[j · groups..(j + 1) · groups]`, `gs` columns per
/// scale, `group = cols.start / gs`, and `x[i · ldx + (k − cols.start)]` the activation of
/// row `i` at column `k ∈ cols`.
struct Rows<'a> {
    q: &'a [i8],
    n: usize,
    s: &'a [f32],
    groups: usize,
    gs: usize,
    group: usize,
    x: &'a [f32],
    ldx: usize,
    /// Prefetch each row `ROW_PREFETCH_BYTES` ahead (whole rows streamed from RAM).
    ahead: bool,
}

/// A panel function for `M` activation rows and `R` weight rows:
/// `part[(j · M + i) · LANES + l] += ` lane `l`'s share of
/// `Σ_{k ∈ cols} x[i, k] · q[j, k] · (s[j, k / gs] if SCALED)`. Unsafe only because it may
/// need CPU features the caller checks.
type PanelFn = unsafe fn(rows: &Rows, cols: Range<usize>, part: &mut [f32]);

/// Checks a panel function's arguments, so that its raw reads stay inside them.
fn check_panel(rows: &Rows, cols: &Range<usize>, m: usize, r: usize, part: &[f32]) {
    let len = cols.end.wrapping_sub(cols.start);
    debug_assert!(rows.groups == rows.n.div_ceil(rows.gs) && rows.group == cols.start / rows.gs);
    let ok = rows.gs > 0
        && cols.start <= cols.end
        && cols.end <= rows.n
        && r > 0
        && rows.q.len() >= (r - 1) * rows.n + cols.end
        && rows.s.len() >= r * rows.groups
        && m > 0
        && rows.ldx >= len
        && rows.x.len() >= (m - 1) * rows.ldx + len
        && part.len() == r * m * LANES;
    assert!(ok, "cpu_gemv: panel function called out of contract");
}

/// The 16 lanes of a partial sum, pairwise.
fn sum_lanes(l: &[f32]) -> f32 {
    let h: [f32; 8] = std::array::from_fn(|i| l[i] + l[i + 8]);
    let q: [f32; 4] = std::array::from_fn(|i| h[i] + h[i + 4]);
    (q[0] + q[2]) + (q[1] + q[3])
}

/// One pass over a weight row: `m` activation rows against `r` weight rows at a time,
/// `f[j]` the panel function for `j + 1` weight rows (the group's last, ragged step).
#[derive(Clone, Copy)]
struct Pass {
    m: usize,
    r: usize,
    f: [PanelFn; MAX_R],
}

const MAX_R: usize = 4;

impl Pass {
    fn new(m: usize, f: &[PanelFn]) -> Pass {
        Pass { m, r: f.len(), f: std::array::from_fn(|j| f[j.min(f.len() - 1)]) }
    }
}

/// `m` activation rows cut into `chunks` passes of at most `kernel.max_batch()`, sizes
/// balanced: `full.m` each, the last `last.m`.
struct Plan {
    chunks: usize,
    full: Pass,
    last: Pass,
}

impl Plan {
    fn new(kernel: Kernel, m: usize, scaled: bool) -> Plan {
        let chunks = m.div_ceil(kernel.max_batch());
        let size = m.div_ceil(chunks);
        Plan { chunks, full: pass(kernel, size, scaled), last: pass(kernel, m - (chunks - 1) * size, scaled) }
    }

    /// First activation row of chunk `c`, and its pass.
    fn chunk(&self, c: usize) -> (usize, Pass) {
        (c * self.full.m, if c + 1 == self.chunks { self.last } else { self.full })
    }
}

fn pass(kernel: Kernel, m: usize, scaled: bool) -> Pass {
    // `m => U [R…]`: U tiles in flight and R weight rows at a time, so that the M · R · U
    // accumulators keep the FMA units busy and fit the registers (16 on AVX2, 32 on
    // AVX-512, with the weights, the scales and an activation vector beside), and each
    // activation load serves R rows; one function per R up to the largest.
    #[cfg(target_arch = "x86_64")]
    macro_rules! table {
        ($isa:ident: $($m:literal => $u:literal [$($r:literal)*]),*) => {
            match (m, scaled) {
                $(
                    ($m, false) => Pass::new(m, &[$($isa::panel::<$m, $r, $u, false> as PanelFn),*]),
                    ($m, true) => Pass::new(m, &[$($isa::panel::<$m, $r, $u, true> as PanelFn),*]),
                )*
                _ => unreachable!("cpu_gemv: {} pass of {m} activation rows", kernel.name()),
            }
        };
    }
    match kernel {
        Kernel::Scalar if scaled => Pass::new(m, &[scalar::panel::<true>]),
        Kernel::Scalar => Pass::new(m, &[scalar::panel::<false>]),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => table!(avx2: 1 => 2 [1 2 3 4], 2 => 1 [1 2 3 4], 3 => 1 [1 2], 4 => 1 [1 2], 5 => 1 [1], 6 => 1 [1], 7 => 1 [1], 8 => 1 [1]),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => table!(avx512:
            1 => 4 [1 2 3 4], 2 => 2 [1 2 3 4], 3 => 1 [1 2 3 4], 4 => 1 [1 2 3 4], 5 => 1 [1 2], 6 => 1 [1 2], 7 => 1 [1 2], 8 => 1 [1 2],
            9 => 1 [1 2], 10 => 1 [1 2], 11 => 1 [1 2], 12 => 1 [1 2]),
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("cpu_gemv: {} exists only on x86-64 (m = {m})", kernel.name()),
    }
}

/// Rows per parallel task: about 128 KiB of weights, and at least four tasks per thread
/// when the range is small, so the threads finish together.
pub(crate) fn rows_per_block(nr: usize, cols: usize, threads: usize) -> usize {
    const BLOCK_BYTES: usize = 128 << 10;
    (BLOCK_BYTES / cols).max(1).min(nr.div_ceil(4 * threads.max(1)).max(1))
}

pub(crate) fn par_blocks(pool: Option<&ThreadPool>, blocks: usize, run: impl Fn(usize) + Sync + Send) {
    let go = || (0..blocks).into_par_iter().for_each(&run);
    match pool {
        _ if blocks == 1 => run(0),
        Some(p) => p.install(go),
        None => go(),
    }
}

/// The output pointer, shared by the tasks, which write disjoint elements.
struct OutPtr(*mut f32);

// SAFETY: only `write` uses the pointer, under its callers' guarantee that no element is
// written twice or read concurrently.
unsafe impl Sync for OutPtr {}
unsafe impl Send for OutPtr {}

impl OutPtr {
    /// # Safety
    /// `i` is inside the output slice, which outlives the call, and no other thread
    /// accesses element `i` concurrently.
    unsafe fn write(&self, i: usize, v: f32) {
        // SAFETY: the caller's contract.
        unsafe { self.0.add(i).write(v) }
    }
}

mod scalar {
    use super::{Rows, LANES};
    use std::ops::Range;

    /// One weight row; eight independent lanes per activation row, in `f32`; the weights
    /// times the group scale when `SCALED` (else the caller applies the row's one scale).
    pub(super) fn panel<const SCALED: bool>(rows: &Rows, cols: Range<usize>, part: &mut [f32]) {
        let m = part.len() / LANES;
        super::check_panel(rows, &cols, m, 1, part);
        let (c0, len, gs) = (cols.start, cols.len(), rows.gs);
        let q = &rows.q[cols];
        for (i, p) in part.chunks_exact_mut(LANES).enumerate() {
            let x = &rows.x[i * rows.ldx..i * rows.ldx + len];
            let mut acc = [0f32; 8];
            // Columns relative to the panel; groups by absolute column.
            let (mut k0, mut g) = (0, rows.group);
            while k0 < len {
                let k1 = len.min((g + 1) * gs - c0);
                let sg = if SCALED { rows.s[g] } else { 1.0 };
                let (mut qc, mut xc) = (q[k0..k1].chunks_exact(8), x[k0..k1].chunks_exact(8));
                for (q8, x8) in (&mut qc).zip(&mut xc) {
                    for l in 0..8 {
                        let wv = if SCALED { q8[l] as f32 * sg } else { q8[l] as f32 };
                        acc[l] += x8[l] * wv;
                    }
                }
                for ((a, &qv), &xv) in acc.iter_mut().zip(qc.remainder()).zip(xc.remainder()) {
                    let wv = if SCALED { qv as f32 * sg } else { qv as f32 };
                    *a += xv * wv;
                }
                (k0, g) = (k1, g + 1);
            }
            for (p, a) in p.iter_mut().zip(acc) {
                *p += a;
            }
        }
    }
}

/// Generates an ISA's panel function from its vector width `$w`, its intrinsics and the
/// module's `tile`: `U` tiles of `W` columns in flight for `R` weight rows and `M`
/// activation rows (`U · R · M` accumulators), whole tiles first, then the piece's last
/// `< W` columns as one masked tile.
#[cfg(target_arch = "x86_64")]
macro_rules! panel_fn {
    ($features:literal, $w:expr, $zero:ident, $set1:ident, $add:ident, $load:ident, $store:ident) => {
        /// `R` weight rows against `M` activation rows over the columns `cols`.
        #[target_feature(enable = $features)]
        pub(super) fn panel<const M: usize, const R: usize, const U: usize, const SCALED: bool>(rows: &Rows, cols: Range<usize>, part: &mut [f32]) {
            const W: usize = $w;
            super::check_panel(rows, &cols, M, R, part);
            let (c0, len, n, gs, ldx) = (cols.start, cols.len(), rows.n, rows.gs, rows.ldx);
            let (qp, xp) = (rows.q[c0..].as_ptr(), rows.x.as_ptr());
            let mut acc = [[[$zero(); M]; R]; U];
            // Columns relative to the panel; groups by absolute column.
            let (mut k0, mut g) = (0, rows.group);
            while k0 < len {
                let k1 = len.min((g + 1) * gs - c0);
                let mut sv = [$set1(1.0); R];
                if SCALED {
                    for (j, v) in sv.iter_mut().enumerate() {
                        *v = $set1(rows.s[j * rows.groups + g]);
                    }
                }
                let mut k = k0;
                // SAFETY (every tile below): row j's panel bytes are qp[j·n..j·n + len]
                // and `xp` holds M rows of len at stride ldx (`check_panel`); each call
                // covers columns below k1 ≤ len.
                while k + W * U <= k1 {
                    if rows.ahead && k % 64 < W * U {
                        for j in 0..R {
                            // A hint: it reads nothing the program sees and cannot fault,
                            // wherever the address points (past the row end, say).
                            _mm_prefetch::<_MM_HINT_T0>(qp.wrapping_add(j * n + k + super::ROW_PREFETCH_BYTES));
                        }
                    }
                    for (u, a) in acc.iter_mut().enumerate() {
                        unsafe { tile::<M, R, SCALED, true>(qp, n, xp, ldx, k + u * W, W, &sv, a) };
                    }
                    k += W * U;
                }
                for a in acc.iter_mut() {
                    if k + W <= k1 {
                        unsafe { tile::<M, R, SCALED, true>(qp, n, xp, ldx, k, W, &sv, a) };
                        k += W;
                    }
                }
                if k < k1 {
                    unsafe { tile::<M, R, SCALED, false>(qp, n, xp, ldx, k, k1 - k, &sv, &mut acc[0]) };
                }
                (k0, g) = (k1, g + 1);
            }
            for (j, pj) in part.chunks_exact_mut(M * LANES).enumerate() {
                for (i, p) in pj.chunks_exact_mut(LANES).enumerate() {
                    let mut v = acc[0][j][i];
                    for a in &acc[1..] {
                        v = $add(v, a[j][i]);
                    }
                    // SAFETY: `p` holds LANES = 16 floats, at least one vector.
                    unsafe { $store(p.as_mut_ptr(), $add($load(p.as_ptr()), v)) };
                }
            }
        }
    };
}

/// AVX2 + FMA: 8 columns per vector.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Rows, LANES};
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// `c ≤ 8` columns from `k` of `R` rows: `acc[j][i] += (q[j, k..] · s[j]) · x[i, k..]`;
    /// when not `FULL` the columns past `c` count as zero and are not read.
    ///
    /// # Safety
    /// Row `j`'s bytes `q[j·n + k..j·n + k + c]` (`+ 8` when `FULL`) and every activation
    /// row's `x[i·ldx + k..i·ldx + k + c]` (likewise) are readable.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const M: usize, const R: usize, const SCALED: bool, const FULL: bool>(
        q: *const i8,
        n: usize,
        x: *const f32,
        ldx: usize,
        k: usize,
        c: usize,
        sv: &[__m256; R],
        acc: &mut [[__m256; M]; R],
    ) {
        let mut w = [_mm256_setzero_ps(); R];
        for (j, wj) in w.iter_mut().enumerate() {
            let wi = if FULL {
                // SAFETY: 8 bytes of row j from k, readable by the contract.
                unsafe { _mm_loadl_epi64(q.add(j * n + k) as *const __m128i) }
            } else {
                let mut bytes = [0i8; 8];
                // SAFETY: c ≤ 8 bytes of row j from k, readable by the contract, into a
                // local array of 8.
                unsafe { std::ptr::copy_nonoverlapping(q.add(j * n + k), bytes.as_mut_ptr(), c) };
                // SAFETY: `bytes` is 8 bytes long.
                unsafe { _mm_loadl_epi64(bytes.as_ptr() as *const __m128i) }
            };
            *wj = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(wi));
            if SCALED {
                *wj = _mm256_mul_ps(*wj, sv[j]);
            }
        }
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(c as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        for i in 0..M {
            // SAFETY: activation row i's columns k..k+8 (k..k+c when masked: a masked load
            // does not touch the lanes it drops), readable by the contract.
            let xv = unsafe {
                if FULL {
                    _mm256_loadu_ps(x.add(i * ldx + k))
                } else {
                    _mm256_maskload_ps(x.add(i * ldx + k), mask)
                }
            };
            for (aj, wj) in acc.iter_mut().zip(&w) {
                aj[i] = _mm256_fmadd_ps(*wj, xv, aj[i]);
            }
        }
    }

    panel_fn!("avx2,fma", 8, _mm256_setzero_ps, _mm256_set1_ps, _mm256_add_ps, _mm256_loadu_ps, _mm256_storeu_ps);
}

/// AVX-512 F + BW + VL: 16 columns per vector, ragged ends by masked loads (its
/// intrinsics and target features are stable since Rust 1.89, the crate's `rust-version`).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Rows, LANES};
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// `c ≤ 16` columns from `k` of `R` rows: `acc[j][i] += (q[j, k..] · s[j]) · x[i, k..]`;
    /// when not `FULL`, masked loads: the columns past `c` are zero and not read.
    ///
    /// # Safety
    /// Row `j`'s bytes `q[j·n + k..j·n + k + c]` (`+ 16` when `FULL`) and every activation
    /// row's `x[i·ldx + k..i·ldx + k + c]` (likewise) are readable.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const M: usize, const R: usize, const SCALED: bool, const FULL: bool>(
        q: *const i8,
        n: usize,
        x: *const f32,
        ldx: usize,
        k: usize,
        c: usize,
        sv: &[__m512; R],
        acc: &mut [[__m512; M]; R],
    ) {
        let mask: __mmask16 = if FULL { !0 } else { (1u32 << c).wrapping_sub(1) as __mmask16 };
        let mut w = [_mm512_setzero_ps(); R];
        for (j, wj) in w.iter_mut().enumerate() {
            // SAFETY: 16 bytes (c when masked; masked-off bytes are not accessed) of row j
            // from k, readable by the contract.
            let wi = unsafe {
                if FULL {
                    _mm_loadu_si128(q.add(j * n + k) as *const __m128i)
                } else {
                    _mm_maskz_loadu_epi8(mask, q.add(j * n + k))
                }
            };
            *wj = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(wi));
            if SCALED {
                *wj = _mm512_mul_ps(*wj, sv[j]);
            }
        }
        for i in 0..M {
            // SAFETY: activation row i's columns k..k+16 (k..k+c when masked), readable by
            // the contract.
            let xv = unsafe {
                if FULL {
                    _mm512_loadu_ps(x.add(i * ldx + k))
                } else {
                    _mm512_maskz_loadu_ps(mask, x.add(i * ldx + k))
                }
            };
            for (aj, wj) in acc.iter_mut().zip(&w) {
                aj[i] = _mm512_fmadd_ps(*wj, xv, aj[i]);
            }
        }
    }

    panel_fn!("avx512f,avx512bw,avx512vl", 16, _mm512_setzero_ps, _mm512_set1_ps, _mm512_add_ps, _mm512_loadu_ps, _mm512_storeu_ps);
}
