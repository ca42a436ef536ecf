//! `codecllm compress`.
use codecllm::container::{Codec, DEFAULT_CHUNK_SIZE};
use codecllm::import::SourceModel;
use codecllm::pipeline::compress::{compress, CompressOptions, Summary, TensorReport, DEFAULT_LEVEL};
use codecllm::{Error, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// A .safetensors file, a sharded checkpoint's .safetensors.index.json, or a .gguf.
    input: PathBuf,
    /// Output container.
    #[arg(short, long)]
    output: PathBuf,
    /// Codec of the INT8 weight chunks: rans (the default: encoded on any CPU, within 1 %
    /// of the codes' entropy and a little smaller than Zstd on every model measured, decoded
    /// on the GPU by codecllm's own kernel); zstd (nvCOMP on the GPU); ans (needs a GPU).
    /// Norms, embeddings and scales are Zstd either way.
    #[arg(long, value_enum, default_value = "rans")]
    codec: Codec,
    /// Bytes per independently coded chunk (multiple of 16, 4 KiB..16 MiB).
    #[arg(long, default_value_t = DEFAULT_CHUNK_SIZE)]
    chunk_size: u32,
    /// Zstd level (1..22).
    #[arg(long, default_value_t = DEFAULT_LEVEL)]
    level: i32,
    /// One scale per this many input columns (multiple of 16) instead of per row.
    #[arg(long)]
    group_size: Option<u32>,
    /// Quantize embedding tables too (kept lossless by default).
    #[arg(long)]
    quantize_embeddings: bool,
    /// GGUF sources: keep quantized-block weights (Q4_K, Q6_K, Q8_0, Q5_0, …) as their
    /// blocks — the file's exact values at its own size — instead of requantizing them to
    /// INT8. The GPU modes still compute from INT8 (made at load) in this build.
    #[arg(long)]
    keep_quant: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(a: Args) -> Result<bool> {
    let opts = CompressOptions {
        codec: a.codec,
        chunk_size: a.chunk_size,
        level: a.level,
        group_size: a.group_size,
        quantize_embeddings: a.quantize_embeddings,
        keep_quant: a.keep_quant,
    };
    opts.validate()?;
    if let Some(n) = a.threads {
        rayon::ThreadPoolBuilder::new().num_threads(n.max(1)).build_global().map_err(|e| Error::Invalid(format!("--threads: {e}")))?;
    }
    super::install_ctrlc()?;
    let src = SourceModel::open(&a.input)?;
    let summary = compress_with_progress(&src, &a.output, &opts, "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")?;
    print_summary(&summary, &a.output);
    Ok(true)
}

/// `compress` with a progress bar drawn from `template`, cancelled by Ctrl-C.
pub fn compress_with_progress(src: &SourceModel, out: &Path, opts: &CompressOptions, template: &str) -> Result<Summary> {
    let bar = ProgressBar::new(src.total_bytes());
    bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
    let summary = compress(src, out, opts, &|done| bar.set_position(done), &super::CANCEL);
    bar.finish_and_clear();
    summary
}

pub fn print_summary(s: &Summary, output: &Path) {
    use super::ratio;
    println!("{:<10} {:>8} {:>14} {:>14} {:>14} {:>8} {:>8}", "tensors", "count", "FP16 bytes", "INT8 bytes", "stored bytes", "vs FP16", "vs INT8");
    type Pick = fn(&TensorReport) -> bool;
    let groups: [(&str, Pick); 3] = [("INT8", |t| t.quantized), ("lossless", |t| !t.quantized), ("total", |_| true)];
    for (label, pick) in groups {
        let ts: Vec<_> = s.tensors.iter().filter(|t| pick(t)).collect();
        let (f, i, c) = ts.iter().fold((0, 0, 0), |(f, i, c), t| (f + t.fp16_bytes, i + t.int8_bytes, c + t.stored_bytes));
        println!("{label:<10} {:>8} {f:>14} {i:>14} {c:>14} {:>8} {:>8}", ts.len(), ratio(c, f), ratio(c, i));
    }
    if let Some(h) = s.int8_entropy() {
        println!("order-0 entropy of the INT8 codes: {h:.3} of 8 bits (what a static per-tensor byte model stores them in)");
    }
    if let Some((name, e)) = s.worst() {
        println!("worst INT8 error: {:.4}% of the row max ({name})", e * 100.0);
    }
    let fp16 = s.total(|t| t.fp16_bytes);
    println!(
        "wrote {} ({} bytes) in {:.2} s, {:.0} MB/s of FP16-equivalent input",
        output.display(),
        s.file_bytes,
        s.seconds,
        fp16 as f64 / s.seconds.max(1e-9) / 1e6
    );
}
