//! `codecllm demo`: SmolLM2-135M from its GGUF, compressed, then run as the FP16 baseline
//! and in every codecllm weight mode on one prompt; the seed-style comparison table.
use crate::container::Container;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::import::SourceModel;
use crate::model::llama::{GpuLlama, WeightMode};
use crate::model::tokenizer::ModelTokenizer;
use crate::stream::HostStore;
use std::sync::Arc;

/// One row of the table.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DemoRow {
    pub mode: String,
    pub prefill_s: f64,
    pub decode_s: f64,
    pub new_tokens: usize,
    pub tokens_per_s: f64,
    pub peak_vram: usize,
    /// The same without what the driver's pool held reserved but unallocated.
    pub peak_vram_net: usize,
    /// What the model allocated (weights, norms, KV cache, activations): unlike the measured
    /// peak, independent of what earlier modes in the same process left in the driver's pool.
    pub vram_accounted: usize,
    /// Weights on disk (GGUF or container) and in host RAM (pinned, streaming).
    pub disk_bytes: u64,
    pub host_ram_bytes: usize,
    /// Teacher-forced on the baseline's tokens: steps whose top-1 equals the baseline's.
    pub top1_agreement: f64,
    /// Largest relative L2 error of the logits against the baseline's, over those steps.
    pub max_logit_rel_err: f64,
    /// Tokens the free-running output shares with the baseline's from the start.
    pub identical_prefix: usize,
    /// Streaming: decode tokens/s over what pinned host→device copies of its bytes per
    /// token allow (the PCIe bound), the copy bandwidth measured in the same run.
    pub pcie_bound_share: Option<f64>,
    pub text: String,
}

fn argmax(v: &[f32]) -> u32 {
    v.iter().enumerate().fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0 as u32
}

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let (num, den) = a.iter().zip(b).fold((0f64, 0f64), |(n, d), (&x, &y)| (n + (x as f64 - y as f64).powi(2), d + (y as f64).powi(2)));
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// What `generate` returns: the new tokens, the logits of every step, seconds of prefill
/// and of decoding.
type Generated = (Vec<u32>, Vec<Vec<f32>>, f64, f64);

/// Greedy free-running generation.
fn generate(llm: &mut GpuLlama, prompt: &[u32], n: usize, tok: &ModelTokenizer) -> Result<Generated> {
    llm.reset();
    let t0 = std::time::Instant::now();
    let mut logits = llm.forward(prompt)?;
    let prefill = t0.elapsed().as_secs_f64();
    let (mut out, mut all) = (Vec::new(), vec![logits.clone()]);
    let t1 = std::time::Instant::now();
    for _ in 0..n {
        let next = argmax(&logits);
        if tok.is_end_of_generation(next) {
            break;
        }
        out.push(next);
        logits = llm.forward(&[next])?;
        all.push(logits.clone());
    }
    Ok((out, all, prefill, t1.elapsed().as_secs_f64()))
}

/// Feeds the baseline's tokens; returns (top-1 agreement, max logit relative error).
fn teacher_forced(llm: &mut GpuLlama, prompt: &[u32], tokens: &[u32], baseline: &[Vec<f32>]) -> Result<(f64, f64)> {
    llm.reset();
    let mut logits = llm.forward(prompt)?;
    let (mut agree, mut worst) = (0usize, 0f64);
    for (i, want) in baseline.iter().enumerate() {
        agree += (argmax(&logits) == argmax(want)) as usize;
        worst = worst.max(rel_err(&logits, want));
        if i < tokens.len() {
            logits = llm.forward(&[tokens[i]])?;
        }
    }
    Ok((agree as f64 / baseline.len() as f64, worst))
}

/// Runs the baseline (FP16 from the GGUF) and int8-resident, compressed-resident and
/// stream from the container on `question`, generating up to `n` tokens.
pub fn run(gpu: &Gpu, gguf: &std::path::Path, clm: &std::path::Path, question: &str, n: usize) -> Result<Vec<DemoRow>> {
    let source = SourceModel::open(gguf)?;
    let container = Container::open(clm)?;
    let tok = ModelTokenizer::from_metadata(&source.metadata)?;
    let prompt = tok.encode(&tok.chat_prompt(question)?)?;
    let ctx = prompt.len() + n + 1;
    let disk = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);

    // The link's bandwidth in this run, for the streaming row's share of the PCIe bound.
    let h2d_gbps = super::bench::Bench::new(gpu, 5)?.pinned_h2d_gbps()?;
    let mut base = GpuLlama::load(gpu, &source, WeightMode::Fp16Resident, prompt.len(), ctx)?;
    generate(&mut base, &prompt, 4, &tok)?; // warm-up: cuBLAS and module loading
    let (tokens, logits, prefill, decode) = generate(&mut base, &prompt, n, &tok)?;
    let row = |mode: String, llm: &GpuLlama, t: &[u32], p: f64, d: f64, disk_bytes, ram, agree, err, prefix, text| DemoRow {
        mode,
        prefill_s: p,
        decode_s: d,
        new_tokens: t.len(),
        tokens_per_s: t.len() as f64 / d.max(1e-9),
        peak_vram: llm.peak_vram,
        peak_vram_net: llm.peak_vram_net,
        vram_accounted: llm.vram_accounted,
        disk_bytes,
        host_ram_bytes: ram,
        top1_agreement: agree,
        max_logit_rel_err: err,
        identical_prefix: prefix,
        pcie_bound_share: None,
        text,
    };
    let mut rows =
        vec![row("fp16-resident (baseline, GGUF)".into(), &base, &tokens, prefill, decode, disk(gguf), 0, 1.0, 0.0, tokens.len(), tok.decode(&tokens)?)];
    drop(base);

    let store = Arc::new(HostStore::load(gpu, &container, &GpuLlama::stream_units(&container)?, true)?);
    for mode in [WeightMode::Int8Resident, WeightMode::CompressedResident, WeightMode::Stream] {
        let mut llm = match mode {
            WeightMode::Int8Resident => GpuLlama::load(gpu, &container, mode, prompt.len(), ctx)?,
            WeightMode::CompressedResident => GpuLlama::load_compressed(gpu, &container, prompt.len(), ctx)?,
            _ => GpuLlama::load_streamed(gpu, &container, store.clone(), 2, prompt.len(), ctx)?,
        };
        generate(&mut llm, &prompt, 4, &tok)?;
        let (t, _, p, d) = generate(&mut llm, &prompt, n, &tok)?;
        let (agree, err) = teacher_forced(&mut llm, &prompt, &tokens, &logits)?;
        let prefix = t.iter().zip(&tokens).take_while(|(a, b)| a == b).count();
        let ram = if mode == WeightMode::Stream { store.pinned_bytes } else { 0 };
        let name = format!(
            "{} (container)",
            match mode {
                WeightMode::Int8Resident => "int8-resident",
                WeightMode::CompressedResident => "compressed-resident",
                _ => "stream",
            }
        );
        let mut r = row(name, &llm, &t, p, d, disk(clm), ram, agree, err, prefix, tok.decode(&t)?);
        if mode == WeightMode::Stream {
            // Every step copies every unit once.
            let bound = h2d_gbps * 1e9 / store.total_bytes as f64;
            r.pcie_bound_share = Some(r.tokens_per_s / bound);
        }
        rows.push(r);
    }
    Ok(rows)
}

/// The table, then each mode's text.
pub fn print(rows: &[DemoRow]) {
    println!(
        "{:<34} {:>9} {:>9} {:>7} {:>6} {:>10} {:>10} {:>10} {:>8} {:>8} {:>7} {:>9} {:>7}",
        "mode", "prefill s", "decode s", "tok/s", "PCIe", "VRAM meas.", "w/o pool", "VRAM acct.", "disk MB", "RAM MB", "top-1", "max err", "prefix"
    );
    for r in rows {
        let pcie = r.pcie_bound_share.map_or("-".to_string(), |x| format!("{:.0}%", 100.0 * x));
        println!(
            "{:<34} {:>9.4} {:>9.4} {:>7.1} {:>6} {:>8.1}MB {:>8.1}MB {:>8.1}MB {:>8.1} {:>8.1} {:>6.1}% {:>9.2e} {:>3}/{:<3}",
            r.mode,
            r.prefill_s,
            r.decode_s,
            r.tokens_per_s,
            pcie,
            r.peak_vram as f64 / 1e6,
            r.peak_vram_net as f64 / 1e6,
            r.vram_accounted as f64 / 1e6,
            r.disk_bytes as f64 / 1e6,
            r.host_ram_bytes as f64 / 1e6,
            100.0 * r.top1_agreement,
            r.max_logit_rel_err,
            r.identical_prefix,
            r.new_tokens
        );
    }
    for r in rows {
        println!("\n[{}]\n{}", r.mode, r.text.trim());
    }
}
