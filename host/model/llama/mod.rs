//! The LLaMA family: the f32 CPU reference forward (`cpu`) and the GPU forward in every
//! weight mode (`gpu`).
pub mod cpu;
pub mod gpu;

pub use cpu::{CpuLlama, KvCache};
pub use gpu::{GpuLlama, WeightMode};
