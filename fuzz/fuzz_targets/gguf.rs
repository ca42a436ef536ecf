//! Any bytes as a GGUF file: parse, dequantize every tensor, quantize small matrices.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    codecllm::app::fuzzing::gguf(data);
});
