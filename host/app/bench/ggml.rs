//! `bench kernels` rows for the GEMVs beside the INT8 ones: GGUF blocks computed on as
//! stored (per block type) and the FP16 mode's GEMV, each against cuBLAS FP16 on the same
//! (dequantized) weights, with the bandwidth it reaches on the bytes it reads.
use super::{data, Bench, Row, WORKING_SET};
use crate::abi::GGML_LAYOUTS;
use crate::codec::ggml::{dequantize, GgmlType};
use crate::error::Result;
use crate::gpu::{ggml_planes, GgmlWeights};
use cudarc::cublas::CudaBlas;
use cudarc::driver::CudaSlice;
use half::f16;

impl Bench<'_> {
    /// Every block type the GPU computes on as stored, on `shapes` at `batches`.
    pub fn ggml(&mut self, shapes: &[(usize, usize)], batches: &[usize]) -> Result<Vec<Row>> {
        let s = self.gpu.stream.clone();
        let blas = CudaBlas::new(s.clone())?;
        let mut rows = Vec::new();
        for (layout, l) in GGML_LAYOUTS.iter().enumerate() {
            let ty = GgmlType::from_id(l.id).expect("every GPU layout is a CPU block type");
            for &(n, k) in shapes.iter().filter(|(_, k)| k.is_multiple_of(l.block_elems as usize)) {
                let blocks = data::random_ggml_blocks(&mut self.rng, layout, n, k, false)?;
                let planes = ggml_planes(layout, &blocks)?;
                let copies = WORKING_SET.div_ceil(planes.len()).max(2);
                let dev: Vec<CudaSlice<u8>> = (0..copies).map(|_| s.clone_htod(&planes)).collect::<std::result::Result<_, _>>()?;
                let mut w = Vec::new();
                dequantize(ty, &blocks, &mut w);
                let w16 = self.fp16_copies(&w)?;
                for &m in batches {
                    let x = s.clone_htod(&self.random_f16(m * k))?;
                    let mut y = s.alloc_zeros::<f16>(m * n)?;
                    let gpu = self.gpu;
                    let cublas = self.cublas_us(&blas, &w16, &x, &mut y, m, n, k)?;
                    let ours = self.time_us(copies, |i| {
                        let weights = GgmlWeights { layout, planes: dev[i].slice(..), rows: n, cols: k };
                        gpu.ggml_linear(&x, m, &weights, &mut y, &s)
                    })?;
                    let note = format!(
                        "{:.2} bits/weight, {:.1} TFLOP/s, random valid blocks",
                        8.0 * planes.len() as f64 / (n * k) as f64,
                        2.0 * (m * n * k) as f64 / ours / 1e6
                    );
                    rows.push(self.vs_cublas("ggml", format!("{} {n}x{k} M={m}", l.name), ours, cublas, planes.len() + 2 * m * (k + n), note));
                }
            }
        }
        Ok(rows)
    }
}

/// A block's products that `ggml_gemv` takes in one call, on the 8B shapes: (name, the
/// matrices' layout names and rows; width 4096). Q4_K_M files store v in Q6_K in about
/// half of the layers, which splits q, k | v into two launches.
const FUSED: [(&str, &[(&str, usize)]); 3] = [
    ("q,k,v", &[("Q4_K", 4096), ("Q4_K", 1024), ("Q4_K", 1024)]),
    ("q,k|v", &[("Q4_K", 4096), ("Q4_K", 1024), ("Q6_K", 1024)]),
    ("gate,up", &[("Q4_K", 14336), ("Q4_K", 14336)]),
];

impl Bench<'_> {
    /// `ggml_gemv` over a block's q, k, v or gate, up (`FUSED`) against one launch per
    /// matrix, at `batches` (≤ `abi::GGML_GEMV_BATCH`), on the same rotated copies.
    pub fn ggml_fused(&mut self, batches: &[usize]) -> Result<Vec<Row>> {
        let s = self.gpu.stream.clone();
        let k = 4096;
        let mut rows = Vec::new();
        for (name, mats) in FUSED {
            let mut planes = Vec::new();
            for &(ty, n) in mats {
                let layout = GGML_LAYOUTS.iter().position(|l| l.name == ty).expect("a GPU layout");
                planes.push((layout, n, ggml_planes(layout, &data::random_ggml_blocks(&mut self.rng, layout, n, k, false)?)?));
            }
            let bytes: usize = planes.iter().map(|p| p.2.len()).sum();
            let copies = WORKING_SET.div_ceil(bytes).max(2);
            let dev: Vec<Vec<CudaSlice<u8>>> =
                (0..copies).map(|_| planes.iter().map(|p| s.clone_htod(&p.2)).collect::<std::result::Result<_, _>>()).collect::<std::result::Result<_, _>>()?;
            let weights = |i: usize| -> Vec<GgmlWeights> {
                planes.iter().zip(&dev[i]).map(|(p, d)| GgmlWeights { layout: p.0, planes: d.slice(..), rows: p.1, cols: k }).collect()
            };
            let out_rows: usize = mats.iter().map(|m| m.1).sum();
            for &m in batches {
                let x = s.clone_htod(&self.random_f16(m * k))?;
                let mut ys: Vec<CudaSlice<f16>> = mats.iter().map(|&(_, n)| s.alloc_zeros::<f16>(m * n)).collect::<std::result::Result<_, _>>()?;
                let gpu = self.gpu;
                let separate = self.time_us(copies, |i| weights(i).iter().zip(ys.iter_mut()).try_for_each(|(w, y)| gpu.ggml_linear(&x, m, w, y, &s)))?;
                let fused = self.time_us(copies, |i| {
                    let w = weights(i);
                    gpu.ggml_gemv(&x, m, &mut w.iter().zip(ys.iter_mut()).map(|(w, y)| (w, y.slice_mut(..))).collect::<Vec<_>>(), &s)
                })?;
                let shapes: Vec<String> = mats.iter().map(|(ty, n)| format!("{ty} {n}")).collect();
                let gbps = (bytes + 2 * m * (k + out_rows)) as f64 / fused / 1e3;
                rows.push(Row {
                    section: "ggml",
                    case: format!("{name} x{k} M={m}"),
                    ours_us: fused,
                    baseline: "one launch a matrix",
                    baseline_us: separate,
                    speedup: separate / fused,
                    gbps,
                    pct_of_d2d: 100.0 * gbps / self.d2d_gbps,
                    note: format!("ggml_gemv over {}, random valid blocks", shapes.join(" + ")),
                });
            }
        }
        Ok(rows)
    }

    /// The FP16 mode's GEMV (decode steps, M = 1) against cuBLAS FP16 on the same weights.
    pub fn fp16_gemv(&mut self, shapes: &[(usize, usize)]) -> Result<Vec<Row>> {
        let s = self.gpu.stream.clone();
        let blas = CudaBlas::new(s.clone())?;
        let mut rows = Vec::new();
        for &(n, k) in shapes {
            let w = self.weights(n * k);
            let w16 = self.fp16_copies(&w)?;
            let x = s.clone_htod(&self.random_f16(k))?;
            let mut y = s.alloc_zeros::<f16>(n)?;
            let gpu = self.gpu;
            let cublas = self.cublas_us(&blas, &w16, &x, &mut y, 1, n, k)?;
            let ours = self.time_us(w16.len(), |i| gpu.fp16_gemv(&x, &w16[i], n, k, &mut y, &s))?;
            let note = "FP16 GEMV (the FP16 mode's decode products)".to_string();
            rows.push(self.vs_cublas("fp16", format!("{n}x{k} M=1"), ours, cublas, 2 * n * k + 2 * (k + n), note));
        }
        Ok(rows)
    }
}
