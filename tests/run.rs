//! End to end on the real SmolLM2-135M: GGUF → container → `codecllm run` on the CPU
//! reference forward over the container's INT8 weights answers a factual question.
//! Skips, saying why, when the model cannot be fetched.
mod common;
use common::skip_notice;
use std::process::Command;

#[test]
fn smollm2_answers_from_its_compressed_container() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/fetch-smollm2.sh");
    let fetched = Command::new("bash").arg(script).output().unwrap();
    if !fetched.status.success() {
        skip_notice(&format!("SKIPPED smollm2_answers_from_its_compressed_container: {script} failed: {}", String::from_utf8_lossy(&fetched.stderr).trim()));
        return;
    }
    let gguf = String::from_utf8_lossy(&fetched.stdout).trim().to_string();
    let dir = tempfile::tempdir().unwrap();
    let clm = dir.path().join("smollm2.clm");
    let bin = env!("CARGO_BIN_EXE_codecllm");
    let r = Command::new(bin).args(["compress", &gguf, "-o", clm.to_str().unwrap()]).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let r = Command::new(bin)
        .args(["run", clm.to_str().unwrap(), "--chat", "--prompt", "What is the capital of France?", "--max-tokens", "16"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(text.contains("Paris"), "greedy answer: {text:?}");

    let r = Command::new(bin).args(["run", clm.to_str().unwrap(), "--prompt", "x", "--max-tokens", "9000"]).output().unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("exceed the context of 8192"), "{err}");
}
