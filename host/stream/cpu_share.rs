//! The CPU's rows of streamed units, computed in stream order: the GPU's input row goes
//! to pinned host memory, a host function (`gpu::launch_host_func`, a graph node when the
//! step is captured) runs the INT8 GEMV (`cpu_gemv`) on a thread pool of its own, and its
//! output rows are copied in after the GPU's band of the same matrix. While the CPU
//! computes, the link goes on copying the next units' GPU bands: the two read host RAM at
//! the same time, which is the point (issue 18: the CPU reads RAM faster than PCIe
//! carries it).
use super::cpu_gemv::{gemv_int8, Int8View};
use super::cpu_ggml::{gemv_ggml_rows, GgmlView};
use super::cpu_ggml_q8::{gemv_q8, q8_supported, Q8Row};
use super::store::{CpuMatrix, CpuRows};
use crate::codec::Int8Matrix;
use crate::error::{Error, Result};
use crate::gpu::{launch_host_func, Gpu, PinnedBuffer};
use cudarc::driver::{CudaStream, CudaView, CudaViewMut};
use half::f16;
use rayon::ThreadPool;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// What the host functions share; boxed so that their pointers survive moves of the
/// `CpuShare` (a captured graph keeps them).
struct Shared {
    pool: ThreadPool,
    /// FP32 copies of the input row and of the outputs (the GEMV's types).
    xf: Vec<f32>,
    yf: Vec<f32>,
    failed: AtomicBool,
    /// Products computed, and nanoseconds spent in host functions and in their GEMVs
    /// (`CpuShareStats`).
    jobs: AtomicU64,
    busy_ns: AtomicU64,
    gemv_ns: AtomicU64,
}

/// What the CPU share did since the model loaded: with the time a step takes, how much of
/// it the CPU worked (the rest it waited for the GPU's part of each block).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct CpuShareStats {
    /// Host functions run (two per split block and decode step).
    pub jobs: u64,
    /// Seconds inside them (conversions and GEMVs).
    pub busy_s: f64,
    /// Seconds in the GEMVs alone.
    pub gemv_s: f64,
}

impl CpuShareStats {
    /// What happened between `before` and `self`.
    pub fn since(&self, before: &CpuShareStats) -> CpuShareStats {
        CpuShareStats { jobs: self.jobs - before.jobs, busy_s: self.busy_s - before.busy_s, gemv_s: self.gemv_s - before.gemv_s }
    }
}

/// One call site's product (a unit's rows of one input): constant for the model's life,
/// so a graph replays it.
struct Job {
    x: *const f16,
    cols: usize,
    y: *mut f16,
    /// Each matrix and where its rows go in `y`.
    outs: Vec<(*const CpuMatrix, usize)>,
    shared: *mut Shared,
}

/// The CPU half of the streamed units that `HostStore` split (`UnitPart::cpu`).
pub struct CpuShare {
    shared: Box<Shared>,
    x: PinnedBuffer<f16>,
    y: PinnedBuffer<f16>,
    jobs: HashMap<(usize, usize), Box<Job>>,
    /// The stream the jobs were enqueued on, waited for before they are freed.
    stream: Option<Arc<CudaStream>>,
}

impl Drop for CpuShare {
    fn drop(&mut self) {
        if let Some(s) = &self.stream {
            // Nothing may call a job after this; an error here has nowhere to go.
            let _ = s.synchronize();
        }
    }
}

// SAFETY: the raw pointers in `jobs` point into this struct's own boxes and pinned
// buffers, and into the `HostStore` the model keeps alive beside it; one thread drives a
// model at a time.
unsafe impl Send for CpuShare {}

impl CpuShare {
    /// Pinned buffers for input rows up to `max_in` and outputs up to `max_out` values,
    /// the GEMV on `pool`.
    pub fn new(gpu: &Gpu, pool: ThreadPool, max_in: usize, max_out: usize) -> Result<Self> {
        Ok(CpuShare {
            shared: Box::new(Shared {
                pool,
                xf: vec![0.0; max_in],
                yf: vec![0.0; max_out],
                failed: AtomicBool::new(false),
                jobs: AtomicU64::new(0),
                busy_ns: AtomicU64::new(0),
                gemv_ns: AtomicU64::new(0),
            }),
            x: PinnedBuffer::for_host_reads(gpu, max_in.max(1))?,
            y: PinnedBuffer::new(gpu, max_out.max(1))?,
            jobs: HashMap::new(),
            stream: None,
        })
    }

    /// Enqueues on `stream` the CPU's rows `rows` of one decode row `x`: the copy of `x`
    /// to the host, the GEMV, and each matrix's output copied into `outs` (as many values
    /// as it has rows). `site` names the call (unit, product) — the same site always
    /// passes the same rows, buffers and sizes.
    pub fn enqueue(
        &mut self,
        stream: &Arc<CudaStream>,
        site: (usize, usize),
        x: &CudaView<f16>,
        rows: &[&CpuRows],
        outs: &mut [CudaViewMut<f16>],
    ) -> Result<()> {
        let cols = x.len();
        let total: usize = rows.iter().map(|r| r.matrix.rows()).sum();
        if cols > self.x.as_slice().len() || total > self.y.as_slice().len() || rows.len() != outs.len() {
            return Err(Error::Invalid(format!("CPU share: {} matrices ({total} rows of {cols}) exceed its buffers or outputs", rows.len())));
        }
        if let Some((r, o)) = rows.iter().zip(outs.iter()).find(|(r, o)| r.matrix.cols() != cols || o.len() != r.matrix.rows()) {
            return Err(Error::Invalid(format!("CPU share: {}×{} rows for an input of {cols} into {} outputs", r.matrix.rows(), r.matrix.cols(), o.len())));
        }
        self.stream.get_or_insert_with(|| stream.clone());
        stream.memcpy_dtoh(x, &mut self.x.as_mut_slice()[..cols])?;
        let (xp, yp, shared) = (self.x.as_slice().as_ptr(), self.y.as_mut_slice().as_mut_ptr(), &mut *self.shared as *mut Shared);
        let job = self.jobs.entry(site).or_insert_with(|| {
            let outs = rows.iter().scan(0, |at, r| Some((&r.matrix as *const CpuMatrix, std::mem::replace(at, *at + r.matrix.rows())))).collect();
            Box::new(Job { x: xp, cols, y: yp, outs, shared })
        });
        // SAFETY: the job and everything it points to live as long as this `CpuShare` and
        // the store (the model holds both, and drops its graph first); host functions on
        // one stream run one at a time, so the shared scratch has one user.
        unsafe { launch_host_func(stream, run_job, &mut **job as *mut Job as *mut std::ffi::c_void) }?;
        let job = &self.jobs[&site];
        for ((_, at), out) in job.outs.iter().zip(outs.iter_mut()) {
            let n = out.len();
            stream.memcpy_htod(&self.y.as_slice()[*at..*at + n], out)?;
        }
        Ok(())
    }

    /// Totals since the model loaded (read after a step finished: its host functions ran).
    pub fn stats(&self) -> CpuShareStats {
        let s = &self.shared;
        CpuShareStats {
            jobs: s.jobs.load(Ordering::Relaxed),
            busy_s: s.busy_ns.load(Ordering::Relaxed) as f64 / 1e9,
            gemv_s: s.gemv_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }

    /// Whether a host function failed since the last call (an error then, said once).
    pub fn take_failure(&self) -> Result<()> {
        if self.shared.failed.swap(false, Ordering::Relaxed) {
            return Err(Error::Invalid("the CPU share of a streamed step failed: its logits are not valid".into()));
        }
        Ok(())
    }
}

/// The host function: FP16 in, the GEMV of each matrix, FP16 out. A failure (which the
/// checks in `enqueue` leave to bugs) is flagged, never unwound into the driver.
unsafe extern "C" fn run_job(data: *mut std::ffi::c_void) {
    // SAFETY: `data` is a `Job` that `enqueue` keeps alive (see there).
    let job = unsafe { &*(data as *const Job) };
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { job.run() }));
    if !matches!(ran, Ok(Ok(()))) {
        // SAFETY: as above.
        unsafe { (*job.shared).failed.store(true, Ordering::Relaxed) };
    }
}

impl Job {
    /// # Safety
    /// The job's pointers are valid and nothing else uses the buffers while it runs.
    unsafe fn run(&self) -> Result<()> {
        let started = std::time::Instant::now();
        let shared = &mut *self.shared;
        let mut gemv = std::time::Duration::ZERO;
        let x = std::slice::from_raw_parts(self.x, self.cols);
        for (f, h) in shared.xf.iter_mut().zip(x) {
            *f = h.to_f32();
        }
        // GGUF rows with integer products take x quantized once for all of them.
        let mut q8 = None;
        for &(m, at) in &self.outs {
            let m = &*m;
            let yf = &mut shared.yf[at..at + m.rows()];
            let t = std::time::Instant::now();
            let x = &shared.xf[..self.cols];
            match m {
                CpuMatrix::Int8(m) => gemv_pass(m, x, yf, &shared.pool)?,
                CpuMatrix::Ggml(g) => ggml_pass(&g.view(), g.rows.clone(), x, &mut q8, yf, &shared.pool)?,
            }
            gemv += t.elapsed();
            let y = std::slice::from_raw_parts_mut(self.y.add(at), m.rows());
            for (h, f) in y.iter_mut().zip(yf.iter()) {
                *h = f16::from_f32(*f);
            }
        }
        shared.jobs.fetch_add(1, Ordering::Relaxed);
        shared.busy_ns.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        shared.gemv_ns.fetch_add(gemv.as_nanos() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// One unit's CPU rows in one sharing pass, for `BlockCtx`-style callers.
pub struct CpuCall<'a> {
    pub share: &'a mut CpuShare,
    pub unit: usize,
    pub rows: &'a [CpuRows],
}

impl CpuCall<'_> {
    /// Enqueues the CPU's rows of unit tensors `products` (each with its whole output
    /// `[rows]`, the GPU's band already in front) from input `x`; `site` tells this call
    /// from the unit's others.
    pub fn enqueue(
        &mut self,
        stream: &Arc<CudaStream>,
        site: usize,
        x: &CudaView<f16>,
        products: &mut [(usize, &mut cudarc::driver::CudaSlice<f16>)],
    ) -> Result<()> {
        let (mut rows, mut outs) = (Vec::new(), Vec::new());
        for (t, y) in products.iter_mut() {
            if let Some(r) = self.rows.iter().find(|r| r.after == *t) {
                rows.push(r);
                outs.push(y.slice_mut(r.first_row..r.first_row + r.matrix.rows()));
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        self.share.enqueue(stream, (self.unit, site), x, &rows, &mut outs)
    }
}

/// The pool the CPU share's GEMV runs on: every core the OS gives this process but one,
/// which the thread driving the GPU keeps (a fork-join over every core waits for the one
/// the OS took away; measured on a 16-core H200 host, 15 threads decoded 4 % faster than
/// 16, 12 threads 22 % slower); `CODECLLM_CPU_THREADS` overrides.
pub fn cpu_share_pool() -> Result<ThreadPool> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = std::env::var("CODECLLM_CPU_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(cores.saturating_sub(1)).max(1);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("codecllm-cpu-share-{i}"))
        .build()
        .map_err(|e| Error::Invalid(format!("the CPU share's thread pool: {e}")))
}

/// Rows of 4096 pseudo-random INT8 values, `bytes` of them, one scale per row, filled on
/// `pool`: what the GEMV is timed on (its time does not depend on the values).
pub fn calibration_rows(bytes: usize, pool: &ThreadPool) -> Int8Matrix {
    const COLS: usize = 4096;
    let rows = (bytes / COLS).max(1);
    let mut q = vec![0i8; rows * COLS];
    pseudo_random(bytemuck::cast_slice_mut(&mut q), pool);
    Int8Matrix { rows, cols: COLS, group_size: COLS, q, scales: vec![1e-2; rows] }
}

/// `buf` filled with pseudo-random bytes on `pool` (a multiplicative hash of the index:
/// fast, and nothing the products' time depends on).
fn pseudo_random(buf: &mut [u8], pool: &ThreadPool) {
    use rayon::prelude::*;
    pool.install(|| {
        buf.par_chunks_mut(1 << 20)
            .enumerate()
            .for_each(|(c, b)| b.iter_mut().enumerate().for_each(|(i, v)| *v = ((c << 20 | i).wrapping_mul(2_654_435_761) >> 13) as u8))
    });
}

/// `bytes` over the best of five timed calls of `pass`, after one that warms the pool and
/// the pages (GB/s); 0 when a call fails.
fn best_gbps(bytes: usize, mut pass: impl FnMut() -> Result<()>) -> f64 {
    let mut best = f64::INFINITY;
    for run in 0..6 {
        let t = std::time::Instant::now();
        if pass().is_err() {
            return 0.0;
        }
        if run > 0 {
            best = best.min(t.elapsed().as_secs_f64());
        }
    }
    bytes as f64 / best / 1e9
}

/// The CPU share's product on GGUF blocks of `layout` (index in `abi::GGML_LAYOUTS`) on
/// `pool`, in GB/s of planes, as `cpu_gemv_gbps` times the INT8 one: 512 MB of 4096-wide
/// rows with pseudo-random quants and every 2-byte field (the f16 scales) a small normal
/// value, so that no denormal or NaN slows the float path (the time depends on nothing else).
pub fn cpu_ggml_gbps(pool: &ThreadPool, layout: usize) -> f64 {
    const COLS: usize = 4096;
    let Some(l) = crate::abi::GGML_LAYOUTS.get(layout) else { return 0.0 };
    let row_bytes = l.values_bytes(COLS as u64) as usize;
    let rows = ((512usize << 20) / row_bytes.max(1)).max(1);
    let blocks = (rows * COLS / l.block_elems as usize) as u64;
    let mut planes = vec![0u8; l.bytes(blocks) as usize];
    pseudo_random(&mut planes, pool);
    let scale = half::f16::from_f32(1e-2).to_bits().to_le_bytes();
    for f in (0..l.fields.len()).filter(|&f| l.fields[f] == 2) {
        let at = l.plane(f, blocks) as usize;
        planes[at..at + 2 * blocks as usize].chunks_exact_mut(2).for_each(|h| h.copy_from_slice(&scale));
    }
    let w = GgmlView { layout, planes: &planes, rows, cols: COLS };
    let x: Vec<f32> = (0..COLS).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
    let (mut q8, mut y) = (None, vec![0f32; rows]);
    best_gbps(planes.len(), || ggml_pass(&w, 0..rows, &x, &mut q8, &mut y, pool))
}

/// Rows `rows` of GGUF blocks `w` times one input row `x` on `pool`, into `y`: integer
/// products on `x` quantized into `q8` (once, for every call that passes the same `q8`) where
/// `cpu_ggml_q8` has the layout, else the f32 product.
fn ggml_pass(w: &GgmlView, rows: std::ops::Range<usize>, x: &[f32], q8: &mut Option<Q8Row>, y: &mut [f32], pool: &ThreadPool) -> Result<()> {
    if !q8_supported(w.layout) {
        return pool.install(|| gemv_ggml_rows(w, rows, x, 1, y));
    }
    let xq = match q8 {
        Some(q) => q,
        None => q8.insert(Q8Row::quantize(x)?),
    };
    pool.install(|| gemv_q8(w, rows, xq, y))
}

/// One GEMV of every row of `m` with one input row on `pool`, into `y` (`m.rows` values).
pub fn gemv_pass(m: &Int8Matrix, x: &[f32], y: &mut [f32], pool: &ThreadPool) -> Result<()> {
    gemv_int8(&Int8View::try_from(m)?, 0..m.rows, x, 1, y, Some(pool))
}

/// The INT8 GEMV's bandwidth on `pool` (GB/s of weights, one input row): the best of five
/// runs over 512 MB of rows — several times a server CPU's last-level cache (128 MB read
/// 2–3× faster than the real share on a 16-core Xeon), as the CPU's share of a model is.
pub fn cpu_gemv_gbps(pool: &ThreadPool) -> f64 {
    let m = calibration_rows(512 << 20, pool);
    let (x, mut y) = (vec![0.5f32; m.cols], vec![0f32; m.rows]);
    best_gbps(m.q.len(), || gemv_pass(&m, &x, &mut y, pool))
}
