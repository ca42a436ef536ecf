//! `codecllm demo`.
use codecllm::gpu::Gpu;
use codecllm::import::SourceModel;
use codecllm::pipeline::compress::CompressOptions;
use codecllm::{Error, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF (default: fetched with scripts/fetch-smollm2.sh).
    #[arg(long)]
    gguf: Option<PathBuf>,
    /// Where the container goes.
    #[arg(long, default_value = "out/smollm2.clm")]
    output: PathBuf,
    #[arg(long, default_value = "Write a short story about a dragon who learns to paint.")]
    prompt: String,
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<bool> {
    let gguf = match a.gguf {
        Some(p) => p,
        None => {
            let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-smollm2.sh");
            let out = std::process::Command::new("bash").arg(&script).output().map_err(|e| Error::io(&script, e))?;
            if !out.status.success() {
                return Err(Error::Invalid(format!("fetching SmolLM2 failed ({}): {}", script.display(), String::from_utf8_lossy(&out.stderr).trim())));
            }
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
    };
    if let Some(dir) = a.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    super::install_ctrlc()?;
    let src = SourceModel::open(&gguf)?;
    let gpu = Gpu::new(0);
    // The default codec (rANS): encoded here on the CPU, decoded by our kernel on the GPU.
    let opts = CompressOptions::default();
    let summary = super::compress::compress_with_progress(&src, &a.output, &opts, "compressing {spinner} {wide_bar} {bytes}/{total_bytes} ETA {eta}")?;
    if !a.json {
        super::compress::print_summary(&summary, &a.output);
    }
    match gpu {
        Ok(gpu) => {
            let rows = codecllm::app::demo::run(&gpu, &gguf, &a.output, &a.prompt, a.max_tokens)?;
            if a.json {
                super::json_out(&serde_json::json!({ "device": gpu.name, "prompt": a.prompt, "rows": rows }));
            } else {
                println!("\n{} — \"{}\", up to {} new tokens, greedy\n", gpu.name, a.prompt, a.max_tokens);
                codecllm::app::demo::print(&rows);
            }
            Ok(true)
        }
        Err(e) => {
            println!("\nNo GPU here ({}): running the CPU reference on a short prompt instead.", e.detail());
            super::run::run(super::run::Args {
                model: a.output,
                weights: super::run::Weights::Cpu,
                vram_budget: None,
                cpu_share: None,
                json: false,
                prompt: Some("What is the capital of France?".into()),
                prompts_file: None,
                batch: 1,
                max_tokens: 16,
                chat: true,
                temperature: 0.0,
                top_p: 0.9,
                seed: 0,
                no_graph: false,
                serial_launch: false,
                no_warmup: true,
                gpus: super::run::Gpus::Count(1),
            })
        }
    }
}
