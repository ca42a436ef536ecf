//! Bad input: every case gives one clear error line naming the file and the problem, a
//! non-zero exit, no panic, and nothing left behind.
mod common;
use codecllm::container::{Container, TRAILER_LEN};
use common::*;
use safetensors::Dtype;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Asserts a failed run with one `error:` line that contains every `needle`.
fn assert_clean_failure(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert!(!errors.is_empty(), "no error line in: {stderr}");
    for n in needles {
        assert!(errors.iter().any(|l| l.contains(n)), "no error line mentions {n:?}: {stderr}");
    }
}

/// A small valid checkpoint and its container in a fresh directory.
fn fixture() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let mut rng = rng(fresh_seed());
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.safetensors");
    write_safetensors(
        &src,
        &[
            RawTensor::float("layer.weight", Dtype::F16, &[64, 256], &heavy_tailed(&mut rng, 64 * 256)),
            RawTensor::float("layer.bias", Dtype::F32, &[64], &heavy_tailed(&mut rng, 64)),
        ],
    );
    let clm = dir.path().join("m.clm");
    let out = cli(&["compress", src.to_str().unwrap(), "-o", clm.to_str().unwrap(), "--chunk-size", "4096"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (dir, src, clm)
}

fn verify_fails(clm: &Path, needles: &[&str]) {
    assert_clean_failure(&cli(&["verify", clm.to_str().unwrap()]), needles);
}

fn weight_blob(index: &mut serde_json::Value) -> &mut serde_json::Value {
    let ts = index["tensors"].as_array_mut().unwrap();
    &mut ts.iter_mut().find(|t| t["name"] == "layer.weight").unwrap()["data"]
}

#[test]
fn truncated_containers_are_rejected_at_every_length() {
    let (_dir, _src, clm) = fixture();
    let full = std::fs::read(&clm).unwrap();
    let n = full.len();
    for cut in [0, 7, 16, 100, n / 2, n - TRAILER_LEN as usize, n - 1] {
        std::fs::write(&clm, &full[..cut]).unwrap();
        let err = Container::open(&clm).err().unwrap().to_string();
        assert!(err.starts_with(&clm.display().to_string()), "{err}");
        assert!(err.contains("truncated") || err.contains("too short"), "cut at {cut}: {err}");
        verify_fails(&clm, &["m.clm"]);
    }
}

#[test]
fn wrong_magic_and_version_are_named() {
    let (_dir, _src, clm) = fixture();
    let mut b = std::fs::read(&clm).unwrap();
    b[0] ^= 0xff;
    std::fs::write(&clm, &b).unwrap();
    verify_fails(&clm, &["m.clm", "wrong magic"]);
    b[0] ^= 0xff;
    b[8] = 9;
    std::fs::write(&clm, &b).unwrap();
    verify_fails(&clm, &["m.clm", "version 9 is not supported"]);
}

#[test]
fn corrupted_chunk_is_named_by_tensor_and_chunk() {
    let (_dir, _src, clm) = fixture();
    let c = Container::open(&clm).unwrap();
    let span = c.tensor("layer.weight").unwrap().data.spans().nth(2).unwrap();
    drop(c);
    let mut b = std::fs::read(&clm).unwrap();
    b[span.offset as usize + 5] ^= 0x10;
    std::fs::write(&clm, &b).unwrap();
    verify_fails(&clm, &["m.clm", "tensor 'layer.weight', chunk 2", "checksum"]);
    let c = Container::open(&clm).unwrap();
    assert!(codecllm::codec::decode_int8(&c, "layer.weight").is_err());
    assert!(codecllm::codec::decode_bytes(&c, "layer.bias").is_ok(), "other tensors stay readable");
}

#[test]
fn corrupted_index_and_trailer_fail_their_checks() {
    let (_dir, _src, clm) = fixture();
    let good = std::fs::read(&clm).unwrap();
    let n = good.len();
    let mut b = good.clone();
    b[n - TRAILER_LEN as usize - 10] ^= 0x01; // inside the index
    std::fs::write(&clm, &b).unwrap();
    verify_fails(&clm, &["m.clm", "index fails its checksum"]);
    let mut b = good.clone();
    b[n - 16] ^= 0x01; // the index checksum itself
    std::fs::write(&clm, &b).unwrap();
    verify_fails(&clm, &["index fails its checksum"]);
    let mut b = good;
    b[n - 25] = 0x7f; // index length: absurd
    std::fs::write(&clm, &b).unwrap();
    verify_fails(&clm, &["points outside the file"]);
}

#[test]
fn absurd_or_inconsistent_index_fields_are_rejected_without_allocating() {
    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (Box::new(|i| i["tensors"][0]["shape"] = serde_json::json!([1u64 << 40, 1u64 << 40])), "too large"),
        (Box::new(|i| weight_blob(i)["len"] = serde_json::json!(1u64 << 50)), "its shape needs"),
        (Box::new(|i| weight_blob(i)["chunks"].as_array_mut().unwrap().pop().map(drop).unwrap()), "chunks recorded"),
        (Box::new(|i| weight_blob(i)["offset"] = serde_json::json!(u64::MAX - 15)), "offset overflows"),
        (Box::new(|i| weight_blob(i)["offset"] = serde_json::json!(1u64 << 40)), "leave the payload"),
        (Box::new(|i| weight_blob(i)["chunk_size"] = serde_json::json!(7)), "chunk size 7"),
        (Box::new(|i| weight_blob(i)["chunks"][0][0] = serde_json::json!(u32::MAX)), "does not fit"),
        (Box::new(|i| i["tensors"][1]["name"] = i["tensors"][0]["name"].clone()), "repeated"),
        (Box::new(|i| i["tensors"] = serde_json::json!("nope")), "not valid"),
    ];
    for (edit, needle) in cases {
        let (_dir, _src, clm) = fixture();
        rewrite_index(&clm, edit);
        let err = Container::open(&clm).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(needle), "expected {needle:?}, got {err:?}");
        verify_fails(&clm, &["m.clm", needle]);
    }
}

#[test]
fn bad_inputs_to_compress_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    let out = p("out.clm");

    assert_clean_failure(&cli(&["compress", &p("missing.safetensors"), "-o", &out]), &["missing.safetensors", "No such file"]);

    std::fs::write(p("garbage.safetensors"), b"this is not a checkpoint at all").unwrap();
    assert_clean_failure(&cli(&["compress", &p("garbage.safetensors"), "-o", &out]), &["garbage.safetensors", "not a valid safetensors"]);

    write_safetensors(Path::new(&p("u16.safetensors")), &[RawTensor { name: "t".into(), dtype: Dtype::U16, shape: vec![4], bytes: vec![1; 8] }]);
    assert_clean_failure(&cli(&["compress", &p("u16.safetensors"), "-o", &out]), &["u16.safetensors", "unsupported dtype U16"]);

    let mut w = vec![0.5f32; 32 * 16];
    w[37] = f32::NAN;
    write_safetensors(Path::new(&p("nan.safetensors")), &[RawTensor::float("w", Dtype::F32, &[32, 16], &w)]);
    assert_clean_failure(&cli(&["compress", &p("nan.safetensors"), "-o", &out]), &["nan.safetensors", "tensor 'w'", "not finite"]);

    write_safetensors(Path::new(&p("ok.safetensors")), &[RawTensor::float("w", Dtype::F32, &[32, 16], &vec![0.25; 512])]);
    std::fs::write(p("a-file"), b"x").unwrap();
    assert_clean_failure(&cli(&["compress", &p("ok.safetensors"), "-o", &format!("{}/out.clm", p("a-file"))]), &["a-file/out.clm"]);
    assert_clean_failure(&cli(&["compress", &p("ok.safetensors"), "-o", &p("no-such-dir/out.clm")]), &["no-such-dir/out.clm"]);
    assert_clean_failure(&cli(&["compress", &p("ok.safetensors"), "-o", &out, "--chunk-size", "1000"]), &["chunk size 1000"]);
    assert_clean_failure(&cli(&["compress", &p("ok.safetensors"), "-o", &out, "--group-size", "24"]), &["--group-size 24"]);
    // ANS is encoded on the GPU: a clear failure without one, a verified container with one.
    let ans = cli(&["compress", &p("ok.safetensors"), "-o", &out, "--codec", "ans"]);
    match codecllm::gpu::Gpu::probe() {
        Err(why) => assert_clean_failure(&ans, &["ANS encoding needs a GPU", &why]),
        Ok(_) => {
            assert!(ans.status.success(), "{}", String::from_utf8_lossy(&ans.stderr));
            let verified = cli(&["verify", &out]);
            assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
            std::fs::remove_file(&out).unwrap();
        }
    }

    let left = files_in(dir.path());
    assert_eq!(left, ["a-file", "garbage.safetensors", "nan.safetensors", "ok.safetensors", "u16.safetensors"], "leftovers: {left:?}");
}

#[test]
fn missing_container_is_a_clean_error() {
    assert_clean_failure(&cli(&["info", "/nonexistent/x.clm"]), &["/nonexistent/x.clm", "No such file"]);
    assert_clean_failure(&cli(&["verify", "/nonexistent/x.clm"]), &["/nonexistent/x.clm"]);
}

#[test]
fn verify_against_a_different_checkpoint_fails() {
    let (dir, _src, clm) = fixture();
    let mut rng = rng(fresh_seed());
    let other = dir.path().join("other.safetensors");
    write_safetensors(
        &other,
        &[
            RawTensor::float("layer.weight", Dtype::F16, &[64, 256], &heavy_tailed(&mut rng, 64 * 256)),
            RawTensor::float("layer.bias", Dtype::F32, &[64], &heavy_tailed(&mut rng, 64)),
        ],
    );
    assert_clean_failure(&cli(&["verify", clm.to_str().unwrap(), "--against", other.to_str().unwrap()]), &["tensor 'layer.weight'", "tensor 'layer.bias'"]);
}

#[test]
fn ctrl_c_during_compress_removes_the_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.safetensors");
    let mut rng = rng(fresh_seed());
    let tensors: Vec<RawTensor> =
        (0..48).map(|i| RawTensor::float(&format!("l{i}.weight"), Dtype::F32, &[1024, 1024], &heavy_tailed(&mut rng, 1 << 20))).collect();
    write_safetensors(&src, &tensors);
    drop(tensors);
    let out = dir.path().join("big.clm");
    let child = codecllm()
        .args(["compress", src.to_str().unwrap(), "-o", out.to_str().unwrap(), "--threads", "1"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Signal once the temporary output exists, i.e. mid-write.
    let started = std::time::Instant::now();
    while !files_in(dir.path()).iter().any(|f| f.ends_with(".partial")) {
        assert!(started.elapsed().as_secs() < 60, "no temporary file appeared");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("interrupted"));
    assert_eq!(files_in(dir.path()), ["big.safetensors"]);
}

/// rANS tables and chunk shapes come from the index: hostile ones (with a valid index
/// checksum) are refused when the container opens, before any decode or launch.
#[test]
fn hostile_rans_tables_and_chunks_are_rejected_when_opening() {
    let mut rng = rng(fresh_seed());
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.safetensors");
    write_safetensors(&src, &[RawTensor::float("layer.weight", Dtype::F16, &[64, 256], &heavy_tailed(&mut rng, 64 * 256))]);
    let clm = dir.path().join("m.clm");
    cli_ok(&["compress", src.to_str().unwrap(), "-o", clm.to_str().unwrap(), "--chunk-size", "4096", "--codec", "rans"]);
    let good = std::fs::read(&clm).unwrap();
    assert!(Container::open(&clm).is_ok() && cli(&["verify", clm.to_str().unwrap()]).status.success());
    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (Box::new(|i| weight_blob(i)["rans_table"][0] = serde_json::json!(5000)), "exceeds 4096"),
        (Box::new(|i| weight_blob(i)["rans_table"][0] = serde_json::json!(0)), "sum to"),
        (Box::new(|i| weight_blob(i)["rans_table"].as_array_mut().unwrap().truncate(255)), "255 frequencies"),
        (Box::new(|i| drop(weight_blob(i).as_object_mut().unwrap().remove("rans_table"))), "without its table"),
        (Box::new(|i| weight_blob(i)["codec"] = serde_json::json!("zstd")), "carries a rans table"),
        (Box::new(|i| weight_blob(i)["chunks"][0][0] = serde_json::json!(100)), "does not fit"),
        (Box::new(|i| weight_blob(i)["chunks"][0][0] = serde_json::json!(1001)), "does not fit"),
    ];
    for (edit, needle) in cases {
        std::fs::write(&clm, &good).unwrap();
        rewrite_index(&clm, edit);
        let err = Container::open(&clm).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(needle), "expected {needle:?}, got {err:?}");
        assert_clean_failure(&cli(&["verify", clm.to_str().unwrap()]), &[needle]);
    }
}
