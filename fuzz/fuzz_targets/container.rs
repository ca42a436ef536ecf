//! Any bytes as a `.clm` file: open (header, index, validation), then decode every tensor
//! small enough to hold. Must never panic, hang or allocate what the header claims.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    codecllm::app::fuzzing::container(data);
});
