//! One error type for the library. Every variant names the file it concerns, and where it
//! applies the tensor and chunk, so the CLI can print a single self-explaining line.
use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// The container is malformed: bad magic/version, inconsistent or absurd header fields.
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },
    /// A stored chunk does not decode to what the index promises (checksum, size, codec).
    #[error("{}: tensor '{tensor}', chunk {chunk}: {msg}", path.display())]
    Chunk { path: PathBuf, tensor: String, chunk: usize, msg: String },
    /// The model file given as input cannot be used.
    #[error("{}: {msg}", path.display())]
    Input { path: PathBuf, msg: String },
    /// The arguments do not make sense together (sizes, codecs, shapes).
    #[error("{0}")]
    Invalid(String),
    #[error("interrupted")]
    Interrupted,
    #[error("GPU: {0}")]
    Gpu(#[from] GpuError),
}

/// What went wrong on the GPU side. The driver's, cuBLAS's and nvCOMP's own status codes
/// are kept (not flattened into text), so callers can tell "no GPU here" from a failed
/// launch or a corrupted chunk.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no CUDA driver found (libcuda.so could not be loaded): this machine has no usable NVIDIA GPU")]
    NoDriver,
    #[error("GPU {requested} requested, {present} present")]
    NoSuchDevice { requested: usize, present: usize },
    #[error("compute capability {0}.{1} is too old: the kernels need sm_80 or newer")]
    TooOld(i32, i32),
    #[error("CUDA driver: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
    /// The embedded PTX did not load, or lacks a kernel the host launches.
    #[error("loading the kernels: {what}: {source}")]
    Kernels { what: String, source: cudarc::driver::DriverError },
    #[error("cuBLAS: {0}")]
    Cublas(#[from] cudarc::cublas::result::CublasError),
    /// nvCOMP is missing, or is not the version this build binds (how to install it is in
    /// the message).
    #[error("{0}")]
    NvcompUnavailable(String),
    #[error("nvCOMP {call}: {text} (status {status})")]
    Nvcomp { call: &'static str, status: i32, text: String },
    /// NCCL is missing or too old, or the GPUs asked for cannot form a communicator (the
    /// message says how to fix it).
    #[error("{0}")]
    NcclUnavailable(String),
    #[error("NCCL {call}: {text}")]
    Nccl { call: &'static str, text: String },
    /// A chunk failed to decode on the GPU (nvCOMP status or size check) or decoded to
    /// bytes other than the CPU decoder's.
    #[error("tensor '{tensor}'{}: {msg}", chunk.map(|c| format!(", chunk {c}")).unwrap_or_default())]
    Decode { tensor: String, chunk: Option<u32>, msg: String },
    /// Page-locked host memory was refused (`what` says which buffer).
    #[error("{what}: {source}")]
    Pinning { what: String, source: cudarc::driver::DriverError },
}

impl From<cudarc::driver::DriverError> for Error {
    fn from(e: cudarc::driver::DriverError) -> Self {
        Error::Gpu(GpuError::Driver(e))
    }
}

impl From<cudarc::cublas::result::CublasError> for Error {
    fn from(e: cudarc::cublas::result::CublasError) -> Self {
        Error::Gpu(GpuError::Cublas(e))
    }
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_owned(), source }
    }
    pub fn format(path: &Path, msg: impl Into<String>) -> Self {
        Error::Format { path: path.to_owned(), msg: msg.into() }
    }
    pub fn input(path: &Path, msg: impl Into<String>) -> Self {
        Error::Input { path: path.to_owned(), msg: msg.into() }
    }
    /// The message without the variant's prefix, for wrapping into another error.
    pub fn detail(&self) -> String {
        match self {
            Error::Invalid(m) => m.clone(),
            Error::Gpu(e) => e.to_string(),
            other => other.to_string(),
        }
    }
}
