//! nvCOMP 6 (PyPI `nvidia-libnvcomp-cu13==6.0.0.12`), loaded at run time. No Rust crate
//! binds nvCOMP, so this is a small hand-written binding of the batched low-level C API,
//! layered like cudarc: raw symbols (`Raw`) → `Result` wrappers (`Nvcomp`) → the safe,
//! workspace-owning types in `gpu::tensor`.
use crate::error::{Error, Result};
use crate::format::Codec;
use cudarc::driver::sys::CUstream;
use std::ffi::{c_char, c_void, CStr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

type Status = i32;
const SUCCESS: Status = 0;
/// nvCOMP's major version this binding matches (its option structs and temp-size
/// signatures changed from 5.x).
const MAJOR: u32 = 6;

/// nvCOMP's 64-byte option structs; all zero selects the defaults for Zstd and ANS.
#[repr(C, align(4))]
#[derive(Clone, Copy)]
struct Opts([u8; 64]);
const DEFAULT_OPTS: Opts = Opts([0; 64]);

#[repr(C)]
#[derive(Default)]
struct Properties {
    version: u32,
    cudart_version: u32,
}

type GetTempSize = unsafe extern "C" fn(usize, usize, Opts, *mut usize, usize, CUstream) -> Status;
type DecompressAsync = unsafe extern "C" fn(
    *const *const c_void,
    *const usize,
    *const usize,
    *mut usize,
    usize,
    *mut c_void,
    usize,
    *const *mut c_void,
    Opts,
    *mut Status,
    CUstream,
) -> Status;
type MaxOutputChunkSize = unsafe extern "C" fn(usize, Opts, *mut usize) -> Status;
type CompressAsync = unsafe extern "C" fn(
    *const *const c_void,
    *const usize,
    usize,
    usize,
    *mut c_void,
    usize,
    *const *mut c_void,
    *mut usize,
    Opts,
    *mut Status,
    CUstream,
) -> Status;

/// Raw entry points, valid while `_lib` lives.
struct Raw {
    _lib: libloading::Library,
    zstd_decompress_temp: GetTempSize,
    zstd_decompress: DecompressAsync,
    ans_decompress_temp: GetTempSize,
    ans_decompress: DecompressAsync,
    ans_compress_temp: GetTempSize,
    ans_compress_max_out: MaxOutputChunkSize,
    ans_compress: CompressAsync,
    status_string: unsafe extern "C" fn(Status) -> *const c_char,
}

/// A loaded nvCOMP library.
pub struct Nvcomp {
    raw: Raw,
    pub path: PathBuf,
    pub version: (u32, u32, u32),
}

/// Where to look, in order: `NVCOMP_LIB`; the dynamic loader's path; beside the running
/// executable (bundles carried to GPU machines); the cache `scripts/setup.sh` fills.
fn candidates() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os("NVCOMP_LIB") {
        v.push(PathBuf::from(p));
        return v;
    }
    v.push(PathBuf::from("libnvcomp.so.6"));
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_owned)) {
        v.push(dir.join("libnvcomp.so.6"));
    }
    v.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/nvcomp/libnvcomp.so.6"));
    v
}

impl Nvcomp {
    /// Loads nvCOMP once per process.
    pub fn get() -> Result<Arc<Nvcomp>> {
        static LIB: std::sync::OnceLock<std::result::Result<Arc<Nvcomp>, String>> = std::sync::OnceLock::new();
        LIB.get_or_init(|| Nvcomp::load().map(Arc::new).map_err(|e| e.detail())).clone().map_err(Error::Gpu)
    }

    fn load() -> Result<Nvcomp> {
        let mut tried = Vec::new();
        for path in candidates() {
            // SAFETY: loading nvCOMP runs only its (trusted) initializers.
            match unsafe { libloading::Library::new(&path) } {
                Ok(lib) => return Nvcomp::bind(lib, path),
                Err(e) => tried.push(format!("{}: {e}", path.display())),
            }
        }
        Err(Error::Gpu(format!(
            "nvCOMP not found (tried {}); run scripts/setup.sh or set NVCOMP_LIB to libnvcomp.so.6 from pip install nvidia-libnvcomp-cu13==6.0.0.12",
            tried.join("; ")
        )))
    }

    fn bind(lib: libloading::Library, path: PathBuf) -> Result<Nvcomp> {
        let missing = |name: &str, e: libloading::Error| Error::Gpu(format!("{}: no symbol {name} ({e}); codecllm needs nvCOMP {MAJOR}.x", path.display()));
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: the type is the one nvCOMP 6's headers declare for this symbol.
                *unsafe { lib.get(concat!($name, "\0").as_bytes()) }.map_err(|e| missing($name, e))?
            };
        }
        let get_properties: unsafe extern "C" fn(*mut Properties) -> Status = sym!("nvcompGetProperties");
        let mut props = Properties::default();
        // SAFETY: writes the 8-byte struct we pass.
        let status = unsafe { get_properties(&mut props) };
        let v = props.version;
        let version = (v / 1000, (v % 1000) / 100, v % 100);
        if status != SUCCESS || version.0 != MAJOR {
            return Err(Error::Gpu(format!(
                "{} is nvCOMP {}.{}.{}; codecllm needs {MAJOR}.x (pip install nvidia-libnvcomp-cu13==6.0.0.12)",
                path.display(),
                version.0,
                version.1,
                version.2
            )));
        }
        let raw = Raw {
            zstd_decompress_temp: sym!("nvcompBatchedZstdDecompressGetTempSize"),
            zstd_decompress: sym!("nvcompBatchedZstdDecompressAsync"),
            ans_decompress_temp: sym!("nvcompBatchedANSDecompressGetTempSize"),
            ans_decompress: sym!("nvcompBatchedANSDecompressAsync"),
            ans_compress_temp: sym!("nvcompBatchedANSCompressGetTempSize"),
            ans_compress_max_out: sym!("nvcompBatchedANSCompressGetMaxOutputChunkSize"),
            ans_compress: sym!("nvcompBatchedANSCompressAsync"),
            status_string: sym!("nvcompGetStatusString"),
            _lib: lib,
        };
        Ok(Nvcomp { raw, path, version })
    }

    fn check(&self, what: &str, status: Status) -> Result<()> {
        if status == SUCCESS {
            return Ok(());
        }
        // SAFETY: nvCOMP returns a static C string for any status value.
        let text = unsafe { CStr::from_ptr((self.raw.status_string)(status)) }.to_string_lossy();
        Err(Error::Gpu(format!("nvCOMP {what}: {text} (status {status})")))
    }

    fn decompressor(&self, codec: Codec) -> Result<(GetTempSize, DecompressAsync)> {
        match codec {
            Codec::Zstd => Ok((self.raw.zstd_decompress_temp, self.raw.zstd_decompress)),
            Codec::Ans => Ok((self.raw.ans_decompress_temp, self.raw.ans_decompress)),
            Codec::Raw => Err(Error::Invalid("raw chunks need no decompressor".into())),
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
