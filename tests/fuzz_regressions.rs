//! Replays the fuzzers' seeds and every minimized finding (fuzz/regressions/<target>/)
//! through the same entry points the fuzz targets call: none may panic.
use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let mut n = 0;
    for dir in ["fuzz/seeds", "fuzz/regressions"] {
        let d = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries {
            let p = e.unwrap().path();
            if p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
                continue;
            }
            run(&std::fs::read(&p).unwrap());
            n += 1;
        }
    }
    n
}

#[test]
fn container_inputs_never_panic() {
    assert!(replay("container", codecllm::app::fuzzing::container) >= 2, "the seeds are part of the repo");
}

#[test]
fn chunk_inputs_never_panic() {
    assert!(replay("chunk", codecllm::app::fuzzing::chunk) >= 1);
}

#[test]
fn safetensors_inputs_never_panic() {
    assert!(replay("safetensors", codecllm::app::fuzzing::safetensors) >= 1);
}

#[test]
fn gguf_inputs_never_panic() {
    assert!(replay("gguf", codecllm::app::fuzzing::gguf) >= 1);
}
