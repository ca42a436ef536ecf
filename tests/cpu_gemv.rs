//! The CPU INT8 GEMV (`stream::cpu_gemv`): every kernel this machine supports against an
//! f64 reference (within the rounding bound the module derives, `error_bound`) and against
//! the scalar kernel, on fresh random inputs (seed printed; `CPU_GEMV_SEED=… ` replays
//! one), outputs pre-filled with NaN and fenced by guard values; exact results where
//! f32 makes no rounding; any thread count giving the same bits. A kernel the CPU lacks
//! is skipped, saying so (and logged to `CODECLLM_SKIP_LOG`, as scripts/test.sh lists).
//!
//! `cargo test --release --test cpu_gemv -- --ignored --nocapture bench` prints the
//! bandwidth table (GEMV vs the read ceiling of the same bytes).
mod common;
use codecllm::app::bench::cpu_gemv::{bench, BenchSpec};
use codecllm::codec::Int8Matrix;
use codecllm::stream::cpu_gemv::{error_bound, gemv_int8, gemv_int8_with, Int8View, Kernel};
use common::{activations, env_list, log_skip as skip};

/// A fresh seed, printed, or `CPU_GEMV_SEED`'s (which replays a run).
fn seed() -> u64 {
    common::seed_from_env("CPU_GEMV_SEED")
}
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::ops::Range;

/// A random matrix whose rows cycle through kinds: uniform, only ±127, all zero, mostly
/// small with rare ±127, and uniform with a zero group scale.
struct Matrix {
    q: Vec<i8>,
    scales: Vec<f32>,
    cols: usize,
    group_size: usize,
}

impl Matrix {
    fn random(rng: &mut StdRng, rows: usize, cols: usize, group_size: usize) -> Matrix {
        let groups = cols.div_ceil(group_size.min(cols));
        let mut q = vec![0i8; rows * cols];
        let mut scales = vec![0f32; rows * groups];
        for r in 0..rows {
            let kind = r % 5;
            for v in &mut q[r * cols..(r + 1) * cols] {
                *v = match kind {
                    0 | 4 => rng.gen_range(-127..=127),
                    1 => [-127, 127][rng.gen_range(0..2)],
                    2 => 0,
                    _ if rng.gen_bool(0.02) => [-127, 127][rng.gen_range(0..2)],
                    _ => rng.gen_range(-8..=8),
                };
            }
            for (g, s) in scales[r * groups..(r + 1) * groups].iter_mut().enumerate() {
                *s = if kind == 4 && g == groups / 2 { 0.0 } else { rng.gen_range(1e-4f32..0.1) };
            }
        }
        Matrix { q, scales, cols, group_size }
    }

    fn weights(&self) -> Int8View<'_> {
        Int8View::new(&self.q, &self.scales, self.cols, self.group_size).unwrap()
    }

    /// `(y, Σ|x q s|)` in f64, both `[m, rows.len()]`.
    fn reference(&self, rows: Range<usize>, x: &[f32], m: usize) -> (Vec<f64>, Vec<f64>) {
        let (cols, gs) = (self.cols, self.group_size.min(self.cols));
        let groups = cols.div_ceil(gs);
        let nr = rows.len();
        let (mut y, mut a) = (vec![0f64; m * nr], vec![0f64; m * nr]);
        for i in 0..m {
            for (j, r) in rows.clone().enumerate() {
                let (mut s, mut t) = (0f64, 0f64);
                for k in 0..cols {
                    let p = x[i * cols + k] as f64 * self.q[r * cols + k] as f64 * self.scales[r * groups + k / gs] as f64;
                    s += p;
                    t += p.abs();
                }
                y[i * nr + j] = s;
                a[i * nr + j] = t;
            }
        }
        (y, a)
    }
}

const GUARD: f32 = 12345.0;
const PAD: usize = 37;

/// Runs the kernel into a NaN-filled output fenced by guard values; checks the fences.
fn run(kernel: Kernel, w: &Int8View, rows: Range<usize>, x: &[f32], m: usize, pool: Option<&rayon::ThreadPool>) -> Vec<f32> {
    let n = m * rows.len();
    let mut buf = vec![GUARD; PAD + n + PAD];
    buf[PAD..PAD + n].fill(f32::NAN);
    gemv_int8_with(kernel, w, rows, x, m, &mut buf[PAD..PAD + n], pool).unwrap();
    assert!(buf[..PAD].iter().chain(&buf[PAD + n..]).all(|v| v.to_bits() == GUARD.to_bits()), "{kernel:?} wrote outside y");
    buf[PAD..PAD + n].to_vec()
}

/// Checks `got` against the f64 reference within `factor · Σ|x q s|` per element (plus the
/// reference's own f64 rounding) and returns ‖got − want‖₂ / ‖want‖₂, itself checked
/// against the bound that follows, `factor · ‖Σ|x q s|‖₂ / ‖want‖₂`.
fn check(what: &str, got: &[f32], want: &[f64], mag: &[f64], factor: f64, cols: usize) -> f64 {
    let f64_err = (cols + 2) as f64 * f64::EPSILON;
    let (mut num, mut den, mut magsq) = (0f64, 0f64, 0f64);
    for (i, ((&g, &w), &a)) in got.iter().zip(want).zip(mag).enumerate() {
        assert!(g.is_finite(), "{what}: y[{i}] = {g} (not written?)");
        let err = (g as f64 - w).abs();
        assert!(err <= (factor + f64_err) * a, "{what}: y[{i}] = {g}, want {w}: error {err:e} > bound {:e}", (factor + f64_err) * a);
        num += err * err;
        den += w * w;
        magsq += a * a;
    }
    if den == 0.0 {
        return 0.0;
    }
    let rel = (num / den).sqrt();
    assert!(rel <= (factor + f64_err) * (magsq / den).sqrt(), "{what}: relative L2 error {rel:e} over its bound");
    rel
}

/// (rows of the matrix, cols, group size, rows computed): odd widths (not multiples of
/// 8/16/32/64), one row, one column, ranges not starting at 0, per-row and grouped scales
/// (last group partial), group sizes not multiples of 16, group size > cols.
const SHAPES: &[(usize, usize, usize, Range<usize>)] = &[
    (1, 1, 1, 0..1),
    (1, 7, 7, 0..1),
    (3, 15, 15, 1..3),
    (5, 17, 17, 2..5),
    (4, 33, 1000, 0..4),
    (6, 100, 16, 3..6),
    (7, 200, 32, 1..6),
    (5, 255, 255, 0..5),
    (6, 1031, 1031, 1..6),
    (6, 1031, 128, 2..6),
    (4, 513, 48, 0..4),
    (5, 50, 7, 1..5),
    (3, 64, 64, 0..3),
    (9, 129, 64, 4..9),
    (41, 67, 67, 5..41),
];

/// Larger shapes (several row blocks, long rows), fewer batch sizes.
const BIG: &[(usize, usize, usize, Range<usize>)] = &[(300, 4101, 128, 13..300), (257, 515, 515, 0..257), (3, 14343, 14343, 1..3), (3, 14343, 128, 0..3)];

fn batches(big: bool) -> Vec<usize> {
    if big {
        vec![1, 3, 16]
    } else {
        (1..=16).chain([17, 33]).collect()
    }
}

/// Every shape and batch: `kernel` against the reference and, unless it is the scalar
/// kernel, against the scalar kernel (both within the bound, so within twice it of each
/// other). Returns the worst relative L2 error against the reference.
fn against_reference(kernel: Kernel, rng: &mut StdRng) -> f64 {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let mut worst = 0f64;
    for (big, shapes) in [(false, SHAPES), (true, BIG)] {
        for (n, cols, gs, rows) in shapes.iter().cloned() {
            let mat = Matrix::random(rng, n, cols, gs);
            let w = mat.weights();
            let factor = error_bound(cols, w.groups());
            for m in batches(big) {
                let x = activations(rng, m * cols);
                let (want, mag) = mat.reference(rows.clone(), &x, m);
                let what = format!("{kernel:?} [{n}×{cols}] group {gs} rows {rows:?} m={m}");
                let got = run(kernel, &w, rows.clone(), &x, m, Some(&pool));
                worst = worst.max(check(&what, &got, &want, &mag, factor, cols));
                if kernel != Kernel::Scalar {
                    let scalar = run(Kernel::Scalar, &w, rows.clone(), &x, m, None);
                    for (i, ((&g, &s), &a)) in got.iter().zip(&scalar).zip(&mag).enumerate() {
                        let d = (g as f64 - s as f64).abs();
                        assert!(d <= 2.0 * factor * a, "{what}: y[{i}] = {g}, scalar kernel {s}: apart by {d:e} > {:e}", 2.0 * factor * a);
                    }
                }
            }
        }
    }
    worst
}

/// Integer activations and power-of-two scales: every product and partial sum is exact in
/// f32, so every kernel must give the reference's value exactly, whatever its order.
fn exact(kernel: Kernel, rng: &mut StdRng) {
    for (n, cols, gs, rows) in SHAPES.iter().chain(BIG).filter(|s| s.1 <= 2000).cloned() {
        let mut mat = Matrix::random(rng, n, cols, gs);
        for s in &mut mat.scales {
            *s = f32::powi(2.0, rng.gen_range(-2..=2));
        }
        let w = mat.weights();
        for m in [1, 2, 5, 8, 9, 16] {
            let x: Vec<f32> = (0..m * cols).map(|_| rng.gen_range(-4i32..=4) as f32).collect();
            let (want, _) = mat.reference(rows.clone(), &x, m);
            let got = run(kernel, &w, rows.clone(), &x, m, None);
            for (i, (&g, &v)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g as f64, v, "{kernel:?} [{n}×{cols}] group {gs} rows {rows:?} m={m}: y[{i}] is not exact");
            }
        }
    }
}

fn kernel_suite(kernel: Kernel, test: &str) {
    if !kernel.is_supported() {
        return skip(test, &format!("this CPU lacks the {} kernel's features", kernel.name()));
    }
    let mut rng = StdRng::seed_from_u64(seed());
    exact(kernel, &mut rng);
    let worst = against_reference(kernel, &mut rng);
    eprintln!("{kernel:?}: worst relative L2 error against f64 {worst:.2e} (bound for 4096 columns: {:.2e})", error_bound(4096, 1));
}

#[test]
fn scalar_kernel_matches_f64_reference() {
    kernel_suite(Kernel::Scalar, "scalar_kernel_matches_f64_reference");
}

#[test]
fn avx2_kernel_matches_reference_and_scalar() {
    kernel_suite(Kernel::Avx2, "avx2_kernel_matches_reference_and_scalar");
}

#[test]
fn avx512_kernel_matches_reference_and_scalar() {
    kernel_suite(Kernel::Avx512, "avx512_kernel_matches_reference_and_scalar");
}

/// The default kernel gives the same bits on the global pool, on 1 and 3 threads, and when
/// the rows are split in two calls (as between the GPU and the CPU).
#[test]
fn same_bits_for_any_threads_and_split() {
    let mut rng = StdRng::seed_from_u64(seed());
    let best = Kernel::best();
    assert!(best.is_supported() && Kernel::supported().contains(&best) && Kernel::supported()[0] == Kernel::Scalar);
    eprintln!("best kernel here: {best:?}; supported: {:?}", Kernel::supported());
    let pools: Vec<_> = [1, 3].iter().map(|&t| rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap()).collect();
    for (n, cols, gs) in [(517, 300, 300), (200, 1000, 128)] {
        let mat = Matrix::random(&mut rng, n, cols, gs);
        let w = mat.weights();
        for m in [1, 4, 13] {
            let x = activations(&mut rng, m * cols);
            let mut all = vec![f32::NAN; m * n];
            gemv_int8(&w, 0..n, &x, m, &mut all, None).unwrap();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            for p in &pools {
                assert_eq!(bits(&run(best, &w, 0..n, &x, m, Some(p))), bits(&all), "{best:?} {n}×{cols} m={m} on {} threads", p.current_num_threads());
            }
            let cut = n / 3;
            let (lo, hi) = (run(best, &w, 0..cut, &x, m, None), run(best, &w, cut..n, &x, m, Some(&pools[1])));
            for i in 0..m {
                let joined = [&lo[i * cut..(i + 1) * cut], &hi[i * (n - cut)..(i + 1) * (n - cut)]].concat();
                assert_eq!(bits(&joined), bits(&all[i * n..(i + 1) * n]), "{best:?} {n}×{cols} m={m}: split at row {cut}");
            }
        }
    }
}

/// Zero rows give exactly 0, all-±127 rows the exact integer sum, on every kernel.
#[test]
fn zero_and_saturated_rows() {
    let cols = 1000;
    let mut q = vec![0i8; 4 * cols];
    q[cols..2 * cols].fill(127);
    q[2 * cols..3 * cols].fill(-127);
    for (k, v) in q[3 * cols..].iter_mut().enumerate() {
        *v = if k % 2 == 0 { 127 } else { -127 };
    }
    let x: Vec<f32> = (0..2 * cols).map(|k| if k < cols { 1.0 } else { 2.0 }).collect();
    for (gs, scales) in [(cols, vec![1.0f32, 0.5, 0.25, 1.0]), (16, vec![1.0f32; 4 * cols.div_ceil(16)])] {
        let w = Int8View::new(&q, &scales, cols, gs).unwrap();
        for kernel in Kernel::supported() {
            let y = run(kernel, &w, 0..4, &x, 2, None);
            let s1 = if gs == cols { [0.0, 127000.0 * 0.5, -127000.0 * 0.25, 0.0] } else { [0.0, 127000.0, -127000.0, 0.0] };
            let want: Vec<f32> = s1.iter().chain(&s1.map(|v| 2.0 * v)).copied().collect();
            assert_eq!(y, want, "{kernel:?} group {gs}");
            assert!(y[0].to_bits() == 0 && y[4].to_bits() == 0, "{kernel:?}: zero rows give +0.0");
        }
    }
}

/// A slice of `n` values ending right before an inaccessible page, so a read past its
/// end faults (the kernels' vector loads must stop at the last element: masked or
/// copied ragged ends).
#[cfg(unix)]
struct Fenced<T> {
    base: *mut libc::c_void,
    len: usize,
    data: *mut T,
    n: usize,
}

#[cfg(unix)]
impl<T: Copy> Fenced<T> {
    fn new(values: &[T]) -> Self {
        let page = 4096usize;
        let bytes = std::mem::size_of_val(values);
        let len = bytes.div_ceil(page) * page + page;
        // SAFETY: a fresh private anonymous mapping; checked below.
        let base = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
        assert_ne!(base, libc::MAP_FAILED);
        // SAFETY: the last page of the mapping just made.
        assert_eq!(unsafe { libc::mprotect(base.cast::<u8>().add(len - page).cast(), page, libc::PROT_NONE) }, 0);
        // SAFETY: `bytes` before the guard page, inside the mapping, aligned for T (its
        // size divides the page-aligned end).
        let data = unsafe { base.cast::<u8>().add(len - page - bytes).cast::<T>() };
        // SAFETY: `data` has room for `values` (just computed), which do not overlap it.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), data, values.len()) };
        Fenced { base, len, data, n: values.len() }
    }

    fn get(&self) -> &[T] {
        // SAFETY: `n` initialized values at `data`, alive while `self` is.
        unsafe { std::slice::from_raw_parts(self.data, self.n) }
    }
}

#[cfg(unix)]
impl<T> Drop for Fenced<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer borrowed.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Weights, scales and activations all end at an inaccessible page; every kernel reads
/// up to their last element and not one byte further (a fault would kill the test).
#[cfg(unix)]
#[test]
fn no_read_past_the_inputs() {
    let mut rng = StdRng::seed_from_u64(seed());
    for (n, cols, gs) in [(3, 13, 13), (4, 100, 16), (2, 129, 64), (5, 1, 1), (3, 4103, 128), (6, 77, 7)] {
        let mat = Matrix::random(&mut rng, n, cols, gs);
        let (q, s) = (Fenced::new(&mat.q), Fenced::new(&mat.scales));
        let w = Int8View::new(q.get(), s.get(), cols, gs).unwrap();
        for m in [1, 2, 3, 5, 9, 16] {
            let xv = activations(&mut rng, m * cols);
            let x = Fenced::new(&xv);
            let (want, mag) = mat.reference(1..n, &xv, m);
            for kernel in Kernel::supported() {
                let got = run(kernel, &w, 1..n, x.get(), m, None);
                check(&format!("{kernel:?} fenced [{n}×{cols}] group {gs} m={m}"), &got, &want, &mag, error_bound(cols, w.groups()), cols);
            }
        }
    }
}

#[test]
fn empty_calls_write_nothing() {
    let (q, s) = (vec![1i8; 3 * 20], vec![1f32; 3]);
    let w = Int8View::new(&q, &s, 20, 20).unwrap();
    for kernel in Kernel::supported() {
        gemv_int8_with(kernel, &w, 1..1, &[1.0; 40], 2, &mut [], None).unwrap();
        gemv_int8_with(kernel, &w, 0..3, &[], 0, &mut [], None).unwrap();
    }
}

#[test]
fn from_int8_matrix() {
    let m = Int8Matrix { rows: 2, cols: 20, group_size: 16, q: (0..40).map(|v| v as i8 - 20).collect(), scales: vec![1.0, 2.0, 0.5, 0.25] };
    let w = Int8View::try_from(&m).unwrap();
    assert_eq!((w.rows(), w.cols(), w.group_size(), w.groups()), (2, 20, 16, 2));
    let mut y = [0f32; 2];
    gemv_int8(&w, 0..2, &[1.0; 20], 1, &mut y, None).unwrap();
    let want = |r: usize| (0..20).map(|k| m.q[r * 20 + k] as f32 * m.scales[r * 2 + k / 16]).sum::<f32>();
    assert_eq!(y, [want(0), want(1)]);
}

/// Calls out of contract are errors that say what is wrong, and write nothing.
#[test]
fn bad_calls_are_errors() {
    let (q, s) = (vec![1i8; 3 * 20], vec![1f32; 3]);
    let w = Int8View::new(&q, &s, 20, 20).unwrap();
    let mut y = [7.0f32; 3];
    let err = |r: codecllm::error::Result<()>| r.unwrap_err().to_string();
    assert!(err(gemv_int8(&w, 0..3, &[1.0; 21], 1, &mut y, None)).contains("x must be"));
    assert!(err(gemv_int8(&w, 2..4, &[1.0; 20], 1, &mut y[..2], None)).contains("outside a matrix"));
    assert_eq!(y, [7.0; 3]);
    assert!(Int8View::new(&q, &s, 20, 16).unwrap_err().to_string().contains("scales"));
    assert!(Int8View::new(&q[..59], &s, 20, 20).unwrap_err().to_string().contains("rows of 20"));
    assert!(Int8View::new(&q, &s, 0, 20).is_err() && Int8View::new(&q, &s, 20, 0).is_err());
}

#[test]
fn bench_runs() {
    for kernel in Kernel::supported() {
        let spec = BenchSpec { kernel, rows: 64, cols: 300, group_size: 300, m: 2, threads: 2, runs: 5, min_total_bytes: 1 << 20 };
        let r = bench(&spec);
        assert!(r.gemv_gbs > 0.0 && r.read_gbs > 0.0 && r.memcpy_gbs > 0.0 && r.copies * 64 * 300 >= 1 << 20, "{r:?}");
    }
}

/// The bandwidth table: 14336×4096 and 4096×4096 INT8 (per-row scales and groups of 128),
/// m = 1, 4, 16, 1 and 2 threads, with the best kernel; calls rotate through copies
/// totalling 1 GiB (far beyond the L3), each figure the median of 15 calls after a warm-up
/// pass. `CPU_GEMV_THREADS=1,2,4,8,16`, `CPU_GEMV_M=1,4`, `CPU_GEMV_SHAPES=4096x14336`,
/// `CPU_GEMV_GROUPS=0,128` (0: per row) and `CPU_GEMV_KERNELS=scalar,avx2,avx512` change it.
#[test]
#[ignore = "benchmark: cargo test --release --test cpu_gemv -- --ignored --nocapture bench_table"]
fn bench_table() {
    let threads: Vec<usize> = env_list("CPU_GEMV_THREADS", &[1, 2]);
    let ms: Vec<usize> = env_list("CPU_GEMV_M", &[1, 4, 16]);
    let groups: Vec<usize> = env_list("CPU_GEMV_GROUPS", &[0, 128]);
    let shapes: Vec<(usize, usize)> = env_list("CPU_GEMV_SHAPES", &["14336x4096".to_string(), "4096x4096".to_string()])
        .iter()
        .map(|s: &String| s.split_once('x').map(|(r, c)| (r.parse().unwrap(), c.parse().unwrap())).expect("shape ROWSxCOLS"))
        .collect();
    let kernels: Vec<Kernel> = env_list("CPU_GEMV_KERNELS", &[Kernel::best().name().to_string()])
        .iter()
        .map(|n: &String| *Kernel::ALL.iter().find(|k| k.name() == n).expect("kernel scalar, avx2 or avx512"))
        .filter(|k| k.is_supported())
        .collect();
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu.lines().find_map(|l| l.strip_prefix("model name")).map_or("?", |m| m.trim_start_matches([' ', '\t', ':']));
    println!("{model}, {} CPUs; kernels here: {:?}", std::thread::available_parallelism().map_or(0, |n| n.get()), Kernel::supported());
    println!(
        "{:>7} {:>11} {:>5} {:>3} {:>3} {:>8} {:>9} {:>9} {:>9} {:>8}",
        "kernel", "shape", "group", "m", "thr", "ms", "GEMV GB/s", "read GB/s", "memcpy", "of read"
    );
    for &kernel in &kernels {
        for &(rows, cols) in &shapes {
            for &g in &groups {
                for &m in &ms {
                    for &t in &threads {
                        let group_size = if g == 0 { cols } else { g };
                        let spec = BenchSpec { kernel, rows, cols, group_size, m, threads: t, runs: 15, min_total_bytes: 1 << 30 };
                        let r = bench(&spec);
                        println!(
                            "{:>7} {:>11} {:>5} {:>3} {:>3} {:>8.3} {:>9.2} {:>9.2} {:>9.2} {:>7.0}%",
                            kernel.name(),
                            format!("{rows}x{cols}"),
                            if g == 0 { "row".to_string() } else { g.to_string() },
                            m,
                            t,
                            r.gemv_ms,
                            r.gemv_gbs,
                            r.read_gbs,
                            r.memcpy_gbs,
                            100.0 * r.of_ceiling()
                        );
                    }
                }
            }
        }
    }
}

/// The GEMV on GGUF blocks as stored (`stream::cpu_ggml`): every type at batches 1, 3 and
/// 9 (two passes of its 8 rows) against the f64 product with the dequantized weights, on a
/// row count that leaves a task's run of rows partly past the end, outputs pre-filled with
/// NaN; every build this CPU supports gives the portable build's bits.
#[test]
fn ggml_gemv_matches_the_dequantized_product_in_every_build() {
    use codecllm::abi::GGML_LAYOUTS;
    use codecllm::codec::ggml::{dequantize, GgmlType};
    use codecllm::stream::cpu_ggml::{gemv_ggml, gemv_ggml_with, GgmlMatrix};
    let mut rng = StdRng::seed_from_u64(seed());
    for (layout, l) in GGML_LAYOUTS.iter().enumerate() {
        let (rows, cols) = (19, 2 * l.block_elems as usize);
        let blocks = codecllm::app::bench::data::random_ggml_blocks(&mut rng, layout, rows, cols, true).unwrap();
        let mut wf = Vec::new();
        dequantize(GgmlType::from_id(l.id).unwrap(), &blocks, &mut wf);
        let w = GgmlMatrix::from_blocks(layout, &blocks, rows, cols).unwrap();
        for m in [1, 3, 9] {
            let x: Vec<f32> = (0..m * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let mut y = vec![f32::NAN; m * rows];
            gemv_ggml(&w, &x, m, &mut y).unwrap();
            let (mut err, mut norm) = (0f64, 0f64);
            for i in 0..m {
                for r in 0..rows {
                    let want: f64 = (0..cols).map(|k| x[i * cols + k] as f64 * wf[r * cols + k] as f64).sum();
                    err += (y[i * rows + r] as f64 - want).powi(2);
                    norm += want * want;
                }
            }
            let rel = (err / norm.max(1e-30)).sqrt();
            assert!(rel < 1e-5, "{} {rows}x{cols} m={m}: relative error {rel}", l.name);
            let mut portable = vec![f32::NAN; m * rows];
            gemv_ggml_with(Kernel::Scalar, &w, &x, m, &mut portable).unwrap();
            for k in Kernel::ALL {
                if !k.is_supported() {
                    skip("ggml_gemv_matches_the_dequantized_product_in_every_build", &format!("no {} on this CPU", k.name()));
                    continue;
                }
                let mut got = vec![f32::NAN; m * rows];
                gemv_ggml_with(k, &w, &x, m, &mut got).unwrap();
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&portable), "{} m={m}: the {} build differs from the portable one", l.name, k.name());
            }
        }
    }
}

/// Blocks that do not make the matrix, and x or y too short for it, are refused.
#[test]
fn ggml_gemv_refuses_bad_shapes() {
    use codecllm::stream::cpu_ggml::{gemv_ggml, GgmlMatrix};
    let mut rng = StdRng::seed_from_u64(1);
    let blocks = codecllm::app::bench::data::random_ggml_blocks(&mut rng, 0, 2, 64, false).unwrap();
    assert!(GgmlMatrix::from_blocks(0, &blocks, 3, 64).is_err());
    assert!(GgmlMatrix::from_blocks(0, &blocks, 2, 48).is_err());
    assert!(GgmlMatrix::from_blocks(99, &blocks, 2, 64).is_err());
    let w = GgmlMatrix::from_blocks(0, &blocks, 2, 64).unwrap();
    let mut y = vec![0f32; 2];
    assert!(gemv_ggml(&w, &[0.0; 63], 1, &mut y).is_err());
    assert!(gemv_ggml(&w, &[0.0; 64], 1, &mut y[..1]).is_err());
}

/// The GGUF-block GEMV's bandwidth table: 14336x4096 of Q4_K, Q6_K and Q8_0 (the types of a
/// Q4_K_M file and its LM head) at m = 1, over copies totalling 1 GiB (beyond the L3), the
/// median of 15 calls after a warm-up pass, at each thread count of `CPU_GEMV_THREADS`
/// (default 1, 2 and every CPU) and with each build this CPU supports.
#[test]
#[ignore = "benchmark: cargo test --release --test cpu_gemv -- --ignored --nocapture ggml_bench_table"]
fn ggml_bench_table() {
    use codecllm::abi::GGML_LAYOUTS;
    use codecllm::stream::cpu_ggml::{gemv_ggml_with, GgmlMatrix};
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads: Vec<usize> = env_list("CPU_GEMV_THREADS", &[1, 2, cpus]);
    let mut rng = StdRng::seed_from_u64(seed());
    let (rows, cols) = (14336, 4096);
    println!("{:>7} {:>5} {:>3} {:>8} {:>9} {:>12}", "build", "type", "thr", "ms", "GB/s", "G weights/s");
    for name in ["Q4_K", "Q6_K", "Q8_0"] {
        let layout = GGML_LAYOUTS.iter().position(|l| l.name == name).unwrap();
        let blocks = codecllm::app::bench::data::random_ggml_blocks(&mut rng, layout, rows, cols, false).unwrap();
        let first = GgmlMatrix::from_blocks(layout, &blocks, rows, cols).unwrap();
        let copies = (1usize << 30).div_ceil(first.planes.len()).max(2);
        let mats: Vec<GgmlMatrix> = (0..copies).map(|_| GgmlMatrix { layout, planes: first.planes.clone(), rows, cols }).collect();
        let x: Vec<f32> = (0..cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let mut y = vec![0f32; rows];
        for kernel in Kernel::supported() {
            for &t in &threads {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
                let mut times: Vec<f64> = pool.install(|| {
                    mats.iter().for_each(|w| gemv_ggml_with(kernel, w, &x, 1, &mut y).unwrap());
                    (0..15)
                        .map(|i| {
                            let t0 = std::time::Instant::now();
                            gemv_ggml_with(kernel, &mats[i % copies], &x, 1, &mut y).unwrap();
                            t0.elapsed().as_secs_f64()
                        })
                        .collect()
                });
                times.sort_by(f64::total_cmp);
                let s = times[times.len() / 2];
                println!(
                    "{:>7} {:>5} {:>3} {:>8.3} {:>9.2} {:>12.2}",
                    kernel.name(),
                    name,
                    t,
                    s * 1e3,
                    first.planes.len() as f64 / s / 1e9,
                    (rows * cols) as f64 / s / 1e9
                );
            }
        }
    }
}
