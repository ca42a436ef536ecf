//! `bench stream`: the streaming engine on LLaMA-7B-shaped blocks per codec, against FP16
//! streamed with plain async copies and FP16 resident (cuBLAS), timed the same way.
use super::Bench;
use crate::container::Codec;
use crate::error::Result;
use crate::gpu::cublas_fp16_linear;
use crate::stream::split_two;
use cudarc::cublas::CudaBlas;
use cudarc::driver::CudaSlice;
use half::f16;
use rayon::prelude::*;

/// LLaMA-7B transformer block projections `[out, in]`: q, k, v, o, gate, up, down.
pub const LLAMA7B_BLOCK: [(usize, usize); 7] = [(4096, 4096), (4096, 4096), (4096, 4096), (4096, 4096), (14336, 4096), (14336, 4096), (4096, 14336)];

/// One row of `bench stream`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StreamRow {
    pub mode: String,
    pub layers: usize,
    pub m: usize,
    pub seconds_per_forward: f64,
    pub tokens_per_s: f64,
    /// Bytes copied host → device per forward.
    pub h2d_bytes: usize,
    pub h2d_gbps: f64,
    /// `h2d_gbps` over the pinned H2D bandwidth measured in the same run.
    pub pct_of_pinned_h2d: f64,
    pub peak_vram_measured: usize,
    pub vram_accounted: usize,
    /// Chunk tables and scales, resident from the store's load (not in the two above).
    pub resident_table_bytes: usize,
    pub pinned_host_bytes: usize,
    /// Order-0 entropy of the container's INT8 codes, as a share of 8 bits (what a static
    /// byte model could store them in); `None` for FP16 rows.
    pub int8_entropy: Option<f64>,
}

/// Timed passes per row after `WARMUP_PASSES` untimed ones; the median is reported.
const TIMED_PASSES: usize = 5;
const WARMUP_PASSES: usize = 1;

/// Median wall seconds of `pass()` (each pass ends synchronized), after warm-up: the one
/// timing method of every row, codecllm's and the baselines' alike.
fn median_pass_seconds(mut pass: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..WARMUP_PASSES {
        pass()?;
    }
    let mut times = (0..TIMED_PASSES)
        .map(|_| {
            let t = std::time::Instant::now();
            pass()?;
            Ok(t.elapsed().as_secs_f64())
        })
        .collect::<Result<Vec<_>>>()?;
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

impl Bench<'_> {
    /// The streaming engine on a stack of `layers` LLaMA-7B blocks (one block of synthetic
    /// weights with real statistics, its stored bytes repeated per layer), per codec and
    /// batch, with FP16 baselines: streamed with plain async copies, and fully resident.
    /// Peak VRAM comes from one more, untimed pass that samples it after every unit.
    pub fn stream(
        &mut self,
        dir: &std::path::Path,
        layers: &[usize],
        batches: &[usize],
        slots: usize,
        vram_budget: Option<usize>,
        h2d_gbps: f64,
    ) -> Result<Vec<StreamRow>> {
        use crate::stream::{HostStore, WeightStream};
        let mut rows = Vec::new();
        let names: Vec<String> = (0..LLAMA7B_BLOCK.len()).map(|i| format!("layer{i}.weight")).collect();
        let max_m = batches.iter().copied().max().unwrap_or(1);
        for codec in [Codec::Raw, Codec::Zstd, Codec::Ans, Codec::Rans] {
            let c = self.synthetic_container(dir, &LLAMA7B_BLOCK, codec, if codec == Codec::Ans { 64 << 10 } else { 16 << 10 })?;
            let entropy = super::kernels::int8_entropy(&c)?;
            for &l in layers {
                let units = vec![names.clone(); l];
                let store = std::sync::Arc::new(HostStore::load(self.gpu, &c, &units, true)?);
                let mut ws = WeightStream::new(self.gpu, store.clone(), slots, vram_budget, max_m)?;
                for &m in batches {
                    let s = &self.gpu.stream;
                    let x = s.clone_htod(&self.random_f16(m * ws.input_width()))?;
                    let mut y = s.alloc_zeros::<f16>(m * ws.output_width())?;
                    let mut last = None;
                    let seconds = median_pass_seconds(|| {
                        last = Some(ws.forward_linear_chain(&x, m, &mut y)?);
                        Ok(())
                    })?;
                    let r = last.expect("at least one pass ran");
                    ws.sample_vram = true;
                    let peak = ws.forward_linear_chain(&x, m, &mut y)?.peak_vram_measured.unwrap_or(0);
                    ws.sample_vram = false;
                    let gbps = r.h2d_bytes as f64 / seconds / 1e9;
                    rows.push(StreamRow {
                        mode: format!("stream {}", codec.name()),
                        layers: l,
                        m,
                        seconds_per_forward: seconds,
                        tokens_per_s: m as f64 / seconds,
                        h2d_bytes: r.h2d_bytes,
                        h2d_gbps: gbps,
                        pct_of_pinned_h2d: 100.0 * gbps / h2d_gbps,
                        peak_vram_measured: peak,
                        vram_accounted: r.vram_accounted,
                        resident_table_bytes: store.table_bytes(),
                        pinned_host_bytes: store.pinned_bytes,
                        int8_entropy: entropy,
                    });
                    eprintln!("{:?}", rows.last().unwrap());
                }
            }
        }
        let layers_max = layers.iter().copied().max().unwrap_or(1);
        rows.extend(self.fp16_baselines(layers_max, batches, h2d_gbps)?);
        Ok(rows)
    }

    /// FP16 weights streamed with plain async copies into two device buffers (what
    /// offloading frameworks do), and FP16 fully resident; cuBLAS for every product.
    fn fp16_baselines(&mut self, layers: usize, batches: &[usize], h2d_gbps: f64) -> Result<Vec<StreamRow>> {
        let gpu = self.gpu;
        let block: Vec<Vec<f16>> = LLAMA7B_BLOCK
            .iter()
            .map(|&(n, k)| {
                let gain = 1.0 / (0.02 * (2.0 * k as f32).sqrt());
                self.weights(n * k).into_iter().map(|v| f16::from_f32(v * gain)).collect()
            })
            .collect();
        let offsets: Vec<usize> = LLAMA7B_BLOCK
            .iter()
            .scan(0, |o, &(n, k)| {
                let at = *o;
                *o += n * k;
                Some(at)
            })
            .collect();
        let layer_elems: usize = LLAMA7B_BLOCK.iter().map(|&(n, k)| n * k).sum();
        let max_m = batches.iter().copied().max().unwrap_or(1);
        let copy = gpu.ctx.new_stream()?;
        let compute = gpu.ctx.new_stream()?;
        let blas = CudaBlas::new(compute.clone())?;
        let max_width = 14336;
        let mut acts =
            [compute.alloc_zeros::<f16>(max_m * max_width)?, compute.alloc_zeros::<f16>(max_m * max_width)?, compute.alloc_zeros::<f16>(max_m * max_width)?];
        let mut rows = Vec::new();
        // SAFETY: filled below before any copy reads it.
        let mut host = unsafe { gpu.ctx.alloc_pinned::<f16>(layers * layer_elems) }?;
        {
            let h = host.as_mut_slice()?;
            h.par_chunks_mut(layer_elems).for_each(|layer| {
                for (t, off) in block.iter().zip(&offsets) {
                    layer[*off..*off + t.len()].copy_from_slice(t);
                }
            });
        }
        gpu.release_cached_memory()?;
        let (free_before, _) = gpu.mem_info()?;
        let mut slots = [copy.alloc_zeros::<f16>(layer_elems)?, copy.alloc_zeros::<f16>(layer_elems)?];
        let copied = [gpu.ctx.new_event(None)?, gpu.ctx.new_event(None)?];
        let computed = [gpu.ctx.new_event(None)?, gpu.ctx.new_event(None)?];
        let host_slice = host.as_slice()?;
        let bytes = layers * layer_elems * 2;
        for &m in batches {
            // One pass: copy layer l into slot l % 2 once its previous layer there was
            // computed; `peak` samples device memory after every layer (untimed pass only).
            let mut pass = |peak: Option<&mut usize>| -> Result<()> {
                let mut cur = 0;
                let mut peak = peak;
                for l in 0..layers {
                    let s = l % 2;
                    copy.wait(&computed[s])?;
                    copy.memcpy_htod(&host_slice[l * layer_elems..(l + 1) * layer_elems], &mut slots[s])?;
                    copied[s].record(&copy)?;
                    compute.wait(&copied[s])?;
                    cur = fp16_block(&blas, &slots[s].slice(..), &offsets, &mut acts, cur, m)?;
                    computed[s].record(&compute)?;
                    if let Some(p) = peak.as_deref_mut() {
                        *p = (*p).max(free_before.saturating_sub(gpu.mem_info()?.0));
                    }
                }
                compute.synchronize()?;
                Ok(())
            };
            let t = median_pass_seconds(|| pass(None))?;
            let mut peak = 0;
            pass(Some(&mut peak))?;
            rows.push(StreamRow {
                mode: "FP16 streamed (async copies, cuBLAS)".into(),
                layers,
                m,
                seconds_per_forward: t,
                tokens_per_s: m as f64 / t,
                h2d_bytes: bytes,
                h2d_gbps: bytes as f64 / t / 1e9,
                pct_of_pinned_h2d: 100.0 * bytes as f64 / t / 1e9 / h2d_gbps,
                peak_vram_measured: peak,
                vram_accounted: 2 * layer_elems * 2,
                resident_table_bytes: 0,
                pinned_host_bytes: bytes,
                int8_entropy: None,
            });
            eprintln!("{:?}", rows.last().unwrap());
        }
        drop(slots);
        // Resident: every layer's FP16 weights on the device, if they fit.
        gpu.release_cached_memory()?;
        let (free, _) = gpu.mem_info()?;
        if bytes + (4 << 30) < free {
            let resident = compute.clone_htod(&host_slice[..layers * layer_elems])?;
            compute.synchronize()?;
            let resident_peak = free.saturating_sub(gpu.mem_info()?.0);
            for &m in batches {
                let t = median_pass_seconds(|| {
                    let mut cur = 0;
                    for l in 0..layers {
                        let w = resident.slice(l * layer_elems..(l + 1) * layer_elems);
                        cur = fp16_block(&blas, &w, &offsets, &mut acts, cur, m)?;
                    }
                    compute.synchronize()?;
                    Ok(())
                })?;
                rows.push(StreamRow {
                    mode: "FP16 resident (cuBLAS)".into(),
                    layers,
                    m,
                    seconds_per_forward: t,
                    tokens_per_s: m as f64 / t,
                    h2d_bytes: 0,
                    h2d_gbps: 0.0,
                    pct_of_pinned_h2d: 0.0,
                    peak_vram_measured: resident_peak,
                    vram_accounted: bytes,
                    resident_table_bytes: 0,
                    pinned_host_bytes: 0,
                    int8_entropy: None,
                });
                eprintln!("{:?}", rows.last().unwrap());
            }
        }
        Ok(rows)
    }
}

/// One LLaMA-shaped block in FP16 with cuBLAS, wired like `stream::run_unit`.
fn fp16_block(blas: &CudaBlas, w: &cudarc::driver::CudaView<f16>, offsets: &[usize], acts: &mut [CudaSlice<f16>; 3], input: usize, m: usize) -> Result<usize> {
    let (mut cur, mut cur_width) = (input, LLAMA7B_BLOCK[0].1);
    for (&(n, k), &off) in LLAMA7B_BLOCK.iter().zip(offsets) {
        let src = if cur_width == k { cur } else { input };
        let dst = (0..3).find(|&i| i != src && i != input).expect("three buffers");
        let weight = w.slice(off..off + n * k);
        let (x, y) = split_two(acts, src, dst);
        cublas_fp16_linear(blas, &weight, x, y, m, n, k)?;
        cur = dst;
        cur_width = n;
    }
    Ok(cur)
}

/// Writes `bench stream` rows as an aligned table.
pub fn print_stream_table(rows: &[StreamRow], out: &mut impl std::io::Write) {
    let _ = writeln!(
        out,
        "{:<40} {:>6} {:>5} {:>10} {:>9} {:>9} {:>7} {:>10} {:>10} {:>10}",
        "mode", "layers", "M", "s/forward", "tokens/s", "H2D GB/s", "%PCIe", "peak MB", "acct MB", "pinned MB"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<40} {:>6} {:>5} {:>10.4} {:>9.2} {:>9.2} {:>7.1} {:>10.1} {:>10.1} {:>10.1}",
            r.mode,
            r.layers,
            r.m,
            r.seconds_per_forward,
            r.tokens_per_s,
            r.h2d_gbps,
            r.pct_of_pinned_h2d,
            r.peak_vram_measured as f64 / 1e6,
            r.vram_accounted as f64 / 1e6,
            r.pinned_host_bytes as f64 / 1e6
        );
    }
}
