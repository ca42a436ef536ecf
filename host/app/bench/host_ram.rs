//! Host RAM read by the link and by the CPU at once: pinned host → device copies and the
//! CPU INT8 GEMV (`stream::cpu_gemv`, on the CPU share's pool), each alone and both
//! together. The CPU share of streamed layers (issue 18) assumes the two bandwidths add;
//! this says whether they do on the machine at hand or share one memory system.
use super::provenance::Provenance;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::stream::{calibration_rows, gemv_pass};
use std::time::Instant;

#[derive(Clone, Debug, serde::Serialize)]
pub struct HostRamReport {
    pub provenance: Provenance,
    pub threads: usize,
    /// Bytes each side cycles through (more than any CPU cache).
    pub bytes: usize,
    pub seconds_per_figure: f64,
    pub h2d_alone_gbps: f64,
    pub gemv_alone_gbps: f64,
    pub h2d_together_gbps: f64,
    pub gemv_together_gbps: f64,
    /// `h2d_together + gemv_together`: what both take from host RAM at once.
    pub combined_gbps: f64,
}

/// Each figure runs its loop for `seconds` (after one warm-up pass) over `bytes` of
/// pinned host memory (copies) and of INT8 rows (the GEMV).
pub fn host_ram(gpu: &Gpu, bytes: usize, seconds: f64) -> Result<HostRamReport> {
    const COPY: usize = 64 << 20;
    let pool = crate::stream::cpu_share_pool()?;
    let m = calibration_rows(bytes, &pool);
    let x = vec![0.5f32; m.cols];
    let st = gpu.ctx.new_stream()?;
    let copies = (bytes / COPY).max(1);
    // SAFETY: written here before any copy reads it.
    let mut host = unsafe { gpu.ctx.alloc_pinned::<u8>(copies * COPY) }?;
    host.as_mut_slice()?.fill(1);
    let host = host.as_slice()?;
    let mut dev = st.alloc_zeros::<u8>(COPY)?;
    // Both loops run until `seconds` passed (one warm-up pass first) and return GB/s.
    let h2d = |dev: &mut cudarc::driver::CudaSlice<u8>| -> Result<f64> {
        let run = |n: usize, dev: &mut cudarc::driver::CudaSlice<u8>| -> Result<()> {
            for c in 0..n {
                st.memcpy_htod(&host[(c % copies) * COPY..(c % copies + 1) * COPY], dev)?;
            }
            Ok(st.synchronize()?)
        };
        run(copies, dev)?;
        let (t, mut moved) = (Instant::now(), 0);
        while t.elapsed().as_secs_f64() < seconds {
            run(copies, dev)?;
            moved += copies * COPY;
        }
        Ok(moved as f64 / t.elapsed().as_secs_f64() / 1e9)
    };
    let gemv = || -> Result<f64> {
        let mut y = vec![0f32; m.rows];
        gemv_pass(&m, &x, &mut y, &pool)?;
        let (t, mut read) = (Instant::now(), 0);
        while t.elapsed().as_secs_f64() < seconds {
            gemv_pass(&m, &x, &mut y, &pool)?;
            read += m.q.len();
        }
        Ok(read as f64 / t.elapsed().as_secs_f64() / 1e9)
    };
    let h2d_alone_gbps = h2d(&mut dev)?;
    let gemv_alone_gbps = gemv()?;
    let (h2d_together_gbps, gemv_together_gbps) = std::thread::scope(|s| {
        let copies = s.spawn(|| h2d(&mut dev));
        let g = gemv();
        Ok::<_, crate::error::Error>((copies.join().expect("the copy loop does not panic")?, g?))
    })?;
    Ok(HostRamReport {
        provenance: Provenance::new(rand::random(), Some(gpu)),
        threads: pool.current_num_threads(),
        bytes: m.q.len(),
        seconds_per_figure: seconds,
        h2d_alone_gbps,
        gemv_alone_gbps,
        h2d_together_gbps,
        gemv_together_gbps,
        combined_gbps: h2d_together_gbps + gemv_together_gbps,
    })
}
