//! Any bytes as one stored chunk of each codec, into buffers of several sizes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    codecllm::app::fuzzing::chunk(data);
});
