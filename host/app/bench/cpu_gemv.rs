//! The CPU INT8 GEMV (`stream::cpu_gemv`) against the read bandwidth of the same bytes:
//! what the streaming planner needs to know to give the CPU a share of a layer's rows.
use crate::stream::cpu_gemv::{gemv_int8_with, par_blocks, rows_per_block, Int8View, Kernel};
use std::time::Instant;

/// What [`bench`] measured. Bandwidths count the INT8 weight bytes of the rows computed
/// (scales and activations are not counted), per second of the median call.
#[derive(Clone, Debug)]
pub struct BenchResult {
    /// What was measured: the spec, with `runs` and `group_size` as used (at least 5 runs,
    /// groups no wider than a row).
    pub spec: BenchSpec,
    /// Copies of the matrix the calls rotate through, and their total size in bytes.
    pub copies: usize,
    pub total_bytes: usize,
    /// The GEMV.
    pub gemv_gbs: f64,
    pub gemv_ms: f64,
    /// Summing the same bytes with the same threads and row blocks: the read-bandwidth
    /// ceiling a GEMV can reach.
    pub read_gbs: f64,
    /// `memcpy` of the same bytes per thread block (bytes copied per second; it also writes
    /// them, so it is below the read ceiling).
    pub memcpy_gbs: f64,
}

impl BenchResult {
    /// `gemv_gbs / read_gbs`.
    pub fn of_ceiling(&self) -> f64 {
        self.gemv_gbs / self.read_gbs
    }
}

/// What [`bench`] measures: `kernel` on a random `[rows, cols]` INT8 matrix (scales per
/// `group_size` columns) with `m` activation rows, on a pool of `threads`.
#[derive(Clone, Copy, Debug)]
pub struct BenchSpec {
    pub kernel: Kernel,
    pub rows: usize,
    pub cols: usize,
    pub group_size: usize,
    pub m: usize,
    pub threads: usize,
    /// Timed calls per figure (at least 5).
    pub runs: usize,
    /// The calls rotate through copies of the matrix totalling at least this many bytes:
    /// several times the L3 size, so the caches do not flatter.
    pub min_total_bytes: usize,
}

/// Measures [`gemv_int8_with`] as `spec` says, next to the read and `memcpy` bandwidth of
/// the same bytes measured the same way (same copies, pool, row blocks and number of
/// calls). One warm-up pass over every copy, then each figure is the median of
/// `spec.runs` timed calls, each on the copy least recently touched.
pub fn bench(spec: &BenchSpec) -> BenchResult {
    let BenchSpec { kernel, rows, cols, group_size, m, threads, runs, min_total_bytes } = *spec;
    let runs = runs.max(5);
    let size = rows * cols;
    let copies = min_total_bytes.div_ceil(size).max(2);
    let groups = cols.div_ceil(group_size.min(cols));
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let first: Vec<i8> = (0..size).map(|_| ((next() % 255) as i32 - 127) as i8).collect();
    let mats: Vec<Vec<i8>> = (0..copies).map(|_| first.clone()).collect();
    let scales: Vec<f32> = (0..rows * groups).map(|_| 1e-3 + (next() % 1000) as f32 * 1e-5).collect();
    let x: Vec<f32> = (0..m * cols).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect();
    let mut y = vec![0f32; m * rows];
    let mut dst = vec![0i8; size];
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("cpu_gemv bench: thread pool");

    let median = |mut t: Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let time = |f: &mut dyn FnMut(usize)| {
        (0..copies).for_each(&mut *f);
        median(
            (0..runs)
                .map(|i| {
                    let t = Instant::now();
                    f(i % copies);
                    t.elapsed().as_secs_f64()
                })
                .collect(),
        )
    };
    let gemv_s = time(&mut |c| {
        let w = Int8View::new(&mats[c], &scales, cols, group_size).expect("consistent by construction");
        gemv_int8_with(kernel, &w, 0..rows, &x, m, &mut y, Some(&pool)).expect("a supported kernel and matching shapes");
    });
    let block = rows_per_block(rows, cols, threads);
    let sink = std::sync::atomic::AtomicU64::new(0);
    let read_s = time(&mut |c| {
        let q = &mats[c];
        par_blocks(Some(&pool), rows.div_ceil(block), |b| {
            let s = read_sum(&q[b * block * cols..size.min((b + 1) * block * cols)]);
            sink.fetch_add(s, std::sync::atomic::Ordering::Relaxed);
        });
    });
    let memcpy_s = time(&mut |c| {
        let q = &mats[c];
        let out = OutBytes(dst.as_mut_ptr());
        let out = &out;
        par_blocks(Some(&pool), rows.div_ceil(block), |b| {
            let r = b * block * cols..size.min((b + 1) * block * cols);
            // SAFETY: `dst` has `size` bytes and outlives the call; blocks are disjoint.
            unsafe { out.copy(&q[r.clone()], r.start) };
        });
    });
    std::hint::black_box((&y, &dst, sink.into_inner()));
    let gbs = |s: f64| size as f64 / s / 1e9;
    BenchResult {
        spec: BenchSpec { group_size: group_size.min(cols), runs, ..*spec },
        copies,
        total_bytes: copies * size,
        gemv_gbs: gbs(gemv_s),
        gemv_ms: gemv_s * 1e3,
        read_gbs: gbs(read_s),
        memcpy_gbs: gbs(memcpy_s),
    }
}

struct OutBytes(*mut i8);

// SAFETY: only `copy` uses the pointer, into disjoint ranges.
unsafe impl Sync for OutBytes {}
unsafe impl Send for OutBytes {}

impl OutBytes {
    /// # Safety
    /// `at..at + src.len()` is inside the destination, which outlives the call, and no
    /// other thread touches it concurrently.
    unsafe fn copy(&self, src: &[i8], at: usize) {
        // SAFETY: the caller's contract; `src` is a different allocation.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.0.add(at), src.len()) }
    }
}

/// Reads every byte (a wrapping sum of 64-bit words), as fast as the ISA allows.
fn read_sum(b: &[i8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        fn avx2(b: &[i8]) -> u64 {
            sum_words(b)
        }
        // SAFETY: AVX2 is present (checked just above).
        return unsafe { avx2(b) };
    }
    sum_words(b)
}

#[inline(always)]
fn sum_words(b: &[i8]) -> u64 {
    let (head, words, tail) = bytemuck::pod_align_to::<i8, u64>(b);
    let mut acc = [0u64; 8];
    let mut chunks = words.chunks_exact(8);
    for c in &mut chunks {
        for (a, &w) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(w);
        }
    }
    let edge = head.iter().chain(tail).fold(0u64, |s, &v| s.wrapping_add(v as u64));
    chunks.remainder().iter().chain(&acc).fold(edge, |s, &w| s.wrapping_add(w))
}
