//! The integer GGUF GEMV (`stream::cpu_ggml_q8`): Q4_K and Q6_K blocks against the f64
//! product of the dequantized weights (`codec::ggml::dequantize`) with the quantized row
//! x̂ (isolating the kernel) and with x itself (adding the int8 rounding of x, within the
//! bound it implies); every build against the portable one, bit for bit; refusals. Fresh
//! random inputs each run (seed printed; `CPU_GEMV_SEED=…` replays one), outputs filled
//! with NaN before each call and fenced by guard values.
//!
//! `cargo test --release --test cpu_ggml_q8 -- --ignored --nocapture q8_bench_table`
//! prints the bandwidth table (the f32 product of `cpu_ggml` beside it).
mod common;
use codecllm::abi::GGML_LAYOUTS;
use codecllm::codec::ggml::{dequantize, GgmlType};
use codecllm::stream::cpu_gemv::Kernel;
use codecllm::stream::cpu_ggml::{gemv_ggml_rows, GgmlMatrix, GgmlView};
use codecllm::stream::cpu_ggml_q8::{gemv_q8, gemv_q8_with, q8_supported, Q8Row};
use common::{activations, env_list, log_skip as skip};

/// A fresh seed, printed, or `CPU_GEMV_SEED`'s (which replays a run).
fn seed() -> u64 {
    common::seed_from_env("CPU_GEMV_SEED")
}
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::ops::Range;

const Q4_K: usize = 5;
const Q6_K: usize = 7;

/// Random valid blocks of `layout` (`extreme`: second scales over 9 decades) as planes,
/// and their values.
fn matrix(rng: &mut StdRng, layout: usize, rows: usize, cols: usize, extreme: bool) -> (GgmlMatrix, Vec<f32>) {
    let blocks = codecllm::app::bench::data::random_ggml_blocks(rng, layout, rows, cols, extreme).unwrap();
    let mut values = Vec::new();
    dequantize(GgmlType::from_id(GGML_LAYOUTS[layout].id).unwrap(), &blocks, &mut values);
    assert!(values.iter().any(|&v| v != 0.0));
    (GgmlMatrix::from_blocks(layout, &blocks, rows, cols).unwrap(), values)
}

/// x̂ in f64 (exact: an f32 step times an integer of 8 bits).
fn dequantized(xq: &Q8Row) -> Vec<f64> {
    xq.quants().iter().enumerate().map(|(k, &q)| xq.scales()[k / 256] as f64 * q as f64).collect()
}

const GUARD: f32 = 12345.0;
const PAD: usize = 5;

/// The product into a NaN-filled output fenced by guard values; checks the fences.
fn run(kernel: Kernel, w: &GgmlView, rows: Range<usize>, x: &Q8Row) -> Vec<f32> {
    let n = rows.len();
    let mut buf = vec![GUARD; PAD + n + PAD];
    buf[PAD..PAD + n].fill(f32::NAN);
    gemv_q8_with(kernel, w, rows, x, &mut buf[PAD..PAD + n]).unwrap();
    assert!(buf[..PAD].iter().chain(&buf[PAD + n..]).all(|v| v.to_bits() == GUARD.to_bits()), "{kernel:?} wrote outside y");
    buf[PAD..PAD + n].to_vec()
}

/// Rows `rows` of the reference products: (Σ w x̂, Σ |w x̂|, Σ w x, Σ |w| dx / 2), all f64.
struct Reference {
    quantized: Vec<f64>,
    magnitude: Vec<f64>,
    exact: Vec<f64>,
    rounding: Vec<f64>,
}

fn reference(w: &[f32], cols: usize, rows: Range<usize>, x: &[f32], xq: &Q8Row) -> Reference {
    let xh = dequantized(xq);
    let mut r = Reference { quantized: vec![], magnitude: vec![], exact: vec![], rounding: vec![] };
    for row in rows {
        let w = &w[row * cols..(row + 1) * cols];
        let (mut q, mut m, mut e, mut d) = (0f64, 0f64, 0f64, 0f64);
        for k in 0..cols {
            let wk = w[k] as f64;
            q += wk * xh[k];
            m += (wk * xh[k]).abs();
            e += wk * x[k] as f64;
            d += wk.abs() * xq.scales()[k / 256] as f64 / 2.0;
        }
        r.quantized.push(q);
        r.magnitude.push(m);
        r.exact.push(e);
        r.rounding.push(d);
    }
    r
}

/// The kernel's error against Σ w x̂ relative to Σ |w x̂|: each block's integer sums are
/// exact, then ~6 f32 roundings a block (its two factors, their products, the difference
/// of Q4_K's two terms, the running sum's add) and one for the f32 dequantized weight, all
/// of at most 2⁻²⁴ of terms that are ≤ Σ |w x̂| where the two terms of Q4_K do not cancel;
/// 1e-5 leaves room for 160 of them (4096 columns are 16 blocks).
const KERNEL_BOUND: f64 = 1e-5;
/// |x − x̂| ≤ (1/2 + 127 · 2⁻²⁴) dx: x / d rounds (once, in f32) to the nearest integer.
const ROUNDING_SLACK: f64 = 1.0 + 2e-5;

/// For Q4_K and Q6_K, typical and extreme blocks, on shapes with a row range not starting
/// at 0 and runs of rows past a task's 16: every build this CPU has against the f64
/// products.
#[test]
fn matches_the_f64_product_of_the_quantized_row() {
    let mut rng = StdRng::seed_from_u64(seed());
    let shapes: [(usize, usize, Range<usize>); 4] = [(37, 512, 3..37), (5, 4096, 1..5), (40, 256, 17..40), (3, 14336, 0..3)];
    for layout in [Q4_K, Q6_K] {
        let name = GGML_LAYOUTS[layout].name;
        let (mut worst_kernel, mut worst_x, mut rms) = (0f64, 0f64, Vec::new());
        for extreme in [false, true] {
            for (rows, cols, range) in shapes.clone() {
                let (w, values) = matrix(&mut rng, layout, rows, cols, extreme);
                let x = activations(&mut rng, cols);
                let xq = Q8Row::quantize(&x).unwrap();
                let r = reference(&values, cols, range.clone(), &x, &xq);
                for kernel in Kernel::supported() {
                    let what = format!("{name} {kernel:?} {rows}x{cols} rows {range:?} extreme={extreme}");
                    let y = run(kernel, &w.view(), range.clone(), &xq);
                    let (mut num, mut den) = (0f64, 0f64);
                    for (i, &g) in y.iter().enumerate() {
                        assert!(g.is_finite(), "{what}: y[{i}] = {g}");
                        let (g, m) = (g as f64, r.magnitude[i]);
                        let err = (g - r.quantized[i]).abs();
                        assert!(err <= KERNEL_BOUND * m, "{what}: y[{i}] = {g}, Σ w x̂ = {}: error {err:e} > {KERNEL_BOUND} · {m:e}", r.quantized[i]);
                        worst_kernel = worst_kernel.max(err / m);
                        let bound = KERNEL_BOUND * m + ROUNDING_SLACK * r.rounding[i];
                        let err = (g - r.exact[i]).abs();
                        assert!(err <= bound, "{what}: y[{i}] = {g}, Σ w x = {}: error {err:e} > {bound:e}", r.exact[i]);
                        worst_x = worst_x.max(err / bound);
                        num += err * err;
                        den += r.exact[i] * r.exact[i];
                    }
                    rms.push((num / den).sqrt());
                }
            }
        }
        let mean = rms.iter().sum::<f64>() / rms.len() as f64;
        eprintln!(
            "{name}: worst |y − Σ w x̂| / Σ |w x̂| {worst_kernel:.1e} (bound {KERNEL_BOUND:.0e}); worst |y − Σ w x| of its bound {:.0}%; ‖y − Σ w x‖ / ‖Σ w x‖ {mean:.1e} on average",
            100.0 * worst_x
        );
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

/// Every build gives the portable build's bits, on 1 and 3 threads and with the rows split
/// in two calls.
#[test]
fn every_build_gives_the_scalar_bits() {
    let mut rng = StdRng::seed_from_u64(seed());
    let pools: Vec<_> = [1, 3].iter().map(|&t| rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap()).collect();
    for k in Kernel::ALL.into_iter().filter(|k| !k.is_supported()) {
        skip("every_build_gives_the_scalar_bits", &format!("no {} on this CPU", k.name()));
    }
    for layout in [Q4_K, Q6_K] {
        for extreme in [false, true] {
            for (rows, cols) in [(70, 1024), (17, 4096), (1, 256)] {
                let (w, _) = matrix(&mut rng, layout, rows, cols, extreme);
                let w = w.view();
                let x = activations(&mut rng, cols);
                let xq = Q8Row::quantize(&x).unwrap();
                let scalar = bits(&run(Kernel::Scalar, &w, 0..rows, &xq));
                for kernel in Kernel::supported() {
                    let what = format!("{} {kernel:?} {rows}x{cols} extreme={extreme}", GGML_LAYOUTS[layout].name);
                    for p in &pools {
                        assert_eq!(bits(&p.install(|| run(kernel, &w, 0..rows, &xq))), scalar, "{what} on {} threads", p.current_num_threads());
                    }
                    let cut = rows / 3;
                    let joined = [run(kernel, &w, 0..cut, &xq), run(kernel, &w, cut..rows, &xq)].concat();
                    assert_eq!(bits(&joined), scalar, "{what}: split at row {cut}");
                }
            }
        }
    }
}

/// The row as quantized: d = absmax / 127, q = x / d rounded and within ±127, |x − x̂| ≤ d / 2;
/// zero blocks and those whose d would be subnormal give 0, a non-finite value NaN for its block and for every
/// product with it.
#[test]
fn quantize_follows_q8_k() {
    let mut rng = StdRng::seed_from_u64(seed());
    let mut x = activations(&mut rng, 8 * 256);
    let scale = [1.0, 1e30, 1e-35, 0.0, 1e-40, 1.0, 1e36, 1e-3];
    for (b, s) in scale.iter().enumerate() {
        x[b * 256..(b + 1) * 256].iter_mut().for_each(|v| *v *= s);
    }
    x[5 * 256 + 7] = 0.5; // ties: 0.5 / d, and exact integers below
    let xq = Q8Row::quantize(&x).unwrap();
    assert_eq!((xq.len(), xq.is_empty(), xq.quants().len(), xq.scales().len()), (8 * 256, false, 8 * 256, 8));
    for (b, &d) in xq.scales().iter().enumerate() {
        let xb = &x[b * 256..(b + 1) * 256];
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let qb = &xq.quants()[b * 256..(b + 1) * 256];
        if scale[b] <= 1e-40 {
            assert!(d == 0.0 && qb.iter().all(|&q| q == 0), "block {b}: d {d}");
            continue;
        }
        assert_eq!(d, amax / 127.0, "block {b}");
        for (&v, &q) in xb.iter().zip(qb) {
            assert!((-127..=127).contains(&q), "block {b}: q {q}");
            assert_eq!(q as f32, (v / d).round_ties_even().clamp(-127.0, 127.0), "block {b}: x {v}, d {d}");
            assert!((v as f64 - d as f64 * q as f64).abs() <= d as f64 / 2.0 * ROUNDING_SLACK, "block {b}: x {v}, d {d}, q {q}");
        }
        assert!(qb.iter().any(|&q| q.abs() == 127), "block {b}: absmax does not reach 127");
    }
    // Non-finite values.
    let (w, _) = matrix(&mut rng, Q4_K, 3, 512, false);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = activations(&mut rng, 512);
        x[300] = bad;
        let xq = Q8Row::quantize(&x).unwrap();
        assert!(xq.scales()[0].is_finite() && xq.scales()[1].is_nan());
        for kernel in Kernel::supported() {
            assert!(run(kernel, &w.view(), 0..3, &xq).iter().all(|v| v.is_nan()), "{kernel:?} with x[300] = {bad}");
        }
    }
    let empty = Q8Row::quantize(&[]).unwrap();
    assert!(empty.is_empty() && empty.quants().is_empty() && empty.scales().is_empty());
}

/// Calls out of contract are errors, not panics, and write nothing.
#[test]
fn refusals() {
    let mut rng = StdRng::seed_from_u64(seed());
    for layout in 0..GGML_LAYOUTS.len() + 2 {
        let want = (layout == Q4_K || layout == Q6_K) && (Kernel::Avx2.is_supported() || Kernel::Avx512.is_supported());
        assert_eq!(q8_supported(layout), want, "layout {layout}");
    }
    let x = activations(&mut rng, 512);
    let xq = Q8Row::quantize(&x).unwrap();
    let mut y = [7.0f32; 4];
    let err = |r: codecllm::error::Result<()>| r.unwrap_err().to_string();
    // Q8_0 (index 4) and Q5_K (6): valid matrices of another type.
    for layout in [4, 6] {
        let (w, _) = matrix(&mut rng, layout, 3, 512, false);
        assert!(!q8_supported(layout));
        assert!(err(gemv_q8(&w.view(), 0..3, &xq, &mut y)).contains("cpu_ggml_q8"), "layout {layout}");
        for kernel in Kernel::supported() {
            assert!(err(gemv_q8_with(kernel, &w.view(), 0..3, &xq, &mut y)).contains("Q4_K and Q6_K only"), "layout {layout}");
        }
    }
    let (w, _) = matrix(&mut rng, Q4_K, 3, 512, false);
    let w = w.view();
    for kernel in Kernel::supported() {
        let call = |rows: Range<usize>, x: &Q8Row, y: &mut [f32]| err(gemv_q8_with(kernel, &w, rows, x, y));
        assert!(call(Range { start: 2, end: 1 }, &xq, &mut y).contains("rows"));
        assert!(call(1..4, &xq, &mut y).contains("rows"));
        assert!(call(4..4, &xq, &mut y).contains("rows"));
        assert!(call(0..3, &Q8Row::quantize(&x[..256]).unwrap(), &mut y).contains("x holds 256"));
        assert!(call(0..3, &Q8Row::quantize(&[x.clone(), x.clone()].concat()).unwrap(), &mut y).contains("x holds 1024"));
        assert!(call(0..3, &xq, &mut y[..2]).contains("y 2"));
        for (layout, planes) in [(Q4_K, &w.planes[1..]), (99, w.planes)] {
            assert!(gemv_q8_with(kernel, &GgmlView { layout, planes, ..w }, 0..3, &xq, &mut y).is_err(), "layout {layout}, {} bytes", planes.len());
        }
        assert!(gemv_q8_with(kernel, &GgmlView { cols: 256, ..w }, 0..3, &Q8Row::quantize(&x[..256]).unwrap(), &mut y).is_err());
        assert_eq!(y, [7.0; 4], "{kernel:?}: a refused call wrote y");
        // Empty ranges and a longer y are fine, and write only rows.len() values.
        gemv_q8_with(kernel, &w, 2..2, &xq, &mut []).unwrap();
        gemv_q8_with(kernel, &w, 1..3, &xq, &mut y).unwrap();
        assert!(y[..2].iter().all(|v| v.is_finite() && *v != 7.0) && y[2..] == [7.0; 2], "{kernel:?}: {y:?}");
        y = [7.0; 4];
    }
    for n in [1, 255, 257, 1000] {
        assert!(Q8Row::quantize(&vec![1.0; n]).unwrap_err().to_string().contains("256"), "{n} values");
    }
}

/// The integer GEMV's bandwidth table: 14336x4096 of Q4_K and Q6_K at m = 1, with `cpu_ggml`'s
/// f32 product (its best build) on the same planes beside each build here, over copies
/// totalling 1 GiB (beyond the L3), the median of 15 calls after a warm-up pass, at each
/// thread count of `CPU_GEMV_THREADS` (default 1, 2 and every CPU). `CPU_GEMV_ROWS=256
/// CPU_GEMV_MIB=0` (two copies of 256 rows, in cache) shows the compute ceiling instead.
#[test]
#[ignore = "benchmark: cargo test --release --test cpu_ggml_q8 -- --ignored --nocapture q8_bench_table"]
fn q8_bench_table() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads: Vec<usize> = env_list("CPU_GEMV_THREADS", &[1, 2, cpus]);
    let rows = env_list("CPU_GEMV_ROWS", &[14336])[0];
    let total = env_list("CPU_GEMV_MIB", &[1024usize])[0] << 20;
    let cols = 4096;
    let mut rng = StdRng::seed_from_u64(seed());
    let x = activations(&mut rng, cols);
    // Quantizing a row, the median of 101 calls.
    for n in [4096, 14336] {
        let v = activations(&mut rng, n);
        let mut times: Vec<f64> = (0..101)
            .map(|_| {
                let t0 = std::time::Instant::now();
                std::hint::black_box(Q8Row::quantize(std::hint::black_box(&v)).unwrap());
                t0.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!("quantize: {:.2} µs for {n} values", times[50] * 1e6);
    }
    let xq = Q8Row::quantize(&x).unwrap();
    println!("{:>9} {:>5} {:>3} {:>8} {:>9} {:>12}", "build", "type", "thr", "ms", "GB/s", "G weights/s");
    for layout in [Q4_K, Q6_K] {
        let name = GGML_LAYOUTS[layout].name;
        let blocks = codecllm::app::bench::data::random_ggml_blocks(&mut rng, layout, rows, cols, false).unwrap();
        let first = GgmlMatrix::from_blocks(layout, &blocks, rows, cols).unwrap();
        let copies = total.div_ceil(first.planes.len()).max(2);
        let mats: Vec<GgmlMatrix> = (0..copies).map(|_| GgmlMatrix { layout, planes: first.planes.clone(), rows, cols }).collect();
        let mut y = vec![0f32; rows];
        let builds: Vec<Option<Kernel>> = std::iter::once(None).chain(Kernel::supported().into_iter().map(Some)).collect();
        for &t in &threads {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
            for &build in &builds {
                let mut call = |w: &GgmlMatrix| match build {
                    None => gemv_ggml_rows(&w.view(), 0..rows, &x, 1, &mut y).unwrap(),
                    Some(k) => gemv_q8_with(k, &w.view(), 0..rows, &xq, &mut y).unwrap(),
                };
                let mut times: Vec<f64> = pool.install(|| {
                    mats.iter().for_each(&mut call);
                    (0..15)
                        .map(|i| {
                            let t0 = std::time::Instant::now();
                            call(&mats[i % copies]);
                            t0.elapsed().as_secs_f64()
                        })
                        .collect()
                });
                times.sort_by(f64::total_cmp);
                let s = times[times.len() / 2];
                println!(
                    "{:>9} {:>5} {:>3} {:>8.3} {:>9.2} {:>12.2}",
                    build.map_or("f32 best".to_string(), |k| format!("q8 {}", k.name())),
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
