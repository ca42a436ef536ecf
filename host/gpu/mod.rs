//! GPU runtime on cudarc: context and stream setup that fails with a clear error (never a
//! panic) without a driver or GPU, the embedded PTX loaded for the device's architecture
//! (`module`, its interface in `abi`), the fused linears (`linear`), nvCOMP (`nvcomp`) and
//! decoding compressed tensors from VRAM (`decode`).
//!
//! ```no_run
//! use codecllm::container::Container;
//! use codecllm::gpu::{Gpu, DeviceCompressedTensor, DeviceInt8Buffer, Decoder};
//! # fn main() -> codecllm::Result<()> {
//! let gpu = Gpu::new(0)?;
//! let c = Container::open("model.clm".as_ref())?;
//! // Compressed bytes go to VRAM once (checksums verified on the way).
//! let w = DeviceCompressedTensor::upload(&gpu, &c, "model.layers.0.mlp.up_proj.weight")?;
//! let mut decoder = Decoder::new(&gpu, &[&w.table])?;  // nvCOMP workspace, sized once
//! let mut q = DeviceInt8Buffer::new(&gpu, w.len())?;   // decode target, reused
//! let x = gpu.stream.clone_htod(&vec![half::f16::ONE; w.cols])?; // [m = 1, k]
//! let mut y = gpu.stream.alloc_zeros::<half::f16>(w.rows)?;       // [m = 1, n]
//! // Per layer: decode on the GPU, then the fused INT8→FP16 dequant + linear.
//! w.decode_into(&mut decoder, &mut q, &gpu.stream)?;
//! gpu.linear(&x, 1, &w.weights(&q), &mut y, &gpu.stream)?;
//! decoder.check(&gpu.stream)?;                        // every chunk decoded in full
//! # Ok(()) }
//! ```
mod ans;
mod decode;
mod ggml;
/// The GGUF block types' bits as the kernels read them, shared with `kernels/` (CPU tests
/// replay it against the CPU dequantizer).
#[path = "../../kernels/src/ggml_blocks.rs"]
pub mod ggml_blocks;
mod graph;
mod linear;
mod module;
pub mod nccl;
pub mod nvcomp;
mod pinned;

pub use crate::abi::{GemmTile, GEMM_TILES, GEMV_MAX_M};
pub use ans::ans_encode_chunks;
pub use decode::{ChunkBatch, DecodeLog, Decoder, DeviceChunkTable, DeviceCompressedGroup, DeviceCompressedTensor, DeviceInt8Buffer};
pub use ggml::{ggml_planes, gpu_layout, native_blocks, GgmlWeights, GGML_GEMV_MAX_BATCH};
pub use graph::CapturedGraph;
pub use linear::{cublas_fp16_linear, Int8Weights, LinearPlan, WeightsView, DEQUANT_BAND_ELEMS, DEQUANT_CUBLAS_MIN_M};
pub use module::Kernels;
pub use pinned::{launch_host_func, record_external, PinnedBuffer};

use crate::error::{GpuError, Result};
use cudarc::driver::{CudaContext, CudaStream};
use std::sync::Arc;

/// One device: its context, a default stream, and the codecllm kernels loaded on it.
pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub kernels: Kernels,
    pub name: String,
    /// The device's index as CUDA numbers it.
    pub ordinal: usize,
    pub compute_capability: (i32, i32),
    /// FP32 partial sums of split-K GEMMs; grows to the largest one seen.
    split_workspace: std::sync::Mutex<Option<cudarc::driver::CudaSlice<f32>>>,
    /// FP16 band of the dequantize-then-cuBLAS plan; grows to the largest band seen.
    dequant_scratch: std::sync::Mutex<Option<cudarc::driver::CudaSlice<half::f16>>>,
    /// cuBLAS for that plan, created on first use.
    blas: std::sync::Mutex<Option<cudarc::cublas::CudaBlas>>,
}

impl Gpu {
    /// Opens device `ordinal`. Without a CUDA driver or a device this is an `Error::Gpu`
    /// saying so (`GpuError::NoDriver`, `NoSuchDevice`; cudarc itself would panic on the
    /// missing library).
    pub fn new(ordinal: usize) -> Result<Self> {
        // SAFETY: only probes whether libcuda can be dlopen'ed.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(GpuError::NoDriver.into());
        }
        let count = CudaContext::device_count()?.max(0) as usize;
        if ordinal >= count {
            return Err(GpuError::NoSuchDevice { requested: ordinal, present: count }.into());
        }
        let ctx = CudaContext::new(ordinal)?;
        // Streams and ordering are managed explicitly here; cudarc's per-buffer event
        // tracking would add event records to every launch in the hot path.
        // SAFETY: no buffer is shared between streams without an explicit event wait.
        unsafe { ctx.disable_event_tracking() };
        let compute_capability = ctx.compute_capability()?;
        let name = ctx.name()?;
        let kernels = Kernels::load(&ctx, compute_capability)?;
        // A stream of our own, not the legacy default one: only created streams can be
        // captured into CUDA graphs.
        let stream = ctx.new_stream()?;
        Ok(Gpu {
            ctx,
            stream,
            kernels,
            name,
            ordinal,
            compute_capability,
            split_workspace: Default::default(),
            dequant_scratch: Default::default(),
            blas: Default::default(),
        })
    }

    /// GPU 0, opened once per process, for work with no GPU of its own (ANS encoding
    /// inside `compress`).
    pub fn shared() -> std::result::Result<&'static Gpu, String> {
        static GPU: std::sync::OnceLock<std::result::Result<Gpu, String>> = std::sync::OnceLock::new();
        GPU.get_or_init(Gpu::probe).as_ref().map_err(Clone::clone)
    }

    /// Whether a GPU can be opened here; the reason when not. For tests and benches that
    /// must skip cleanly on CPU-only machines.
    pub fn probe() -> std::result::Result<Gpu, String> {
        Gpu::new(0).map_err(|e| e.detail())
    }

    /// Free and total device memory in bytes.
    pub fn mem_info(&self) -> Result<(usize, usize)> {
        Ok(self.ctx.mem_get_info()?)
    }

    /// The driver's default stream-ordered pool, from which cudarc allocates; `None` where
    /// the device has none (allocations are then synchronous).
    fn default_pool(&self) -> Result<Option<cudarc::driver::sys::CUmemoryPool>> {
        if !self.ctx.has_async_alloc() {
            return Ok(None);
        }
        let mut pool = std::ptr::null_mut();
        // SAFETY: a plain driver query on this context's device, written into the local.
        unsafe { cudarc::driver::sys::cuDeviceGetDefaultMemPool(&mut pool, self.ctx.cu_device()) }.result()?;
        Ok(Some(pool))
    }

    /// Bytes the driver's stream-ordered pool holds reserved on the device but has not
    /// handed out: it grows in blocks (32 MiB for small allocations), so on a small model
    /// this slack is a large part of what `mem_info` sees in use.
    pub fn pool_slack(&self) -> Result<usize> {
        let Some(pool) = self.default_pool()? else { return Ok(0) };
        use cudarc::driver::sys::{cuMemPoolGetAttribute, CUmemPool_attribute as A};
        let (mut reserved, mut used) = (0u64, 0u64);
        // SAFETY: both attributes are 64-bit values, written into the locals.
        unsafe {
            cuMemPoolGetAttribute(pool, A::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, &mut reserved as *mut u64 as *mut _).result()?;
            cuMemPoolGetAttribute(pool, A::CU_MEMPOOL_ATTR_USED_MEM_CURRENT, &mut used as *mut u64 as *mut _).result()?;
        }
        Ok(reserved.saturating_sub(used) as usize)
    }

    /// Waits for all work, then hands memory that freed buffers left in the driver's
    /// stream-ordered pool back to the device. cudarc allocates through that pool, so
    /// without this `mem_info` would not see buffers come and go (VRAM measurements).
    pub fn release_cached_memory(&self) -> Result<()> {
        self.ctx.synchronize()?;
        if let Some(pool) = self.default_pool()? {
            // SAFETY: the pool is this device's default one; trimming only releases memory
            // no allocation holds.
            unsafe { cudarc::driver::sys::cuMemPoolTrimTo(pool, 0) }.result()?;
        }
        Ok(())
    }
}
