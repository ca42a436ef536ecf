//! ANS encoding with nvCOMP on the GPU: ANS has no CPU encoder.
use super::nvcomp::Nvcomp;
use super::Gpu;
use crate::container::StoredChunk;
use crate::error::{GpuError, Result};
use cudarc::driver::DevicePtr;

/// Encodes `bytes` into ANS chunks with nvCOMP on the GPU (ANS has no CPU encoder).
/// Chunks that do not shrink are stored raw, as on the CPU path.
pub fn ans_encode_chunks(gpu: &Gpu, bytes: &[u8], chunk_size: usize) -> Result<Vec<StoredChunk>> {
    let nv = Nvcomp::get()?;
    let s = &gpu.stream;
    let n = bytes.len().div_ceil(chunk_size);
    if n == 0 {
        return Ok(Vec::new());
    }
    let max_out = nv.ans_max_compressed_chunk(chunk_size)?.div_ceil(16) * 16;
    let input = s.clone_htod(bytes)?;
    let output = s.alloc_zeros::<u8>(n * max_out)?;
    let (in_base, out_base) = (input.device_ptr(s).0, output.device_ptr(s).0);
    let in_ptrs: Vec<u64> = (0..n).map(|i| in_base + (i * chunk_size) as u64).collect();
    let in_sizes: Vec<u64> = (0..n).map(|i| (bytes.len() - i * chunk_size).min(chunk_size) as u64).collect();
    let out_ptrs: Vec<u64> = (0..n).map(|i| out_base + (i * max_out) as u64).collect();
    let (d_in_ptrs, d_in_sizes, d_out_ptrs) = (s.clone_htod(&in_ptrs)?, s.clone_htod(&in_sizes)?, s.clone_htod(&out_ptrs)?);
    let d_out_sizes = s.alloc_zeros::<u64>(n)?;
    let statuses = s.alloc_zeros::<i32>(n)?;
    let temp_bytes = nv.ans_compress_temp_bytes(n, chunk_size, bytes.len())?;
    let temp = s.alloc_zeros::<u8>(temp_bytes.max(1))?;
    // SAFETY: every array holds n entries; outputs hold max_out bytes each.
    unsafe {
        nv.ans_compress_async(
            d_in_ptrs.device_ptr(s).0,
            d_in_sizes.device_ptr(s).0,
            chunk_size,
            n,
            temp.device_ptr(s).0,
            temp_bytes,
            d_out_ptrs.device_ptr(s).0,
            d_out_sizes.device_ptr(s).0,
            statuses.device_ptr(s).0,
            s.cu_stream(),
        )?;
    }
    let sizes = s.clone_dtoh(&d_out_sizes)?;
    let status = s.clone_dtoh(&statuses)?;
    let coded = s.clone_dtoh(&output)?;
    (0..n)
        .map(|i| {
            if status[i] != 0 || sizes[i] as usize > max_out {
                return Err(GpuError::Nvcomp { call: "ANS compress", status: status[i], text: format!("chunk {i} failed") }.into());
            }
            let src = &bytes[i * chunk_size..i * chunk_size + in_sizes[i] as usize];
            Ok(if (sizes[i] as usize) < src.len() {
                StoredChunk { bytes: coded[i * max_out..i * max_out + sizes[i] as usize].to_vec(), raw: false }
            } else {
                StoredChunk { bytes: src.to_vec(), raw: true }
            })
        })
        .collect()
}
