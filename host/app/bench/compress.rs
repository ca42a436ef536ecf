//! `bench compress`: CPU compression throughput against a plain file copy, and the rANS
//! coder alone on one core.
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

/// The rANS coder alone on one core: encoding and the CPU reference decode of the INT8
/// codes of `mb` MB of weights with real statistics (4096-wide rows, per-channel scales),
/// in the container's default chunks, against a plain copy of the same bytes on that core.
pub fn rans_per_core(mb: usize, seed: u64) -> Result<Row> {
    use crate::codec::rans::{decode_chunk, decode_lut, encode_chunk, FreqTable};
    use crate::codec::{entropy, Int8Matrix};
    let cols = 4096;
    let rows = (mb << 20).div_ceil(cols).max(1);
    let w = Int8Matrix::quantize(&data::realistic_weights(rows * cols, seed), rows, cols, cols).map_err(Error::Invalid)?.0;
    let codes: &[u8] = bytemuck::cast_slice(&w.q);
    let chunk = crate::container::DEFAULT_CHUNK_SIZE as usize;
    let table = FreqTable::from_bytes(codes);
    let t = std::time::Instant::now();
    let coded: Vec<Option<Vec<u8>>> = codes.chunks(chunk).map(|c| encode_chunk(&table, c)).collect();
    let encode_s = t.elapsed().as_secs_f64();
    let lut = decode_lut(&table);
    let mut out = vec![0u8; codes.len()];
    let t = std::time::Instant::now();
    for ((c, src), dst) in coded.iter().zip(codes.chunks(chunk)).zip(out.chunks_mut(chunk)) {
        match c {
            Some(c) => decode_chunk(&lut, c, dst).map_err(Error::Invalid)?,
            None => dst.copy_from_slice(src),
        }
    }
    let decode_s = t.elapsed().as_secs_f64();
    if out != codes {
        return Err(Error::Invalid("bench compress: rANS round trip differs".into()));
    }
    let mut copy = vec![0u8; codes.len()];
    let t = std::time::Instant::now();
    copy.copy_from_slice(std::hint::black_box(codes));
    let copy_s = t.elapsed().as_secs_f64();
    std::hint::black_box(&copy);
    let stored: usize = coded.iter().zip(codes.chunks(chunk)).map(|(c, src)| c.as_ref().map_or(src.len(), Vec::len)).sum();
    let n = codes.len() as f64;
    Ok(Row {
        section: "compress",
        case: format!("rans one core, {:.0} MB INT8", n / 1e6),
        ours_us: encode_s * 1e6,
        baseline: "memcpy",
        baseline_us: copy_s * 1e6,
        speedup: copy_s / encode_s,
        gbps: n / encode_s / 1e9,
        pct_of_d2d: 0.0,
        note: format!(
            "encode {:.0} MB/s, CPU decode {:.0} MB/s of INT8 per core; ratio {:.3} vs INT8 (entropy {:.3})",
            n / encode_s / 1e6,
            n / decode_s / 1e6,
            stored as f64 / n,
            entropy::order0_bits(&entropy::histogram(codes)) / 8.0
        ),
    })
}
