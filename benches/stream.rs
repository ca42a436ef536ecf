//! `cargo bench --bench stream`: `codecllm bench stream --layers 8 --batches 1` through the
//! same library code, as a table; without a GPU it says so and measures nothing.
use codecllm::app::bench::{print_stream_table, suites};
use codecllm::gpu::Gpu;

fn main() {
    let gpu = match Gpu::probe() {
        Ok(g) => g,
        Err(why) => return eprintln!("bench stream: nothing measured, no GPU ({why})"),
    };
    let o = suites::StreamOptions { layers: vec![8], batches: vec![1], slots: 2, vram_budget: None, scratch: std::env::temp_dir().join("codecllm-bench") };
    match suites::stream(&gpu, &o) {
        Ok(r) => print_stream_table(&r.rows, &mut std::io::stdout()),
        Err(e) => panic!("bench stream: {e}"),
    }
}
