//! `codecllm verify`.
use codecllm::container::Container;
use codecllm::gpu::Gpu;
use codecllm::import::SourceModel;
use codecllm::pipeline::verify::{verify, verify_gpu};
use codecllm::Result;
use indicatif::ProgressBar;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
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
}

pub fn run(a: Args) -> Result<bool> {
    let c = Container::open(&a.file)?;
    let src = a.against.as_deref().map(SourceModel::open).transpose()?;
    let gpu = a.gpu.then(|| Gpu::new(0)).transpose()?;
    let bar = ProgressBar::new(c.index.tensors.len() as u64);
    let mut report = verify(&c, src.as_ref(), &|i| bar.set_position(i as u64))?;
    bar.finish_and_clear();
    if let Some(g) = &gpu {
        verify_gpu(&c, g, &mut report)?;
    }
    if a.json {
        super::json_out(&report);
    } else {
        println!(
            "{}: {} tensors, {} chunks, {} stored bytes, {} decoded bytes",
            a.file.display(),
            report.tensors,
            report.chunks,
            report.stored_bytes,
            report.decoded_bytes
        );
        if report.gpu_only_chunks > 0 {
            println!("  {} ANS chunks checksummed only (they decode on the GPU)", report.gpu_only_chunks);
        }
        if report.int8_codes > 0 {
            println!(
                "  INT8 codes: stored at {:.3} of INT8, order-0 entropy {:.3} (a static per-tensor byte model's floor)",
                report.int8_stored as f64 / report.int8_codes as f64,
                report.int8_entropy_bits / 8.0 / report.int8_codes as f64
            );
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
        eprintln!("error: {}: {p}", a.file.display());
    }
    if report.ok() && !a.json {
        println!("OK");
    }
    Ok(report.ok())
}
