//! `bench kernels`: the fused linears against cuBLAS FP16, GPU decode against a
//! device-to-device copy, and decode + GEMV per layer against the resident GEMV.
use super::{data, Bench, Row, WORKING_SET};
use crate::abi::WGMMA_TILES;
use crate::codec::{entropy, Int8Matrix};
use crate::container::{Codec, Container};
use crate::error::Result;
use crate::gpu::{Decoder, DeviceChunkTable, DeviceCompressedTensor, DeviceInt8Buffer, Gpu, Int8Weights, LinearPlan, GEMM_TILES};
use crate::import::SourceModel;
use crate::pipeline::compress::{compress, CompressOptions};
use cudarc::cublas::CudaBlas;
use cudarc::driver::CudaSlice;
use half::f16;
use rand::Rng;
use std::sync::atomic::AtomicBool;

/// Real LLM projection shapes `[out, in]`: LLaMA-7B/Mistral attention and MLP, and a
/// SmolLM2-135M MLP pair.
pub const SHAPES: [(usize, usize); 5] = [(4096, 4096), (14336, 4096), (4096, 14336), (576, 1536), (1536, 576)];
pub const BATCHES: [usize; 6] = [1, 4, 16, 64, 256, 4096];
impl Bench<'_> {
    /// Fused W8A16 linear (the plan `Gpu::linear` picks) vs cuBLAS FP16 for every shape and batch.
    pub fn linear(&mut self, shapes: &[(usize, usize)], batches: &[usize]) -> Result<Vec<Row>> {
        self.linear_plans(shapes, batches, &|m, n, k| vec![Gpu::plan(m, n, k)])
    }

    /// Every plan that can serve each case, for choosing `Gpu::plan`'s thresholds: on
    /// compute capability 9.0 the Hopper `wgmma` GEMMs too (loaded here, before any timing).
    pub fn tune(&mut self, shapes: &[(usize, usize)], batches: &[usize]) -> Result<Vec<Row>> {
        let hopper = match self.gpu.kernels.wgmma() {
            Ok(_) => true,
            Err(why) => {
                eprintln!("bench kernels --tune: no wgmma plans: {why}");
                false
            }
        };
        self.linear_plans(shapes, batches, &|m, _, _| {
            let mut plans = if m <= 16 { vec![LinearPlan::Gemv] } else { vec![LinearPlan::DequantCublas] };
            for tile in 0..GEMM_TILES.len() {
                plans.push(LinearPlan::Gemm { tile, splits: 0 });
                plans.push(LinearPlan::Gemm { tile, splits: 1 });
            }
            // Hopper tiles whose batch rows the batch fills more than half of (bm / 2 < m),
            // and the smallest whatever the batch.
            for (tile, t) in WGMMA_TILES.iter().enumerate() {
                if hopper && (tile == 0 || t.bm / 2 < m) {
                    plans.push(LinearPlan::Wgmma { tile, splits: 0 });
                    plans.push(LinearPlan::Wgmma { tile, splits: 1 });
                }
            }
            plans
        })
    }

    fn linear_plans(&mut self, shapes: &[(usize, usize)], batches: &[usize], plans: &dyn Fn(usize, usize, usize) -> Vec<LinearPlan>) -> Result<Vec<Row>> {
        let s = self.gpu.stream.clone();
        let blas = CudaBlas::new(s.clone())?;
        let mut rows = Vec::new();
        for &(n, k) in shapes {
            let copies = WORKING_SET.div_ceil(n * k).max(2);
            let w = Int8Matrix::quantize(&self.weights(n * k), n, k, k).expect("finite").0;
            let q: Vec<CudaSlice<u8>> = (0..copies).map(|_| s.clone_htod(bytemuck::cast_slice::<i8, u8>(&w.q))).collect::<std::result::Result<_, _>>()?;
            let sc = s.clone_htod(&w.scales)?;
            let w16 = self.fp16_copies(&w.dequantize())?;
            for &m in batches {
                let x = s.clone_htod(&self.random_f16(m * k))?;
                let mut y = s.alloc_zeros::<f16>(m * n)?;
                let gpu = self.gpu;
                let cublas = self.cublas_us(&blas, &w16, &x, &mut y, m, n, k)?;
                for plan in plans(m, n, k) {
                    let ours = self.time_us(copies, |i| {
                        let weights = Int8Weights { q: q[i].slice(..), scales: sc.slice(..), rows: n, cols: k, group_size: k };
                        gpu.linear_planned(&x, m, &weights, &mut y, &s, plan)
                    })?;
                    let bytes = n * k + 4 * n + 2 * m * (k + n);
                    let plan_name = match plan {
                        LinearPlan::Gemv => "GEMV".to_string(),
                        LinearPlan::DequantCublas => "dequant+cuBLAS".to_string(),
                        LinearPlan::Gemm { tile, splits } => format!(
                            "{} splits={}",
                            GEMM_TILES[tile].name.trim_start_matches("gemm_"),
                            if splits == 0 { "auto".into() } else { splits.to_string() }
                        ),
                        LinearPlan::Wgmma { tile, splits } => {
                            format!("{} splits={}", WGMMA_TILES[tile].name, if splits == 0 { "auto".into() } else { splits.to_string() })
                        }
                    };
                    let note = format!("{:.1} TFLOP/s, {plan_name}", 2.0 * (m * n * k) as f64 / ours / 1e6);
                    rows.push(self.vs_cublas("linear", format!("{n}x{k} M={m}"), ours, cublas, bytes, note));
                }
            }
        }
        Ok(rows)
    }

    /// Rotated FP16 copies of weights `w` for the cuBLAS FP16 baseline, enough of them that
    /// a pass over them does not fit in L2.
    pub(super) fn fp16_copies(&self, w: &[f32]) -> Result<Vec<CudaSlice<f16>>> {
        let w16: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let copies = WORKING_SET.div_ceil(2 * w16.len().max(1)).max(2);
        Ok((0..copies).map(|_| self.gpu.stream.clone_htod(&w16)).collect::<std::result::Result<_, _>>()?)
    }

    /// A row of ours (`bytes` moved in `ours` µs) against cuBLAS FP16 (`cublas` µs).
    pub(super) fn vs_cublas(&self, section: &'static str, case: String, ours: f64, cublas: f64, bytes: usize, note: String) -> Row {
        let gbps = bytes as f64 / ours / 1e3;
        Row {
            section,
            case,
            ours_us: ours,
            baseline: "cuBLAS FP16",
            baseline_us: cublas,
            speedup: cublas / ours,
            gbps,
            pct_of_d2d: 100.0 * gbps / self.d2d_gbps,
            note,
        }
    }

    /// Time of cuBLAS's FP16 `[m, k] × [n, k]ᵀ` over `w16`'s rotated copies, µs per call.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn cublas_us(
        &self,
        blas: &CudaBlas,
        w16: &[CudaSlice<f16>],
        x: &CudaSlice<f16>,
        y: &mut CudaSlice<f16>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<f64> {
        self.time_us(w16.len(), |i| crate::gpu::cublas_fp16_linear(blas, &w16[i], x, y, m, n, k))
    }

    /// A synthetic checkpoint of weights with real statistics, compressed with `codec`.
    pub(super) fn synthetic_container(&mut self, dir: &std::path::Path, shapes: &[(usize, usize)], codec: Codec, chunk_size: u32) -> Result<Container> {
        let tag: Vec<String> = shapes.iter().map(|(n, k)| format!("{n}x{k}")).collect();
        let src = dir.join(format!("synthetic-{}.safetensors", tag.join("-")));
        if !src.exists() {
            data::write_synthetic_checkpoint(&src, shapes, self.rng.gen())?;
        }
        let out = dir.join(format!("synthetic-{}-{}-{chunk_size}.clm", tag.join("-"), codec.name()));
        let model = SourceModel::open(&src)?;
        compress(&model, &out, &CompressOptions { codec, chunk_size, ..Default::default() }, &|_| {}, &AtomicBool::new(false))?;
        Container::open(&out)
    }

    /// GPU decode (nvCOMP or our rANS kernel; scatter and status check included) of every INT8 tensor in `c`,
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
                "{:.1} MB INT8 in {} tensors, ratio {:.3} (entropy {:.3}), temp {:.1} MB, enqueue {enqueue_us:.0} µs",
                decoded as f64 / 1e6,
                tensors.len(),
                stored as f64 / decoded as f64,
                int8_entropy(c)?.unwrap_or(f64::NAN),
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
        let codecs = [
            (Codec::Zstd, 16 << 10),
            (Codec::Zstd, 64 << 10),
            (Codec::Ans, 16 << 10),
            (Codec::Ans, 64 << 10),
            (Codec::Rans, 16 << 10),
            (Codec::Rans, 64 << 10),
        ];
        for (codec, chunk) in codecs {
            let c = self.synthetic_container(dir, &shapes, codec, chunk)?;
            rows.extend(self.decode_rows(&c, &format!("{} {} KiB synthetic", codec.name(), chunk >> 10))?);
        }
        // The same bytes as one tensor: one decoder batch instead of five.
        for (codec, chunk) in [(Codec::Zstd, 16 << 10), (Codec::Ans, 64 << 10), (Codec::Rans, 16 << 10)] {
            let c = self.synthetic_container(dir, &[(61440, 4096)], codec, chunk)?;
            rows.extend(self.decode_rows(&c, &format!("{} {} KiB one batch", codec.name(), chunk >> 10))?);
        }
        // One 1 MiB tensor (a small model's projection): what a launch costs.
        for (codec, chunk) in [(Codec::Zstd, 16 << 10), (Codec::Ans, 16 << 10), (Codec::Rans, 16 << 10)] {
            let c = self.synthetic_container(dir, &[(256, 4096)], codec, chunk)?;
            rows.extend(self.decode_rows(&c, &format!("{} {} KiB one 1 MiB tensor", codec.name(), chunk >> 10))?);
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
            // Rotated copies of the compressed bytes and of the decode target, so neither
            // the decode's reads nor the GEMV's reads of what it decoded hit L2.
            let copies = WORKING_SET.div_ceil(t.data.len as usize).max(2);
            let w = (0..copies).map(|_| DeviceCompressedTensor::upload(self.gpu, &c, &t.name)).collect::<Result<Vec<_>>>()?;
            let mut decoder = Decoder::new(self.gpu, &[&w[0].table])?;
            let mut q = (0..copies).map(|_| DeviceInt8Buffer::new(self.gpu, w[0].len())).collect::<Result<Vec<_>>>()?;
            let x = s.clone_htod(&self.random_f16(w[0].cols))?;
            let mut y = s.alloc_zeros::<f16>(w[0].rows)?;
            let gpu = self.gpu;
            let fused = self.time_us(copies, |i| {
                w[i].decode_into(&mut decoder, &mut q[i], &s)?;
                gpu.linear(&x, 1, &w[i].weights(&q[i]), &mut y, &s)
            })?;
            decoder.check(&s)?;
            let plain = self.time_us(copies, |i| gpu.linear(&x, 1, &w[i].weights(&q[i]), &mut y, &s))?;
            let gbps = w[0].len() as f64 / fused / 1e3;
            rows.push(Row {
                section: "layer",
                case: format!("{}x{} M=1 {}", w[0].rows, w[0].cols, codec.name()),
                ours_us: fused,
                baseline: "INT8 GEMV (resident)",
                baseline_us: plain,
                speedup: plain / fused,
                gbps,
                pct_of_d2d: 100.0 * gbps / self.d2d_gbps,
                note: format!("compressed {:.2} MB resident, {copies} rotated copies", w[0].stored_bytes() as f64 / 1e6),
            });
        }
        Ok(rows)
    }
}

/// Order-0 entropy of every INT8 tensor's codes in `c`, summed as bits over the tensors
/// and given as a share of 8 bits; `None` when it holds none or they decode on the GPU only.
pub(super) fn int8_entropy(c: &Container) -> Result<Option<f64>> {
    let (mut bits, mut bytes) = (0f64, 0u64);
    for t in c.index.tensors.iter().filter(|t| t.matrix_dims().is_some()) {
        if t.data.codec == Codec::Ans {
            return Ok(None);
        }
        let q = crate::codec::decode_bytes(c, &t.name)?;
        bits += entropy::order0_bits(&entropy::histogram(&q)) * q.len() as f64;
        bytes += q.len() as u64;
    }
    Ok((bytes > 0).then(|| bits / 8.0 / bytes as f64))
}
