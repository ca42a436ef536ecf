//! Helpers shared by the integration tests: random checkpoints written as real safetensors.
#![allow(dead_code)]
pub mod gguf;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StudentT};
use safetensors::tensor::{Dtype, TensorView};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::AtomicBool;

pub fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// Fresh seed per run: kernels and codecs must work on any input, not one we tuned for.
pub fn fresh_seed() -> u64 {
    let s = rand::random::<u64>();
    println!("seed {s}");
    s
}

/// Heavy-tailed weights (Student-t, 4 degrees of freedom), like trained LLM layers.
pub fn heavy_tailed(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    let t = StudentT::new(4.0).unwrap();
    (0..n).map(|_| t.sample(rng) as f32 * 0.02).collect()
}

pub fn encode(dtype: Dtype, values: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F16 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
        Dtype::BF16 => values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect(),
        other => panic!("encode: {other:?}"),
    }
}

/// Decodes values of `dtype` back to f32 (what the compressor sees).
pub fn decode(dtype: Dtype, bytes: &[u8]) -> Vec<f32> {
    match dtype {
        Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
        Dtype::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        other => panic!("decode: {other:?}"),
    }
}

pub struct RawTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl RawTensor {
    pub fn float(name: &str, dtype: Dtype, shape: &[usize], values: &[f32]) -> Self {
        RawTensor { name: name.into(), dtype, shape: shape.to_vec(), bytes: encode(dtype, values) }
    }
}

pub fn write_safetensors(path: &Path, tensors: &[RawTensor]) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|t| (t.name.clone(), TensorView::new(t.dtype, t.shape.clone(), &t.bytes).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, &None, path).unwrap();
}

/// Files in `dir` whose names start with `prefix` (to catch leftover temporary files).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// GPU 0, or `None` after printing why the test is skipped. `CODECLLM_REQUIRE_GPU=1`
/// turns a skip into a failure (device runs must not pass by skipping).
pub fn gpu_or_skip(test: &str) -> Option<codecllm::gpu::Gpu> {
    match codecllm::gpu::Gpu::probe() {
        Ok(g) => Some(g),
        Err(why) => {
            if std::env::var("CODECLLM_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("{test}: CODECLLM_REQUIRE_GPU=1 but no GPU: {why}");
            }
            skip_notice(&format!("SKIPPED {test}: no GPU ({why})"));
            None
        }
    }
}

/// ‖got − want‖₂ / ‖want‖₂.
pub fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    let (num, den) = got.iter().zip(want).fold((0.0, 0.0), |(n, d), (g, w)| (n + (g - w) * (g - w), d + w * w));
    (num / den).sqrt()
}

/// Prints past libtest's output capture (which only takes `print!`-style macros), so skip
/// reasons show in a normal `cargo test` run.
pub fn skip_notice(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// Rewrites the container's index with `edit` and a matching checksum, so the reader's
/// validation (not the checksum) has to catch the problem.
pub fn rewrite_index(clm: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut bytes = std::fs::read(clm).unwrap();
    let n = bytes.len();
    let t = &bytes[n - codecllm::format::TRAILER_LEN as usize..];
    let off = u64::from_le_bytes(t[0..8].try_into().unwrap()) as usize;
    let mut index: serde_json::Value = serde_json::from_slice(&bytes[off..n - codecllm::format::TRAILER_LEN as usize]).unwrap();
    edit(&mut index);
    let new = serde_json::to_vec(&index).unwrap();
    bytes.truncate(off);
    bytes.extend_from_slice(&new);
    bytes.extend_from_slice(&(off as u64).to_le_bytes());
    bytes.extend_from_slice(&(new.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&new).to_le_bytes());
    bytes.extend_from_slice(b"CLMINDEX");
    std::fs::write(clm, bytes).unwrap();
}


/// Runs `scripts/<script>` (a model fetcher) and returns the path it prints, or `None`
/// after saying why `test` is skipped (no network, no pip).
pub fn fetch_model(script: &str, test: &str) -> Option<String> {
    let path = format!("{}/scripts/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = match std::process::Command::new("bash").arg(&path).output() {
        Ok(out) if out.status.success() => out,
        Ok(out) => {
            skip_notice(&format!("SKIPPED {test}: {path} failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
            return None;
        }
        Err(e) => {
            skip_notice(&format!("SKIPPED {test}: cannot run {path}: {e}"));
            return None;
        }
    };
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `compress` with no progress report and nothing to cancel it: how every test makes a container.
pub fn compress_model(model: &codecllm::input::SourceModel, out: &Path, opts: &codecllm::compress::CompressOptions) -> codecllm::Result<codecllm::compress::Summary> {
    codecllm::compress::compress(model, out, opts, &|_| {}, &AtomicBool::new(false))
}

/// The `codecllm` binary built for these tests.
pub fn codecllm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_codecllm"))
}

/// Runs `codecllm args…` to completion.
pub fn cli(args: &[&str]) -> Output {
    codecllm().args(args).output().unwrap()
}

/// `cli`, asserting that it succeeded (its stderr is the failure message).
pub fn cli_ok(args: &[&str]) -> Output {
    let out = cli(args);
    assert!(out.status.success(), "codecllm {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    out
}
