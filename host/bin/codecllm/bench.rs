//! `codecllm bench …`: the library's benchmark suites (`codecllm::app::bench::suites`)
//! as tables on the terminal or, with `--json`, rows plus the run's provenance.
use codecllm::app::bench::suites::{self, KernelsOptions, StreamOptions};
use codecllm::app::bench::{print_stream_table, print_table};
use codecllm::gpu::Gpu;
use codecllm::pipeline::compress::DEFAULT_LEVEL;
use codecllm::Result;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum What {
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
    /// CPU compression throughput (Zstd, rANS) on a synthetic FP16 checkpoint vs a plain file copy.
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
        /// Only the GEMVs on GGUF blocks (every type, M = 1, 2, 4, 8, 16, 32): the rows to set beside
        /// llama.cpp's kernels.
        #[arg(long, conflicts_with = "tune")]
        ggml: bool,
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
    /// Host RAM read by the link and the CPU at once: pinned H2D copies and the CPU INT8
    /// GEMV, each alone and together (JSON) — whether the CPU share's two bandwidths add.
    HostRam {
        /// Bytes each side cycles through, in MB.
        #[arg(long, default_value_t = 1024)]
        size_mb: usize,
        /// Seconds per figure.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
    },
    /// The peer benchmark's results (scripts/peer-bench.sh) as an SVG: decode tokens/s
    /// against VRAM for codecllm and llama.cpp, one panel per model.
    Plot {
        /// The peer-results.json to read.
        #[arg(long)]
        json: PathBuf,
        /// The SVG to write.
        #[arg(long)]
        svg: PathBuf,
    },
}

pub fn run(what: What) -> Result<bool> {
    match what {
        What::Plot { json, svg } => {
            let n = codecllm::app::bench::plot::plot_file(&json, &svg)?;
            eprintln!("wrote {} ({n} series from {})", svg.display(), json.display());
        }
        What::HostRam { size_mb, seconds } => {
            let gpu = Gpu::new(0)?;
            super::json_out(&codecllm::app::bench::host_ram(&gpu, size_mb << 20, seconds)?);
        }
        What::Stream { json, layers, batches, slots, vram_budget, scratch } => {
            let gpu = Gpu::new(0)?;
            let report = suites::stream(&gpu, &StreamOptions { layers, batches, slots, vram_budget: vram_budget.map(|mb| mb << 20), scratch })?;
            if json {
                super::json_out(&report);
            } else {
                print_stream_table(&report.rows, &mut std::io::stdout());
            }
        }
        What::Compress { json, size_mb, level, scratch } => {
            let report = suites::compress(size_mb, level, &scratch)?;
            if json {
                super::json_out(&report);
            } else {
                print_table(&report.rows, &mut std::io::stdout());
            }
        }
        What::Kernels { json, quick, tune, ggml, reps, model, scratch } => {
            let gpu = Gpu::new(0)?;
            let report = suites::kernels(&gpu, &KernelsOptions { quick, tune, ggml, reps, model, scratch })?;
            if json {
                // The table still goes to stderr, so a run saved as JSON stays readable.
                print_table(&report.rows, &mut std::io::stderr());
                super::json_out(&report);
            } else {
                print_table(&report.rows, &mut std::io::stdout());
            }
        }
    }
    Ok(true)
}
