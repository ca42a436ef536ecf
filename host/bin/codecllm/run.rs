//! `codecllm run`.
use codecllm::container::Container;
use codecllm::gpu::{nccl, Gpu};
use codecllm::import::{SourceModel, WeightSource};
use codecllm::model::config::ModelConfig;
use codecllm::model::engine::{CpuEngine, Engine, GpuReport};
use codecllm::model::llama::gpu::tp::TpLlama;
use codecllm::model::llama::{CpuLlama, GpuLlama, WeightMode};
use codecllm::model::placement::Placement;
use codecllm::model::sampling::sample;
use codecllm::model::shard::ShardPlan;
use codecllm::model::tokenizer::ModelTokenizer;
use codecllm::{Error, Result};
use rand::SeedableRng;
use std::io::Write;
use std::path::PathBuf;

/// Where the weights go: `auto` picks the GPU when there is one (all INT8-resident if it
/// fits the budget, else hybrid), else the CPU reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Weights {
    Auto,
    /// The f32 CPU reference forward.
    Cpu,
    #[value(name = "fp16-resident")]
    Fp16Resident,
    #[value(name = "int8-resident")]
    Int8Resident,
    #[value(name = "compressed-resident")]
    CompressedResident,
    Stream,
    Hybrid,
}

impl Weights {
    fn mode(self) -> Option<WeightMode> {
        Some(match self {
            Weights::Auto | Weights::Cpu => return None,
            Weights::Fp16Resident => WeightMode::Fp16Resident,
            Weights::Int8Resident => WeightMode::Int8Resident,
            Weights::CompressedResident => WeightMode::CompressedResident,
            Weights::Stream => WeightMode::Stream,
            Weights::Hybrid => WeightMode::Hybrid,
        })
    }
}

#[derive(clap::Args)]
pub struct Args {
    pub model: PathBuf,
    /// Where the weights go (see `Weights`).
    #[arg(long, value_enum, default_value = "auto")]
    pub weights: Weights,
    /// VRAM the model may take (e.g. 1.5GB) for `auto` and `hybrid` (default: the free
    /// VRAM less a margin).
    #[arg(long, value_parser = parse_budget)]
    pub vram_budget: Option<usize>,
    /// Fraction (0–1) of each streamed block's MLP rows the CPU computes from host RAM in
    /// decode steps while the link carries the rest (`stream`, `hybrid`, `auto`); default:
    /// balanced from the CPU's measured INT8 GEMV bandwidth and the link's. 0 turns it off.
    #[arg(long, value_parser = parse_share)]
    pub cpu_share: Option<f64>,
    #[arg(long, required_unless_present = "prompts_file", conflicts_with = "prompts_file")]
    pub prompt: Option<String>,
    /// Generate for every prompt of this file (one per line, or JSON lines
    /// `{"prompt": "…"}`), `--batch` sequences at once: one forward a step for all of them,
    /// finished sequences making room for the next prompts.
    #[arg(long)]
    pub prompts_file: Option<PathBuf>,
    /// Sequences generated together with `--prompts-file`.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub batch: u16,
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Wrap the prompt in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// 0 for greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Launch each decode step's kernels one by one instead of replaying the step as a
    /// CUDA graph (to measure what the graph saves).
    #[arg(long)]
    pub no_graph: bool,
    /// Replay that graph with each kernel starting only after the previous one ended,
    /// without programmatic dependent launch (to measure what it saves).
    #[arg(long)]
    pub serial_launch: bool,
    /// Time the prompt and the decode from the start: without the warm-up pass (the prompt
    /// and one decode step, then forgotten) that otherwise loads the kernels and cuBLAS,
    /// plans the products and captures the step graph first, as llama.cpp warms up.
    #[arg(long)]
    pub no_warmup: bool,
    /// Print a JSON report (text, speeds, placement, VRAM) at the end instead of the text.
    #[arg(long)]
    pub json: bool,
    /// GPUs to shard the model over (tensor parallel, NCCL): a count, or `auto` for all
    /// visible ones (as many as divide the model's heads). More than one takes `--weights
    /// int8-resident` (what `auto` becomes) or `fp16-resident`.
    #[arg(long, default_value = "1", value_parser = parse_gpus)]
    pub gpus: Gpus,
}

/// What `--gpus` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gpus {
    /// The GPUs the driver shows (one where there is none), or the most of them that the
    /// model's heads divide among.
    Auto,
    Count(usize),
}

impl Gpus {
    fn resolve(self, src: &dyn WeightSource) -> Result<usize> {
        Ok(match self {
            Gpus::Count(n) => n,
            Gpus::Auto => {
                let cfg = ModelConfig::from_metadata(src.metadata())?;
                (1..=nccl::visible_gpus().unwrap_or(1)).rev().find(|&n| ShardPlan::new(&cfg, n).is_ok()).unwrap_or(1)
            }
        })
    }
}

fn parse_gpus(s: &str) -> std::result::Result<Gpus, String> {
    match s {
        "auto" => Ok(Gpus::Auto),
        _ => s.parse().ok().filter(|&n| n > 0).map(Gpus::Count).ok_or_else(|| format!("'{s}' is neither a number of GPUs (1 or more) nor 'auto'")),
    }
}

pub fn parse_budget(s: &str) -> std::result::Result<usize, String> {
    codecllm::model::placement::parse_size(s)
}

/// Device slots the streamed mode cycles through: two, so one unit computes while the
/// next one is copied and decoded.
const STREAM_SLOTS: usize = 2;

/// The GPU `weights` asks for: none for `cpu`, GPU 0 for the GPU modes (an error without
/// one), and for `auto` GPU 0 when there is one (else the CPU reference, said once).
pub fn gpu_for(weights: Weights) -> Result<Option<Gpu>> {
    Ok(match weights {
        Weights::Cpu => None,
        Weights::Auto => Gpu::new(0).map_err(|e| eprintln!("codecllm: no GPU ({}); running the CPU reference", e.detail())).ok(),
        _ => Some(Gpu::new(0)?),
    })
}

/// `src` on `gpu` as `weights` says; `auto` and `hybrid` plan a placement under `budget`
/// (printed, and returned).
///
/// `cpu_share` as `run --cpu-share` (the streamed modes).
pub fn open_gpu<'g>(
    gpu: &'g Gpu,
    src: &dyn WeightSource,
    weights: Weights,
    budget: Option<usize>,
    max_m: usize,
    ctx: usize,
    cpu_share: Option<f64>,
) -> Result<(GpuLlama<'g>, Option<Placement>)> {
    if let (Some(WeightMode::Stream), Some(c)) = (weights.mode(), src.container()) {
        let (llm, p) = GpuLlama::load_stream_shared(gpu, c, STREAM_SLOTS, max_m, ctx, cpu_share)?;
        return Ok((llm, Some(p)));
    }
    if let Some(mode) = weights.mode().filter(|&m| m != WeightMode::Hybrid) {
        return Ok((GpuLlama::load_mode(gpu, src, mode, STREAM_SLOTS, max_m, ctx)?, None));
    }
    let (llm, p) = GpuLlama::load_auto(gpu, src, budget, STREAM_SLOTS, max_m, ctx, cpu_share)?;
    Ok((llm, Some(p)))
}

fn parse_share(s: &str) -> std::result::Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("'{s}' is not a fraction between 0 and 1")),
    }
}

/// The placement `open_gpu` chose, as one line for stderr.
pub fn placement_line(p: &Placement, layers: usize) -> String {
    format!(
        "placement: {}/{layers} blocks resident, LM head {}, {} ring slots{}; predicted {:.2} GB VRAM, {:.2} ms per token ({:.2} GB over the link)",
        p.resident_blocks,
        if p.lm_head_resident { "resident" } else { "streamed" },
        p.slots,
        if p.cpu_share > 0.0 {
            format!(", CPU computes {:.0} % of the streamed MLP rows ({:.2} GB)", 100.0 * p.cpu_share, p.cpu_bytes as f64 / 1e9)
        } else {
            String::new()
        },
        p.predicted_vram as f64 / 1e9,
        p.predicted_seconds * 1e3,
        p.streamed_bytes as f64 / 1e9
    )
}

/// The weight mode of a model sharded over several GPUs (`auto`: INT8-resident). Modes the
/// shards cannot take yet are refused by `TpLlama::load`, saying so.
fn tp_mode(weights: Weights, budget: Option<usize>) -> Result<WeightMode> {
    if budget.is_some() {
        return Err(Error::Invalid("--vram-budget plans one GPU's placement; with --gpus N > 1 every shard is resident".into()));
    }
    match weights.mode() {
        Some(mode) => Ok(mode),
        None if weights == Weights::Auto => Ok(WeightMode::Int8Resident),
        None => Err(Error::Invalid("--gpus N > 1 shards the model over GPUs: it does not combine with --weights cpu".into())),
    }
}

pub fn run(a: Args) -> Result<bool> {
    let (container, source);
    let src: &dyn WeightSource = if a.model.to_string_lossy().ends_with(".gguf") {
        source = SourceModel::open(&a.model)?;
        &source
    } else {
        container = Container::open(&a.model)?;
        &container
    };
    let tok = ModelTokenizer::from_metadata(src.metadata())?;
    let prompts = match &a.prompts_file {
        Some(f) => super::batch::read_prompts(f)?,
        None => vec![a.prompt.clone().expect("clap requires --prompt without --prompts-file")],
    };
    let all_ids = prompts.iter().map(|p| tok.encode(&if a.chat { tok.chat_prompt(p)? } else { p.clone() })).collect::<Result<Vec<_>>>()?;
    // Nothing to condition the first token on (a model without a BOS token, an empty line).
    if let Some(i) = all_ids.iter().position(Vec::is_empty) {
        let which = if a.prompts_file.is_some() { format!("prompt {} of the file", i + 1) } else { "the prompt".into() };
        return Err(Error::Invalid(format!("{which} encodes to no tokens (this model adds no BOS): give it some text")));
    }
    let ids = all_ids[0].clone();
    let started = std::time::Instant::now();
    let longest = all_ids.iter().map(Vec::len).max().unwrap_or(0);
    let batch = (a.batch as usize).min(all_ids.len());
    // A batch of prompts: rows enough for the first prompts' prefill together (up to
    // BATCH_ROWS) and for a decode step of every sequence; a cache run per sequence.
    let (m, ctx) = match a.prompts_file {
        Some(_) => {
            let first: usize = all_ids.iter().take(batch).map(Vec::len).sum();
            (first.min(BATCH_ROWS).max(longest).max(batch), batch * (longest + a.max_tokens))
        }
        None => (ids.len().max(1), ids.len() + a.max_tokens),
    };
    let n_gpus = a.gpus.resolve(src)?;
    let tp_mode = if n_gpus > 1 { Some(tp_mode(a.weights, a.vram_budget)?) } else { None };
    let tp_gpus = if tp_mode.is_some() { (0..n_gpus).map(Gpu::new).collect::<Result<Vec<_>>>()? } else { Vec::new() };
    let gpu = if tp_mode.is_some() { None } else { gpu_for(a.weights)? };
    let (mut placement, mut load) = (None, None);
    let (mut tp_slot, mut gpu_slot, mut cpu_slot) = (None, None, None);
    // Loading an 8B model takes seconds: a spinner with the time so far (hidden when stderr
    // is not a terminal).
    let loading = indicatif::ProgressBar::new_spinner().with_message(format!("loading {}", a.model.display()));
    loading.set_style(indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"));
    loading.enable_steady_tick(std::time::Duration::from_millis(120));
    let engine: &mut dyn Engine = match (&gpu, tp_mode) {
        (_, Some(mode)) => {
            let tp = TpLlama::load(&tp_gpus, src, mode, m, ctx)?;
            loading.finish_and_clear();
            let mb: Vec<String> = tp.weight_bytes().iter().map(|b| format!("{:.1}", *b as f64 / 1e6)).collect();
            eprintln!(
                "{}: {} layers, d={} over {n_gpus} GPUs ({} ×{n_gpus}, tensor parallel, {}, kernels launched one by one; {} MB of weights in VRAM per GPU, loaded in {:.1} s)",
                a.model.display(),
                tp.cfg.layers,
                tp.cfg.dim,
                tp_gpus[0].name,
                tp.ranks[0].mode.name(),
                mb.join(" / "),
                started.elapsed().as_secs_f64()
            );
            tp_slot.insert(tp)
        }
        (Some(gpu), None) => {
            let (mut llm, p) = open_gpu(gpu, src, a.weights, a.vram_budget, m, ctx, a.cpu_share)?;
            loading.finish_and_clear();
            if let Some(p) = &p {
                eprintln!("{}", placement_line(p, llm.cfg.layers));
            }
            placement = p;
            llm.use_graph = !a.no_graph;
            llm.programmatic_launch = !a.serial_launch;
            let t = llm.load_times;
            load = Some(serde_json::json!({ "seconds": started.elapsed().as_secs_f64(), "decode_s": t.decode_s, "upload_s": t.upload_s }));
            eprintln!(
                "{}: {} layers, d={} on {} ({}, {:.1} MB of weights in VRAM, loaded in {:.1} s; resident weights: {:.1} s decoding on the CPU, {:.1} s uploading)",
                a.model.display(),
                llm.cfg.layers,
                llm.cfg.dim,
                gpu.name,
                llm.mode.name(),
                llm.weight_bytes as f64 / 1e6,
                started.elapsed().as_secs_f64(),
                t.decode_s,
                t.upload_s
            );
            gpu_slot.insert(llm)
        }
        (None, None) => {
            let llm = CpuLlama::load(src)?;
            loading.finish_and_clear();
            eprintln!(
                "{}: {} layers, d={} (CPU f32 reference, loaded in {:.1} s)",
                a.model.display(),
                llm.cfg.layers,
                llm.cfg.dim,
                started.elapsed().as_secs_f64()
            );
            if longest + a.max_tokens > llm.cfg.context {
                return Err(Error::Invalid(format!("{longest} prompt tokens + {} new exceed the context of {}", a.max_tokens, llm.cfg.context)));
            }
            cpu_slot.insert(CpuEngine::new(llm))
        }
    };
    if a.prompts_file.is_some() {
        let report = Report { placement: placement.as_ref(), load: load.as_ref(), started };
        return run_batch(&a, engine, &tok, &prompts, &all_ids, batch, m, report);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed);
    let warmup = std::time::Instant::now();
    // The CPU reference has nothing to warm up and costs a whole prompt.
    let warm = !a.no_warmup && engine.gpu_report().is_some();
    if warm {
        engine.submit(&ids)?;
        let first = sample(&engine.finish()?, 0.0, 1.0, &mut rng);
        engine.submit(&[first])?;
        engine.finish()?;
        engine.reset();
    }
    let warmup = warm.then(|| warmup.elapsed().as_secs_f64());
    let device_before = engine.gpu_report().map_or(0.0, |r| r.device_seconds);
    let t0 = std::time::Instant::now();
    engine.submit(&ids)?;
    let mut logits = engine.finish()?;
    let prefill = t0.elapsed().as_secs_f64();
    let device_after_prefill = engine.gpu_report().map_or(0.0, |r| r.device_seconds);
    let share_before = engine.cpu_share_stats();
    let (mut out, mut shown) = (Vec::new(), 0);
    let t1 = std::time::Instant::now();
    for _ in 0..a.max_tokens {
        let next = sample(&logits, a.temperature, a.top_p, &mut rng);
        if tok.is_end_of_generation(next) {
            break;
        }
        out.push(next);
        engine.submit(&[next])?;
        // Printed while the engine computes the next logits. Only whole characters: a
        // multi-byte one may span tokens.
        let s = tok.decode(&out)?;
        if !a.json && !s.ends_with('\u{fffd}') {
            print!("{}", &s[shown..]);
            let _ = std::io::stdout().flush();
            shown = s.len();
        }
        logits = engine.finish()?;
    }
    let decode = t1.elapsed().as_secs_f64();
    let report = engine.gpu_report();
    // The decode's share of the CPU's work (the prefill streams every row).
    let cpu_share = engine.cpu_share_stats().zip(share_before).map(|(after, before)| after.since(&before));
    // Tensor parallel: each GPU's own figures (`report` is the busiest GPU's).
    let per_gpu = tp_slot.as_ref().map(TpLlama::reports);
    if a.json {
        super::json_out(&serde_json::json!({
            "text": tok.decode(&out)?,
            "prompt_tokens": ids.len(),
            "new_tokens": out.len(),
            "warmup_s": warmup,
            "prefill_s": prefill,
            "prefill_device_s": device_after_prefill - device_before,
            "decode_s": decode,
            "tokens_per_s": out.len() as f64 / decode.max(1e-9),
            "placement": placement,
            "load": load,
            "gpu": report,
            "cpu_share": cpu_share,
            "per_gpu": per_gpu,
        }));
        return Ok(true);
    }
    println!();
    let warmed = warmup.map_or(String::new(), |w| format!(" (after a {w:.2} s warm-up)"));
    eprintln!(
        "prefill {} tokens in {prefill:.3} s{warmed}; {} new tokens in {decode:.3} s ({:.1} tokens/s)",
        ids.len(),
        out.len(),
        out.len() as f64 / decode.max(1e-9)
    );
    if let Some(GpuReport { peak, net, allocated, device_seconds, .. }) = report {
        let steps = out.len().max(1) as f64;
        eprintln!(
            "device time per new token {:.3} ms of {:.3} ms; VRAM: peak {:.1} MB measured ({:.1} MB without the driver pool's unallocated reserve), {:.1} MB allocated by the model",
            (device_seconds - device_after_prefill) * 1e3 / steps,
            decode * 1e3 / steps,
            peak as f64 / 1e6,
            net as f64 / 1e6,
            allocated as f64 / 1e6
        );
    }
    if let Some(c) = cpu_share.filter(|c| c.jobs > 0) {
        let steps = out.len().max(1) as f64;
        eprintln!(
            "CPU share: {} products a token, the CPU busy {:.3} ms of the {:.3} ms a token takes ({:.3} ms in the GEMV)",
            c.jobs as f64 / steps,
            c.busy_s * 1e3 / steps,
            decode * 1e3 / steps,
            c.gemv_s * 1e3 / steps
        );
    }
    for (i, r) in per_gpu.iter().flatten().enumerate() {
        eprintln!(
            "GPU {i}: peak {:.1} MB measured ({:.1} MB without the pool's reserve), {:.1} MB allocated, {:.3} s of device time",
            r.peak as f64 / 1e6,
            r.net as f64 / 1e6,
            r.allocated as f64 / 1e6,
            r.device_seconds
        );
    }
    Ok(true)
}

/// Rows of the largest prefill batch `--prompts-file` loads the model for: 2048 rows of an
/// 8B model's activations take ~0.2 GB of VRAM, and 16 prompts of 128 tokens fit.
const BATCH_ROWS: usize = 2048;

/// What the load left for the batch report.
struct Report<'a> {
    placement: Option<&'a Placement>,
    load: Option<&'a serde_json::Value>,
    started: std::time::Instant,
}

/// `run --prompts-file`: every prompt, `batch` at a time, then the outputs and speeds.
#[allow(clippy::too_many_arguments)]
fn run_batch(
    a: &Args,
    engine: &mut dyn Engine,
    tok: &ModelTokenizer,
    prompts: &[String],
    ids: &[Vec<u32>],
    batch: usize,
    max_rows: usize,
    r: Report,
) -> Result<bool> {
    use super::batch::{generate, Sampling};
    let sampling = Sampling { max_tokens: a.max_tokens, temperature: a.temperature, top_p: a.top_p, seed: a.seed };
    let warmup = std::time::Instant::now();
    // As for one prompt: kernels, plans and the step graph set up before timing (a batch
    // of the first prompts, two new tokens each).
    let warm = !a.no_warmup && engine.gpu_report().is_some();
    if warm {
        generate(engine, tok, &ids[..batch], batch, max_rows, &Sampling { max_tokens: a.max_tokens.min(2), ..sampling })?;
    }
    let warmup = warm.then(|| warmup.elapsed().as_secs_f64());
    let device_before = engine.gpu_report().map_or(0.0, |g| g.device_seconds);
    let run = generate(engine, tok, ids, batch, max_rows, &sampling)?;
    let total: usize = run.outputs.iter().map(|o| o.tokens.len()).sum();
    let aggregate = total as f64 / run.seconds.max(1e-9);
    let decode_rate = run.decode_tokens as f64 / run.decode_s.max(1e-9);
    let report = engine.gpu_report();
    let texts = run.outputs.iter().map(|o| tok.decode(&o.tokens)).collect::<Result<Vec<_>>>()?;
    if a.json {
        let outputs: Vec<serde_json::Value> = prompts
            .iter()
            .zip(&run.outputs)
            .zip(&texts)
            .zip(ids)
            .map(|(((p, o), t), i)| {
                let n = o.tokens.len();
                serde_json::json!({"prompt": p, "text": t, "prompt_tokens": i.len(), "new_tokens": n, "seconds": o.seconds, "tokens_per_s": n as f64 / o.seconds.max(1e-9)})
            })
            .collect();
        super::json_out(&serde_json::json!({
            "prompts": prompts.len(),
            "batch": batch,
            "outputs": outputs,
            "prompt_tokens": ids.iter().map(Vec::len).sum::<usize>(),
            "new_tokens": total,
            "seconds": run.seconds,
            "aggregate_tokens_per_s": aggregate,
            "prefill_s": run.prefill_s,
            "decode_s": run.decode_s,
            "decode_steps": run.decode_steps,
            "decode_tokens_per_s": decode_rate,
            "warmup_s": warmup,
            "device_s": report.map(|g| g.device_seconds - device_before),
            "placement": r.placement,
            "load": r.load,
            "gpu": report,
        }));
        return Ok(true);
    }
    for (i, t) in texts.iter().enumerate() {
        println!("[{}] {t}", i + 1);
    }
    eprintln!(
        "{} prompts, {batch} at a time: {total} new tokens in {:.3} s ({aggregate:.1} tokens/s in all; decode steps {decode_rate:.1} tokens/s, prefill {:.3} s; {:.1} s since start)",
        prompts.len(),
        run.seconds,
        run.prefill_s,
        r.started.elapsed().as_secs_f64()
    );
    if let Some(GpuReport { peak, allocated, .. }) = report {
        eprintln!("VRAM: peak {:.1} MB measured, {:.1} MB allocated by the model", peak as f64 / 1e6, allocated as f64 / 1e6);
    }
    Ok(true)
}
