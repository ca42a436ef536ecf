//! The `.clm` container, version 1 (specified in docs/FORMAT.md).
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
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"CODECLLM";
pub const TRAILER_MAGIC: &[u8; 8] = b"CLMINDEX";
pub const VERSION: u32 = 1;
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
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::Raw => "raw",
            Codec::Zstd => "zstd",
            Codec::Ans => "ans",
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
    },
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
    pub fn blobs(&self) -> Vec<(&'static str, &Blob)> {
        match &self.encoding {
            Encoding::Lossless => vec![("data", &self.data)],
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
    if group_size == 0 || (group_size as u64 != cols && group_size % 16 != 0) {
        return Err(format!("group size {group_size} is neither the row length {cols} nor a positive multiple of 16"));
    }
    Ok(())
}

pub fn check_chunk_size(chunk_size: u32) -> std::result::Result<(), String> {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) || chunk_size % 16 != 0 {
        return Err(format!(
            "chunk size {chunk_size} must be a multiple of 16 between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}"
        ));
    }
    Ok(())
}

/// An opened container: the validated index plus the file, for reading chunks on demand.
pub struct Container {
    path: PathBuf,
    file: File,
    pub index: Index,
    pub file_len: u64,
}

impl Container {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let bad = |msg: String| Error::format(path, msg);
        if file_len < PREAMBLE_LEN + TRAILER_LEN {
            return Err(bad(format!("not a codecllm container: {file_len} bytes is too short (truncated?)")));
        }
        let mut pre = [0u8; PREAMBLE_LEN as usize];
        file.read_exact_at(&mut pre, 0).map_err(|e| Error::io(path, e))?;
        if &pre[..8] != MAGIC {
            return Err(bad("not a codecllm container (wrong magic)".into()));
        }
        let version = u32::from_le_bytes(pre[8..12].try_into().unwrap());
        if version != VERSION {
            return Err(bad(format!("container version {version} is not supported (this build reads {VERSION})")));
        }
        let mut trailer = [0u8; TRAILER_LEN as usize];
        file.read_exact_at(&mut trailer, file_len - TRAILER_LEN).map_err(|e| Error::io(path, e))?;
        if &trailer[24..] != TRAILER_MAGIC {
            return Err(bad("the trailer is missing: the file is truncated or was not finished".into()));
        }
        let word = |i: usize| u64::from_le_bytes(trailer[i * 8..i * 8 + 8].try_into().unwrap());
        let (index_offset, index_len, index_hash) = (word(0), word(1), word(2));
        let index_end = file_len - TRAILER_LEN;
        if index_len > MAX_INDEX_LEN
            || index_offset < PREAMBLE_LEN
            || index_offset.checked_add(index_len) != Some(index_end)
        {
            return Err(bad(format!(
                "the trailer points outside the file (index at {index_offset}, {index_len} bytes, file {file_len} bytes)"
            )));
        }
        let mut raw = vec![0u8; index_len as usize];
        file.read_exact_at(&mut raw, index_offset).map_err(|e| Error::io(path, e))?;
        if xxhash_rust::xxh3::xxh3_64(&raw) != index_hash {
            return Err(bad("the index fails its checksum (corrupted)".into()));
        }
        let index: Index =
            serde_json::from_slice(&raw).map_err(|e| bad(format!("the index is not valid: {e}")))?;
        validate(&index, index_offset).map_err(bad)?;
        Ok(Container { path: path.to_owned(), file, index, file_len })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.index.tensors.iter().find(|t| t.name == name)
    }

    /// The stored bytes of one chunk, checksum verified.
    pub fn read_chunk(&self, tensor: &str, span: &ChunkSpan) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; span.record.stored_len as usize];
        self.file.read_exact_at(&mut buf, span.offset).map_err(|e| Error::io(&self.path, e))?;
        if xxhash_rust::xxh3::xxh3_64(&buf) != span.record.xxh3 {
            return Err(self.chunk_error(tensor, span.index, "checksum mismatch (corrupted data)"));
        }
        Ok(buf)
    }

    /// All stored chunks of a blob, back to back as in the file (padding included),
    /// each checksum verified: what a GPU upload of the blob needs.
    pub fn read_stored_blob(&self, tensor: &str, blob: &Blob) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; blob.stored_extent() as usize];
        self.read_stored_blob_into(tensor, blob, &mut buf)?;
        Ok(buf)
    }

    /// `read_stored_blob` into `buf`, which holds exactly `blob.stored_extent()` bytes
    /// (e.g. a region of a pinned arena, so nothing is staged on the way).
    pub fn read_stored_blob_into(&self, tensor: &str, blob: &Blob, buf: &mut [u8]) -> Result<()> {
        self.read_stored_chunks_into(tensor, blob, 0..blob.chunks.len(), buf)
    }

    /// Chunks `chunks` of the blob, checksums verified, into `buf`, which holds exactly the
    /// bytes they span (`blob.chunk_extent(chunks).1`).
    pub fn read_stored_chunks_into(&self, tensor: &str, blob: &Blob, chunks: std::ops::Range<usize>, buf: &mut [u8]) -> Result<()> {
        let (start, len) = blob.chunk_extent(chunks.clone());
        assert_eq!(buf.len() as u64, len, "read_stored_chunks_into: buffer size");
        self.file.read_exact_at(buf, start).map_err(|e| Error::io(&self.path, e))?;
        for span in blob.spans().skip(chunks.start).take(chunks.len()) {
            let at = (span.offset - start) as usize;
            let bytes = &buf[at..at + span.record.stored_len as usize];
            if xxhash_rust::xxh3::xxh3_64(bytes) != span.record.xxh3 {
                return Err(self.chunk_error(tensor, span.index, "checksum mismatch (corrupted data)"));
            }
        }
        Ok(())
    }

    pub fn chunk_error(&self, tensor: &str, chunk: usize, msg: impl Into<String>) -> Error {
        Error::Chunk { path: self.path.clone(), tensor: tensor.to_owned(), chunk, msg: msg.into() }
    }
}

/// Every check a reader needs before trusting the index: sizes consistent with shapes,
/// chunk tables consistent with sizes, every chunk inside the payload and none overlapping.
fn validate(index: &Index, payload_end: u64) -> std::result::Result<(), String> {
    let mut names = HashSet::new();
    let mut extents = Vec::new();
    for t in &index.tensors {
        let name = &t.name;
        if name.is_empty() || !names.insert(name.as_str()) {
            return Err(format!("tensor name '{name}' is empty or repeated"));
        }
        let numel = t
            .shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n.checked_mul(t.dtype.size()).is_some_and(|b| b <= MAX_TENSOR_BYTES))
            .ok_or_else(|| format!("tensor '{name}': shape {:?} is too large", t.shape))?;
        match &t.encoding {
            Encoding::Lossless => expect_len(name, "data", &t.data, numel * t.dtype.size())?,
            Encoding::Int8 { group_size, scales, .. } => {
                let [rows, cols] = t.shape[..] else {
                    return Err(format!("tensor '{name}': INT8 needs a 2-D shape, found {:?}", t.shape));
                };
                if !t.dtype.is_float() {
                    return Err(format!("tensor '{name}': INT8 encoding of a {:?} tensor", t.dtype));
                }
                check_group_size(cols, *group_size).map_err(|e| format!("tensor '{name}': {e}"))?;
                expect_len(name, "data", &t.data, numel)?;
                expect_len(name, "scales", scales, rows * groups(cols, *group_size) * 4)?;
            }
        }
        for (what, blob) in t.blobs() {
            check_blob(blob).map_err(|e| format!("tensor '{name}' {what}: {e}"))?;
            extents.push((blob.offset, blob.offset + blob.stored_extent(), name));
        }
    }
    extents.sort();
    let mut end = PREAMBLE_LEN;
    for (start, stop, name) in extents {
        if start < end || stop > payload_end {
            return Err(format!("tensor '{name}': chunks at {start}..{stop} overlap others or leave the payload"));
        }
        end = stop;
    }
    Ok(())
}

fn expect_len(name: &str, what: &str, blob: &Blob, len: u64) -> std::result::Result<(), String> {
    if blob.len != len {
        return Err(format!("tensor '{name}' {what}: {} bytes recorded, its shape needs {len}", blob.len));
    }
    Ok(())
}

fn check_blob(blob: &Blob) -> std::result::Result<(), String> {
    check_chunk_size(blob.chunk_size)?;
    let expected = blob.len.div_ceil(blob.chunk_size as u64);
    if blob.chunks.len() as u64 != expected {
        return Err(format!("{} chunks recorded, {} bytes in chunks of {} need {expected}", blob.chunks.len(), blob.len, blob.chunk_size));
    }
    if blob.offset % ALIGN != 0 {
        return Err(format!("chunks start at {}, not a multiple of {ALIGN}", blob.offset));
    }
    if blob.offset.checked_add(blob.stored_extent()).is_none() {
        return Err("offset overflows".into());
    }
    for span in blob.spans() {
        let c = span.record;
        let fits = if c.raw { c.stored_len == span.decoded_len } else { c.stored_len > 0 && c.stored_len <= span.decoded_len };
        if !fits || (blob.codec == Codec::Raw && !c.raw) {
            return Err(format!("chunk {}: stored length {} does not fit its decoded length {}", span.index, c.stored_len, span.decoded_len));
        }
    }
    Ok(())
}

/// A chunk ready to store: coded bytes, or the source bytes when coding did not shrink them.
pub struct StoredChunk {
    pub bytes: Vec<u8>,
    pub raw: bool,
}

/// Writes a container atomically: everything goes to a temporary file beside the target,
/// which is renamed over it only by `finish`. Dropping the writer (an error, Ctrl-C)
/// deletes the temporary file, so no partial container is ever left behind.
pub struct ContainerWriter {
    path: PathBuf,
    out: BufWriter<tempfile::NamedTempFile>,
    pos: u64,
    index: Index,
}

impl ContainerWriter {
    pub fn create(path: &Path) -> Result<Self> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = path.file_name().ok_or_else(|| Error::Invalid(format!("{}: not a file path", path.display())))?;
        // 0666 before the umask, as for any file a tool creates (tempfile defaults to 0600).
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(".partial")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .tempfile_in(dir)
            .map_err(|e| Error::io(path, e))?;
        let mut w = ContainerWriter { path: path.to_owned(), out: BufWriter::with_capacity(1 << 20, tmp), pos: 0, index: Index::default() };
        let mut pre = Vec::with_capacity(PREAMBLE_LEN as usize);
        pre.extend_from_slice(MAGIC);
        pre.extend_from_slice(&VERSION.to_le_bytes());
        pre.extend_from_slice(&0u32.to_le_bytes());
        w.write(&pre)?;
        Ok(w)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).map_err(|e| Error::io(&self.path, e))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Appends coded chunks and returns the blob that describes them.
    pub fn write_blob(&mut self, codec: Codec, len: u64, chunk_size: u32, chunks: Vec<StoredChunk>) -> Result<Blob> {
        let offset = self.pos;
        let mut records = Vec::with_capacity(chunks.len());
        for c in chunks {
            records.push(ChunkRecord { stored_len: c.bytes.len() as u32, xxh3: xxhash_rust::xxh3::xxh3_64(&c.bytes), raw: c.raw });
            self.write(&c.bytes)?;
            let pad = align_up(self.pos) - self.pos;
            self.write(&[0u8; ALIGN as usize][..pad as usize])?;
        }
        Ok(Blob { codec, len, chunk_size, offset, chunks: records })
    }

    pub fn add_tensor(&mut self, entry: TensorEntry) {
        self.index.tensors.push(entry);
    }

    /// Writes index and trailer, syncs, and moves the file into place. Returns its size.
    pub fn finish(mut self, metadata: BTreeMap<String, String>) -> Result<u64> {
        self.index.metadata = metadata;
        let index = serde_json::to_vec(&self.index).map_err(|e| Error::Invalid(format!("cannot encode the index: {e}")))?;
        validate(&self.index, self.pos).map_err(|e| Error::Invalid(format!("internal: the index being written is invalid: {e}")))?;
        let index_offset = self.pos;
        self.write(&index)?;
        let mut trailer = Vec::with_capacity(TRAILER_LEN as usize);
        trailer.extend_from_slice(&index_offset.to_le_bytes());
        trailer.extend_from_slice(&(index.len() as u64).to_le_bytes());
        trailer.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&index).to_le_bytes());
        trailer.extend_from_slice(TRAILER_MAGIC);
        self.write(&trailer)?;
        let tmp = self.out.into_inner().map_err(|e| Error::io(&self.path, e.into_error()))?;
        tmp.as_file().sync_all().map_err(|e| Error::io(&self.path, e))?;
        tmp.persist(&self.path).map_err(|e| Error::io(&self.path, e.error))?;
        Ok(self.pos)
    }
}
