//! Everything between a tensor's values and its stored chunks, on the CPU: the INT8
//! quantizer, chunked entropy coding (Zstd, rANS, raw), decoding a container's tensors,
//! and order-0 entropy.
mod chunk;
pub mod entropy;
pub mod ggml;
mod quant;
pub mod rans;
mod tensor;

pub use chunk::{decode_blob, encode_blob, ChunkDecoder};
pub use quant::{Int8Matrix, QuantStats};
pub use tensor::{decode_bytes, decode_f16, decode_f32, decode_int8, decode_int8_rows, ggml_blocks};
