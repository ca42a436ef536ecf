//! `codecllm bench kernels`: event-timed microbenchmarks, each line with its baseline
//! measured in the same run (cuBLAS FP16 GEMM, device-to-device copy).
//!
//! Method (see the device notes): warm-up first; every timed region runs one pass over
//! enough rotated weight copies that the working set exceeds L2 (so DRAM is measured, not
//! cache); per-call time = region / calls; the median of `reps` regions is reported.
use crate::compress::{compress, CompressOptions};
use crate::error::{Error, Result};
use crate::format::{Codec, Container};
use crate::gpu::{Decoder, DeviceChunkTable, DeviceCompressedTensor, DeviceInt8Buffer, Gpu, Int8Weights, LinearPlan, GEMM_TILES};
use crate::input::SourceModel;
use crate::quant::Int8Matrix;
use cudarc::cublas::CudaBlas;
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::CudaSlice;
use half::f16;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StudentT};
use rayon::prelude::*;
use std::sync::atomic::AtomicBool;

/// Real LLM projection shapes `[out, in]`: LLaMA-7B/Mistral attention and MLP, and a
/// SmolLM2-135M MLP pair.
pub const SHAPES: [(usize, usize); 5] = [(4096, 4096), (14336, 4096), (4096, 14336), (576, 1536), (1536, 576)];
pub const BATCHES: [usize; 6] = [1, 4, 16, 64, 256, 4096];
/// Rotated copies must exceed this many bytes: 4× the H100's 50 MB L2.
const WORKING_SET: usize = 200 << 20;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    pub section: &'static str,
    pub case: String,
    pub ours_us: f64,
    pub baseline: &'static str,
    pub baseline_us: f64,
    /// baseline time / our time (> 1: we are faster).
    pub speedup: f64,
    /// What our case moves or decodes per second, GB/s.
    pub gbps: f64,
    /// `gbps` as a share of the measured device-to-device copy bandwidth.
    pub pct_of_d2d: f64,
    pub note: String,
}

pub struct Bench<'g> {
    gpu: &'g Gpu,
    reps: usize,
    d2d_gbps: f64,
    rng: rand::rngs::StdRng,
}

impl<'g> Bench<'g> {
    pub fn new(gpu: &'g Gpu, reps: usize) -> Result<Self> {
        let mut b = Bench { gpu, reps, d2d_gbps: 0.0, rng: rand::rngs::StdRng::seed_from_u64(rand::random()) };
        b.d2d_gbps = b.d2d_copy_gbps()?;
        Ok(b)
    }

    pub fn d2d_gbps(&self) -> f64 {
        self.d2d_gbps
    }

    /// Median microseconds per call of `calls` back-to-back calls of `run(i)`.
    fn time_us(&self, calls: usize, mut run: impl FnMut(usize) -> Result<()>) -> Result<f64> {
        let s = &self.gpu.stream;
        for i in 0..calls.max(3) {
            run(i % calls)?;
        }
        let start = self.gpu.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        let end = self.gpu.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        let mut times = Vec::with_capacity(self.reps);
        for _ in 0..self.reps {
            start.record(s)?;
            for i in 0..calls {
                run(i)?;
            }
            end.record(s)?;
            end.synchronize()?;
            times.push(start.elapsed_ms(&end)? as f64 * 1000.0 / calls as f64);
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }

    /// Device-to-device copy of 1 GiB; bytes read plus bytes written per second.
    fn d2d_copy_gbps(&self) -> Result<f64> {
        let n = 1 << 30;
        let s = &self.gpu.stream;
        let src = s.alloc_zeros::<u8>(n)?;
        let mut dst = s.alloc_zeros::<u8>(n)?;
        let us = self.time_us(1, |_| Ok(s.memcpy_dtod(&src, &mut dst)?))?;
        Ok(2.0 * n as f64 / us / 1e3)
    }

    /// Pinned host → device copy of 256 MiB, GB/s.
    pub fn pinned_h2d_gbps(&self) -> Result<f64> {
        let n = 256 << 20;
        let s = &self.gpu.stream;
        // SAFETY: the pinned buffer is written before it is read.
        let mut host = unsafe { self.gpu.ctx.alloc_pinned::<u8>(n) }?;
        host.as_mut_slice()?.fill(1);
        let mut dst = s.alloc_zeros::<u8>(n)?;
        let us = self.time_us(1, |_| Ok(s.memcpy_htod(&host, &mut dst)?))?;
        Ok(n as f64 / us / 1e3)
    }

    fn heavy_tailed(&mut self, n: usize) -> Vec<f32> {
        heavy_tailed(n, self.rng.gen())
    }

    fn random_f16(&mut self, n: usize) -> Vec<f16> {
        (0..n).map(|_| f16::from_f32(self.rng.gen_range(-1.0..1.0))).collect()
    }

    /// Fused W8A16 linear (the plan `Gpu::linear` picks) vs cuBLAS FP16 for every shape and batch.
    pub fn linear(&mut self, shapes: &[(usize, usize)], batches: &[usize]) -> Result<Vec<Row>> {
        self.linear_plans(shapes, batches, &|m, n, k| vec![Gpu::plan(m, n, k)])
    }

    /// Every plan that can serve each case, for choosing `Gpu::plan`'s thresholds.
    pub fn tune(&mut self, shapes: &[(usize, usize)], batches: &[usize]) -> Result<Vec<Row>> {
        self.linear_plans(shapes, batches, &|m, _, _| {
            let mut plans = if m <= 16 { vec![LinearPlan::Gemv] } else { vec![] };
            for tile in 0..GEMM_TILES.len() {
                plans.push(LinearPlan::Gemm { tile, splits: 0 });
                plans.push(LinearPlan::Gemm { tile, splits: 1 });
            }
            plans
        })
    }

    fn linear_plans(&mut self, shapes: &[(usize, usize)], batches: &[usize], plans: &dyn Fn(usize, usize, usize) -> Vec<LinearPlan>) -> Result<Vec<Row>> {
        let s = self.gpu.stream.clone();
        let blas = CudaBlas::new(s.clone()).map_err(|e| Error::Gpu(format!("cuBLAS: {e}")))?;
        let mut rows = Vec::new();
        for &(n, k) in shapes {
            let copies = WORKING_SET.div_ceil(n * k).max(2);
            let w = Int8Matrix::quantize(&self.heavy_tailed(n * k), n, k, k).expect("finite").0;
            let q: Vec<CudaSlice<u8>> = (0..copies).map(|_| s.clone_htod(bytemuck::cast_slice::<i8, u8>(&w.q))).collect::<std::result::Result<_, _>>()?;
            let sc = s.clone_htod(&w.scales)?;
            let w16: Vec<f16> = w.dequantize().into_iter().map(f16::from_f32).collect();
            let fp16_copies = WORKING_SET.div_ceil(2 * n * k).max(2);
            let w16: Vec<CudaSlice<f16>> = (0..fp16_copies).map(|_| s.clone_htod(&w16)).collect::<std::result::Result<_, _>>()?;
            for &m in batches {
                let x = s.clone_htod(&self.random_f16(m * k))?;
                let mut y = s.alloc_zeros::<f16>(m * n)?;
                let gpu = self.gpu;
                let cublas = self.time_us(fp16_copies, |i| crate::gpu::cublas_fp16_linear(&blas, &w16[i], &x, &mut y, m, n, k))?;
                for plan in plans(m, n, k) {
                    let ours = self.time_us(copies, |i| {
                        let weights = Int8Weights { q: q[i].slice(..), scales: sc.slice(..), rows: n, cols: k, group_size: k };
                        gpu.linear_planned(&x, m, &weights, &mut y, &s, plan)
                    })?;
                    let bytes = (n * k + 4 * n + 2 * m * (k + n)) as f64;
                    let gbps = bytes / ours / 1e3;
                    let plan_name = match plan {
                        LinearPlan::Gemv => "GEMV".to_string(),
                        LinearPlan::Gemm { tile, splits } => format!("{} splits={}", GEMM_TILES[tile].name.trim_start_matches("gemm_"), if splits == 0 { "auto".into() } else { splits.to_string() }),
                    };
                    rows.push(Row {
                        section: "linear",
                        case: format!("{n}x{k} M={m}"),
                        ours_us: ours,
                        baseline: "cuBLAS FP16",
                        baseline_us: cublas,
                        speedup: cublas / ours,
                        gbps,
                        pct_of_d2d: 100.0 * gbps / self.d2d_gbps,
                        note: format!("{:.1} TFLOP/s, {plan_name}", 2.0 * (m * n * k) as f64 / ours / 1e6),
                    });
                }
            }
        }
        Ok(rows)
    }

    /// A synthetic checkpoint of heavy-tailed weights, compressed with `codec`.
    fn synthetic_container(&mut self, dir: &std::path::Path, shapes: &[(usize, usize)], codec: Codec, chunk_size: u32) -> Result<Container> {
        let tag: Vec<String> = shapes.iter().map(|(n, k)| format!("{n}x{k}")).collect();
        let src = dir.join(format!("synthetic-{}.safetensors", tag.join("-")));
        if !src.exists() {
            write_synthetic_checkpoint(&src, shapes, self.rng.gen())?;
        }
        let out = dir.join(format!("synthetic-{}-{}-{chunk_size}.clm", tag.join("-"), codec.name()));
        let model = SourceModel::open(&src)?;
        compress(&model, &out, &CompressOptions { codec, chunk_size, ..Default::default() }, &|_| {}, &AtomicBool::new(false))?;
        Container::open(&out)
    }

    /// nvCOMP decode (scatter and status check included) of every INT8 tensor in `c`,
    /// vs a device-to-device copy of the same decoded bytes.
    fn decode_rows(&mut self, c: &Container, label: &str) -> Result<Vec<Row>> {
        let s = self.gpu.stream.clone();
        let tensors: Vec<DeviceCompressedTensor> = c
            .index
            .tensors
            .iter()
            .filter(|t| t.matrix_dims().is_some())
            .map(|t| DeviceCompressedTensor::upload(self.gpu, c, &t.name))
            .collect::<Result<_>>()?;
        let refs: Vec<&DeviceChunkTable> = tensors.iter().map(|t| &t.table).collect();
        let mut decoder = Decoder::new(self.gpu, &refs)?;
        let mut out = DeviceInt8Buffer::new(self.gpu, tensors.iter().map(|t| t.len()).max().unwrap_or(1))?;
        let decoded: usize = tensors.iter().map(|t| t.len()).sum();
        let stored: usize = tensors.iter().map(|t| t.stored_bytes()).sum();
        let ours = self.time_us(1, |_| {
            for t in &tensors {
                t.decode_into(&mut decoder, &mut out, &s)?;
            }
            Ok(())
        })?;
        decoder.check(&s)?;
        // Host time to enqueue one decode: shows whether nvCOMP blocks the calling thread.
        s.synchronize()?;
        let enqueue = std::time::Instant::now();
        tensors[0].decode_into(&mut decoder, &mut out, &s)?;
        let enqueue_us = enqueue.elapsed().as_secs_f64() * 1e6;
        decoder.check(&s)?;
        let src = s.alloc_zeros::<u8>(decoded)?;
        let mut dst = s.alloc_zeros::<u8>(decoded)?;
        let copy = self.time_us(1, |_| Ok(s.memcpy_dtod(&src, &mut dst)?))?;
        let gbps = decoded as f64 / ours / 1e3;
        Ok(vec![Row {
            section: "decode",
            case: label.to_string(),
            ours_us: ours,
            baseline: "D2D copy",
            baseline_us: copy,
            speedup: copy / ours,
            gbps,
            pct_of_d2d: 100.0 * 2.0 * gbps / self.d2d_gbps,
            note: format!(
                "{:.1} MB INT8 in {} tensors, ratio {:.3}, temp {:.1} MB, enqueue {enqueue_us:.0} µs",
                decoded as f64 / 1e6,
                tensors.len(),
                stored as f64 / decoded as f64,
                decoder.temp_bytes() as f64 / 1e6
            ),
        }])
    }

    /// Decode throughput per codec and chunk size on synthetic heavy-tailed INT8 (and on
    /// `real`, a container of a real checkpoint, when given).
    pub fn decode(&mut self, dir: &std::path::Path, real: Option<&Container>) -> Result<Vec<Row>> {
        // 256 MiB of INT8 in LLaMA-7B MLP shapes.
        let shapes = [(14336, 4096), (4096, 14336), (14336, 4096), (4096, 14336), (4096, 4096)];
        let mut rows = Vec::new();
        for (codec, chunk) in [(Codec::Zstd, 16 << 10), (Codec::Zstd, 64 << 10), (Codec::Ans, 16 << 10), (Codec::Ans, 64 << 10)] {
            let c = self.synthetic_container(dir, &shapes, codec, chunk)?;
            rows.extend(self.decode_rows(&c, &format!("{} {} KiB synthetic", codec.name(), chunk >> 10))?);
        }
        // The same bytes as one tensor: one nvCOMP batch instead of five.
        for (codec, chunk) in [(Codec::Zstd, 16 << 10), (Codec::Ans, 64 << 10)] {
            let c = self.synthetic_container(dir, &[(61440, 4096)], codec, chunk)?;
            rows.extend(self.decode_rows(&c, &format!("{} {} KiB one batch", codec.name(), chunk >> 10))?);
        }
        if let Some(c) = real {
            let name = c.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let codec = c.index.tensors.iter().find(|t| t.matrix_dims().is_some()).map_or("-", |t| t.data.codec.name());
            rows.extend(self.decode_rows(c, &format!("{codec} {name}"))?);
        }
        Ok(rows)
    }

    /// Per layer at M = 1: decode from VRAM-resident compressed bytes + fused GEMV, vs
    /// the fused GEMV on resident INT8, vs cuBLAS FP16 (from the `linear` rows).
    pub fn layer(&mut self, dir: &std::path::Path, codec: Codec) -> Result<Vec<Row>> {
        let s = self.gpu.stream.clone();
        let c = self.synthetic_container(dir, &SHAPES, codec, 16 << 10)?;
        let mut rows = Vec::new();
        for t in c.index.tensors.iter() {
            let w = DeviceCompressedTensor::upload(self.gpu, &c, &t.name)?;
            let mut decoder = Decoder::new(self.gpu, &[&w.table])?;
            let mut q = DeviceInt8Buffer::new(self.gpu, w.len())?;
            let x = s.clone_htod(&self.random_f16(w.cols))?;
            let mut y = s.alloc_zeros::<f16>(w.rows)?;
            let gpu = self.gpu;
            let fused = self.time_us(1, |_| {
                w.decode_into(&mut decoder, &mut q, &s)?;
                gpu.linear(&x, 1, &w.weights(&q), &mut y, &s)
            })?;
            decoder.check(&s)?;
            let plain = self.time_us(1, |_| gpu.linear(&x, 1, &w.weights(&q), &mut y, &s))?;
            let gbps = w.len() as f64 / fused / 1e3;
            rows.push(Row {
                section: "layer",
                case: format!("{}x{} M=1 {}", w.rows, w.cols, codec.name()),
                ours_us: fused,
                baseline: "INT8 GEMV (resident)",
                baseline_us: plain,
                speedup: plain / fused,
                gbps,
                pct_of_d2d: 100.0 * gbps / self.d2d_gbps,
                note: format!("compressed {:.2} MB resident", w.stored_bytes() as f64 / 1e6),
            });
        }
        Ok(rows)
    }
}

/// Heavy-tailed weights (Student-t, 4 degrees of freedom, like trained LLM layers),
/// generated in parallel and reproducibly from `seed`.
pub fn heavy_tailed(n: usize, seed: u64) -> Vec<f32> {
    let t = StudentT::new(4.0).unwrap();
    let mut v = vec![0f32; n];
    v.par_chunks_mut(1 << 16).enumerate().for_each(|(i, c)| {
        let mut r = rand::rngs::StdRng::seed_from_u64(seed ^ i as u64);
        c.iter_mut().for_each(|x| *x = t.sample(&mut r) as f32 * 0.02);
    });
    v
}

/// A safetensors checkpoint of FP16 heavy-tailed matrices `layer{i}.weight` of `shapes`,
/// scaled to a gain of about 1 (std 1/√(2k)) so long chains of them stay in FP16 range.
/// The scale does not change the INT8 values: per-row absmax quantization ignores it.
pub fn write_synthetic_checkpoint(path: &std::path::Path, shapes: &[(usize, usize)], seed: u64) -> Result<()> {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = shapes
        .iter()
        .enumerate()
        .map(|(i, &(n, k))| {
            let gain = 1.0 / (0.02 * (2.0 * k as f32).sqrt());
            let bytes = heavy_tailed(n * k, seed.wrapping_add(i as u64)).into_iter().flat_map(|v| f16::from_f32(v * gain).to_le_bytes()).collect();
            (format!("layer{i}.weight"), vec![n, k], bytes)
        })
        .collect();
    let views: Vec<_> = data
        .iter()
        .map(|(name, shape, b)| (name.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F16, shape.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, &None, path).map_err(|e| Error::Invalid(format!("writing {}: {e}", path.display())))
}

/// CPU compression throughput on a synthetic FP16 checkpoint of `shapes`, against a plain
/// file copy of the same source (the I/O floor) measured in the same run.
pub fn compress_throughput(dir: &std::path::Path, shapes: &[(usize, usize)], opts: &CompressOptions) -> Result<Row> {
    let src = dir.join("compress-source.safetensors");
    write_synthetic_checkpoint(&src, shapes, rand::random())?;
    let model = SourceModel::open(&src)?;
    let fp16_bytes = model.total_bytes() as f64;
    let out = dir.join("compress-out.clm");
    let t = std::time::Instant::now();
    let summary = compress(&model, &out, opts, &|_| {}, &AtomicBool::new(false))?;
    let secs = t.elapsed().as_secs_f64();
    let copy_to = dir.join("compress-copy.safetensors");
    let t = std::time::Instant::now();
    std::fs::copy(&src, &copy_to).map_err(|e| Error::io(&copy_to, e))?;
    let copy_secs = t.elapsed().as_secs_f64();
    for f in [&src, &out, &copy_to] {
        let _ = std::fs::remove_file(f);
    }
    let threads = rayon::current_num_threads();
    let mbps = fp16_bytes / secs / 1e6;
    Ok(Row {
        section: "compress",
        case: format!("{} {:.0} MB FP16, {threads} threads", opts.codec.name(), fp16_bytes / 1e6),
        ours_us: secs * 1e6,
        baseline: "file copy",
        baseline_us: copy_secs * 1e6,
        speedup: copy_secs / secs,
        gbps: mbps / 1e3,
        pct_of_d2d: 0.0,
        note: format!(
            "{mbps:.0} MB/s ({:.0} MB/s per thread), ratio {:.3} vs FP16, {:.3} vs INT8",
            mbps / threads as f64,
            summary.total(|t| t.stored_bytes) as f64 / fp16_bytes,
            summary.total(|t| t.stored_bytes) as f64 / summary.total(|t| t.int8_bytes) as f64
        ),
    })
}

/// Writes rows as an aligned table.
pub fn print_table(rows: &[Row], out: &mut impl std::io::Write) {
    let _ = writeln!(out, "{:<8} {:<32} {:>10} {:>22} {:>10} {:>8} {:>9} {:>7}  note", "section", "case", "ours µs", "baseline", "base µs", "speedup", "GB/s", "%D2D");
    for r in rows {
        let _ = writeln!(
            out,
            "{:<8} {:<32} {:>10.2} {:>22} {:>10.2} {:>8.3} {:>9.1} {:>7.1}  {}",
            r.section, r.case, r.ours_us, r.baseline, r.baseline_us, r.speedup, r.gbps, r.pct_of_d2d, r.note
        );
    }
}

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
}

impl Bench<'_> {
    /// The streaming engine on a stack of `layers` LLaMA-7B blocks (one block of synthetic
    /// heavy-tailed weights, its stored bytes repeated per layer), per codec and batch,
    /// with FP16 baselines: streamed with plain async copies, and fully resident.
    pub fn stream(&mut self, dir: &std::path::Path, layers: &[usize], batches: &[usize], slots: usize, vram_budget: Option<usize>, h2d_gbps: f64) -> Result<Vec<StreamRow>> {
        use crate::stream::{HostStore, WeightStream};
        let mut rows = Vec::new();
        let names: Vec<String> = (0..LLAMA7B_BLOCK.len()).map(|i| format!("layer{i}.weight")).collect();
        let max_m = batches.iter().copied().max().unwrap_or(1);
        for codec in [Codec::Raw, Codec::Zstd, Codec::Ans] {
            let c = self.synthetic_container(dir, &LLAMA7B_BLOCK, codec, if codec == Codec::Ans { 64 << 10 } else { 16 << 10 })?;
            for &l in layers {
                let units = vec![names.clone(); l];
                let store = HostStore::load(self.gpu, &c, &units, true)?;
                let mut ws = WeightStream::new(self.gpu, &store, slots, vram_budget, max_m)?;
                for &m in batches {
                    let s = &self.gpu.stream;
                    let x = s.clone_htod(&self.random_f16(m * ws.input_width()))?;
                    let mut y = s.alloc_zeros::<f16>(m * ws.output_width())?;
                    ws.forward_mlp_stack(&x, m, &mut y)?; // warm-up
                    let mut runs = (0..3).map(|_| ws.forward_mlp_stack(&x, m, &mut y)).collect::<Result<Vec<_>>>()?;
                    runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
                    let r = runs[1];
                    let gbps = r.h2d_bytes as f64 / r.seconds / 1e9;
                    rows.push(StreamRow {
                        mode: format!("stream {}", codec.name()),
                        layers: l,
                        m,
                        seconds_per_forward: r.seconds,
                        tokens_per_s: m as f64 / r.seconds,
                        h2d_bytes: r.h2d_bytes,
                        h2d_gbps: gbps,
                        pct_of_pinned_h2d: 100.0 * gbps / h2d_gbps,
                        peak_vram_measured: runs.iter().map(|r| r.peak_vram_measured).max().unwrap_or(0),
                        vram_accounted: r.vram_accounted,
                        resident_table_bytes: store.table_bytes(),
                        pinned_host_bytes: store.pinned_bytes,
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
                self.heavy_tailed(n * k).into_iter().map(|v| f16::from_f32(v * gain)).collect()
            })
            .collect();
        let offsets: Vec<usize> = LLAMA7B_BLOCK.iter().scan(0, |o, &(n, k)| {
            let at = *o;
            *o += n * k;
            Some(at)
        }).collect();
        let layer_elems: usize = LLAMA7B_BLOCK.iter().map(|&(n, k)| n * k).sum();
        let max_m = batches.iter().copied().max().unwrap_or(1);
        let copy = gpu.ctx.new_stream()?;
        let compute = gpu.ctx.new_stream()?;
        let blas = CudaBlas::new(compute.clone()).map_err(|e| Error::Gpu(format!("cuBLAS: {e}")))?;
        let max_width = 14336;
        let mut acts = [compute.alloc_zeros::<f16>(max_m * max_width)?, compute.alloc_zeros::<f16>(max_m * max_width)?, compute.alloc_zeros::<f16>(max_m * max_width)?];
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
        for &m in batches {
            let mut times = Vec::new();
            let mut peak = 0;
            for _ in 0..4 {
                let t0 = std::time::Instant::now();
                let mut cur = 0;
                for l in 0..layers {
                    let s = l % 2;
                    copy.wait(&computed[s])?;
                    copy.memcpy_htod(&host_slice[l * layer_elems..(l + 1) * layer_elems], &mut slots[s])?;
                    copied[s].record(&copy)?;
                    compute.wait(&copied[s])?;
                    cur = fp16_block(&blas, &slots[s].slice(..), &offsets, &mut acts, cur, m)?;
                    computed[s].record(&compute)?;
                    let (free, _) = gpu.mem_info()?;
                    peak = free_before.saturating_sub(free).max(peak);
                }
                compute.synchronize()?;
                times.push(t0.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            let t = times[times.len() / 2];
            let bytes = layers * layer_elems * 2;
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
                pinned_host_bytes: layers * layer_elems * 2,
            });
            eprintln!("{:?}", rows.last().unwrap());
        }
        drop(slots);
        // Resident: every layer's FP16 weights on the device, if they fit.
        gpu.release_cached_memory()?;
        let (free, _) = gpu.mem_info()?;
        if layers * layer_elems * 2 + (4 << 30) < free {
            let resident = compute.clone_htod(&host_slice[..layers * layer_elems])?;
            compute.synchronize()?;
            let resident_peak = free.saturating_sub(gpu.mem_info()?.0);
            for &m in batches {
                let mut times = Vec::new();
                for _ in 0..4 {
                    let t0 = std::time::Instant::now();
                    let mut cur = 0;
                    for l in 0..layers {
                        let w = resident.slice(l * layer_elems..(l + 1) * layer_elems);
                        cur = fp16_block(&blas, &w, &offsets, &mut acts, cur, m)?;
                    }
                    compute.synchronize()?;
                    times.push(t0.elapsed().as_secs_f64());
                }
                times.sort_by(f64::total_cmp);
                let t = times[times.len() / 2];
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
                    vram_accounted: layers * layer_elems * 2,
                    resident_table_bytes: 0,
                    pinned_host_bytes: 0,
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
        let (x, y) = crate::stream::split_two(acts, src, dst);
        crate::gpu::cublas_fp16_linear(blas, &weight, x, y, m, n, k)?;
        cur = dst;
        cur_width = n;
    }
    Ok(cur)
}
