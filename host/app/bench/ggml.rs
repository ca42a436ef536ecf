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

impl Bench<'_> {
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
