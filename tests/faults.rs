//! Fault paths that can be provoked without a GPU: nvCOMP missing or wrong, no driver,
//! and a write that fails mid-compress (file size limit) — each a clear error, a non-zero
//! exit and nothing left behind.
mod common;
use common::*;
use safetensors::Dtype;
use std::os::unix::process::CommandExt;

#[test]
fn missing_or_wrong_nvcomp_is_named() {
    let out = codecllm().args(["env"]).env("NVCOMP_LIB", "/nonexistent/libnvcomp.so.6").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(text.contains("nvCOMP not found") && text.contains("/nonexistent/libnvcomp.so.6") && text.contains("nvidia-libnvcomp-cu13==6.0.0.12"), "{text}");

    // Some other shared library: loads, but is not nvCOMP.
    let other = ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("a libc to stand in for a wrong library");
    let out = codecllm().args(["env"]).env("NVCOMP_LIB", other).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(text.contains("no symbol nvcompGetProperties") && text.contains("needs nvCOMP 6.x"), "{text}");
}

#[test]
fn no_driver_is_a_clear_error() {
    let out = codecllm().args(["env", "--json"]).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let gpu = report["gpu"].as_str().unwrap();
    if gpu.starts_with("unavailable") {
        assert!(!out.status.success());
        assert!(gpu.contains("no CUDA driver") || gpu.contains("GPU"), "{gpu}");
        let out = codecllm().args(["bench", "kernels", "--quick"]).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: GPU:") && !err.contains("panicked"), "{err}");
    } else {
        // Not a skip: CI's machines, which have no GPU, run the branch above.
        note(&format!("no_driver_is_a_clear_error: this machine has a GPU ({gpu}); the no-driver path runs in CI"));
    }
}

#[test]
fn write_failure_during_compress_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rng(fresh_seed());
    let src = dir.path().join("m.safetensors");
    // Random bytes do not compress: the output must exceed the 256 KiB limit below.
    let noise: Vec<u8> = (0..2 << 20).map(|_| rand::Rng::gen(&mut rng)).collect();
    write_safetensors(&src, &[RawTensor { name: "noise".into(), dtype: Dtype::U8, shape: vec![noise.len()], bytes: noise }]);
    let out = dir.path().join("out.clm");
    let mut cmd = codecllm();
    cmd.args(["compress", src.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // A write past the limit fails with EFBIG (as a full disk fails with ENOSPC)
            // instead of killing the process with SIGXFSZ.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit { rlim_cur: 256 << 10, rlim_max: 256 << 10 };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let res = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success(), "compress should fail past the file size limit");
    assert!(err.contains("error: ") && err.contains("out.clm") && !err.contains("panicked"), "{err}");
    assert_eq!(files_in(dir.path()), ["m.safetensors"], "no output or temporary file may remain");
}
