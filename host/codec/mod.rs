//! Everything between a tensor's values and its stored chunks, on the CPU: the INT8
//! quantizer, chunked entropy coding (Zstd, raw), and decoding a container's tensors.
mod chunk;
pub mod entropy;
mod quant;
mod tensor;

pub use chunk::{decode_blob, decode_chunk, encode_chunks};
pub use quant::{Int8Matrix, QuantStats};
pub use tensor::{decode_bytes, decode_f16, decode_f32, decode_int8};
