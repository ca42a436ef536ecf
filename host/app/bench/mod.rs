//! `codecllm bench …` and `cargo bench`: event-timed benchmarks, each row with a baseline
//! measured in the same run the same way (cuBLAS FP16, device-to-device copy, plain
//! copies), on synthetic weights with real INT8 statistics (`data`), and the provenance
//! of the run (`provenance`) in every JSON.
//!
//! Method (see the device notes): warm-up first; every timed region runs one pass over
//! enough rotated weight copies that the working set exceeds L2 (so DRAM is measured, not
//! cache); per-call time = region / calls; the median of `reps` regions is reported.
mod compress;
pub mod cpu_gemv;
pub mod data;
mod ggml;
mod host_ram;
mod kernels;
pub mod plot;
pub mod provenance;
mod stream;
pub mod suites;

pub use compress::{compress_throughput, rans_per_core};
pub use host_ram::{host_ram, HostRamReport};
pub use kernels::{BATCHES, SHAPES};
pub use provenance::Provenance;
pub use stream::{print_stream_table, StreamRow, LLAMA7B_BLOCK};

use crate::error::Result;
use crate::gpu::Gpu;
use half::f16;
use rand::{Rng, SeedableRng};

/// Rotated copies must exceed this many bytes: 4× the H100's 50 MB L2.
const WORKING_SET: usize = 200 << 20;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    pub section: &'static str,
    pub case: String,
    pub ours_us: f64,
    pub baseline: &'static str,
    pub baseline_us: f64,
    /// baseline time / our time (> 1: we are faster).
    pub speedup: f64,
    /// What our case moves or decodes per second, GB/s.
    pub gbps: f64,
    /// `gbps` as a share of the measured device-to-device copy bandwidth.
    pub pct_of_d2d: f64,
    pub note: String,
}

pub struct Bench<'g> {
    pub(super) gpu: &'g Gpu,
    pub(super) reps: usize,
    pub(super) d2d_gbps: f64,
    pub(super) rng: rand::rngs::StdRng,
    /// The seed of `rng`, recorded in the JSON (`Provenance::seed`).
    pub seed: u64,
}

impl<'g> Bench<'g> {
    pub fn new(gpu: &'g Gpu, reps: usize) -> Result<Self> {
        let seed = rand::random();
        let mut b = Bench { gpu, reps, d2d_gbps: 0.0, rng: rand::rngs::StdRng::seed_from_u64(seed), seed };
        b.d2d_gbps = b.d2d_copy_gbps()?;
        Ok(b)
    }

    pub fn d2d_gbps(&self) -> f64 {
        self.d2d_gbps
    }

    /// Median microseconds per call of `calls` back-to-back calls of `run(i)`.
    pub(super) fn time_us(&self, calls: usize, mut run: impl FnMut(usize) -> Result<()>) -> Result<f64> {
        let s = &self.gpu.stream;
        for i in 0..calls.max(3) {
            run(i % calls)?;
        }
        let (start, end) = (self.gpu.timed_event()?, self.gpu.timed_event()?);
        let mut times = Vec::with_capacity(self.reps);
        for _ in 0..self.reps {
            start.record(s)?;
            for i in 0..calls {
                run(i)?;
            }
            end.record(s)?;
            end.synchronize()?;
            times.push(start.elapsed_ms(&end)? as f64 * 1000.0 / calls as f64);
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }

    /// Device-to-device copy of 1 GiB; bytes read plus bytes written per second.
    fn d2d_copy_gbps(&self) -> Result<f64> {
        let n = 1 << 30;
        let s = &self.gpu.stream;
        let src = s.alloc_zeros::<u8>(n)?;
        let mut dst = s.alloc_zeros::<u8>(n)?;
        let us = self.time_us(1, |_| Ok(s.memcpy_dtod(&src, &mut dst)?))?;
        Ok(2.0 * n as f64 / us / 1e3)
    }

    /// Pinned host → device copy of 256 MiB, GB/s (`Gpu::pinned_h2d_gbps`).
    pub fn pinned_h2d_gbps(&self) -> Result<f64> {
        self.gpu.pinned_h2d_gbps(256 << 20, self.reps)
    }

    /// Weights with real INT8 statistics (`data::realistic_weights`), from the run's seed.
    pub(super) fn weights(&mut self, n: usize) -> Vec<f32> {
        data::realistic_weights(n, self.rng.gen())
    }

    pub(super) fn random_f16(&mut self, n: usize) -> Vec<f16> {
        (0..n).map(|_| f16::from_f32(self.rng.gen_range(-1.0..1.0))).collect()
    }
}

/// Writes rows as an aligned table.
pub fn print_table(rows: &[Row], out: &mut impl std::io::Write) {
    let _ = writeln!(
        out,
        "{:<8} {:<32} {:>10} {:>22} {:>10} {:>8} {:>9} {:>7}  note",
        "section", "case", "ours µs", "baseline", "base µs", "speedup", "GB/s", "%D2D"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<8} {:<32} {:>10.2} {:>22} {:>10.2} {:>8.3} {:>9.1} {:>7.1}  {}",
            r.section, r.case, r.ours_us, r.baseline, r.baseline_us, r.speedup, r.gbps, r.pct_of_d2d, r.note
        );
    }
}
