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

/// The metadata of a LLaMA GGUF of these dimensions (`[layers, d, ffn, heads, kv_heads,
/// vocab]`), RoPE base 10000 and RMSNorm epsilon `eps`.
pub fn llama_kvs(dims: [usize; 6], eps: f32) -> Vec<(&'static str, Kv<'static>)> {
    let [layers, d, f, heads, kv_heads, vocab] = dims.map(|x| x as u32);
    vec![
        ("general.architecture", Kv::Str("llama")),
        ("llama.block_count", Kv::U32(layers)),
        ("llama.embedding_length", Kv::U32(d)),
        ("llama.feed_forward_length", Kv::U32(f)),
        ("llama.attention.head_count", Kv::U32(heads)),
        ("llama.attention.head_count_kv", Kv::U32(kv_heads)),
        ("llama.vocab_size", Kv::U32(vocab)),
        ("llama.rope.freq_base", Kv::F32(10_000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Kv::F32(eps)),
    ]
}
