//! Any bytes as a safetensors checkpoint: open, read every tensor, quantize small ones.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    codecllm::app::fuzzing::safetensors(data);
});
