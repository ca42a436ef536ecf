//! Low-VRAM streaming: a model's compressed weights stay in page-locked host RAM; a fixed
//! ring of device slots receives one unit (a layer, or a group such as a transformer
//! block) at a time. Three streams overlap the work, ordered only by events:
//!
//! ```text
//! copy    │ H2D u0 │ H2D u1 │ H2D u2 ........ │ H2D u3 │
//! decode  │        │ dec u0 │ dec u1 │        │ dec u2 │          (nvCOMP, into the slot)
//! compute │                 │ GEMM u0 │ GEMM u1 │ GEMM u2 │       (fused W8A16 kernels)
//! ```
//!
//! A slot's compressed half is overwritten only after its decode finished, its INT8 half
//! only after its compute finished, so at most `slots` units are live and peak VRAM does
//! not depend on the model's depth. Nothing is allocated per unit.
//!
//! ```no_run
//! # use codecllm::{container::Container, gpu::Gpu, stream::{HostStore, WeightStream}};
//! # fn main() -> codecllm::Result<()> {
//! let gpu = Gpu::new(0)?;
//! let c = Container::open("model.clm".as_ref())?;
//! let units = vec![vec!["layers.0.q.weight".to_string(), "layers.0.o.weight".to_string()]];
//! let store = HostStore::load(&gpu, &c, &units, true)?;    // pinned once
//! let mut ws = WeightStream::new(&gpu, store.into(), 2, None, 1)?; // 2 slots, no budget, M ≤ 1
//! let x = gpu.stream.clone_htod(&vec![half::f16::ONE; ws.input_width()])?;
//! let mut y = gpu.stream.alloc_zeros::<half::f16>(ws.output_width())?;
//! let run = ws.forward_linear_chain(&x, 1, &mut y)?;
//! println!("{} bytes over the link in {:.3} s", run.h2d_bytes, run.seconds);
//! # Ok(()) }
mod chain;
pub mod cpu_gemv;
pub mod cpu_ggml;
pub mod cpu_ggml_q8;
mod cpu_share;
mod engine;
mod plan;
mod store;

pub use chain::{forward_resident, split_two};
pub use cpu_share::{calibration_rows, cpu_gemv_gbps, cpu_ggml_gbps, cpu_share_pool, gemv_pass, CpuCall, CpuShare, CpuShareStats};
pub use engine::{StreamRun, WeightStream};
pub use plan::{schedule, SlotPlan, Step, UnitSize, ALIGN as SLOT_ALIGN};
pub use store::{CpuMatrix, CpuRows, GgmlRows, HostStore, HostTensor, HostUnit, SplitUnit, UnitPart};
