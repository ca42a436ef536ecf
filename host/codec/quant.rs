//! Symmetric INT8 quantization per output channel (a row of `[out, in]`), optionally per
//! group of `group_size` input columns: `s = max|w| / 127`, `q = clamp(round(w · 127 / max|w|), ±127)`.
use rayon::prelude::*;

/// A quantized matrix as the kernels consume it (see docs/FORMAT.md).
#[derive(Clone, Debug, PartialEq)]
pub struct Int8Matrix {
    pub rows: usize,
    pub cols: usize,
    /// Columns per scale; `cols` for one scale per row.
    pub group_size: usize,
    /// Row-major `[rows, cols]`.
    pub q: Vec<i8>,
    /// Row-major `[rows, groups]`.
    pub scales: Vec<f32>,
}

/// How far the dequantized weights are from the source.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct QuantStats {
    /// Largest |w − q·s| over the tensor, relative to the largest |w| of its row.
    pub max_rel_err: f64,
    /// ‖w − q·s‖₂ / ‖w‖₂.
    pub rms_rel_err: f64,
}

impl Int8Matrix {
    pub fn groups(&self) -> usize {
        self.cols.div_ceil(self.group_size)
    }

    pub fn scale(&self, row: usize, col: usize) -> f32 {
        self.scales[row * self.groups() + col / self.group_size]
    }

    /// Quantizes row-major `w` (`rows × cols`) and measures the error in the same pass.
    /// Fails on non-finite values, which have no INT8 representation.
    pub fn quantize(w: &[f32], rows: usize, cols: usize, group_size: usize) -> Result<(Self, QuantStats), String> {
        assert_eq!(w.len(), rows * cols, "quantize: weight length does not match its shape");
        assert!(group_size > 0, "quantize: zero group size");
        if let Some(i) = w.iter().position(|v| !v.is_finite()) {
            return Err(format!("value {} at row {}, column {} is not finite; it cannot be quantized", w[i], i / cols, i % cols));
        }
        let groups = cols.div_ceil(group_size);
        let mut q = vec![0i8; rows * cols];
        let mut scales = vec![0f32; rows * groups];
        let per_row: Vec<RowError> = q
            .par_chunks_mut(cols.max(1))
            .zip(scales.par_chunks_mut(groups.max(1)))
            .zip(w.par_chunks(cols.max(1)))
            .map(|((q_row, s_row), w_row)| {
                for ((q_g, s), w_g) in q_row.chunks_mut(group_size).zip(s_row.iter_mut()).zip(w_row.chunks(group_size)) {
                    let absmax = w_g.iter().fold(0f32, |m, v| m.max(v.abs()));
                    *s = absmax / 127.0;
                    if absmax > 0.0 {
                        let inv = 127.0 / absmax;
                        for (qv, wv) in q_g.iter_mut().zip(w_g) {
                            // w·(127/max) may land a hair off w/s; the clamp keeps ±127.
                            *qv = (wv * inv).round().clamp(-127.0, 127.0) as i8;
                        }
                    }
                }
                RowError::of(w_row, q_row, s_row, group_size)
            })
            .collect();
        let m = Int8Matrix { rows, cols, group_size, q, scales };
        Ok((m, RowError::combine(&per_row)))
    }

    /// `q · s` as f32, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        out.par_chunks_mut(self.cols.max(1)).enumerate().for_each(|(r, row)| {
            for (c, v) in row.iter_mut().enumerate() {
                *v = self.q[r * self.cols + c] as f32 * self.scale(r, c);
            }
        });
        out
    }

    /// Error of this quantization against the source weights `w`.
    pub fn stats_against(&self, w: &[f32]) -> QuantStats {
        let groups = self.groups();
        let per_row: Vec<RowError> = w
            .par_chunks(self.cols.max(1))
            .zip(self.q.par_chunks(self.cols.max(1)))
            .zip(self.scales.par_chunks(groups.max(1)))
            .map(|((w_row, q_row), s_row)| RowError::of(w_row, q_row, s_row, self.group_size))
            .collect();
        RowError::combine(&per_row)
    }
}

/// One row's share of `QuantStats`.
struct RowError {
    err2: f64,
    norm2: f64,
    max_rel: f64,
}

impl RowError {
    fn of(w: &[f32], q: &[i8], scales: &[f32], group_size: usize) -> Self {
        let (mut err2, mut norm2, mut max_err, mut absmax) = (0f64, 0f64, 0f64, 0f64);
        for (c, (&a, &qv)) in w.iter().zip(q).enumerate() {
            let b = qv as f32 * scales[c / group_size];
            let e = (a as f64 - b as f64).abs();
            err2 += e * e;
            norm2 += a as f64 * a as f64;
            max_err = max_err.max(e);
            absmax = absmax.max((a as f64).abs());
        }
        RowError { err2, norm2, max_rel: if absmax > 0.0 { max_err / absmax } else { 0.0 } }
    }

    fn combine(rows: &[RowError]) -> QuantStats {
        let (err2, norm2) = rows.iter().fold((0.0, 0.0), |(e, n), r| (e + r.err2, n + r.norm2));
        QuantStats { max_rel_err: rows.iter().fold(0.0, |m, r| m.max(r.max_rel)), rms_rel_err: if norm2 > 0.0 { (err2 / norm2).sqrt() } else { 0.0 } }
    }
}
