//! Source checkpoints: safetensors (single or sharded), GGUF, and Hugging Face LLaMA
//! directories adopted to GGUF's conventions; `WeightSource`, the one interface through
//! which model code reads weights from a checkpoint or a container.
mod checkpoint;
pub mod gguf;
pub mod hf;
mod weights;

pub use checkpoint::{SourceModel, SourceTensor};

/// The model architectures (GGUF `general.architecture`) whose checkpoints are read; what
/// sets them apart is `model::config`.
pub const ARCHITECTURES: [&str; 4] = ["llama", "qwen2", "qwen3", "gemma3"];

/// The llama3 RoPE frequency factors, when a model has them (GGUF's tensor, or computed
/// from an HF config's `rope_scaling`).
pub const ROPE_FREQS: &str = "rope_freqs.weight";
pub use weights::{WeightSource, LOAD_TIME_GROUP};
