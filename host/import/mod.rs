//! Source checkpoints: safetensors (single or sharded), GGUF, and Hugging Face LLaMA
//! directories adopted to GGUF's conventions; `WeightSource`, the one interface through
//! which model code reads weights from a checkpoint or a container.
mod checkpoint;
pub mod ggml;
pub mod gguf;
pub mod hf;
mod weights;

pub use checkpoint::{SourceModel, SourceTensor};
pub use weights::{WeightSource, LOAD_TIME_GROUP};
