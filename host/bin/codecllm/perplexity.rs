//! `codecllm perplexity`.
use super::run::{open_gpu, placement_line, Weights};
use codecllm::container::Container;
use codecllm::gpu::Gpu;
use codecllm::import::{SourceModel, WeightSource};
use codecllm::model::llama::{CpuLlama, GpuLlama};
use codecllm::model::perplexity::{perplexity, windows, PerplexityReport, WindowScorer};
use codecllm::model::tokenizer::ModelTokenizer;
use codecllm::{Error, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// A container, or the GGUF / safetensors checkpoint itself.
    model: PathBuf,
    /// The text to score (default: Paradise Lost, fetched by scripts/fetch-text.sh).
    #[arg(long)]
    text: Option<PathBuf>,
    /// Tokens per window; the second half of each is scored.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Score at most this many windows.
    #[arg(long)]
    chunks: Option<usize>,
    /// Where the weights go (as for `run`).
    #[arg(long, value_enum, default_value = "auto")]
    weights: Weights,
    /// VRAM the model may take, for `auto` and `hybrid`.
    #[arg(long, value_parser = super::run::parse_budget)]
    vram_budget: Option<usize>,
    /// Also compare every scored position with this model (another file, e.g. the FP16
    /// source of a container): KL divergence, top-1 agreement, worst token.
    #[arg(long)]
    kl_divergence: Option<PathBuf>,
    /// Where the reference's weights go (default: as for the model; a checkpoint that is
    /// not a container runs FP16-resident on the GPU).
    #[arg(long, value_enum)]
    reference_weights: Option<Weights>,
    #[arg(long)]
    json: bool,
}

/// The model at `path`: a container, or a checkpoint read as it is.
fn open(path: &Path) -> Result<Box<dyn WeightSource>> {
    Ok(if path.extension().is_some_and(|e| e == "clm") { Box::new(Container::open(path)?) } else { Box::new(SourceModel::open(path)?) })
}

/// The text file, as llama.cpp reads it: raw, with one trailing newline dropped.
fn read_text(path: &Path) -> Result<String> {
    let mut text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    if text.ends_with('\n') {
        text.pop();
    }
    Ok(text)
}

fn default_text() -> Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-text.sh");
    let out = std::process::Command::new("bash").arg(&script).output().map_err(|e| Error::io(&script, e))?;
    if !out.status.success() {
        return Err(Error::Invalid(format!(
            "no --text given and fetching the default text failed ({}): {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// A scorer for `src` placed as `weights` says, with a description of where it runs.
fn scorer<'g>(
    src: &dyn WeightSource,
    weights: Weights,
    gpu: Option<&'g Gpu>,
    budget: Option<usize>,
    ctx: usize,
) -> Result<(Box<dyn WindowScorer + 'g>, String)> {
    Ok(match gpu {
        Some(gpu) => {
            let (llm, placement): (GpuLlama<'g>, _) = open_gpu(gpu, src, weights, budget, ctx, ctx, Some(0.0))?;
            if let Some(p) = &placement {
                eprintln!("{}", placement_line(p, llm.cfg.layers));
            }
            let what = format!("{} on {}", llm.mode.name(), gpu.name);
            (Box::new(llm), what)
        }
        None => (Box::new(CpuLlama::load(src)?), "CPU f32 reference".into()),
    })
}

pub fn run(a: Args) -> Result<bool> {
    let text_path = match a.text {
        Some(p) => p,
        None => default_text()?,
    };
    let src = open(&a.model)?;
    let tok = ModelTokenizer::from_metadata(src.metadata())?;
    let tokens = tok.encode_text(&read_text(&text_path)?)?;
    let windows = windows(&tokens, a.ctx, a.chunks, tok.add_bos())?;
    let started = std::time::Instant::now();
    let gpu = super::run::gpu_for(a.weights)?;
    let (mut model, what) = scorer(src.as_ref(), a.weights, gpu.as_ref(), a.vram_budget, a.ctx)?;
    let reference_src = a.kl_divergence.as_deref().map(open).transpose()?;
    let mut reference = match &reference_src {
        Some(r) => {
            let weights = a.reference_weights.unwrap_or(if gpu.is_some() && r.container().is_none() { Weights::Fp16Resident } else { a.weights });
            let reference_gpu = if weights == Weights::Cpu { None } else { gpu.as_ref() };
            Some(scorer(r.as_ref(), weights, reference_gpu, None, a.ctx)?.0)
        }
        None => None,
    };
    eprintln!(
        "{}: {} tokens of {}, {} windows of {} ({what}, loaded in {:.1} s)",
        a.model.display(),
        tokens.len(),
        text_path.display(),
        windows.len(),
        a.ctx,
        started.elapsed().as_secs_f64()
    );
    let bar = ProgressBar::new(windows.len() as u64);
    bar.set_style(ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} windows, PPL {msg} ETA {eta}").expect("valid template"));
    let report = perplexity(model.as_mut(), reference.as_deref_mut(), &windows, &mut |done, ppl| {
        bar.set_position(done as u64);
        bar.set_message(format!("{ppl:.4}"));
    });
    bar.finish_and_clear();
    let report = report?;
    if a.json {
        super::json_out(&report);
    } else {
        print(&report);
    }
    Ok(true)
}

fn print(r: &PerplexityReport) {
    let running: Vec<String> = r.running_ppl.iter().enumerate().map(|(i, p)| format!("[{}]{p:.4}", i + 1)).collect();
    println!("{}", running.join(","));
    println!("Final estimate: PPL = {:.4} +/- {:.5}", r.ppl, r.ppl_err);
    println!("{} tokens scored in {} windows of {}, {:.1} s ({:.1} tokens/s)", r.tokens_scored, r.chunks, r.ctx, r.seconds, r.tokens_per_s);
    if let Some(k) = &r.kl {
        println!("reference PPL {:.4}", k.reference_ppl);
        println!(
            "Mean KLD: {:.6} ± {:.6}; median {:.6}, 99% {:.6}, 99.9% {:.6}, max {:.6} (window {}, position {})",
            k.mean_kl,
            k.mean_kl_err,
            k.median_kl,
            k.p99_kl,
            k.p999_kl,
            k.max_kl,
            k.worst_token.0 + 1,
            k.worst_token.1
        );
        println!("Same top p: {:.3} %", 100.0 * k.top1_agreement);
    }
}
