//! Reading a container: the trailer, the checksummed index, and every check a reader needs
//! before trusting it; then chunks on demand, each checksum verified.
use super::format::*;
use crate::error::{Error, Result};
use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

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
        if !READS_VERSIONS.contains(&version) {
            return Err(bad(format!("container version {version} is not supported (this build reads {}–{})", READS_VERSIONS.start(), READS_VERSIONS.end())));
        }
        let mut trailer = [0u8; TRAILER_LEN as usize];
        file.read_exact_at(&mut trailer, file_len - TRAILER_LEN).map_err(|e| Error::io(path, e))?;
        if &trailer[24..] != TRAILER_MAGIC {
            return Err(bad("the trailer is missing: the file is truncated or was not finished".into()));
        }
        let word = |i: usize| u64::from_le_bytes(trailer[i * 8..i * 8 + 8].try_into().unwrap());
        let (index_offset, index_len, index_hash) = (word(0), word(1), word(2));
        let index_end = file_len - TRAILER_LEN;
        if index_len > MAX_INDEX_LEN || index_offset < PREAMBLE_LEN || index_offset.checked_add(index_len) != Some(index_end) {
            return Err(bad(format!("the trailer points outside the file (index at {index_offset}, {index_len} bytes, file {file_len} bytes)")));
        }
        let mut raw = vec![0u8; index_len as usize];
        file.read_exact_at(&mut raw, index_offset).map_err(|e| Error::io(path, e))?;
        if xxhash_rust::xxh3::xxh3_64(&raw) != index_hash {
            return Err(bad("the index fails its checksum (corrupted)".into()));
        }
        let index: Index = serde_json::from_slice(&raw).map_err(|e| bad(format!("the index is not valid: {e}")))?;
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
pub(super) fn validate(index: &Index, payload_end: u64) -> std::result::Result<(), String> {
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
            &Encoding::Ggml { block_elems, block_bytes, .. } => {
                let [_, cols] = t.shape[..] else {
                    return Err(format!("tensor '{name}': quantized blocks need a 2-D shape, found {:?}", t.shape));
                };
                if !t.dtype.is_float() || block_elems == 0 || block_bytes == 0 || cols % block_elems as u64 != 0 {
                    return Err(format!("tensor '{name}': rows of {cols} do not hold whole blocks of {block_elems} values ({block_bytes} bytes)"));
                }
                expect_len(name, "data", &t.data, numel / block_elems as u64 * block_bytes as u64)?;
                if t.data.chunk_size % block_bytes != 0 {
                    return Err(format!("tensor '{name}': chunks of {} bytes cut its {block_bytes}-byte blocks", t.data.chunk_size));
                }
            }
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
    if !blob.offset.is_multiple_of(ALIGN) {
        return Err(format!("chunks start at {}, not a multiple of {ALIGN}", blob.offset));
    }
    if blob.offset.checked_add(blob.stored_extent()).is_none() {
        return Err("offset overflows".into());
    }
    match (&blob.rans_table, blob.codec) {
        (Some(t), Codec::Rans) => check_rans_table(t)?,
        (None, Codec::Rans) => return Err("a rans blob without its table".into()),
        (Some(_), other) => return Err(format!("a {} blob carries a rans table", other.name())),
        (None, _) => {}
    }
    for span in blob.spans() {
        let c = span.record;
        // A coded rans chunk is its lane states plus whole 16-bit words.
        let rans_shape = blob.codec != Codec::Rans || (c.stored_len >= crate::abi::RANS_HEADER_BYTES && c.stored_len % 2 == 0);
        let fits = if c.raw { c.stored_len == span.decoded_len } else { c.stored_len > 0 && c.stored_len <= span.decoded_len && rans_shape };
        if !fits || (blob.codec == Codec::Raw && !c.raw) {
            return Err(format!("chunk {}: stored length {} does not fit its decoded length {}", span.index, c.stored_len, span.decoded_len));
        }
    }
    Ok(())
}
