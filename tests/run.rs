//! End to end on the real SmolLM2-135M: GGUF → container → `codecllm run` on the CPU
//! reference forward over the container's INT8 weights answers a factual question.
//! Skips, saying why, when the model cannot be fetched.
mod common;
use common::{cli, cli_ok, fetch_model};

#[test]
fn smollm2_answers_from_its_compressed_container() {
    let Some(gguf) = fetch_model("fetch-smollm2.sh", "smollm2_answers_from_its_compressed_container") else { return };
    let dir = tempfile::tempdir().unwrap();
    let clm = dir.path().join("smollm2.clm");
    cli_ok(&["compress", &gguf, "-o", clm.to_str().unwrap()]);
    let r = cli_ok(&["run", clm.to_str().unwrap(), "--chat", "--prompt", "What is the capital of France?", "--max-tokens", "16"]);
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(text.contains("Paris"), "greedy answer: {text:?}");

    let r = cli(&["run", clm.to_str().unwrap(), "--prompt", "x", "--max-tokens", "9000"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("exceed the context of 8192"), "{err}");
    // SmolLM2 adds no BOS: an empty prompt is no tokens, refused before any forward.
    let r = cli(&["run", clm.to_str().unwrap(), "--prompt", "", "--max-tokens", "4"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("the prompt encodes to no tokens"), "{err}");
}

/// `run --prompts-file`: five prompts (one a JSON line) two at a time — so finished
/// sequences make room for the next — each get the greedy text they get alone; bad prompt
/// files and flag mixes are clear errors.
#[test]
fn a_batch_of_prompts_equals_each_prompt_alone() {
    let Some(gguf) = fetch_model("fetch-smollm2.sh", "a_batch_of_prompts_equals_each_prompt_alone") else { return };
    let dir = tempfile::tempdir().unwrap();
    let clm = dir.path().join("smollm2.clm");
    cli_ok(&["compress", &gguf, "-o", clm.to_str().unwrap()]);
    let prompts = ["The capital of France is", "1, 2, 3, 4,", "Once upon a time", "The opposite of hot is", "Water boils at"];
    let file = dir.path().join("prompts.txt");
    let lines: Vec<String> =
        prompts.iter().enumerate().map(|(i, p)| if i == 2 { serde_json::json!({ "prompt": p }).to_string() } else { p.to_string() }).collect();
    std::fs::write(&file, lines.join("\n\n")).unwrap();
    let (c, f) = (clm.to_str().unwrap(), file.to_str().unwrap());
    let r = cli_ok(&["run", c, "--weights", "cpu", "--prompts-file", f, "--batch", "2", "--max-tokens", "6", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let outputs = v["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), prompts.len());
    for (p, o) in prompts.iter().zip(outputs) {
        assert_eq!(o["prompt"], *p);
        let alone: serde_json::Value =
            serde_json::from_slice(&cli_ok(&["run", c, "--weights", "cpu", "--prompt", p, "--max-tokens", "6", "--json"]).stdout).unwrap();
        assert_eq!(o["text"], alone["text"], "prompt {p:?}: batched and alone differ");
        assert!(o["new_tokens"].as_u64().unwrap() >= 1);
    }
    assert!(v["aggregate_tokens_per_s"].as_f64().unwrap() > 0.0);
    // On a GPU, resident and streamed: two sequences a step, so decode steps take the GEMV
    // as one sequence alone does (the prompts' prefill is a GEMM either way).
    if common::gpu_or_skip("a_batch_of_prompts_equals_each_prompt_alone (GPU modes)").is_some() {
        for mode in ["int8-resident", "stream"] {
            let r = cli_ok(&["run", c, "--weights", mode, "--prompts-file", f, "--batch", "2", "--max-tokens", "6", "--json"]);
            let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
            for (p, o) in prompts.iter().zip(v["outputs"].as_array().unwrap()) {
                let alone: serde_json::Value =
                    serde_json::from_slice(&cli_ok(&["run", c, "--weights", mode, "--prompt", p, "--max-tokens", "6", "--json"]).stdout).unwrap();
                assert_eq!(o["text"], alone["text"], "{mode}, prompt {p:?}: batched and alone differ");
            }
        }
    }
    // Bad input: an empty file, a JSON line without a prompt, both flags.
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n \n").unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"x\"}\n").unwrap();
    for (args, want) in [
        (vec!["--prompts-file", empty.to_str().unwrap()], "no prompts"),
        (vec!["--prompts-file", bad.to_str().unwrap()], "line 1"),
        (vec!["--prompts-file", f, "--prompt", "x"], "cannot be used with"),
    ] {
        let r = cli(&[&["run", c, "--weights", "cpu"][..], &args].concat());
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success() && err.contains(want), "{args:?}: {err}");
    }
}

/// The model runner meets the same guarantees as the rest: a corrupted chunk is an error
/// naming tensor and chunk; a model missing a tensor or with another architecture is a
/// clear error.
#[test]
fn bad_models_fail_clearly_in_run() {
    use codecllm::container::Container;
    let dir = tempfile::tempdir().unwrap();
    // A tiny LLaMA with block 0's q projection missing.
    let (d, f) = (64u64, 128u64);
    let t = |name: &str, dims: Vec<u64>| {
        let n: u64 = dims.iter().product();
        (name.to_string(), dims, 0u32, (0..n).flat_map(|i| ((i % 7) as f32 * 0.01).to_le_bytes()).collect::<Vec<u8>>())
    };
    let mut tensors = vec![t("token_embd.weight", vec![d, 16]), t("output_norm.weight", vec![d])];
    for name in ["attn_norm", "ffn_norm"] {
        tensors.push(t(&format!("blk.0.{name}.weight"), vec![d]));
    }
    for (name, dims) in [
        ("attn_k", vec![d, 32]),
        ("attn_v", vec![d, 32]),
        ("attn_output", vec![d, d]),
        ("ffn_gate", vec![d, f]),
        ("ffn_up", vec![d, f]),
        ("ffn_down", vec![f, d]),
    ] {
        tensors.push(t(&format!("blk.0.{name}.weight"), dims));
    }
    let refs: Vec<(&str, Vec<u64>, u32, Vec<u8>)> = tensors.iter().map(|(n, d, ty, b)| (n.as_str(), d.clone(), *ty, b.clone())).collect();
    use common::gguf::{write_gguf, Kv};
    let gguf = dir.path().join("tiny.gguf");
    write_gguf(
        &gguf,
        &[
            ("general.architecture", Kv::Str("llama")),
            ("llama.block_count", Kv::U32(1)),
            ("llama.embedding_length", Kv::U32(64)),
            ("llama.feed_forward_length", Kv::U32(128)),
            ("llama.attention.head_count", Kv::U32(2)),
            ("llama.attention.head_count_kv", Kv::U32(1)),
            ("llama.vocab_size", Kv::U32(16)),
            ("tokenizer.ggml.model", Kv::Str("gpt2")),
            ("tokenizer.ggml.tokens", Kv::Strs(&["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p"])),
            ("tokenizer.ggml.merges", Kv::Strs(&[])),
            ("tokenizer.ggml.eos_token_id", Kv::U32(0)),
        ],
        &refs,
    );
    let clm = dir.path().join("tiny.clm");
    cli_ok(&["compress", gguf.to_str().unwrap(), "-o", clm.to_str().unwrap()]);
    let r = cli(&["run", clm.to_str().unwrap(), "--prompt", "abc", "--max-tokens", "2"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("blk.0.attn_q.weight") && !err.contains("panicked"), "{err}");

    // A corrupted chunk in a real tensor of a complete model.
    let Some(model) = fetch_model("fetch-smollm2.sh", "bad_models_fail_clearly_in_run (corrupted SmolLM2 part)") else { return };
    let clm = dir.path().join("smollm2.clm");
    cli_ok(&["compress", &model, "-o", clm.to_str().unwrap()]);
    let span = Container::open(&clm).unwrap().tensor("blk.3.ffn_up.weight").unwrap().data.spans().nth(5).unwrap();
    let mut bytes = std::fs::read(&clm).unwrap();
    bytes[span.offset as usize + 3] ^= 0x20;
    std::fs::write(&clm, bytes).unwrap();
    let r = cli(&["run", clm.to_str().unwrap(), "--prompt", "Hi", "--max-tokens", "2"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("tensor 'blk.3.ffn_up.weight', chunk 5") && err.contains("checksum"), "{err}");
}
