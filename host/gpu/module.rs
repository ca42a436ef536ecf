//! The PTX that build.rs compiled from `kernels/`, loaded once per device, with a handle
//! for every kernel the host launches (named in `abi`). On compute capability 9.0 the
//! sm_90a PTX, the only one with the Hopper GEMM (`abi::WGMMA_TILES`), is loaded too, on
//! the first use of those kernels (`Kernels::wgmma`).
use crate::abi;
use crate::error::{GpuError, Result};
use cudarc::driver::{CudaContext, CudaFunction};
use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

const PTX_SM80: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels_sm_80.ptx"));
const PTX_SM90: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels_sm_90.ptx"));
const PTX_SM90A: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels_sm_90a.ptx"));

/// The loaded kernels, one field per entry point.
pub struct Kernels {
    pub(crate) gemv: Vec<CudaFunction>,
    pub(crate) gemv_f16: CudaFunction,
    pub(crate) gemv3: CudaFunction,
    pub(crate) gemm: Vec<CudaFunction>,
    pub(crate) reduce_splits: CudaFunction,
    pub(crate) dequant: CudaFunction,
    pub(crate) scatter: CudaFunction,
    pub(crate) rans_decode: CudaFunction,
    pub(crate) check_decoded: CudaFunction,
    pub(crate) rmsnorm: CudaFunction,
    pub(crate) add_rmsnorm: CudaFunction,
    pub(crate) embed: CudaFunction,
    pub(crate) silu_mul: CudaFunction,
    pub(crate) rope_qk_store: CudaFunction,
    pub(crate) attention: CudaFunction,
    pub(crate) attention_merge: CudaFunction,
    pub(crate) gelu_mul: CudaFunction,
    pub(crate) add_bias: CudaFunction,
    pub(crate) head_rmsnorm: CudaFunction,
    pub(crate) rmsnorm_inplace: CudaFunction,
    /// GGUF block kernels, `abi::GGML_LAYOUTS` order: the M = 1 GEMVs, the tensor-core ones
    /// (then tile count) and the dequantizations.
    pub(crate) ggml_gemv: Vec<CudaFunction>,
    pub(crate) ggml_mma: Vec<Vec<CudaFunction>>,
    pub(crate) ggml_dequant: Vec<CudaFunction>,
    /// The Hopper GEMM entries (`abi::WGMMA_TILES` order) or why there are none. Loaded on
    /// first use: the sm_90a module holds every other kernel too, and JIT-compiling it
    /// doubles the driver's work at start for a plan `Gpu::plan` does not pick yet.
    wgmma: OnceLock<std::result::Result<Vec<CudaFunction>, String>>,
    /// The driver's handles of the entry points above (`waits_for_inputs`).
    entry_points: HashSet<usize>,
    ctx: Arc<CudaContext>,
    compute_capability: (i32, i32),
}

impl Kernels {
    pub(crate) fn load(ctx: &Arc<CudaContext>, (major, minor): (i32, i32)) -> Result<Self> {
        if major < 8 {
            return Err(GpuError::TooOld(major, minor).into());
        }
        let ptx = if major >= 9 { PTX_SM90 } else { PTX_SM80 };
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
            .map_err(|source| GpuError::Kernels { what: format!("the sm_{major}{minor} PTX does not load"), source })?;
        // Every handle loaded is remembered for `waits_for_inputs`.
        let loaded = std::cell::RefCell::new(HashSet::new());
        let f = |name: &str| {
            let h = module.load_function(name).map_err(|source| GpuError::Kernels { what: format!("kernel {name}"), source })?;
            loaded.borrow_mut().insert(h.cu_function() as usize);
            Ok::<_, GpuError>(h)
        };
        Ok(Kernels {
            gemv: abi::GEMV_KERNELS.iter().map(|n| f(n)).collect::<std::result::Result<_, _>>()?,
            gemv_f16: f(abi::GEMV_F16)?,
            gemv3: f(abi::GEMV3_M1)?,
            gemm: abi::GEMM_TILES.iter().map(|t| f(t.name)).collect::<std::result::Result<_, _>>()?,
            reduce_splits: f(abi::GEMM_REDUCE_SPLITS)?,
            dequant: f(abi::DEQUANT_I8_F16)?,
            scatter: f(abi::SCATTER_CHUNKS)?,
            rans_decode: f(abi::RANS_DECODE_CHUNKS)?,
            check_decoded: f(abi::CHECK_DECODED)?,
            rmsnorm: f(abi::RMSNORM)?,
            add_rmsnorm: f(abi::ADD_RMSNORM)?,
            embed: f(abi::EMBED)?,
            silu_mul: f(abi::SILU_MUL)?,
            rope_qk_store: f(abi::ROPE_QK_STORE)?,
            attention: f(abi::ATTENTION)?,
            attention_merge: f(abi::ATTENTION_MERGE)?,
            gelu_mul: f(abi::GELU_MUL)?,
            add_bias: f(abi::ADD_BIAS)?,
            head_rmsnorm: f(abi::HEAD_RMSNORM)?,
            rmsnorm_inplace: f(abi::RMSNORM_INPLACE)?,
            ggml_gemv: abi::GGML_LAYOUTS.iter().map(|l| f(l.gemv)).collect::<std::result::Result<_, _>>()?,
            ggml_mma: abi::GGML_LAYOUTS.iter().map(|l| l.mma.iter().map(|n| f(n)).collect()).collect::<std::result::Result<_, _>>()?,
            ggml_dequant: abi::GGML_LAYOUTS.iter().map(|l| f(l.dequant)).collect::<std::result::Result<_, _>>()?,
            wgmma: OnceLock::new(),
            // After every field above has loaded its kernels.
            entry_points: loaded.take(),
            ctx: ctx.clone(),
            compute_capability: (major, minor),
        })
    }

    /// Whether `f` is one of these kernels, which all begin by waiting for the grids they
    /// depend on (`ptx::await_inputs`), so that an edge into it may be programmatic
    /// (`gpu::CapturedGraph`). Only compute capability 9.0 and up: the sm_80 PTX has no wait.
    pub(crate) fn waits_for_inputs(&self, f: cudarc::driver::sys::CUfunction) -> bool {
        let hopper = self.wgmma.get().and_then(|w| w.as_ref().ok()).is_some_and(|w| w.iter().any(|h| h.cu_function() == f));
        self.compute_capability.0 >= 9 && (self.entry_points.contains(&(f as usize)) || hopper)
    }

    /// The Hopper GEMM kernels (`abi::WGMMA_TILES` order), from the sm_90a PTX, loaded with
    /// their dynamic shared-memory limit raised to each tile's ring on the first call; or why
    /// not: a device other than compute capability 9.0 (sm_90a code runs on no other), or a
    /// module or attribute the driver refuses. Call it once before capturing a CUDA graph
    /// that uses them: loading a module is not a stream operation.
    pub fn wgmma(&self) -> std::result::Result<&[CudaFunction], String> {
        self.wgmma.get_or_init(|| self.load_wgmma()).as_deref().map_err(Clone::clone)
    }

    fn load_wgmma(&self) -> std::result::Result<Vec<CudaFunction>, String> {
        use cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
        let (major, minor) = self.compute_capability;
        if (major, minor) != (9, 0) {
            return Err(format!("the wgmma kernels need compute capability 9.0 (sm_90a); this device is {major}.{minor}"));
        }
        let module = self.ctx.load_module(cudarc::nvrtc::Ptx::from_src(PTX_SM90A)).map_err(|e| format!("the sm_90a PTX does not load: {e}"))?;
        abi::WGMMA_TILES
            .iter()
            .map(|t| {
                let f = module.load_function(t.name).map_err(|e| format!("kernel {}: {e}", t.name))?;
                f.set_attribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, t.smem_bytes() as i32)
                    .map_err(|e| format!("kernel {}: {} bytes of dynamic shared memory refused: {e}", t.name, t.smem_bytes()))?;
                Ok(f)
            })
            .collect()
    }
}
