//! The CPU oracle: `y = x·Wᵀ` from decoded INT8 in f64, what every GPU kernel is tested
//! against (tensors decode with `codec::decode_int8`).
use crate::codec::Int8Matrix;
use rayon::prelude::*;

/// `y[m, n] = Σ_k x[m, k] · q[n, k] · s[n, k / group]` in f64; `x` is row-major `[m, k]`.
pub fn linear(x: &[f32], m: usize, w: &Int8Matrix) -> Vec<f64> {
    assert_eq!(x.len(), m * w.cols, "linear: x is not [m, k] with k = {}", w.cols);
    let mut y = vec![0f64; m * w.rows];
    y.par_chunks_mut(w.rows.max(1)).enumerate().for_each(|(mi, y_row)| {
        let xr = &x[mi * w.cols..(mi + 1) * w.cols];
        for (n, out) in y_row.iter_mut().enumerate() {
            let q = &w.q[n * w.cols..(n + 1) * w.cols];
            *out = xr.iter().zip(q).enumerate().map(|(k, (&xv, &qv))| xv as f64 * qv as f64 * w.scale(n, k) as f64).sum();
        }
    });
    y
}
