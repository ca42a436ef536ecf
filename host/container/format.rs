//! The `.clm` container, version 2 (specified in docs/FORMAT.md).
//!
//! ```text
//! preamble  16 B   "CODECLLM", version u32 LE, flags u32 LE (0)
//! payload          chunks, each starting on a 16-byte boundary (nvCOMP's Zstd and ANS
//!                  decoders accept any 16-aligned input pointer)
//! index            JSON (`Index`): tensors, their encodings and chunk tables
//! trailer   32 B   index offset u64, index length u64, xxh3-64 of the index u64, "CLMINDEX"
//! ```
//! The index sits at the end so a compressor streams chunks straight to disk; a reader
//! needs the trailer and the index only, then reads any tensor's chunks on their own.
//!
//! This file holds the format's types and limits; `reader` opens and validates,
//! `writer` writes atomically.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MAGIC: &[u8; 8] = b"CODECLLM";
pub const TRAILER_MAGIC: &[u8; 8] = b"CLMINDEX";
/// The version this build writes. Version 1 is version 2 without the `rans` codec, so
/// readers take both.
pub const VERSION: u32 = 2;
pub const READS_VERSIONS: std::ops::RangeInclusive<u32> = 1..=2;
pub const PREAMBLE_LEN: u64 = 16;
pub const TRAILER_LEN: u64 = 32;
/// Start alignment of every stored chunk.
pub const ALIGN: u64 = 16;
/// An index this large would describe petabytes of chunks: refuse before allocating it.
pub const MAX_INDEX_LEN: u64 = 1 << 30;
/// Chunk sizes the format allows. The floor keeps per-chunk overhead small; the ceiling is
/// nvCOMP's largest batched chunk. A multiple of 16 keeps every decoded chunk 16-aligned.
pub const MIN_CHUNK_SIZE: u32 = 4096;
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;
/// 16 KiB: nvCOMP's batched Zstd decode measured fastest at this size on H100
/// (75 GB/s vs 33 GB/s at 64 KiB, ../shared/NOTES-GPU.md).
pub const DEFAULT_CHUNK_SIZE: u32 = 16 << 10;
/// Largest tensor the format describes (16 TiB): bounds every size computed from a shape.
pub const MAX_TENSOR_BYTES: u64 = 1 << 44;

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// Stored as is.
    Raw,
    /// One standard Zstd frame per chunk (CPU or nvCOMP decode).
    Zstd,
    /// nvCOMP's ANS format (GPU encode and decode only).
    Ans,
    /// Interleaved 32-lane rANS with one static table per blob (`Blob::rans_table`):
    /// encoded on any CPU, each chunk decoded by one GPU warp (`codec::rans`).
    Rans,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::Raw => "raw",
            Codec::Zstd => "zstd",
            Codec::Ans => "ans",
            Codec::Rans => "rans",
        }
    }
}

/// Element types of the source tensors, named as in safetensors.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    BOOL,
}

impl DType {
    pub fn size(self) -> u64 {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::BOOL => 1,
        }
    }
    pub fn is_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
    }

    /// Little-endian values of this floating-point type widened to f32; `None` for
    /// integer types.
    pub fn widen(self, bytes: &[u8]) -> Option<Vec<f32>> {
        Some(match self {
            DType::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
            DType::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            DType::BF16 => bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            DType::F64 => bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
            _ => return None,
        })
    }
}

/// One stored chunk: its stored length, the xxh3-64 of the stored bytes, and whether it is
/// stored raw (did not shrink). Serialized as `[len, xxh3, raw]` to keep the index small.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(from = "(u32, u64, bool)", into = "(u32, u64, bool)")]
pub struct ChunkRecord {
    pub stored_len: u32,
    pub xxh3: u64,
    pub raw: bool,
}

impl From<(u32, u64, bool)> for ChunkRecord {
    fn from((stored_len, xxh3, raw): (u32, u64, bool)) -> Self {
        ChunkRecord { stored_len, xxh3, raw }
    }
}
impl From<ChunkRecord> for (u32, u64, bool) {
    fn from(c: ChunkRecord) -> Self {
        (c.stored_len, c.xxh3, c.raw)
    }
}

/// A byte stream cut into fixed-size chunks, each coded on its own and stored back to back
/// (16-aligned) from `offset`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Blob {
    pub codec: Codec,
    /// Decoded length in bytes.
    pub len: u64,
    pub chunk_size: u32,
    /// File offset of the first chunk.
    pub offset: u64,
    pub chunks: Vec<ChunkRecord>,
    /// `rans` only: the 256 symbol frequencies (summing to `RANS_PROB_SCALE`) every chunk
    /// of the blob is coded with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rans_table: Option<Vec<u16>>,
}

/// Sum of a `rans` table's frequencies (12-bit probabilities): one decode-table entry each.
pub const RANS_PROB_SCALE: u32 = crate::abi::RANS_LUT_ENTRIES as u32;

/// A `rans` table as the format allows it: 256 frequencies, each at most
/// `RANS_PROB_SCALE`, summing to it (so the decoder's arithmetic cannot overflow).
pub fn check_rans_table(freqs: &[u16]) -> std::result::Result<(), String> {
    if freqs.len() != 256 {
        return Err(format!("rans table has {} frequencies, expected 256", freqs.len()));
    }
    if let Some(s) = freqs.iter().position(|&f| f as u32 > RANS_PROB_SCALE) {
        return Err(format!("rans table: frequency {} of symbol {s} exceeds {RANS_PROB_SCALE}", freqs[s]));
    }
    let sum: u32 = freqs.iter().map(|&f| f as u32).sum();
    if sum != RANS_PROB_SCALE {
        return Err(format!("rans table frequencies sum to {sum}, expected {RANS_PROB_SCALE}"));
    }
    Ok(())
}

/// Where one chunk lives and what it decodes to.
#[derive(Clone, Copy, Debug)]
pub struct ChunkSpan {
    pub index: usize,
    pub offset: u64,
    pub decoded_offset: u64,
    pub decoded_len: u32,
    pub record: ChunkRecord,
}

pub fn align_up(x: u64) -> u64 {
    x.div_ceil(ALIGN) * ALIGN
}

impl Blob {
    pub fn spans(&self) -> impl Iterator<Item = ChunkSpan> + '_ {
        let mut offset = self.offset;
        self.chunks.iter().enumerate().map(move |(index, record)| {
            let decoded_offset = index as u64 * self.chunk_size as u64;
            let decoded_len = (self.len - decoded_offset).min(self.chunk_size as u64) as u32;
            let span = ChunkSpan { index, offset, decoded_offset, decoded_len, record: *record };
            offset += align_up(record.stored_len as u64);
            span
        })
    }
    /// File offset and length (padding included) of chunks `chunks`.
    pub fn chunk_extent(&self, chunks: std::ops::Range<usize>) -> (u64, u64) {
        let start = self.offset + self.chunks[..chunks.start].iter().map(|c| align_up(c.stored_len as u64)).sum::<u64>();
        (start, self.chunks[chunks].iter().map(|c| align_up(c.stored_len as u64)).sum())
    }
    /// Bytes the chunks occupy in the file, padding included.
    pub fn stored_extent(&self) -> u64 {
        self.chunks.iter().map(|c| align_up(c.stored_len as u64)).sum()
    }
    /// Bytes of the chunks themselves, padding excluded.
    pub fn stored_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.stored_len as u64).sum()
    }
    pub fn largest_decoded_chunk(&self) -> u32 {
        (self.len.min(self.chunk_size as u64)) as u32
    }
}

/// How a tensor's values are stored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Encoding {
    /// The source bytes, unchanged.
    Lossless,
    /// Symmetric INT8, row-major `[rows, cols]`, scale f32 per row per `group_size` columns
    /// (`group_size == cols`: per output channel). `scales` holds `rows × groups` f32 LE.
    Int8 {
        group_size: u32,
        scales: Blob,
        /// Largest |w − q·s| relative to its row's largest |w|.
        max_rel_err: f64,
        /// ‖w − q·s‖₂ / ‖w‖₂ over the tensor.
        rms_rel_err: f64,
        /// Order-0 entropy of the INT8 codes, bits per code (0..=8): what a static byte
        /// model could store them in, printed beside every stored ratio. Absent in
        /// containers written before it was recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        entropy_bits: Option<f64>,
    },
    /// llama.cpp's quantized blocks kept as the GGUF stored them (`data` holds the blocks
    /// of the row-major `[rows, cols]` matrix verbatim): the source's exact values at its
    /// own size. `ggml_type` is ggml's type id; a block holds `block_elems` values in
    /// `block_bytes` bytes, and rows hold whole blocks.
    Ggml { ggml_type: u32, block_elems: u32, block_bytes: u32 },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TensorEntry {
    pub name: String,
    /// Element type of the source tensor.
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub encoding: Encoding,
    /// INT8 values for `Int8`, source bytes for `Lossless`.
    pub data: Blob,
}

impl TensorEntry {
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
    /// `(rows, cols)` of a quantized matrix.
    pub fn matrix_dims(&self) -> Option<(u64, u64)> {
        match (&self.encoding, self.shape.as_slice()) {
            (Encoding::Int8 { .. }, [rows, cols]) => Some((*rows, *cols)),
            _ => None,
        }
    }
    /// The chunks holding rows `rows` of a quantized matrix (`name` for the error), which
    /// must start on a chunk boundary and end on one or at the matrix's end: a row band that
    /// decodes on its own.
    pub fn row_chunks(&self, name: &str, rows: &std::ops::Range<usize>) -> Result<std::ops::Range<usize>, String> {
        let (all_rows, cols) = self.matrix_dims().ok_or_else(|| format!("tensor '{name}' is not an INT8 matrix"))?;
        let (all_rows, cols, cs) = (all_rows as usize, cols as usize, self.data.chunk_size as usize);
        let (b0, b1) = (rows.start * cols, rows.end * cols);
        if rows.is_empty() || rows.end > all_rows || b0 % cs != 0 || (b1 % cs != 0 && rows.end != all_rows) {
            return Err(format!("rows {rows:?} of '{name}' ({all_rows} × {cols}, {cs}-byte chunks) are not a run of whole chunks"));
        }
        Ok(b0 / cs..b1.div_ceil(cs))
    }
    pub fn blobs(&self) -> Vec<(&'static str, &Blob)> {
        match &self.encoding {
            Encoding::Lossless | Encoding::Ggml { .. } => vec![("data", &self.data)],
            Encoding::Int8 { scales, .. } => vec![("data", &self.data), ("scales", scales)],
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Index {
    /// Free-form provenance (source file, tool version, settings).
    pub metadata: BTreeMap<String, String>,
    pub tensors: Vec<TensorEntry>,
}

/// Number of scale groups per row.
pub fn groups(cols: u64, group_size: u32) -> u64 {
    cols.div_ceil(group_size as u64)
}

/// A group size the kernels handle: the whole row, or a multiple of 16 (so a 16-byte
/// weight vector never straddles two groups).
pub fn check_group_size(cols: u64, group_size: u32) -> std::result::Result<(), String> {
    if group_size == 0 || (group_size as u64 != cols && !group_size.is_multiple_of(16)) {
        return Err(format!("group size {group_size} is neither the row length {cols} nor a positive multiple of 16"));
    }
    Ok(())
}

pub fn check_chunk_size(chunk_size: u32) -> std::result::Result<(), String> {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) || !chunk_size.is_multiple_of(16) {
        return Err(format!("chunk size {chunk_size} must be a multiple of 16 between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}"));
    }
    Ok(())
}
