//! Chunking and entropy coding on the CPU: each chunk is an independent standard Zstd frame
//! (or stored raw), so any chunk decodes alone, on the CPU or by nvCOMP on the GPU.
use crate::container::{Blob, Codec, Container, StoredChunk};
use crate::error::{Error, Result};
use rayon::prelude::*;

/// Cuts `bytes` into `chunk_size` pieces and codes them in parallel. A chunk whose coded
/// form is not smaller is stored raw. ANS has no CPU encoder (`gpu::ans_encode_chunks`).
pub fn encode_chunks(bytes: &[u8], codec: Codec, chunk_size: u32, level: i32) -> Result<Vec<StoredChunk>> {
    if codec == Codec::Ans {
        return Err(Error::Invalid("ANS chunks are encoded on the GPU (gpu::ans_encode_chunks)".into()));
    }
    bytes
        .par_chunks(chunk_size as usize)
        .map(|chunk| {
            let coded = match codec {
                Codec::Raw => None,
                Codec::Zstd => Some(zstd::bulk::compress(chunk, level).map_err(|e| Error::Invalid(format!("zstd: {e}")))?),
                Codec::Ans => unreachable!("refused above"),
            };
            Ok(match coded {
                Some(c) if c.len() < chunk.len() => StoredChunk { bytes: c, raw: false },
                _ => StoredChunk { bytes: chunk.to_vec(), raw: true },
            })
        })
        .collect()
}

/// Decodes one stored chunk into `dst` (its exact decoded length). Errors say what is
/// wrong with the chunk; the caller adds which file, tensor and chunk it is.
pub fn decode_chunk(codec: Codec, raw: bool, stored: &[u8], dst: &mut [u8]) -> std::result::Result<(), String> {
    if raw {
        if stored.len() != dst.len() {
            return Err(format!("raw chunk of {} bytes, expected {}", stored.len(), dst.len()));
        }
        dst.copy_from_slice(stored);
        return Ok(());
    }
    match codec {
        Codec::Zstd => {
            let n = zstd::bulk::decompress_to_buffer(stored, dst).map_err(|e| format!("zstd frame does not decode: {e}"))?;
            if n != dst.len() {
                return Err(format!("decoded {n} bytes, expected {}", dst.len()));
            }
            Ok(())
        }
        Codec::Ans => Err("ANS chunks decode on the GPU only".into()),
        Codec::Raw => Err("a raw-codec blob holds a coded chunk".into()),
    }
}

/// Decodes a whole blob on the CPU, verifying every chunk's checksum and decoded length.
/// The output buffer is reserved fallibly: a blob larger than memory is an error, not an
/// abort.
pub fn decode_blob(container: &Container, tensor: &str, blob: &Blob) -> Result<Vec<u8>> {
    let spans: Vec<_> = blob.spans().collect();
    let mut out = Vec::new();
    out.try_reserve_exact(blob.len as usize)
        .map_err(|e| Error::format(container.path(), format!("tensor '{tensor}': cannot hold its {} decoded bytes: {e}", blob.len)))?;
    out.resize(blob.len as usize, 0);
    let pieces: Vec<&mut [u8]> = out.chunks_mut(blob.chunk_size as usize).collect();
    spans.par_iter().zip(pieces).try_for_each(|(span, dst)| {
        let stored = container.read_chunk(tensor, span)?;
        decode_chunk(blob.codec, span.record.raw, &stored, dst).map_err(|msg| container.chunk_error(tensor, span.index, msg))
    })?;
    Ok(out)
}
