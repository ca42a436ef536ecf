//! nvCOMP's C API as raw function pointers, resolved from `libnvcomp.so.6` at run time
//! (the library is proprietary and fetched by scripts/setup.sh, never linked at build
//! time). Types follow nvCOMP 6's headers (`nvcomp/*.h`).
use crate::error::{GpuError, Result};
use cudarc::driver::sys::CUstream;
use std::ffi::{c_char, c_void};
use std::path::{Path, PathBuf};

pub(super) type Status = i32;
pub(super) const SUCCESS: Status = 0;
/// nvCOMP's major version this binding matches (its option structs and temp-size
/// signatures changed from 5.x).
const MAJOR: u32 = 6;

/// nvCOMP's 64-byte option structs; all zero selects the defaults for Zstd and ANS.
#[repr(C, align(4))]
#[derive(Clone, Copy)]
pub(super) struct Opts([u8; 64]);
pub(super) const DEFAULT_OPTS: Opts = Opts([0; 64]);

#[repr(C)]
#[derive(Default)]
struct Properties {
    version: u32,
    cudart_version: u32,
}

pub(super) type GetTempSize = unsafe extern "C" fn(usize, usize, Opts, *mut usize, usize, CUstream) -> Status;
pub(super) type DecompressAsync = unsafe extern "C" fn(
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
pub(super) type MaxOutputChunkSize = unsafe extern "C" fn(usize, Opts, *mut usize) -> Status;
pub(super) type CompressAsync = unsafe extern "C" fn(
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
pub(super) struct Raw {
    _lib: libloading::Library,
    pub path: PathBuf,
    /// (major, minor, patch) as the library reports it.
    pub version: (u32, u32, u32),
    pub zstd_decompress_temp: GetTempSize,
    pub zstd_decompress: DecompressAsync,
    pub ans_decompress_temp: GetTempSize,
    pub ans_decompress: DecompressAsync,
    pub ans_compress_temp: GetTempSize,
    pub ans_compress_max_out: MaxOutputChunkSize,
    pub ans_compress: CompressAsync,
    pub status_string: unsafe extern "C" fn(Status) -> *const c_char,
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

impl Raw {
    /// The first library among the candidates that loads and is nvCOMP 6.
    pub(super) fn load() -> Result<Raw> {
        let mut tried = Vec::new();
        for path in candidates() {
            // SAFETY: loading nvCOMP runs only its (trusted) initializers.
            match unsafe { libloading::Library::new(&path) } {
                Ok(lib) => return Raw::bind(lib, path),
                Err(e) => tried.push(format!("{}: {e}", path.display())),
            }
        }
        Err(GpuError::NvcompUnavailable(format!(
            "nvCOMP not found (tried {}); run scripts/setup.sh or set NVCOMP_LIB to libnvcomp.so.6 from pip install nvidia-libnvcomp-cu13==6.0.0.12",
            tried.join("; ")
        ))
        .into())
    }

    fn bind(lib: libloading::Library, path: PathBuf) -> Result<Raw> {
        let missing = |name: &str, e: libloading::Error| {
            GpuError::NvcompUnavailable(format!("{}: no symbol {name} ({e}); codecllm needs nvCOMP {MAJOR}.x", path.display()))
        };
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
            return Err(GpuError::NvcompUnavailable(format!(
                "{} is nvCOMP {}.{}.{}; codecllm needs {MAJOR}.x (pip install nvidia-libnvcomp-cu13==6.0.0.12)",
                path.display(),
                version.0,
                version.1,
                version.2
            ))
            .into());
        }
        Ok(Raw {
            zstd_decompress_temp: sym!("nvcompBatchedZstdDecompressGetTempSize"),
            zstd_decompress: sym!("nvcompBatchedZstdDecompressAsync"),
            ans_decompress_temp: sym!("nvcompBatchedANSDecompressGetTempSize"),
            ans_decompress: sym!("nvcompBatchedANSDecompressAsync"),
            ans_compress_temp: sym!("nvcompBatchedANSCompressGetTempSize"),
            ans_compress_max_out: sym!("nvcompBatchedANSCompressGetMaxOutputChunkSize"),
            ans_compress: sym!("nvcompBatchedANSCompressAsync"),
            status_string: sym!("nvcompGetStatusString"),
            _lib: lib,
            path,
            version,
        })
    }
}
