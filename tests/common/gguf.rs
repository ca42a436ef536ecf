//! A minimal GGUF v3 writer for tests.
#![allow(dead_code)]
use std::path::Path;

/// A GGUF metadata value as written.
#[derive(Clone)]
pub enum Kv<'a> {
    Str(&'a str),
    U32(u32),
    F32(f32),
    Strs(&'a [&'a str]),
}

pub fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Writes a GGUF v3 file: `tensors` are (name, ggml dims, ggml type id, data bytes).
pub fn write_gguf(path: &Path, kvs: &[(&str, Kv)], tensors: &[(&str, Vec<u64>, u32, Vec<u8>)]) {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        put_str(&mut out, k);
        match v {
            Kv::Str(s) => {
                out.extend_from_slice(&8u32.to_le_bytes());
                put_str(&mut out, s);
            }
            Kv::U32(x) => {
                out.extend_from_slice(&4u32.to_le_bytes());
                out.extend_from_slice(&x.to_le_bytes());
            }
            Kv::F32(x) => {
                out.extend_from_slice(&6u32.to_le_bytes());
                out.extend_from_slice(&x.to_le_bytes());
            }
            Kv::Strs(a) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&8u32.to_le_bytes());
                out.extend_from_slice(&(a.len() as u64).to_le_bytes());
                for s in *a {
                    put_str(&mut out, s);
                }
            }
        }
    }
    let mut offset = 0u64;
    for (name, dims, ty, data) in tensors {
        put_str(&mut out, name);
        out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offset += (data.len() as u64).div_ceil(32) * 32;
    }
    while !out.len().is_multiple_of(32) {
        out.push(0);
    }
    for (_, _, _, data) in tensors {
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(32) {
            out.push(0);
        }
    }
    std::fs::write(path, out).unwrap();
}

/// `rows × cols` values of GGUF block type `abi::GGML_LAYOUTS[layout]` as random valid
/// blocks, row-major: random quants and sub-block scales, and FP16 scales drawn so that the
/// values are about 1/√cols in size and roughly centred (a random FP16 bit pattern would
/// now and then be inf or NaN). `spread_mins` draws the second FP16 scale (`m` / `dmin`)
/// over a wide range instead, as extreme as a finite model gets.
pub fn random_blocks(rng: &mut impl rand::Rng, layout: usize, rows: usize, cols: usize, spread_mins: bool) -> Vec<u8> {
    use half::f16;
    let l = &codecllm::abi::GGML_LAYOUTS[layout];
    let (elems, size) = (l.block_elems as usize, l.block_bytes() as usize);
    assert_eq!(cols % elems, 0, "{}: {cols} columns are not whole blocks", l.name);
    // Typical |quant × sub-block scale| per type (the order of GGML_LAYOUTS), and where the
    // second FP16 scale centres the values (`m = −c·d`, `dmin = c·d`; 0: none).
    let (typical, centre) = [(8.0, 0.0), (8.0, -7.5), (16.0, 0.0), (16.0, -15.5), (128.0, 0.0), (256.0, 7.5), (512.0, 15.5), (1024.0, 0.0)][layout];
    // Byte offsets of the FP16 fields: the 2-byte ones (d first, then m / dmin).
    let mut offsets = Vec::new();
    let mut at = 0;
    for &f in l.fields {
        if f == 2 {
            offsets.push(at);
        }
        at += f as usize;
    }
    let mut out = vec![0u8; rows * cols / elems * size];
    rng.fill_bytes(&mut out);
    for block in out.chunks_exact_mut(size) {
        let sign = if rng.gen_bool(0.5) { 1.0 } else { -1.0 };
        let d = sign * rng.gen_range(0.5f32..1.5) * 4.0 / ((cols as f32).sqrt() * typical);
        block[offsets[0]..offsets[0] + 2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        if let Some(&o) = offsets.get(1) {
            let m = if spread_mins { rng.gen_range(-1.0f32..1.0) * 10f32.powi(rng.gen_range(-6..3)) } else { centre * d.abs() * rng.gen_range(0.8..1.2) };
            block[o..o + 2].copy_from_slice(&f16::from_f32(m).to_le_bytes());
        }
    }
    out
}
