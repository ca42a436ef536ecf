//! codecllm: LLM weights quantized to INT8 per output channel, cut into chunks,
//! entropy-coded, kept in a verified `.clm` container and decoded on the GPU into fused
//! INT8→FP16 dequant + linear kernels written in Rust (`kernels/`).
//!
//! Layers, lowest first. A folder imports only from folders before it in this list (and
//! from `error` and `abi`, which all share); `tests/layers.rs` fails the build's tests on
//! any import against the order, so the folders cannot grow cycles.
//!
//! 0. [`error`] (one error type) and [`abi`] (what host and kernels both read: the same
//!    file, `kernels/src/abi.rs`, compiles into the kernels and here).
//! 1. [`container`]: the `.clm` format (docs/FORMAT.md): types, validating reader, atomic writer.
//! 2. [`codec`]: CPU only: the INT8 quantizer, chunked entropy coding, tensor decode.
//! 3. [`import`]: checkpoints (safetensors, GGUF, HF adoption) and [`import::WeightSource`].
//! 4. [`gpu`]: CUDA runtime, the kernels' PTX, the fused linears, nvCOMP, GPU decode of
//!    compressed tensors (nvCOMP's codecs and our rANS kernel).
//! 5. [`pipeline`]: compress, verify, and the f64 CPU oracle.
//! 6. [`stream`]: the low-VRAM streaming engine (plan, pinned host store, slot ring).
//! 7. [`model`]: config, tokenizer, sampling, the LLaMA forward on CPU and GPU, `Engine`.
//! 8. [`app`]: what the CLI shows: the demo, the benchmarks, the fuzz entry points.
pub mod error;

#[path = "../kernels/src/abi.rs"]
pub mod abi;

pub mod container;

pub mod codec;

pub mod import;

pub mod gpu;

pub mod pipeline;

pub mod stream;

pub mod model;

pub mod app;

pub use error::{Error, GpuError, Result};
