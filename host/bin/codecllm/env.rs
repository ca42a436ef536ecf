//! `codecllm env`.
use codecllm::gpu::nvcomp::Nvcomp;
use codecllm::gpu::Gpu;
use codecllm::Result;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<bool> {
    let gpu = Gpu::new(0).map(|g| format!("{} (sm_{}{})", g.name, g.compute_capability.0, g.compute_capability.1));
    let nvcomp = Nvcomp::get().map(|n| {
        let (major, minor, patch) = n.version();
        format!("{} ({major}.{minor}.{patch})", n.path().display())
    });
    let show = |r: &Result<String>| match r {
        Ok(v) => v.clone(),
        Err(e) => format!("unavailable: {e}"),
    };
    if a.json {
        super::json_out(&serde_json::json!({ "gpu": show(&gpu), "nvcomp": show(&nvcomp), "ok": gpu.is_ok() && nvcomp.is_ok() }));
    } else {
        println!("GPU:    {}", show(&gpu));
        println!("nvCOMP: {}", show(&nvcomp));
    }
    Ok(gpu.is_ok() && nvcomp.is_ok())
}
