//! The PTX that build.rs compiled from `kernels/`, loaded once per device, with a handle
//! for every kernel the host launches (named in `abi`).
use crate::abi;
use crate::error::{GpuError, Result};
use cudarc::driver::{CudaContext, CudaFunction};
use std::sync::Arc;

const PTX_SM80: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels_sm_80.ptx"));
const PTX_SM90: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels_sm_90.ptx"));

/// The loaded kernels, one field per entry point.
pub struct Kernels {
    pub(crate) gemv: Vec<CudaFunction>,
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
    pub(crate) gelu_mul: CudaFunction,
    pub(crate) add_bias: CudaFunction,
    pub(crate) head_rmsnorm: CudaFunction,
    pub(crate) rmsnorm_inplace: CudaFunction,
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
        let f = |name: &str| module.load_function(name).map_err(|source| GpuError::Kernels { what: format!("kernel {name}"), source });
        Ok(Kernels {
            gemv: abi::GEMV_KERNELS.iter().map(|n| f(n)).collect::<std::result::Result<_, _>>()?,
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
            gelu_mul: f(abi::GELU_MUL)?,
            add_bias: f(abi::ADD_BIAS)?,
            head_rmsnorm: f(abi::HEAD_RMSNORM)?,
            rmsnorm_inplace: f(abi::RMSNORM_INPLACE)?,
        })
    }
}
