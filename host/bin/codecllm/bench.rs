//! `codecllm bench …`: the library's benchmarks (`codecllm::app::bench`) with tables on
//! the terminal and, with `--json`, rows plus the run's provenance.
use codecllm::app::bench::{compress_throughput, print_table, Bench, Provenance, BATCHES, SHAPES};
use codecllm::container::{Codec, Container};
use codecllm::gpu::Gpu;
use codecllm::pipeline::compress::{CompressOptions, DEFAULT_LEVEL};
use codecllm::{Error, Result};
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

fn scratch_dir(dir: &PathBuf) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

pub fn run(what: What) -> Result<bool> {
    match what {
        What::Stream { json, layers, batches, slots, vram_budget, scratch } => {
            scratch_dir(&scratch)?;
            let gpu = Gpu::new(0)?;
            let mut b = Bench::new(&gpu, 5)?;
            let h2d = b.pinned_h2d_gbps()?;
            eprintln!("{}: pinned H2D {h2d:.1} GB/s", gpu.name);
            let rows = b.stream(&scratch, &layers, &batches, slots, vram_budget.map(|mb| mb << 20), h2d)?;
            if json {
                super::json_out(&serde_json::json!({ "provenance": Provenance::new(b.seed, Some(&gpu)), "pinned_h2d_gbps": h2d, "rows": rows }));
            } else {
                codecllm::app::bench::print_stream_table(&rows, &mut std::io::stdout());
            }
        }
        What::Compress { json, size_mb, level, scratch } => {
            scratch_dir(&scratch)?;
            // 4096-wide rows, 4096 rows a matrix: 32 MiB of FP16 each.
            let shapes = vec![(4096, 4096); (size_mb << 20).div_ceil(32 << 20).max(1)];
            let opts = CompressOptions { level, ..Default::default() };
            let seed = rand::random();
            let row = compress_throughput(&scratch, &shapes, &opts, seed)?;
            if json {
                super::json_out(&serde_json::json!({ "provenance": Provenance::new(seed, None), "rows": [row] }));
            } else {
                print_table(std::slice::from_ref(&row), &mut std::io::stdout());
            }
        }
        What::Kernels { json, quick, tune, reps, model, scratch } => {
            let gpu = Gpu::new(0)?;
            let real = model.as_deref().map(Container::open).transpose()?;
            scratch_dir(&scratch)?;
            let mut b = Bench::new(&gpu, reps.max(1))?;
            let h2d = b.pinned_h2d_gbps()?;
            eprintln!(
                "{} (sm_{}{}): D2D copy {:.0} GB/s (read+write), pinned H2D {h2d:.1} GB/s",
                gpu.name,
                gpu.compute_capability.0,
                gpu.compute_capability.1,
                b.d2d_gbps()
            );
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
                super::json_out(
                    &serde_json::json!({ "provenance": Provenance::new(b.seed, Some(&gpu)), "d2d_gbps": b.d2d_gbps(), "pinned_h2d_gbps": h2d, "rows": rows }),
                );
            } else {
                print_table(&rows, &mut std::io::stdout());
            }
        }
    }
    Ok(true)
}
