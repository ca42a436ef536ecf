//! `cargo bench --bench compress`: `codecllm bench compress` on 256 MB of synthetic FP16
//! (`CODECLLM_BENCH_MB` to change it) through the same library code, as a table.
use codecllm::app::bench::{print_table, suites};
use codecllm::pipeline::compress::DEFAULT_LEVEL;

fn main() {
    let mb = std::env::var("CODECLLM_BENCH_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    match suites::compress(mb, DEFAULT_LEVEL, &std::env::temp_dir().join("codecllm-bench")) {
        Ok(r) => print_table(&r.rows, &mut std::io::stdout()),
        Err(e) => panic!("bench compress: {e}"),
    }
}
