//! CPU reference: decode any tensor of a container (checksums verified) and compute
//! `y = x·Wᵀ` from the decoded INT8 in f64 — the oracle every GPU kernel is tested against.
use crate::codec::decode_blob;
use crate::error::{Error, Result};
use crate::format::{Container, DType, Encoding, TensorEntry};
use crate::quant::Int8Matrix;
use rayon::prelude::*;

fn entry<'a>(c: &'a Container, name: &str) -> Result<&'a TensorEntry> {
    c.tensor(name).ok_or_else(|| Error::format(c.path(), format!("no tensor named '{name}'")))
}

/// The INT8 values and scales of a quantized tensor.
pub fn decode_int8(c: &Container, name: &str) -> Result<Int8Matrix> {
    let t = entry(c, name)?;
    let Encoding::Int8 { group_size, scales, .. } = &t.encoding else {
        return Err(Error::format(c.path(), format!("tensor '{name}' is stored lossless, not as INT8")));
    };
    let (rows, cols) = t.matrix_dims().expect("validated: INT8 tensors are 2-D");
    let q = decode_blob(c, name, &t.data)?;
    let s = decode_blob(c, name, scales)?;
    Ok(Int8Matrix {
        rows: rows as usize,
        cols: cols as usize,
        group_size: *group_size as usize,
        q: bytemuck::cast_slice(&q).to_vec(),
        scales: DType::F32.widen(&s).expect("f32 is floating point"),
    })
}

/// The tensor's stored bytes decoded: INT8 values for quantized tensors, source bytes for
/// lossless ones.
pub fn decode_bytes(c: &Container, name: &str) -> Result<Vec<u8>> {
    decode_blob(c, name, &entry(c, name)?.data)
}

/// Any floating-point tensor as f32 (quantized ones dequantized).
pub fn decode_f32(c: &Container, name: &str) -> Result<Vec<f32>> {
    let t = entry(c, name)?;
    if let Encoding::Int8 { .. } = t.encoding {
        return Ok(decode_int8(c, name)?.dequantize());
    }
    let b = decode_blob(c, name, &t.data)?;
    t.dtype.widen(&b).ok_or_else(|| Error::format(c.path(), format!("tensor '{name}' is {:?}, not floating point", t.dtype)))
}

/// Any floating-point tensor as FP16.
pub fn decode_f16(c: &Container, name: &str) -> Result<Vec<half::f16>> {
    Ok(decode_f32(c, name)?.into_iter().map(half::f16::from_f32).collect())
}

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
