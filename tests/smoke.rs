//! Smoke tests of the commands that report rather than transform: `verify --gpu`, `bench`
//! and `demo` run end to end and say what they should (provenance in every JSON, entropy
//! next to ratios). GPU ones skip visibly without a GPU.
mod common;
use common::*;
use safetensors::Dtype;

fn small_container(dir: &std::path::Path) -> String {
    let src = dir.join("m.safetensors");
    let mut rng = rng(fresh_seed());
    write_safetensors(&src, &[RawTensor::float("l.weight", Dtype::F16, &[96, 512], &heavy_tailed(&mut rng, 96 * 512))]);
    let out = dir.join("m.clm");
    cli_ok(&["compress", src.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    out.to_string_lossy().into_owned()
}

/// The provenance every benchmark JSON carries.
fn assert_provenance(v: &serde_json::Value, gpu: bool) {
    let p = &v["provenance"];
    assert!(p["commit"].as_str().is_some_and(|c| !c.is_empty()), "commit: {p}");
    assert!(p["command"].as_array().is_some_and(|a| a.len() >= 2), "command line: {p}");
    assert!(p["seed"].is_u64() && p["unix_time"].as_u64().unwrap() > 1_700_000_000, "{p}");
    assert_eq!(p["device"].is_object(), gpu, "device: {p}");
    if gpu {
        assert!(p["device"]["name"].as_str().is_some_and(|n| !n.is_empty()) && p["device"]["driver_api_version"].as_i64().unwrap() > 0, "{p}");
    }
}

#[test]
fn bench_compress_reports_throughput_entropy_and_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli_ok(&["bench", "compress", "--size-mb", "32", "--json", "--scratch", dir.path().to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_provenance(&v, false);
    let rows = v["rows"].as_array().unwrap();
    let cases: Vec<&str> = rows.iter().map(|r| r["case"].as_str().unwrap()).collect();
    assert!(cases.len() == 3 && cases[0].starts_with("zstd") && cases[1].starts_with("rans") && cases[2].starts_with("rans one core"), "{cases:?}");
    for row in rows {
        assert!(row["ours_us"].as_f64().unwrap() > 0.0 && row["baseline_us"].as_f64().unwrap() > 0.0, "{row}");
        let note = row["note"].as_str().unwrap();
        assert!(note.contains("vs INT8") && note.contains("entropy 0."), "{note}");
    }
}

#[test]
fn verify_gpu_decodes_on_the_gpu() {
    let Some(_gpu) = gpu_or_skip("verify_gpu_decodes_on_the_gpu") else { return };
    let dir = tempfile::tempdir().unwrap();
    let clm = small_container(dir.path());
    let out = cli_ok(&["verify", &clm, "--gpu"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("decoded on") && text.contains("1 INT8 tensors") && text.ends_with("OK\n"), "{text}");
}

#[test]
fn bench_kernels_quick_runs_with_baselines_and_provenance() {
    let Some(_gpu) = gpu_or_skip("bench_kernels_quick_runs_with_baselines_and_provenance") else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = cli_ok(&["bench", "kernels", "--quick", "--reps", "3", "--json", "--scratch", dir.path().to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_provenance(&v, true);
    let rows = v["rows"].as_array().unwrap();
    for section in ["linear", "decode", "layer"] {
        assert!(rows.iter().any(|r| r["section"] == section), "no {section} rows");
    }
    assert!(rows.iter().all(|r| r["ours_us"].as_f64().unwrap() > 0.0 && r["baseline_us"].as_f64().unwrap() > 0.0), "a row without its timings");
}

#[test]
fn demo_runs_on_whatever_this_machine_has() {
    let Some(gguf) = fetch_model("fetch-smollm2.sh", "demo_runs_on_whatever_this_machine_has") else { return };
    let dir = tempfile::tempdir().unwrap();
    let clm = dir.path().join("demo.clm");
    match codecllm::gpu::Gpu::probe() {
        Ok(_) => {
            let out = cli_ok(&["demo", "--gguf", &gguf, "--output", clm.to_str().unwrap(), "--max-tokens", "8", "--json"]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let rows = v["rows"].as_array().unwrap();
            assert_eq!(rows.len(), 4, "the baseline and three codecllm modes");
            assert!(rows.iter().all(|r| r["tokens_per_s"].as_f64().unwrap() > 0.0 && r["peak_vram"].as_u64().unwrap() > 0), "{rows:?}");
        }
        Err(_) => {
            let out = cli_ok(&["demo", "--gguf", &gguf, "--output", clm.to_str().unwrap()]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("No GPU here") && text.contains("Paris"), "{text}");
        }
    }
}
