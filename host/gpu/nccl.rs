//! NCCL through cudarc's `nccl` feature, loaded at run time like the driver: one
//! communicator per GPU of this process (`ncclCommInitAll`), and the all-reduce of FP16
//! partial sums that tensor parallelism needs, on each GPU's own stream.
//!
//! One process, and during a forward one host thread per GPU (`model::llama::gpu::tp`):
//! each rank then runs the single-GPU forward unchanged, its collectives in line on its
//! stream. One thread driving every GPU would have to wrap each collective of all ranks in
//! one `ncclGroupStart`/`ncclGroupEnd` (a collective called alone may block until the other
//! ranks join), so the forward would be interleaved layer by layer across GPUs instead.
//!
//! cudarc looks NCCL up by name only (`libnccl.so` and a few variants; not `libnccl.so.2`,
//! the name the PyPI wheel ships), through the dynamic loader, which reads
//! `LD_LIBRARY_PATH` once at process start: `scripts/setup.sh` puts the library and a
//! `libnccl.so` link into `.cache/nccl/`, and that folder must be on `LD_LIBRARY_PATH`.
use crate::error::{GpuError, Result};
use crate::gpu::Gpu;
use cudarc::driver::CudaViewMut;
use cudarc::nccl::{result::NcclError, Comm, ReduceOp};
use half::f16;
use std::path::{Path, PathBuf};

/// The wheel `scripts/setup.sh` fetches, for messages.
const WHEEL: &str = "nvidia-nccl-cu13==2.30.7";

/// NCCL's switch for NVLink SHARP multicast.
const NVLS_VAR: &str = "NCCL_NVLS_ENABLE";

/// The oldest NCCL cudarc has bindings for.
const OLDEST: (i32, i32) = (2, 22);

/// NCCL's version as (major, minor, patch), or `NcclUnavailable` saying how to install it.
/// Checked before every other NCCL call: cudarc panics where the library is missing.
pub fn version() -> Result<(i32, i32, i32)> {
    static VERSION: std::sync::OnceLock<std::result::Result<(i32, i32, i32), String>> = std::sync::OnceLock::new();
    VERSION.get_or_init(probe).clone().map_err(|e| GpuError::NcclUnavailable(e).into())
}

fn probe() -> std::result::Result<(i32, i32, i32), String> {
    // SAFETY: only tries to dlopen the names cudarc will load.
    if !unsafe { cudarc::nccl::sys::is_culib_present() } {
        let found = fetched().map(|p| format!(" ({} is there: add its folder to LD_LIBRARY_PATH)", p.display())).unwrap_or_default();
        return Err(format!(
            "NCCL not found: the dynamic loader finds no libnccl.so{found}. Run scripts/setup.sh (it fetches libnccl.so.2 from PyPI \
             {WHEEL} into .cache/nccl/ with a libnccl.so link), then start codecllm with LD_LIBRARY_PATH=<codecllm>/.cache/nccl"
        ));
    }
    let v = cudarc::nccl::result::get_nccl_version().map_err(|e| format!("ncclGetVersion: {}", error_text(&e)))?;
    // NCCL_VERSION(X, Y, Z) is X·10000 + Y·100 + Z since 2.9, X·1000 + Y·100 + Z before.
    let v = if v >= 10_000 { (v / 10_000, v / 100 % 100, v % 100) } else { (v / 1000, v / 100 % 10, v % 100) };
    if (v.0, v.1) < OLDEST {
        return Err(format!("NCCL {}.{}.{} is older than {}.{}, the oldest codecllm's bindings know; install {WHEEL}", v.0, v.1, v.2, OLDEST.0, OLDEST.1));
    }
    Ok(v)
}

/// Where scripts/setup.sh leaves NCCL, or a bundle beside the executable, if it is there.
fn fetched() -> Option<PathBuf> {
    let beside_exe = std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join("libnccl.so")));
    [beside_exe, Some(Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/nccl/libnccl.so"))].into_iter().flatten().find(|p| p.exists())
}

/// NCCL's text for a failed call, with its own account of the last error.
fn error_text(e: &NcclError) -> String {
    // SAFETY: NCCL returns static or thread-local C strings (or null) for any result value;
    // ncclGetLastError ignores its communicator argument.
    unsafe {
        let text = |p: *const std::ffi::c_char| if p.is_null() { String::new() } else { std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned() };
        let (what, last) = (text(cudarc::nccl::sys::ncclGetErrorString(e.0)), text(cudarc::nccl::sys::ncclGetLastError(std::ptr::null_mut())));
        if last.is_empty() {
            format!("{what} ({:?})", e.0)
        } else {
            format!("{what} ({:?}): {last}", e.0)
        }
    }
}

fn nccl_error(call: &'static str, e: NcclError) -> crate::error::Error {
    GpuError::Nccl { call, text: error_text(&e) }.into()
}

/// NVLink multicast (NVLS) off unless the user chose: on the shared GPU hosts it runs on,
/// NVLS can take the whole host down.
fn nvls_off_by_default() {
    if std::env::var_os(NVLS_VAR).is_none() {
        // NCCL reads it when the first communicator is created, which follows. `set_var`
        // races only with a concurrent `getenv` in another thread; none runs at this point
        // of loading a model.
        std::env::set_var(NVLS_VAR, "0");
    }
}

/// One GPU's communicator, issuing on that GPU's default stream.
pub struct Communicator {
    comm: Comm,
}

// SAFETY: an NCCL communicator may be used from any thread, one call at a time; the owner
// of a `Communicator` (one rank's model, on its own thread) is the only caller.
unsafe impl Send for Communicator {}

impl Communicator {
    /// One communicator per GPU, rank `i` on `gpus[i]`, all in this process.
    pub fn for_gpus(gpus: &[&Gpu]) -> Result<Vec<Communicator>> {
        version()?;
        let mut ordinals: Vec<usize> = gpus.iter().map(|g| g.ordinal).collect();
        ordinals.sort_unstable();
        if ordinals.windows(2).any(|w| w[0] == w[1]) || gpus.is_empty() {
            return Err(GpuError::NcclUnavailable(format!("a communicator needs distinct GPUs, got devices {ordinals:?}")).into());
        }
        nvls_off_by_default();
        let comms = Comm::from_devices(gpus.iter().map(|g| g.stream.clone()).collect()).map_err(|e| nccl_error("ncclCommInitAll", e))?;
        Ok(comms.into_iter().map(|comm| Communicator { comm }).collect())
    }

    /// Sums `buf` over all ranks, in place, on this rank's stream. Every rank must call it,
    /// in the same order as its other collectives.
    pub fn all_reduce_sum(&self, buf: &mut CudaViewMut<f16>) -> Result<()> {
        self.comm.all_reduce_in_place(buf, &ReduceOp::Sum).map(|_| ()).map_err(|e| nccl_error("ncclAllReduce", e))
    }
}

/// GPUs the driver shows this process (`CUDA_VISIBLE_DEVICES` applies), for `--gpus auto`.
pub fn visible_gpus() -> Result<usize> {
    // SAFETY: only probes whether libcuda can be dlopen'ed (cudarc would panic without it).
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(GpuError::NoDriver.into());
    }
    Ok(cudarc::driver::CudaContext::device_count()?.max(0) as usize)
}
