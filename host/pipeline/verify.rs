//! Whole-container verification: every checksum, a full decode, sane scales, and — given
//! the source checkpoint — lossless tensors byte-identical and INT8 errors recomputed.
use crate::codec::{decode_blob, decode_int8, entropy};
use crate::container::{Codec, Container, Encoding, TensorEntry};
use crate::error::{GpuError, Result};
use crate::import::SourceModel;

/// Largest error round-to-nearest INT8 can make, relative to the row's (group's) max |w|:
/// half a step of max/127, plus the f32 rounding of `s` and of `q·s` (a few 2^-24 of max).
pub const INT8_MAX_REL_ERR: f64 = 0.5 / 127.0 + 1e-6;

#[derive(Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    pub tensors: usize,
    pub chunks: usize,
    pub stored_bytes: u64,
    pub decoded_bytes: u64,
    /// Chunks only checksummed because their codec decodes on the GPU only.
    pub gpu_only_chunks: usize,
    /// Tensors compared with the source checkpoint.
    pub compared: usize,
    /// INT8 tensors also decoded on the GPU (and, unless ANS, compared with the CPU decode).
    pub gpu_decoded: usize,
    pub worst_max_rel_err: Option<(String, f64)>,
    pub worst_rms_rel_err: Option<(String, f64)>,
    /// INT8 codes decoded on the CPU, the bytes their chunks take, and their order-0
    /// entropy in bits summed over tensors: `int8_stored / int8_codes` is the codec's ratio,
    /// `int8_entropy_bits / 8 / int8_codes` the floor of a static per-tensor byte model.
    pub int8_codes: u64,
    pub int8_stored: u64,
    pub int8_entropy_bits: f64,
    /// Everything found wrong, one line each; empty means all is well.
    pub problems: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

fn worse(slot: &mut Option<(String, f64)>, name: &str, v: f64) {
    if slot.as_ref().is_none_or(|(_, w)| v > *w) {
        *slot = Some((name.to_owned(), v));
    }
}

pub fn verify(c: &Container, against: Option<&SourceModel>, progress: &dyn Fn(usize)) -> Result<VerifyReport> {
    let mut r = VerifyReport { tensors: c.index.tensors.len(), ..Default::default() };
    for (i, t) in c.index.tensors.iter().enumerate() {
        let problems_before = r.problems.len();
        for (what, blob) in t.blobs() {
            r.chunks += blob.chunks.len();
            r.stored_bytes += blob.stored_bytes();
            let checked = if blob.codec == Codec::Ans {
                r.gpu_only_chunks += blob.chunks.iter().filter(|ch| !ch.raw).count();
                c.read_stored_blob(&t.name, blob).map(|_| ())
            } else {
                decode_blob(c, &t.name, blob).map(|b| {
                    r.decoded_bytes += b.len() as u64;
                    if let (Encoding::Int8 { entropy_bits, .. }, "data") = (&t.encoding, what) {
                        let bits = entropy::order0_bits(&entropy::histogram(&b));
                        (r.int8_codes, r.int8_stored, r.int8_entropy_bits) =
                            (r.int8_codes + b.len() as u64, r.int8_stored + blob.stored_bytes(), r.int8_entropy_bits + bits * b.len() as f64);
                        if entropy_bits.is_some_and(|e| (e - bits).abs() > 1e-9 * bits.max(1.0)) {
                            r.problems.push(format!("tensor '{}': recorded entropy {entropy_bits:?} bits, its codes have {bits}", t.name));
                        }
                    }
                })
            };
            if let Err(e) = checked {
                r.problems.push(e.to_string());
            }
        }
        if let &Encoding::Ggml { ggml_type, block_elems, block_bytes } = &t.encoding {
            if let Err(e) = crate::codec::ggml_blocks(c, &t.name, ggml_type, block_elems, block_bytes) {
                r.problems.push(e.to_string());
            }
        }
        if let Encoding::Int8 { max_rel_err, rms_rel_err, .. } = &t.encoding {
            worse(&mut r.worst_max_rel_err, &t.name, *max_rel_err);
            worse(&mut r.worst_rms_rel_err, &t.name, *rms_rel_err);
            if *max_rel_err > INT8_MAX_REL_ERR || !max_rel_err.is_finite() || !rms_rel_err.is_finite() {
                r.problems.push(format!("tensor '{}': recorded max error {max_rel_err} exceeds the INT8 bound {INT8_MAX_REL_ERR}", t.name));
            }
        }
        if r.problems.len() == problems_before {
            if let Some(src) = against {
                if let Err(p) = compare(c, src, t) {
                    r.problems.push(format!("tensor '{}': {p}", t.name));
                }
                r.compared += 1;
            }
        }
        progress(i + 1);
    }
    if let Some(src) = against {
        for s in &src.tensors {
            if c.tensor(&s.name).is_none() {
                r.problems.push(format!("tensor '{}' of {} is missing from the container", s.name, src.path.display()));
            }
        }
    }
    Ok(r)
}

fn compare(c: &Container, src: &SourceModel, t: &TensorEntry) -> std::result::Result<(), String> {
    let s = src.tensor(&t.name).ok_or_else(|| format!("not in {}", src.path.display()))?;
    if s.shape != t.shape || s.dtype != t.dtype {
        return Err(format!("stored as {:?} {:?}, source is {:?} {:?}", t.dtype, t.shape, s.dtype, s.shape));
    }
    match &t.encoding {
        Encoding::Lossless => {
            let b = decode_blob(c, &t.name, &t.data).map_err(|e| e.to_string())?;
            if b[..] != src.bytes(s)[..] {
                return Err("decoded bytes differ from the source".into());
            }
        }
        Encoding::Ggml { .. } => {
            if t.data.codec == Codec::Ans {
                return Ok(());
            }
            let b = decode_blob(c, &t.name, &t.data).map_err(|e| e.to_string())?;
            if src.ggml_blocks(s).is_none_or(|(_, blocks)| b[..] != blocks[..]) {
                return Err("the stored blocks differ from the source's".into());
            }
        }
        Encoding::Int8 { max_rel_err, rms_rel_err, .. } => {
            if t.data.codec == Codec::Ans {
                return Ok(()); // Values decode on the GPU only; checksums were verified.
            }
            let m = decode_int8(c, &t.name).map_err(|e| e.to_string())?;
            let stats = m.stats_against(&src.to_f32(s));
            if stats.max_rel_err > INT8_MAX_REL_ERR {
                return Err(format!("max error {} against the source exceeds the INT8 bound {INT8_MAX_REL_ERR}", stats.max_rel_err));
            }
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * a.abs().max(b.abs()) + 1e-12;
            if !close(stats.max_rel_err, *max_rel_err) || !close(stats.rms_rel_err, *rms_rel_err) {
                return Err(format!(
                    "errors against the source (max {}, rms {}) differ from the recorded ones (max {max_rel_err}, rms {rms_rel_err})",
                    stats.max_rel_err, stats.rms_rel_err
                ));
            }
        }
    }
    Ok(())
}

/// Decodes every INT8 tensor on the GPU (nvCOMP, scatter, status check) and compares it
/// byte for byte with the CPU decode; ANS tensors, which have no CPU decoder, are checked
/// through nvCOMP's statuses and sizes only. Adds what it finds to `report`.
pub fn verify_gpu(c: &Container, gpu: &crate::gpu::Gpu, report: &mut VerifyReport) -> Result<()> {
    use crate::gpu::{Decoder, DeviceCompressedTensor, DeviceInt8Buffer};
    for t in c.index.tensors.iter().filter(|t| t.matrix_dims().is_some()) {
        let outcome = (|| -> Result<()> {
            let dt = DeviceCompressedTensor::upload(gpu, c, &t.name)?;
            let mut decoder = Decoder::new(gpu, &[&dt.table])?;
            let mut q = DeviceInt8Buffer::new(gpu, dt.len())?;
            dt.decode_into(&mut decoder, &mut q, &gpu.stream)?;
            decoder.check(&gpu.stream)?;
            if t.data.codec != Codec::Ans {
                let got = gpu.stream.clone_dtoh(&q.data)?;
                if got[..dt.len()] != decode_blob(c, &t.name, &t.data)?[..] {
                    return Err(GpuError::Decode { tensor: t.name.clone(), chunk: None, msg: "GPU decode differs from the CPU decode".into() }.into());
                }
            }
            Ok(())
        })();
        match outcome {
            Ok(()) => report.gpu_decoded += 1,
            Err(e) => report.problems.push(e.to_string()),
        }
    }
    Ok(())
}
