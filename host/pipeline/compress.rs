//! Checkpoint → container: decide per tensor (INT8 or lossless), quantize, cut into
//! chunks, entropy-code in parallel, stream to an atomically written `.clm`.
use crate::codec::{entropy, Int8Matrix, QuantStats};
use crate::container::{check_chunk_size, check_group_size, Codec, ContainerWriter, EncodedBlob, Encoding, TensorEntry, DEFAULT_CHUNK_SIZE, MIN_CHUNK_SIZE};
use crate::error::{Error, Result};
use crate::import::{SourceModel, SourceTensor};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

pub const DEFAULT_LEVEL: i32 = 3;

#[derive(Clone, Debug)]
pub struct CompressOptions {
    /// Codec of INT8 weight data. Scales and lossless tensors use Zstd when this is ANS,
    /// so they stay decodable on the CPU.
    pub codec: Codec,
    pub chunk_size: u32,
    pub level: i32,
    /// Columns per scale; `None` for one scale per output channel.
    pub group_size: Option<u32>,
    pub quantize_embeddings: bool,
    /// GGUF sources: store quantized-block weights (Q4_K, Q8_0, …) as their blocks, not
    /// requantized to INT8: the source's exact values at its own size.
    pub keep_quant: bool,
}

impl Default for CompressOptions {
    fn default() -> Self {
        CompressOptions {
            codec: Codec::Rans,
            chunk_size: DEFAULT_CHUNK_SIZE,
            level: DEFAULT_LEVEL,
            group_size: None,
            quantize_embeddings: false,
            keep_quant: false,
        }
    }
}

impl TensorReport {
    /// INT8 codes of a quantized tensor (its FP16 bytes / 2).
    fn source_codes(&self) -> u64 {
        self.fp16_bytes / 2
    }
}

/// What happened to one tensor.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TensorReport {
    pub name: String,
    pub quantized: bool,
    pub source_bytes: u64,
    /// Float tensors at 2 bytes per element; others at their source size.
    pub fp16_bytes: u64,
    /// INT8 values + f32 scales for quantized tensors, the blocks for kept GGUF blocks;
    /// source size for the rest.
    pub int8_bytes: u64,
    /// Chunk bytes in the container (padding excluded).
    pub stored_bytes: u64,
    pub max_rel_err: Option<f64>,
    pub rms_rel_err: Option<f64>,
    /// Order-0 entropy of the INT8 codes, bits per code.
    pub entropy_bits: Option<f64>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    pub tensors: Vec<TensorReport>,
    pub file_bytes: u64,
    pub seconds: f64,
}

impl Summary {
    pub fn total(&self, f: impl Fn(&TensorReport) -> u64) -> u64 {
        self.tensors.iter().map(f).sum()
    }
    /// Order-0 entropy of all INT8 codes as a share of 8 bits (code-weighted over the
    /// quantized tensors): the ratio a static per-tensor byte model reaches on them.
    pub fn int8_entropy(&self) -> Option<f64> {
        let (bits, codes) = self
            .tensors
            .iter()
            .filter_map(|t| Some((t.entropy_bits? * t.source_codes() as f64, t.source_codes())))
            .fold((0.0, 0u64), |(b, n), (x, c)| (b + x, n + c));
        (codes > 0).then(|| bits / 8.0 / codes as f64)
    }

    pub fn worst(&self) -> Option<(&str, f64)> {
        self.tensors.iter().filter_map(|t| Some((t.name.as_str(), t.max_rel_err?))).max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

/// Token/position embedding tables (looked up, not multiplied): kept lossless by default.
pub fn is_embedding(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("embed") || n.contains("embd") || n.ends_with("wte.weight") || n.ends_with("wpe.weight")
}

/// Whether a tensor is stored as INT8: 2-D floating-point weights of linear layers.
pub fn should_quantize(t: &SourceTensor, opts: &CompressOptions) -> bool {
    t.dtype.is_float() && t.shape.len() == 2 && t.numel() > 0 && (opts.quantize_embeddings || !is_embedding(&t.name))
}

impl CompressOptions {
    pub fn validate(&self) -> Result<()> {
        check_chunk_size(self.chunk_size).map_err(Error::Invalid)?;
        if let Some(g) = self.group_size {
            if g == 0 || g % 16 != 0 {
                return Err(Error::Invalid(format!("--group-size {g} must be a positive multiple of 16")));
            }
        }
        if !(1..=22).contains(&self.level) && self.codec == Codec::Zstd {
            return Err(Error::Invalid(format!("--level {} must be between 1 and 22", self.level)));
        }
        Ok(())
    }

    fn group_for(&self, cols: u64) -> u32 {
        match self.group_size {
            Some(g) if (g as u64) < cols => g,
            _ => cols as u32,
        }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// `codec::encode_blob`, with ANS (which has no CPU encoder) encoded on GPU 0.
fn encode_blob(bytes: &[u8], codec: Codec, chunk_size: u32, level: i32) -> Result<EncodedBlob> {
    if codec != Codec::Ans {
        return crate::codec::encode_blob(bytes, codec, chunk_size, level);
    }
    let gpu = crate::gpu::Gpu::shared().map_err(|e| Error::Invalid(format!("ANS encoding needs a GPU: {e}")))?;
    let chunks = crate::gpu::ans_encode_chunks(gpu, bytes, chunk_size as usize)?;
    Ok(EncodedBlob { codec, len: bytes.len() as u64, chunk_size, chunks, rans_table: None })
}

/// Compresses `src` into `out`. `progress` receives source bytes done so far; setting
/// `cancel` stops at the next tensor with `Error::Interrupted` and leaves no output file.
pub fn compress(src: &SourceModel, out: &Path, opts: &CompressOptions, progress: &(dyn Fn(u64) + Sync), cancel: &AtomicBool) -> Result<Summary> {
    opts.validate()?;
    let started = std::time::Instant::now();
    // Scales and lossless tensors (embeddings, norms) are read on the CPU at load: Zstd,
    // which also suits their non-INT8 bytes better than an order-0 byte model.
    let side_codec = if matches!(opts.codec, Codec::Ans | Codec::Rans) { Codec::Zstd } else { opts.codec };
    let mut writer = ContainerWriter::create(out)?;
    let mut reports = Vec::with_capacity(src.tensors.len());
    let mut done = 0u64;
    for t in &src.tensors {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let source_bytes = t.byte_len();
        let fp16_bytes = if t.dtype.is_float() { t.numel() * 2 } else { source_bytes };
        let kept = if opts.keep_quant && should_quantize(t, opts) { src.ggml_blocks(t) } else { None };
        let (entry, int8_bytes, stats) = if let Some((ty, blocks)) = kept {
            let (elems, bytes) = ty.block();
            // Chunks of whole blocks, 16-aligned: a multiple of lcm(block bytes, 16) near
            // the requested chunk size.
            let unit = (bytes as u32 / gcd(bytes as u32, 16)) * 16;
            let chunk_size = (opts.chunk_size / unit).max(MIN_CHUNK_SIZE.div_ceil(unit)) * unit;
            let data = writer.write_blob(encode_blob(blocks, opts.codec, chunk_size, opts.level)?)?;
            let encoding = Encoding::Ggml { ggml_type: ty.id(), block_elems: elems as u32, block_bytes: bytes as u32 };
            (TensorEntry { name: t.name.clone(), dtype: t.dtype, shape: t.shape.clone(), encoding, data }, blocks.len() as u64, None)
        } else if should_quantize(t, opts) {
            let (rows, cols) = (t.shape[0], t.shape[1]);
            if cols > u32::MAX as u64 {
                return Err(Error::input(&src.path, format!("tensor '{}' has rows of {cols} elements, more than INT8 rows may hold", t.name)));
            }
            let group = opts.group_for(cols);
            check_group_size(cols, group).map_err(Error::Invalid)?;
            let w = src.to_f32(t);
            let (m, stats) = Int8Matrix::quantize(&w, rows as usize, cols as usize, group as usize)
                .map_err(|e| Error::input(&src.path, format!("tensor '{}': {e}", t.name)))?;
            drop(w);
            let q: &[u8] = bytemuck::cast_slice(&m.q);
            let entropy_bits = entropy::order0_bits(&entropy::histogram(q));
            let data = writer.write_blob(encode_blob(q, opts.codec, opts.chunk_size, opts.level)?)?;
            let s: &[u8] = bytemuck::cast_slice(&m.scales);
            let scales = writer.write_blob(encode_blob(s, side_codec, opts.chunk_size, opts.level)?)?;
            let encoding =
                Encoding::Int8 { group_size: group, scales, max_rel_err: stats.max_rel_err, rms_rel_err: stats.rms_rel_err, entropy_bits: Some(entropy_bits) };
            (TensorEntry { name: t.name.clone(), dtype: t.dtype, shape: t.shape.clone(), encoding, data }, (m.q.len() + 4 * m.scales.len()) as u64, Some(stats))
        } else {
            let bytes = src.bytes(t);
            let data = writer.write_blob(encode_blob(&bytes, side_codec, opts.chunk_size, opts.level)?)?;
            (TensorEntry { name: t.name.clone(), dtype: t.dtype, shape: t.shape.clone(), encoding: Encoding::Lossless, data }, source_bytes, None::<QuantStats>)
        };
        reports.push(TensorReport {
            name: t.name.clone(),
            quantized: !matches!(entry.encoding, Encoding::Lossless),
            source_bytes,
            fp16_bytes,
            int8_bytes,
            stored_bytes: entry.blobs().iter().map(|(_, b)| b.stored_bytes()).sum(),
            max_rel_err: stats.map(|s| s.max_rel_err),
            rms_rel_err: stats.map(|s| s.rms_rel_err),
            entropy_bits: match &entry.encoding {
                Encoding::Int8 { entropy_bits, .. } => *entropy_bits,
                Encoding::Lossless | Encoding::Ggml { .. } => None,
            },
        });
        writer.add_tensor(entry);
        done += source_bytes;
        progress(done);
    }
    let mut metadata = src.metadata.clone();
    metadata.insert("tool".into(), format!("codecllm {}", env!("CARGO_PKG_VERSION")));
    metadata.insert("source".into(), src.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    metadata.insert("codec".into(), opts.codec.name().into());
    metadata.insert("level".into(), opts.level.to_string());
    metadata.insert("group_size".into(), opts.group_size.map_or("per-channel".into(), |g| g.to_string()));
    metadata.insert("keep_quant".into(), opts.keep_quant.to_string());
    let file_bytes = writer.finish(metadata)?;
    Ok(Summary { tensors: reports, file_bytes, seconds: started.elapsed().as_secs_f64() })
}
