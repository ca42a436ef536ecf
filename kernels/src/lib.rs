//! codecllm device code: fused INT8→FP16 dequant kernels, compiled to PTX by the root
//! `build.rs` with rustc's own `nvptx64-nvidia-cuda` target.
//!
//! Rules for this crate (the build checks the first one):
//! - No panic paths: slice indexing, `/` by a runtime value or `unwrap` leave bodiless
//!   `.func` declarations of core's panic machinery in the PTX, and the driver refuses
//!   such a module. Use raw pointers and make divisors provably non-zero.
//! - Every entry point is `#[no_mangle] pub unsafe extern "ptx-kernel"`, named in `abi.rs`
//!   (shared with the host; build.rs checks each name there is an entry of the PTX).
//! - Every entry point's first statement is `ptx::await_inputs()` (build.rs checks the
//!   sm_90 PTX): the host lets a captured step's kernels launch before their predecessor
//!   ends, and that wait is what keeps them from reading its outputs early.
//!
//! Weight layout (see docs/FORMAT.md): INT8 row-major `[n, k]` (row = output channel),
//! scales f32 `[n, groups]` with `groups = ceil(k / group)`, `group` a multiple of 16 or
//! `k` itself (per-channel). Activations and outputs are FP16 row-major.
#![no_std]
#![feature(abi_ptx, stdarch_nvptx, asm_experimental_arch, f16)]
#![allow(clippy::missing_safety_doc)]

pub mod abi;
mod dequant;
mod gemm;
mod gemv;
mod ggml;
pub mod ggml_blocks;
mod llama;
mod ptx;
mod rans;
mod scatter;
// The Hopper GEMM: `wgmma` assembles for sm_90a only, so only that PTX holds it.
#[cfg(target_feature = "sm_90a")]
mod wgmma;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // Unreachable by construction (see the crate rules); trap rather than hang if it is not.
    unsafe { core::arch::nvptx::trap() }
}
