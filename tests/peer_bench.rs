//! The peer benchmark's pieces that run without a GPU: `codecllm bench plot` on a JSON of
//! the shape scripts/peer-bench.sh writes, the script's syntax, and a tiny Gaussian GGUF
//! from scripts/gaussian-gguf.py through `codecllm compress` and the CPU forward (skipped,
//! saying why, where python3 lacks numpy or the `gguf` package, or SmolLM2's tokenizer
//! cannot be fetched).
mod common;
use common::{cli, cli_ok, fetch_model, skip};
use std::process::Command;

const RESULTS: &str = r#"{
  "schema": "codecllm-peer-bench/1",
  "provenance": {"commit": "0123abc", "gpu": {"name": "NVIDIA H200", "driver_version": "580.159.04"}},
  "models": {"8b-s0": {"label": "8b-shaped LLaMA, Gaussian weights"}},
  "steps": [{"step": "llama-8b-ngl8", "kind": "step", "ok": false, "error": "timeout"}],
  "rows": [
    {"model": "8b-s0", "system": "llama.cpp", "series": "llama.cpp Q8_0", "config": "-ngl 0", "ngl": 0, "sequences": 1, "vram_gb": 1.1, "decode_tok_s": 7.44, "prefill_tok_s": 324.0},
    {"model": "8b-s0", "system": "llama.cpp", "series": "llama.cpp Q8_0", "config": "-ngl 99", "ngl": 99, "sequences": 1, "vram_gb": 9.0, "decode_tok_s": 224.0},
    {"model": "8b-s0", "system": "codecllm", "series": "codecllm auto (rans)", "config": "--weights auto --vram-budget 1.5GB", "budget_gb": 1.5, "sequences": 1, "vram_gb": 1.9, "decode_tok_s": 9.0},
    {"model": "8b-s0", "system": "codecllm", "series": "codecllm auto (rans)", "config": "--weights auto", "budget_gb": null, "sequences": 1, "vram_gb": 9.6, "decode_tok_s": 248.0},
    {"model": "8b-s0", "system": "codecllm", "series": "codecllm auto (rans), 16 sequences", "budget_gb": 1.5, "sequences": 16, "vram_gb": 2.2, "decode_tok_s": 101.0}
  ]
}"#;

#[test]
fn bench_plot_draws_every_series() {
    let dir = tempfile::tempdir().unwrap();
    let (json, svg) = (dir.path().join("peer-results.json"), dir.path().join("peer.svg"));
    std::fs::write(&json, RESULTS).unwrap();
    cli_ok(&["bench", "plot", "--json", json.to_str().unwrap(), "--svg", svg.to_str().unwrap()]);
    let text = std::fs::read_to_string(&svg).unwrap();
    for needle in ["<svg", "NVIDIA H200", "0123abc", "llama.cpp Q8_0", "codecllm auto (rans)", "16 sequences (aggregate)", "log scale"] {
        assert!(text.contains(needle), "{needle:?} missing from the SVG");
    }

    // Nothing to draw, or not JSON: an error naming the file, and no SVG.
    std::fs::write(&json, r#"{"rows": [{"model": "m", "series": "s", "decode_tok_s": 1.0}]}"#).unwrap();
    let bad = dir.path().join("none.svg");
    let r = cli(&["bench", "plot", "--json", json.to_str().unwrap(), "--svg", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("peer-results.json") && err.contains("no rows"), "{err}");
    assert!(!bad.exists());
}

#[test]
fn peer_bench_script_parses() {
    let root = env!("CARGO_MANIFEST_DIR");
    for script in ["scripts/peer-bench.sh", "scripts/device-bundle.sh", "scripts/device-pack.sh", "scripts/device-call.sh", "scripts/peer-perplexity.sh"] {
        let out = Command::new("bash").args(["-n", &format!("{root}/{script}")]).output().unwrap();
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// llama-bench's rows as the peer benchmark reads them: prefill from an empty context,
/// decode after PEER_DEPTH cached tokens (codecllm decodes after its prompt), the decode
/// from an empty context kept beside it — whatever order llama-bench prints them in.
#[test]
fn llama_bench_decode_is_read_at_the_prompts_depth() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash").args([&format!("{root}/scripts/peer-bench.sh"), "status"]).env("PEER_WORK", &work).env("PEER_CUDA", "0").output().unwrap();
    assert!(out.status.success(), "peer-bench status: {}", String::from_utf8_lossy(&out.stderr));
    let bench = |n_prompt: u32, n_gen: u32, n_depth: u32, ts: f64| {
        format!(
            r#"{{"n_prompt": {n_prompt}, "n_gen": {n_gen}, "n_depth": {n_depth}, "avg_ts": {ts}, "stddev_ts": 0.1, "samples_ts": [{ts}], "model_type": "llama 8B Q8_0"}}"#
        )
    };
    let rows = [bench(0, 64, 512, 239.2), bench(512, 0, 512, 9000.0), bench(0, 64, 0, 244.8), bench(512, 0, 0, 10065.1)];
    let js = dir.path().join("llama.json");
    std::fs::write(&js, format!("[{}]", rows.join(","))).unwrap();
    let (smi, log) = (dir.path().join("smi"), dir.path().join("v.log"));
    std::fs::write(&smi, "8000, 1980\n").unwrap();
    std::fs::write(&log, "").unwrap();
    let helper = work.join("peer_helper.py");
    let args = [
        "llama-bench",
        "llama-8b-ngl99",
        "8b",
        "llama.cpp",
        "llama.cpp Q8_0",
        "-ngl 99",
        "5",
        smi.to_str().unwrap(),
        "0",
        js.to_str().unwrap(),
        log.to_str().unwrap(),
        "99",
    ];
    let out = Command::new("python3").arg(&helper).args(args).env("PEER_WORK", &work).env("PEER_DEPTH", "512").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let row: serde_json::Value = serde_json::from_str(std::fs::read_to_string(work.join("rows.jsonl")).unwrap().lines().last().unwrap()).unwrap();
    assert_eq!(row["decode_tok_s"], 239.2, "{row}");
    assert_eq!(row["decode_depth"], 512, "{row}");
    assert_eq!(row["decode_tok_s_depth0"], 244.8, "{row}");
    assert_eq!(row["prefill_tok_s"], 10065.1, "{row}");
}

/// The PYTHONPATH under which `python3` imports numpy and gguf (the caller's, plus the
/// packages scripts/device-bundle.sh installs into .cache/peer/site when the system lacks
/// them), or `None` after recording the skip.
fn python_with_gguf(test: &str) -> Option<String> {
    let mut path = std::env::var("PYTHONPATH").unwrap_or_default();
    let site = format!("{}/.cache/peer/site", env!("CARGO_MANIFEST_DIR"));
    if std::path::Path::new(&site).is_dir() {
        path = if path.is_empty() { site } else { format!("{path}:{site}") };
    }
    match Command::new("python3").args(["-c", "import numpy, gguf"]).env("PYTHONPATH", &path).output() {
        Ok(o) if o.status.success() => Some(path),
        Ok(o) => {
            skip(test, &format!("python3 cannot import numpy and gguf: {}", String::from_utf8_lossy(&o.stderr).trim().lines().last().unwrap_or("")));
            None
        }
        Err(e) => {
            skip(test, &format!("no python3: {e}"));
            None
        }
    }
}

#[test]
fn gaussian_gguf_loads_compresses_and_runs() {
    let test = "gaussian_gguf_loads_compresses_and_runs";
    let Some(pythonpath) = python_with_gguf(test) else { return };
    let Some(tokenizer) = fetch_model("fetch-smollm2.sh", test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (gguf, clm) = (dir.path().join("tiny.gguf"), dir.path().join("tiny.clm"));
    let script = format!("{}/scripts/gaussian-gguf.py", env!("CARGO_MANIFEST_DIR"));
    let gen = |out: &std::path::Path, threads: &str| {
        let o = Command::new("python3")
            .env("PYTHONPATH", &pythonpath)
            .args([&script, out.to_str().unwrap(), "--shape", "tiny", "--layers", "3", "--seed", "7", "--threads", threads, "--tokenizer", &tokenizer])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    gen(&gguf, "2");
    // Reproducible whatever the thread count.
    let again = dir.path().join("again.gguf");
    gen(&again, "1");
    assert!(std::fs::read(&gguf).unwrap() == std::fs::read(&again).unwrap(), "the same seed gave different files");

    let src = codecllm::import::SourceModel::open(&gguf).unwrap();
    let cfg = codecllm::model::config::ModelConfig::from_metadata(codecllm::import::WeightSource::metadata(&src)).unwrap();
    assert_eq!((cfg.layers, cfg.dim, cfg.ffn, cfg.heads, cfg.kv_heads, cfg.vocab), (3, 256, 512, 4, 2, 49152));

    let out = cli_ok(&["compress", gguf.to_str().unwrap(), "-o", clm.to_str().unwrap(), "--codec", "rans"]);
    let report = String::from_utf8_lossy(&out.stdout);
    // Gaussian rows with outliers. Their INT8 codes' order-0 entropy is that of real
    // weights, 0.878 of 8 bits at the 8B shape's 4096-wide rows (measured: `--shape 8b
    // --layers 1`); these 256-wide rows have a smaller max per row, so their codes spread
    // wider (0.93).
    let h: f64 = report.split("entropy of the INT8 codes: ").nth(1).and_then(|s| s.split_whitespace().next()).and_then(|s| s.parse().ok()).unwrap();
    assert!((0.88..0.96).contains(&h), "entropy {h}: {report}");

    // The control tokens' LM-head rows are damped: greedy decoding runs the whole length.
    let r = cli_ok(&["run", clm.to_str().unwrap(), "--weights", "cpu", "--prompt", "The quick brown fox", "--max-tokens", "12", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(j["new_tokens"], 12, "{j}");
    assert!(j["tokens_per_s"].as_f64().unwrap() > 0.0);
}
