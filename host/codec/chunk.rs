//! Chunking and entropy coding on the CPU: every chunk is coded on its own (a standard
//! Zstd frame, or interleaved rANS with the blob's table) or stored raw, so any chunk
//! decodes alone, on the CPU or on the GPU (nvCOMP for Zstd and ANS, our kernel for rANS).
use super::rans::{self, FreqTable};
use crate::container::{Blob, Codec, Container, EncodedBlob, StoredChunk};
use crate::error::{Error, Result};
use rayon::prelude::*;

/// Cuts `bytes` into `chunk_size` pieces and codes them in parallel. A chunk whose coded
/// form is not smaller is stored raw. `rans` builds the blob's table from the whole of
/// `bytes` first. ANS has no CPU encoder (`gpu::ans_encode_chunks`).
pub fn encode_blob(bytes: &[u8], codec: Codec, chunk_size: u32, level: i32) -> Result<EncodedBlob> {
    let table = match codec {
        Codec::Ans => return Err(Error::Invalid("ANS chunks are encoded on the GPU (gpu::ans_encode_chunks)".into())),
        Codec::Rans => Some(FreqTable::from_bytes(bytes)),
        Codec::Raw | Codec::Zstd => None,
    };
    let chunks = bytes
        .par_chunks(chunk_size as usize)
        .map(|chunk| {
            let coded = match (codec, &table) {
                (Codec::Zstd, _) => Some(zstd::bulk::compress(chunk, level).map_err(|e| Error::Invalid(format!("zstd: {e}")))?),
                (Codec::Rans, Some(t)) => rans::encode_chunk(t, chunk),
                _ => None,
            };
            Ok(match coded {
                Some(c) if c.len() < chunk.len() => StoredChunk { bytes: c, raw: false },
                _ => StoredChunk { bytes: chunk.to_vec(), raw: true },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(EncodedBlob { codec, len: bytes.len() as u64, chunk_size, chunks, rans_table: table.map(|t| t.to_freqs()) })
}

/// Decodes the stored chunks of one blob (its codec, and for `rans` its decode table,
/// built once).
pub struct ChunkDecoder {
    codec: Codec,
    rans_lut: Option<Vec<u32>>,
}

impl ChunkDecoder {
    /// A decoder for chunks of `codec`; `rans` needs the blob's table, validated here
    /// (it may come from a hostile index).
    pub fn new(codec: Codec, rans_table: Option<&[u16]>) -> std::result::Result<Self, String> {
        let rans_lut = match (codec, rans_table) {
            (Codec::Rans, Some(t)) => Some(rans::decode_lut(&FreqTable::from_freqs(t)?)),
            (Codec::Rans, None) => return Err("a rans blob without its table".into()),
            _ => None,
        };
        Ok(ChunkDecoder { codec, rans_lut })
    }

    pub fn for_blob(blob: &Blob) -> std::result::Result<Self, String> {
        ChunkDecoder::new(blob.codec, blob.rans_table.as_deref())
    }

    /// Decodes one stored chunk into `dst` (its exact decoded length). Errors say what is
    /// wrong with the chunk; the caller adds which file, tensor and chunk it is.
    pub fn decode(&self, raw: bool, stored: &[u8], dst: &mut [u8]) -> std::result::Result<(), String> {
        if raw {
            if stored.len() != dst.len() {
                return Err(format!("raw chunk of {} bytes, expected {}", stored.len(), dst.len()));
            }
            dst.copy_from_slice(stored);
            return Ok(());
        }
        match (self.codec, &self.rans_lut) {
            (Codec::Zstd, _) => {
                let n = zstd::bulk::decompress_to_buffer(stored, dst).map_err(|e| format!("zstd frame does not decode: {e}"))?;
                if n != dst.len() {
                    return Err(format!("decoded {n} bytes, expected {}", dst.len()));
                }
                Ok(())
            }
            (Codec::Rans, Some(lut)) => rans::decode_chunk(lut, stored, dst),
            (Codec::Ans, _) => Err("ANS chunks decode on the GPU only".into()),
            _ => Err("a raw-codec blob holds a coded chunk".into()),
        }
    }
}

/// Decodes a whole blob on the CPU, verifying every chunk's checksum and decoded length.
/// The output buffer is reserved fallibly: a blob larger than memory is an error, not an
/// abort.
pub fn decode_blob(container: &Container, tensor: &str, blob: &Blob) -> Result<Vec<u8>> {
    decode_blob_chunks(container, tensor, blob, 0..blob.chunks.len())
}

/// Decodes chunks `chunks` of a blob (a row band of a matrix), checked as `decode_blob`.
pub fn decode_blob_chunks(container: &Container, tensor: &str, blob: &Blob, chunks: std::ops::Range<usize>) -> Result<Vec<u8>> {
    let decoder = ChunkDecoder::for_blob(blob).map_err(|msg| Error::format(container.path(), format!("tensor '{tensor}': {msg}")))?;
    let spans: Vec<_> = blob.spans().skip(chunks.start).take(chunks.len()).collect();
    let len: usize = spans.iter().map(|s| s.decoded_len as usize).sum();
    let mut out = Vec::new();
    out.try_reserve_exact(len).map_err(|e| Error::format(container.path(), format!("tensor '{tensor}': cannot hold its {len} decoded bytes: {e}")))?;
    out.resize(len, 0);
    let pieces: Vec<&mut [u8]> = out.chunks_mut(blob.chunk_size as usize).collect();
    spans.par_iter().zip(pieces).try_for_each(|(span, dst)| {
        let stored = container.read_chunk(tensor, span)?;
        decoder.decode(span.record.raw, &stored, dst).map_err(|msg| container.chunk_error(tensor, span.index, msg))
    })?;
    Ok(out)
}
