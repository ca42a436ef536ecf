//! codecllm: LLM weights quantized to INT8 per output channel, cut into chunks,
//! entropy-coded (Zstd; nvCOMP ANS), kept in a verified `.clm` container and decoded on
//! the GPU into fused INT8→FP16 dequant + linear kernels written in Rust (`kernels/`).
//!
//! Map of the crate, one place per concern:
//! - [`format`]: the `.clm` container (docs/FORMAT.md): reader, validation, atomic writer.
//! - [`quant`]: symmetric INT8 quantization and its error statistics.
//! - [`codec`]: chunking and CPU entropy coding.
//! - [`input`]: safetensors checkpoints (single or sharded; HF LLaMA ones adopted by
//!   [`hf`]) and GGUF files ([`gguf`]).
//! - [`compress`]: checkpoint → container pipeline.
//! - [`reference`]: CPU decode and the f64 `linear` oracle.
//! - [`verify`]: whole-container checks, optionally against the source checkpoint.
//! - [`bench`]: GPU microbenchmarks with same-run baselines (`codecllm bench`).
//! - [`stream`]: low-VRAM streaming engine (pinned host store, slot ring, three streams).
//! - [`gpu`]: CUDA runtime, nvCOMP, device-resident compressed tensors, fused kernels,
//!   and the LLaMA forward pass in every weight mode ([`gpu::llama`]).
//! - [`tokenizer`], [`llama`]: the model's tokenizer and chat template from its metadata;
//!   LLaMA configuration and the f32 CPU reference forward.
//! - [`demo`]: the SmolLM2 comparison behind `codecllm demo`.
//! - [`fuzzing`]: entry points shared by the fuzz targets and their regression tests.
pub mod bench;
pub mod codec;
pub mod compress;
pub mod demo;
pub mod error;
pub mod format;
pub mod fuzzing;
pub mod gguf;
pub mod gpu;
pub mod hf;
pub mod input;
pub mod llama;
pub mod quant;
pub mod reference;
pub mod stream;
pub mod tokenizer;
pub mod verify;

pub use error::{Error, Result};
