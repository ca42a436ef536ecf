//! The three benchmark runs, each a report with its provenance: what `codecllm bench …`
//! prints and `cargo bench` (benches/) runs, one implementation for both.
use super::{compress_throughput, rans_per_core, Bench, Provenance, Row, StreamRow, BATCHES, SHAPES};
use crate::container::{Codec, Container};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::pipeline::compress::CompressOptions;
use std::path::{Path, PathBuf};

/// Rows of `bench kernels` or `bench compress`, with the run's provenance and the copy
/// bandwidths its "% of" columns divide by.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub provenance: Provenance,
    /// Device-to-device copy, GB/s read + written (`None` for CPU runs).
    pub d2d_gbps: Option<f64>,
    pub pinned_h2d_gbps: Option<f64>,
    pub rows: Vec<Row>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct StreamReport {
    pub provenance: Provenance,
    pub pinned_h2d_gbps: f64,
    pub rows: Vec<StreamRow>,
}

fn scratch_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

pub struct KernelsOptions {
    /// Fewer shapes and batches (M = 1, 16, 256).
    pub quick: bool,
    /// Every linear plan instead of the default one; no decode sections.
    pub tune: bool,
    /// Only the GEMVs on GGUF blocks.
    pub ggml: bool,
    /// Timed repetitions per case (the median is reported).
    pub reps: usize,
    /// A container of a real checkpoint whose INT8 tensors are decoded too.
    pub model: Option<PathBuf>,
    pub scratch: PathBuf,
}

/// `bench kernels`: fused linears vs cuBLAS FP16, decode vs D2D copy, decode + GEMV per
/// layer vs the resident GEMV.
pub fn kernels(gpu: &Gpu, o: &KernelsOptions) -> Result<Report> {
    let real = o.model.as_deref().map(Container::open).transpose()?;
    scratch_dir(&o.scratch)?;
    let mut b = Bench::new(gpu, o.reps.max(1))?;
    let h2d = b.pinned_h2d_gbps()?;
    eprintln!(
        "{} (sm_{}{}): D2D copy {:.0} GB/s (read+write), pinned H2D {h2d:.1} GB/s",
        gpu.name,
        gpu.compute_capability.0,
        gpu.compute_capability.1,
        b.d2d_gbps()
    );
    let (shapes, batches): (&[(usize, usize)], &[usize]) = if o.quick { (&SHAPES[..2], &[1, 16, 256]) } else { (&SHAPES, &BATCHES) };
    let mut rows;
    if o.ggml {
        rows = b.ggml(&SHAPES[..3], &[1, 2, 4, 8, 16, 32])?;
        rows.extend(b.ggml_fused(&[1, 2])?);
    } else if o.tune {
        rows = b.tune(shapes, &[4, 8, 16, 32, 64, 256, 4096])?;
    } else {
        rows = b.linear(shapes, batches)?;
        // The 8B shapes (all rows whole K-quant super-blocks), at the GEMV's batches.
        rows.extend(b.ggml(&shapes[..shapes.len().min(3)], if o.quick { &[1] } else { &[1, 2, 4, 8, 16, 32] })?);
        rows.extend(b.fp16_gemv(shapes)?);
        rows.extend(b.decode(&o.scratch, real.as_ref())?);
        rows.extend(b.layer(&o.scratch, Codec::Zstd)?);
        rows.extend(b.layer(&o.scratch, Codec::Ans)?);
        rows.extend(b.layer(&o.scratch, Codec::Rans)?);
    }
    Ok(Report { provenance: Provenance::new(b.seed, Some(gpu)), d2d_gbps: Some(b.d2d_gbps()), pinned_h2d_gbps: Some(h2d), rows })
}

pub struct StreamOptions {
    /// Stack depths (peak VRAM should not depend on them).
    pub layers: Vec<usize>,
    /// Tokens per forward.
    pub batches: Vec<usize>,
    pub slots: usize,
    /// Fail unless the engine fits in this many bytes of VRAM.
    pub vram_budget: Option<usize>,
    pub scratch: PathBuf,
}

/// `bench stream`: the streaming engine per codec vs FP16 streamed and resident.
pub fn stream(gpu: &Gpu, o: &StreamOptions) -> Result<StreamReport> {
    scratch_dir(&o.scratch)?;
    let mut b = Bench::new(gpu, 5)?;
    let h2d = b.pinned_h2d_gbps()?;
    eprintln!("{}: pinned H2D {h2d:.1} GB/s", gpu.name);
    let rows = b.stream(&o.scratch, &o.layers, &o.batches, o.slots, o.vram_budget, h2d)?;
    Ok(StreamReport { provenance: Provenance::new(b.seed, Some(gpu)), pinned_h2d_gbps: h2d, rows })
}

/// `bench compress`: CPU compression of `size_mb` MB of synthetic FP16 (4096 × 4096
/// matrices, 32 MiB each) with each CPU codec — Zstd at `level`, and rANS — vs a plain
/// copy of the same file; then the rANS coder alone on one core.
pub fn compress(size_mb: usize, level: i32, scratch: &Path) -> Result<Report> {
    scratch_dir(scratch)?;
    let shapes = vec![(4096, 4096); (size_mb << 20).div_ceil(32 << 20).max(1)];
    let seed = rand::random();
    let rows = [Codec::Zstd, Codec::Rans]
        .into_iter()
        .map(|codec| compress_throughput(scratch, &shapes, &CompressOptions { level, codec, ..Default::default() }, seed))
        .chain(std::iter::once(rans_per_core(size_mb.min(256), seed)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Report { provenance: Provenance::new(seed, None), d2d_gbps: None, pinned_h2d_gbps: None, rows })
}
