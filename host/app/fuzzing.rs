//! Entry points of the fuzz targets (`fuzz/`), kept in the library so the regression tests
//! (`tests/fuzz_regressions.rs`) replay saved inputs through the very same code in CI.
//! Each takes arbitrary bytes and must return without panicking; errors are expected.
use crate::codec::ChunkDecoder;
use crate::container::{Codec, Container};
use std::io::Write;

/// Tensors larger than this are not decoded by the harness: a valid index may describe a
/// blob far larger than the file (zeros compress well), and decoding it is not a bug.
const DECODE_LIMIT: u64 = 64 << 20;

fn temp_file(data: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(data).expect("write temp file");
    f
}

pub fn container(data: &[u8]) {
    let f = temp_file(data);
    let Ok(c) = Container::open(f.path()) else { return };
    for t in &c.index.tensors {
        for (_, blob) in t.blobs() {
            if blob.len <= DECODE_LIMIT {
                let _ = crate::codec::decode_blob(&c, &t.name, blob);
            }
        }
        if t.numel() <= DECODE_LIMIT {
            let _ = crate::codec::decode_f32(&c, &t.name);
        }
    }
}

pub fn chunk(data: &[u8]) {
    // A skewed and a uniform rANS table: hostile chunks against both.
    let mut skewed = vec![1u16; 256];
    skewed[0] = 4096 - 255;
    let decoders: Vec<ChunkDecoder> =
        [(Codec::Zstd, None), (Codec::Raw, None), (Codec::Ans, None), (Codec::Rans, Some(skewed)), (Codec::Rans, Some(vec![16u16; 256]))]
            .into_iter()
            .map(|(codec, table)| ChunkDecoder::new(codec, table.as_deref()).expect("valid tables"))
            .collect();
    for len in [0usize, 1, 100, 128, 4096, 65536] {
        let mut dst = vec![0u8; len];
        for d in &decoders {
            for raw in [false, true] {
                let _ = d.decode(raw, data, &mut dst);
            }
        }
    }
}

pub fn safetensors(data: &[u8]) {
    source_model(data, "");
}

pub fn gguf(data: &[u8]) {
    source_model(data, ".gguf");
}

/// Opens `data` as a checkpoint (the suffix picks the format), reads every tensor and
/// quantizes the small matrices, as `compress` would.
fn source_model(data: &[u8], suffix: &str) {
    let mut f = tempfile::Builder::new().suffix(suffix).tempfile().expect("temp file");
    f.write_all(data).expect("write temp file");
    let Ok(model) = crate::import::SourceModel::open(f.path()) else { return };
    let opts = crate::pipeline::compress::CompressOptions::default();
    for t in &model.tensors {
        if t.numel() > DECODE_LIMIT {
            continue;
        }
        let _ = model.bytes(t);
        if t.dtype.is_float() {
            let w = model.to_f32(t);
            if crate::pipeline::compress::should_quantize(t, &opts) {
                let (rows, cols) = (t.shape[0] as usize, t.shape[1] as usize);
                let _ = crate::codec::Int8Matrix::quantize(&w, rows, cols, cols);
            }
        }
    }
}
