//! Models: configuration from metadata, tokenizer and chat template, sampling, the LLaMA
//! forward on the CPU and the GPU, and `Engine`, what a generation loop drives.
pub mod config;
pub mod engine;
pub mod llama;
pub mod perplexity;
pub mod placement;
pub mod sampling;
pub mod shard;
pub mod tokenizer;
