//! CPU decode of a container's tensors, checksums verified: INT8 values and scales,
//! stored bytes, or floating-point values (quantized ones dequantized, INT8 or GGUF blocks).
use super::chunk::{decode_blob, decode_blob_chunks};
use super::ggml::{dequantize, GgmlType};
use super::quant::Int8Matrix;
use crate::container::{Container, DType, Encoding, TensorEntry};
use crate::error::{Error, Result};

fn entry<'a>(c: &'a Container, name: &str) -> Result<&'a TensorEntry> {
    c.tensor(name).ok_or_else(|| Error::format(c.path(), format!("no tensor named '{name}'")))
}

/// The INT8 values and scales of a quantized tensor.
pub fn decode_int8(c: &Container, name: &str) -> Result<Int8Matrix> {
    decode_int8_rows(c, name, None)
}

/// Rows `rows` of a quantized matrix (all of them when `None`; a band must be a run of
/// whole chunks, `TensorEntry::row_chunks`): only those chunks are read and decoded.
pub fn decode_int8_rows(c: &Container, name: &str, rows: Option<std::ops::Range<usize>>) -> Result<Int8Matrix> {
    let t = entry(c, name)?;
    let Encoding::Int8 { group_size, scales, .. } = &t.encoding else {
        return Err(Error::format(c.path(), format!("tensor '{name}' is not stored as INT8")));
    };
    let (all_rows, cols) = t.matrix_dims().expect("validated: INT8 tensors are 2-D");
    let (cols, group_size) = (cols as usize, *group_size as usize);
    let (rows, chunks) = match rows {
        Some(r) => (r.clone(), t.row_chunks(name, &r).map_err(Error::Invalid)?),
        None => (0..all_rows as usize, 0..t.data.chunks.len()),
    };
    let q = decode_blob_chunks(c, name, &t.data, chunks)?;
    let groups = cols.div_ceil(group_size);
    let mut s: Vec<f32> = DType::F32.widen(&decode_blob(c, name, scales)?).expect("f32 is floating point");
    if s.len() < rows.end * groups {
        return Err(Error::format(c.path(), format!("tensor '{name}': too few scales")));
    }
    s.truncate(rows.end * groups);
    s.drain(..rows.start * groups);
    Ok(Int8Matrix {
        rows: rows.len(),
        cols,
        group_size,
        // The decoded buffer itself, reinterpreted (u8 and i8 share size and alignment).
        q: bytemuck::allocation::cast_vec(q),
        scales: s,
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
    match t.encoding {
        Encoding::Int8 { .. } => return Ok(decode_int8(c, name)?.dequantize()),
        Encoding::Ggml { ggml_type, block_elems, block_bytes } => {
            let ty = ggml_blocks(c, name, ggml_type, block_elems, block_bytes)?;
            let mut v = Vec::new();
            dequantize(ty, &decode_blob(c, name, &t.data)?, &mut v);
            return Ok(v);
        }
        Encoding::Lossless => {}
    }
    let b = decode_blob(c, name, &t.data)?;
    t.dtype.widen(&b).ok_or_else(|| Error::format(c.path(), format!("tensor '{name}' is {:?}, not floating point", t.dtype)))
}

/// The block type of a `Ggml` tensor, known to this build and with the geometry the index
/// recorded (a lie there would make the dequantized tensor the wrong length).
pub fn ggml_blocks(c: &Container, name: &str, id: u32, elems: u32, bytes: u32) -> Result<GgmlType> {
    let ty = GgmlType::from_id(id).ok_or_else(|| Error::format(c.path(), format!("tensor '{name}': ggml type {id} is not one this build dequantizes")))?;
    if ty.block() != (elems as u64, bytes as u64) {
        return Err(Error::format(
            c.path(),
            format!("tensor '{name}': {} blocks are {:?} (values, bytes), the index says ({elems}, {bytes})", ty.name(), ty.block()),
        ));
    }
    Ok(ty)
}

/// Any floating-point tensor as FP16 (one stored as FP16 without an f32 round trip).
pub fn decode_f16(c: &Container, name: &str) -> Result<Vec<half::f16>> {
    use rayon::prelude::*;
    let t = entry(c, name)?;
    if matches!(t.encoding, Encoding::Lossless) && t.dtype == DType::F16 {
        // Stored as FP16: the values as they are (what rounding their f32 widening gives).
        return Ok(decode_blob(c, name, &t.data)?.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]])).collect());
    }
    Ok(decode_f32(c, name)?.into_par_iter().map(half::f16::from_f32).collect())
}
