//! Where a benchmark's numbers came from, written into every `--json`: the build (commit),
//! the command line, the seed of its synthetic data, the machine, and the GPU with its
//! driver and clocks — enough to tell two runs apart and to redo one.
use crate::gpu::Gpu;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Provenance {
    /// `git describe`-style commit of the build (`-dirty` when the tree had changes), as
    /// build.rs recorded it; "unknown" outside a git checkout.
    pub commit: &'static str,
    pub version: &'static str,
    /// The command line, program name included.
    pub command: Vec<String>,
    /// Seconds since the Unix epoch when the run started.
    pub unix_time: u64,
    /// Seed of the run's synthetic data (weights and activations).
    pub seed: u64,
    pub cpu_threads: usize,
    pub device: Option<DeviceInfo>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct DeviceInfo {
    pub name: String,
    pub compute_capability: String,
    /// CUDA driver API version (e.g. 13000 for 13.0).
    pub driver_api_version: i32,
    /// The driver's own version string and the clocks while the run started, from
    /// `nvidia-smi` when it is installed ("current" clocks vary with load and power).
    pub driver_version: Option<String>,
    pub sm_clock_mhz: Option<u32>,
    pub sm_clock_max_mhz: Option<u32>,
    pub mem_clock_mhz: Option<u32>,
}

impl Provenance {
    pub fn new(seed: u64, gpu: Option<&Gpu>) -> Self {
        Provenance {
            commit: env!("CODECLLM_COMMIT"),
            version: env!("CARGO_PKG_VERSION"),
            command: std::env::args().collect(),
            unix_time: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            seed,
            cpu_threads: rayon::current_num_threads(),
            device: gpu.map(DeviceInfo::of),
        }
    }
}

impl DeviceInfo {
    fn of(gpu: &Gpu) -> Self {
        let mut driver_api_version = 0;
        // SAFETY: writes one int; the driver is loaded (a `Gpu` exists).
        unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut driver_api_version) };
        let smi = nvidia_smi(gpu.ordinal);
        let field = |i: usize| smi.as_ref().and_then(|f| f.get(i)).cloned();
        let mhz = |i: usize| field(i).and_then(|v| v.parse().ok());
        DeviceInfo {
            name: gpu.name.clone(),
            compute_capability: format!("{}.{}", gpu.compute_capability.0, gpu.compute_capability.1),
            driver_api_version,
            driver_version: field(0),
            sm_clock_mhz: mhz(1),
            sm_clock_max_mhz: mhz(2),
            mem_clock_mhz: mhz(3),
        }
    }
}

/// `driver_version, clocks.sm, clocks.max.sm, clocks.mem` of GPU `ordinal`, when
/// nvidia-smi runs here (clocks need NVML, which the CUDA driver API does not expose).
fn nvidia_smi(ordinal: usize) -> Option<Vec<String>> {
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=driver_version,clocks.sm,clocks.max.sm,clocks.mem", "--format=csv,noheader,nounits", &format!("--id={ordinal}")])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&out.stdout).trim().split(',').map(|s| s.trim().to_string()).collect())
}
