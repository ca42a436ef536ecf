//! Chunking and entropy coding on the CPU: each chunk is an independent standard Zstd frame
//! (or stored raw), so any chunk decodes alone, on the CPU or by nvCOMP on the GPU.
use crate::error::Result;
use crate::format::{Blob, Codec, Container, StoredChunk};
use rayon::prelude::*;

/// Cuts `bytes` into `chunk_size` pieces and codes them in parallel. A chunk whose coded
/// form is not smaller is stored raw. ANS has no CPU encoder: it runs on the GPU.
pub fn encode_chunks(bytes: &[u8], codec: Codec, chunk_size: u32, level: i32) -> Result<Vec<StoredChunk>> {
    if codec == Codec::Ans {
        let gpu = crate::gpu::Gpu::shared().map_err(|e| crate::Error::Invalid(format!("ANS encoding needs a GPU: {e}")))?;
        return crate::gpu::ans_encode_chunks(gpu, bytes, chunk_size as usize);
    }
    bytes
        .par_chunks(chunk_size as usize)
        .map(|chunk| {
            let coded = match codec {
                Codec::Raw => None,
                Codec::Zstd => Some(zstd::bulk::compress(chunk, level).map_err(|e| crate::Error::Invalid(format!("zstd: {e}")))?),
                Codec::Ans => unreachable!("handled above"),
            };
            Ok(match coded {
                Some(c) if c.len() < chunk.len() => StoredChunk { bytes: c, raw: false },
                _ => StoredChunk { bytes: chunk.to_vec(), raw: true },
            })
        })
        .collect()
}

/// Decodes a whole blob on the CPU, verifying every chunk's checksum and decoded length.
pub fn decode_blob(container: &Container, tensor: &str, blob: &Blob) -> Result<Vec<u8>> {
    let spans: Vec<_> = blob.spans().collect();
    let mut out = vec![0u8; blob.len as usize];
    let pieces: Vec<&mut [u8]> = out.chunks_mut(blob.chunk_size as usize).collect();
    spans.par_iter().zip(pieces).try_for_each(|(span, dst)| {
        let stored = container.read_chunk(tensor, span)?;
        if span.record.raw {
            dst.copy_from_slice(&stored);
            return Ok(());
        }
        match blob.codec {
            Codec::Zstd => {
                let n = zstd::bulk::decompress_to_buffer(&stored, dst)
                    .map_err(|e| container.chunk_error(tensor, span.index, format!("zstd frame does not decode: {e}")))?;
                if n != dst.len() {
                    return Err(container.chunk_error(tensor, span.index, format!("decoded {n} bytes, expected {}", dst.len())));
                }
                Ok(())
            }
            Codec::Ans => Err(container.chunk_error(tensor, span.index, "ANS chunks decode on the GPU only")),
            Codec::Raw => unreachable!("validated: raw blobs hold raw chunks only"),
        }
    })?;
    Ok(out)
}
