//! Writing a container atomically (temporary file, fsync, rename).
use super::format::*;
use super::reader::validate;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A chunk ready to store: coded bytes, or the source bytes when coding did not shrink them.
pub struct StoredChunk {
    pub bytes: Vec<u8>,
    pub raw: bool,
}

/// A byte stream of `len` bytes coded in chunks of `chunk_size`, ready to store.
pub struct EncodedBlob {
    pub codec: Codec,
    pub len: u64,
    pub chunk_size: u32,
    pub chunks: Vec<StoredChunk>,
    /// `rans`: the table every chunk was coded with.
    pub rans_table: Option<Vec<u16>>,
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
    pub fn write_blob(&mut self, blob: EncodedBlob) -> Result<Blob> {
        let EncodedBlob { codec, len, chunk_size, chunks, rans_table } = blob;
        let offset = self.pos;
        let mut records = Vec::with_capacity(chunks.len());
        for c in chunks {
            records.push(ChunkRecord { stored_len: c.bytes.len() as u32, xxh3: xxhash_rust::xxh3::xxh3_64(&c.bytes), raw: c.raw });
            self.write(&c.bytes)?;
            let pad = align_up(self.pos) - self.pos;
            self.write(&[0u8; ALIGN as usize][..pad as usize])?;
        }
        Ok(Blob { codec, len, chunk_size, offset, chunks: records, rans_table })
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
