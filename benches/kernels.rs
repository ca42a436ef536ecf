//! `cargo bench --bench kernels`: `codecllm bench kernels --quick` through the same library
//! code (codecllm::app::bench::suites), printed as a table; without a GPU it says so and
//! measures nothing. `CODECLLM_BENCH_FULL=1` runs every shape and batch.
use codecllm::app::bench::{print_table, suites};
use codecllm::gpu::Gpu;

fn main() {
    let gpu = match Gpu::probe() {
        Ok(g) => g,
        Err(why) => return eprintln!("bench kernels: nothing measured, no GPU ({why})"),
    };
    let quick = std::env::var("CODECLLM_BENCH_FULL").map_or(true, |v| v != "1");
    let o = suites::KernelsOptions { quick, tune: false, ggml: false, reps: 20, model: None, scratch: std::env::temp_dir().join("codecllm-bench") };
    match suites::kernels(&gpu, &o) {
        Ok(r) => print_table(&r.rows, &mut std::io::stdout()),
        Err(e) => panic!("bench kernels: {e}"),
    }
}
