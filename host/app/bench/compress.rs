//! `bench compress`: CPU compression throughput against a plain file copy.
use super::{data, Row};
use crate::error::{Error, Result};
use crate::import::SourceModel;
use crate::pipeline::compress::{compress, CompressOptions};
use std::sync::atomic::AtomicBool;

/// CPU compression throughput on a synthetic FP16 checkpoint of `shapes`, against a plain
/// file copy of the same source (the I/O floor) measured in the same run.
pub fn compress_throughput(dir: &std::path::Path, shapes: &[(usize, usize)], opts: &CompressOptions, seed: u64) -> Result<Row> {
    let src = dir.join("compress-source.safetensors");
    data::write_synthetic_checkpoint(&src, shapes, seed)?;
    let model = SourceModel::open(&src)?;
    let fp16_bytes = model.total_bytes() as f64;
    let out = dir.join("compress-out.clm");
    let t = std::time::Instant::now();
    let summary = compress(&model, &out, opts, &|_| {}, &AtomicBool::new(false))?;
    let secs = t.elapsed().as_secs_f64();
    let copy_to = dir.join("compress-copy.safetensors");
    let t = std::time::Instant::now();
    std::fs::copy(&src, &copy_to).map_err(|e| Error::io(&copy_to, e))?;
    let copy_secs = t.elapsed().as_secs_f64();
    for f in [&src, &out, &copy_to] {
        let _ = std::fs::remove_file(f);
    }
    let threads = rayon::current_num_threads();
    let mbps = fp16_bytes / secs / 1e6;
    Ok(Row {
        section: "compress",
        case: format!("{} {:.0} MB FP16, {threads} threads", opts.codec.name(), fp16_bytes / 1e6),
        ours_us: secs * 1e6,
        baseline: "file copy",
        baseline_us: copy_secs * 1e6,
        speedup: copy_secs / secs,
        gbps: mbps / 1e3,
        pct_of_d2d: 0.0,
        note: format!(
            "{mbps:.0} MB/s ({:.0} MB/s per thread), ratio {:.3} vs FP16, {:.3} vs INT8 (entropy {:.3})",
            mbps / threads as f64,
            summary.total(|t| t.stored_bytes) as f64 / fp16_bytes,
            summary.total(|t| t.stored_bytes) as f64 / summary.total(|t| t.int8_bytes) as f64,
            summary.int8_entropy().unwrap_or(f64::NAN)
        ),
    })
}
