//! nvCOMP 6 (PyPI `nvidia-libnvcomp-cu13==6.0.0.12`), loaded at run time. No Rust crate
//! binds nvCOMP, so this is a small hand-written binding of the batched low-level C API,
//! layered like cudarc: raw symbols (`sys`) → `Result` wrappers (`Nvcomp`, here) → the
//! safe, workspace-owning types in `gpu::decode`.
mod sys;

use crate::container::Codec;
use crate::error::{Error, GpuError, Result};
use cudarc::driver::sys::CUstream;
use std::ffi::{c_void, CStr};
use std::sync::Arc;
use sys::{DecompressAsync, GetTempSize, Raw, Status, DEFAULT_OPTS, SUCCESS};

/// A loaded nvCOMP library.
pub struct Nvcomp {
    raw: Raw,
}

impl Nvcomp {
    /// Loads nvCOMP once per process.
    pub fn get() -> Result<Arc<Nvcomp>> {
        static LIB: std::sync::OnceLock<std::result::Result<Arc<Nvcomp>, String>> = std::sync::OnceLock::new();
        LIB.get_or_init(|| Raw::load().map(|raw| Arc::new(Nvcomp { raw })).map_err(|e| e.detail())).clone().map_err(|e| GpuError::NvcompUnavailable(e).into())
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &std::path::Path {
        &self.raw.path
    }

    /// (major, minor, patch).
    pub fn version(&self) -> (u32, u32, u32) {
        self.raw.version
    }

    fn check(&self, call: &'static str, status: Status) -> Result<()> {
        if status == SUCCESS {
            return Ok(());
        }
        // SAFETY: nvCOMP returns a static C string for any status value.
        let text = unsafe { CStr::from_ptr((self.raw.status_string)(status)) }.to_string_lossy();
        Err(GpuError::Nvcomp { call, status, text: text.into_owned() }.into())
    }

    fn decompressor(&self, codec: Codec) -> Result<(GetTempSize, DecompressAsync)> {
        match codec {
            Codec::Zstd => Ok((self.raw.zstd_decompress_temp, self.raw.zstd_decompress)),
            Codec::Ans => Ok((self.raw.ans_decompress_temp, self.raw.ans_decompress)),
            Codec::Raw | Codec::Rans => Err(Error::Invalid(format!("{} chunks do not decode with nvCOMP", codec.name()))),
        }
    }

    /// Device temp bytes a batch of up to `chunks` chunks of at most `max_chunk` decoded
    /// bytes (`max_total` in all) needs.
    pub fn decompress_temp_bytes(&self, codec: Codec, chunks: usize, max_chunk: usize, max_total: usize) -> Result<usize> {
        let (temp, _) = self.decompressor(codec)?;
        let mut bytes = 0usize;
        // SAFETY: host-only size query; the stream argument is unused for it.
        let status = unsafe { temp(chunks, max_chunk, DEFAULT_OPTS, &mut bytes, max_total, std::ptr::null_mut()) };
        self.check("decompress temp size", status)?;
        Ok(bytes)
    }

    /// Enqueues a batched decode. Every pointer is a device address of an array of
    /// `chunks` entries (pointers, sizes, statuses) filled before the call runs on `stream`.
    ///
    /// # Safety
    /// The arrays and the buffers they point to must be valid device memory of the stated
    /// sizes until the work completes, and `temp` must hold `temp_bytes`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn decompress_async(
        &self,
        codec: Codec,
        in_ptrs: u64,
        in_bytes: u64,
        out_buf_bytes: u64,
        out_actual_bytes: u64,
        chunks: usize,
        temp: u64,
        temp_bytes: usize,
        out_ptrs: u64,
        statuses: u64,
        stream: CUstream,
    ) -> Result<()> {
        let (_, decompress) = self.decompressor(codec)?;
        let status = decompress(
            in_ptrs as *const *const c_void,
            in_bytes as *const usize,
            out_buf_bytes as *const usize,
            out_actual_bytes as *mut usize,
            chunks,
            temp as *mut c_void,
            temp_bytes,
            out_ptrs as *const *mut c_void,
            DEFAULT_OPTS,
            statuses as *mut Status,
            stream,
        );
        self.check("decompress", status)
    }

    pub fn ans_compress_temp_bytes(&self, chunks: usize, max_chunk: usize, max_total: usize) -> Result<usize> {
        let mut bytes = 0usize;
        // SAFETY: host-only size query.
        let status = unsafe { (self.raw.ans_compress_temp)(chunks, max_chunk, DEFAULT_OPTS, &mut bytes, max_total, std::ptr::null_mut()) };
        self.check("ANS compress temp size", status)?;
        Ok(bytes)
    }

    pub fn ans_max_compressed_chunk(&self, max_chunk: usize) -> Result<usize> {
        let mut bytes = 0usize;
        // SAFETY: host-only size query.
        let status = unsafe { (self.raw.ans_compress_max_out)(max_chunk, DEFAULT_OPTS, &mut bytes) };
        self.check("ANS max output size", status)?;
        Ok(bytes)
    }

    /// Enqueues a batched ANS compression (same array conventions as `decompress_async`).
    ///
    /// # Safety
    /// As for `decompress_async`; each output buffer holds `ans_max_compressed_chunk` bytes.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn ans_compress_async(
        &self,
        in_ptrs: u64,
        in_bytes: u64,
        max_chunk: usize,
        chunks: usize,
        temp: u64,
        temp_bytes: usize,
        out_ptrs: u64,
        out_bytes: u64,
        statuses: u64,
        stream: CUstream,
    ) -> Result<()> {
        let status = (self.raw.ans_compress)(
            in_ptrs as *const *const c_void,
            in_bytes as *const usize,
            max_chunk,
            chunks,
            temp as *mut c_void,
            temp_bytes,
            out_ptrs as *const *mut c_void,
            out_bytes as *mut usize,
            DEFAULT_OPTS,
            statuses as *mut Status,
            stream,
        );
        self.check("ANS compress", status)
    }
}
