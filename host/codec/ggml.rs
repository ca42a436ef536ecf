//! Dequantization of llama.cpp's GGUF / ggml tensor types to `f32`.
//!
//! A GGUF tensor is a run of fixed-size blocks; each block type is one of the C structs in
//! llama.cpp's `ggml/src/ggml-common.h` (`block_q4_0`, `block_q4_K`, ...), stored packed and
//! little-endian. [`dequantize`] turns a whole run of blocks of one [`GgmlType`] into `f32`s,
//! block by block, with no allocation besides the output vector.
//!
//! The results are bit-exact with the reference NumPy dequantizers of the `gguf` Python package
//! (gguf-py 0.19.0, `gguf.quants.dequantize`), which compute in float32; the tests replay vectors
//! made by gguf-py (`scripts/ggml-vectors.py`, into tests/data/ggml/). The formulas keep gguf-py's operation order (the K-quants
//! form `d * sub_scale` and `dmin * sub_min` first, then `(d * sub_scale) * q - dmin * sub_min`),
//! though for these types the order cannot change a result: an f16 scale has 11 significant bits,
//! sub-scales at most 7 and quants at most 7, with every product at most 24 bits, so all products
//! are exact in f32 (no overflow or underflow is reachable from finite f16 either). Only Q4_1,
//! Q5_1, Q2_K, Q4_K and Q5_K round, once, in their final add or subtract, and Q8_K (an f32 scale)
//! in its one multiply; a fused multiply-add would give the same bits. What matters is the bit
//! layout, signed zeros, and how f16 is widened: here as in NumPy, exactly, with NaN payloads kept
//! as they are (a signalling f16 NaN stays signalling; `half`'s and F16C's conversions would quiet
//! it). With scale fields that are inf or NaN the outputs also matched gguf-py bit for bit on
//! x86-64, though which payload an operation on two NaNs returns is the hardware's and compiler's
//! choice, not a promise.
//!
//! Why hand-written: the Rust crates that carry these dequantizers are whole inference frameworks
//! (candle-core, and the like) that would bring a tensor library and its dependencies in for
//! a few hundred lines of bit unpacking; the block layouts are small, frozen and documented by
//! `ggml-common.h`, and the reference to test against is gguf-py.
//!
//! Supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K,
//! IQ4_NL, IQ4_XS. Q8_K is llama.cpp's activation type; gguf-py has no dequantizer for it, so it is
//! checked against llama.cpp's formula `d * qs` evaluated in NumPy. Not supported: Q8_1 (also for
//! activations; gguf-py has no dequantizer for it and its size table still has the old 40-byte
//! layout, while ggml's `block_q8_1` is 36 bytes), the grid-based IQ1/IQ2/IQ3 types, TQ1_0/TQ2_0,
//! MXFP4, NVFP4 and the integer types.
//!
//! The code is safe Rust and never panics on its input: blocks are taken with `chunks_exact`
//! and converted to fixed-size arrays, so every index is a constant-bounded one, and a short tail
//! that is not a whole block is ignored.
#![forbid(unsafe_code)]

/// Tensor element types this module dequantizes (ggml's numbering, see [`GgmlType::from_id`]).
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ4_NL,
    IQ4_XS,
}

/// Elements per super-block of the K-quants and IQ4_XS (`QK_K` in ggml).
const QK_K: usize = 256;

impl GgmlType {
    /// Every supported type, in ggml id order.
    pub const ALL: [GgmlType; 16] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
        GgmlType::IQ4_NL,
        GgmlType::IQ4_XS,
        GgmlType::BF16,
    ];

    /// The type with ggml id `id` (`enum ggml_type`, gguf-py's `GGMLQuantizationType`), if
    /// this module dequantizes it.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            10 => GgmlType::Q2_K,
            11 => GgmlType::Q3_K,
            12 => GgmlType::Q4_K,
            13 => GgmlType::Q5_K,
            14 => GgmlType::Q6_K,
            15 => GgmlType::Q8_K,
            20 => GgmlType::IQ4_NL,
            23 => GgmlType::IQ4_XS,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    /// ggml's id of this type.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q2_K => 10,
            GgmlType::Q3_K => 11,
            GgmlType::Q4_K => 12,
            GgmlType::Q5_K => 13,
            GgmlType::Q6_K => 14,
            GgmlType::Q8_K => 15,
            GgmlType::IQ4_NL => 20,
            GgmlType::IQ4_XS => 23,
            GgmlType::BF16 => 30,
        }
    }

    /// ggml's name of this type ("Q4_K", "BF16", ...).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::BF16 => "BF16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q2_K => "Q2_K",
            GgmlType::Q3_K => "Q3_K",
            GgmlType::Q4_K => "Q4_K",
            GgmlType::Q5_K => "Q5_K",
            GgmlType::Q6_K => "Q6_K",
            GgmlType::Q8_K => "Q8_K",
            GgmlType::IQ4_NL => "IQ4_NL",
            GgmlType::IQ4_XS => "IQ4_XS",
        }
    }

    /// (elements per block, bytes per block). A tensor row's length must be a multiple of
    /// the first; its size in bytes is `elements / block.0 * block.1`.
    pub fn block(self) -> (u64, u64) {
        let (e, b) = self.geometry();
        (e as u64, b as u64)
    }

    fn geometry(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, Q4_0_BYTES),
            GgmlType::Q4_1 => (32, Q4_1_BYTES),
            GgmlType::Q5_0 => (32, Q5_0_BYTES),
            GgmlType::Q5_1 => (32, Q5_1_BYTES),
            GgmlType::Q8_0 => (32, Q8_0_BYTES),
            GgmlType::Q2_K => (QK_K, Q2_K_BYTES),
            GgmlType::Q3_K => (QK_K, Q3_K_BYTES),
            GgmlType::Q4_K => (QK_K, Q4_K_BYTES),
            GgmlType::Q5_K => (QK_K, Q5_K_BYTES),
            GgmlType::Q6_K => (QK_K, Q6_K_BYTES),
            GgmlType::Q8_K => (QK_K, Q8_K_BYTES),
            GgmlType::IQ4_NL => (32, IQ4_NL_BYTES),
            GgmlType::IQ4_XS => (QK_K, IQ4_XS_BYTES),
        }
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

// Block sizes in bytes, from the structs in ggml-common.h.
const Q4_0_BYTES: usize = 2 + 16; // ggml_half d; uint8_t qs[16]
const Q4_1_BYTES: usize = 2 + 2 + 16; // d; m; qs[16]
const Q5_0_BYTES: usize = 2 + 4 + 16; // d; uint8_t qh[4]; qs[16]
const Q5_1_BYTES: usize = 2 + 2 + 4 + 16; // d; m; qh[4]; qs[16]
const Q8_0_BYTES: usize = 2 + 32; // d; int8_t qs[32]
const Q2_K_BYTES: usize = 16 + 64 + 2 + 2; // scales[16]; qs[64]; d; dmin
const Q3_K_BYTES: usize = 32 + 64 + 12 + 2; // hmask[32]; qs[64]; scales[12]; d
const Q4_K_BYTES: usize = 2 + 2 + 12 + 128; // d; dmin; scales[12]; qs[128]
const Q5_K_BYTES: usize = 2 + 2 + 12 + 32 + 128; // d; dmin; scales[12]; qh[32]; qs[128]
const Q6_K_BYTES: usize = 128 + 64 + 16 + 2; // ql[128]; qh[64]; int8_t scales[16]; d
const Q8_K_BYTES: usize = 4 + 256 + 32; // float d; int8_t qs[256]; int16_t bsums[16]
const IQ4_NL_BYTES: usize = 2 + 16; // d; qs[16]
const IQ4_XS_BYTES: usize = 2 + 2 + 4 + 128; // d; uint16_t scales_h; scales_l[4]; qs[128]

/// `kvalues_iq4nl` of ggml-common.h: the 16 levels of IQ4_NL and IQ4_XS.
const KVALUES_IQ4NL: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// Dequantizes `bytes`, a run of whole blocks of type `ty`, into `out` (cleared first, then
/// holding `bytes.len() / block bytes * block elements` values). A trailing partial block is
/// ignored.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut Vec<f32>) {
    out.clear();
    let (elems, size) = ty.geometry();
    out.resize(bytes.len() / size * elems, 0.0);
    let y = out.as_mut_slice();
    match ty {
        GgmlType::F32 => {
            for (y, x) in y.iter_mut().zip(bytes.chunks_exact(4)) {
                if let Ok(x) = <[u8; 4]>::try_from(x) {
                    *y = f32::from_le_bytes(x);
                }
            }
        }
        GgmlType::F16 => {
            for (y, x) in y.iter_mut().zip(bytes.chunks_exact(2)) {
                if let Ok(x) = <[u8; 2]>::try_from(x) {
                    *y = f16_to_f32(u16::from_le_bytes(x));
                }
            }
        }
        GgmlType::BF16 => {
            for (y, x) in y.iter_mut().zip(bytes.chunks_exact(2)) {
                if let Ok(x) = <[u8; 2]>::try_from(x) {
                    *y = f32::from_bits((u16::from_le_bytes(x) as u32) << 16);
                }
            }
        }
        GgmlType::Q4_0 => blocks(bytes, y, q4_0),
        GgmlType::Q4_1 => blocks(bytes, y, q4_1),
        GgmlType::Q5_0 => blocks(bytes, y, q5_0),
        GgmlType::Q5_1 => blocks(bytes, y, q5_1),
        GgmlType::Q8_0 => blocks(bytes, y, q8_0),
        GgmlType::Q2_K => blocks(bytes, y, q2_k),
        GgmlType::Q3_K => blocks(bytes, y, q3_k),
        GgmlType::Q4_K => blocks(bytes, y, q4_k),
        GgmlType::Q5_K => blocks(bytes, y, q5_k),
        GgmlType::Q6_K => blocks(bytes, y, q6_k),
        GgmlType::Q8_K => blocks(bytes, y, q8_k),
        GgmlType::IQ4_NL => blocks(bytes, y, iq4_nl),
        GgmlType::IQ4_XS => blocks(bytes, y, iq4_xs),
    }
}

/// Runs `f` over each whole `B`-byte block of `src` and its `E` outputs in `dst`.
#[inline(always)]
fn blocks<const B: usize, const E: usize>(src: &[u8], dst: &mut [f32], f: fn(&[u8; B], &mut [f32; E])) {
    for (x, y) in src.chunks_exact(B).zip(dst.chunks_exact_mut(E)) {
        if let (Ok(x), Ok(y)) = (<&[u8; B]>::try_from(x), <&mut [f32; E]>::try_from(y)) {
            f(x, y);
        }
    }
}

/// IEEE half to single, as NumPy's `float16 -> float32` cast does it (`npy_halfbits_to_floatbits`):
/// exact, and inf/NaN keep their payload bits (a signalling NaN is not quieted).
#[inline(always)]
fn f16_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let sign = (h & 0x8000) << 16;
    let man = h & 0x3ff;
    // All three computed and one selected, so that the F16 loop vectorizes.
    let normal = sign | (((h & 0x7fff) + 0x1_c000) << 13);
    let inf_nan = sign | 0x7f80_0000 | (man << 13);
    // Zero or subnormal: man * 2^-24 is exact in f32.
    let subnormal = (man as f32 * f32::from_bits(0x3380_0000)).to_bits() | sign;
    f32::from_bits(match h & 0x7c00 {
        0 => subnormal,
        0x7c00 => inf_nan,
        _ => normal,
    })
}

/// The little-endian f16 at `b[at..at + 2]`, as f32; 0.0 if out of range (never, for the
/// constant offsets used here).
#[inline(always)]
fn f16_at(b: &[u8], at: usize) -> f32 {
    match (b.get(at), b.get(at + 1)) {
        (Some(&lo), Some(&hi)) => f16_to_f32(u16::from_le_bytes([lo, hi])),
        _ => 0.0,
    }
}

// ---- 32-element blocks ----------------------------------------------------------------------
// Element j < 16 comes from the low nibble of qs[j], element j + 16 from its high nibble.

fn q4_0(b: &[u8; Q4_0_BYTES], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for j in 0..16 {
        let q = b[2 + j];
        y[j] = d * ((q & 0xf) as i32 - 8) as f32;
        y[j + 16] = d * ((q >> 4) as i32 - 8) as f32;
    }
}

fn q4_1(b: &[u8; Q4_1_BYTES], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    for j in 0..16 {
        let q = b[4 + j];
        y[j] = d * (q & 0xf) as f32 + m;
        y[j + 16] = d * (q >> 4) as f32 + m;
    }
}

fn q5_0(b: &[u8; Q5_0_BYTES], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for j in 0..16 {
        let q = b[6 + j];
        let lo = (q & 0xf) as u32 | ((qh >> j) & 1) << 4;
        let hi = (q >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
        y[j] = d * (lo as i32 - 16) as f32;
        y[j + 16] = d * (hi as i32 - 16) as f32;
    }
}

fn q5_1(b: &[u8; Q5_1_BYTES], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for j in 0..16 {
        let q = b[8 + j];
        let lo = (q & 0xf) as u32 | ((qh >> j) & 1) << 4;
        let hi = (q >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
        y[j] = d * lo as f32 + m;
        y[j + 16] = d * hi as f32 + m;
    }
}

fn q8_0(b: &[u8; Q8_0_BYTES], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for j in 0..32 {
        y[j] = b[2 + j] as i8 as f32 * d;
    }
}

fn iq4_nl(b: &[u8; IQ4_NL_BYTES], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for j in 0..16 {
        let q = b[2 + j];
        y[j] = d * KVALUES_IQ4NL[(q & 0xf) as usize] as f32;
        y[j + 16] = d * KVALUES_IQ4NL[(q >> 4) as usize] as f32;
    }
}

// ---- 256-element super-blocks ---------------------------------------------------------------

/// Q2_K: 16 sub-blocks of 16; scales[i] holds sub-block i's 4-bit scale (low nibble) and 4-bit
/// min (high nibble). Element 128h + 32s + l is bits 2s..2s+2 of qs[32h + l].
/// y = (d * scale) * q - (dmin * min).
fn q2_k(b: &[u8; Q2_K_BYTES], y: &mut [f32; QK_K]) {
    let d = f16_at(b, 80);
    let dmin = f16_at(b, 82);
    let mut dl = [0f32; 16];
    let mut ml = [0f32; 16];
    for i in 0..16 {
        dl[i] = d * (b[i] & 0xf) as f32;
        ml[i] = dmin * (b[i] >> 4) as f32;
    }
    for h in 0..2 {
        for half in 0..2 {
            // Element 128h + 32s + l, l in 16half..16half + 16, is in sub-block 8h + 2s + half.
            let i = h * 8 + half;
            let (d0, d1, d2, d3) = (dl[i], dl[i + 2], dl[i + 4], dl[i + 6]);
            let (m0, m1, m2, m3) = (ml[i], ml[i + 2], ml[i + 4], ml[i + 6]);
            for l in half * 16..half * 16 + 16 {
                let q = b[16 + h * 32 + l];
                let o = h * 128 + l;
                y[o] = d0 * (q & 3) as f32 - m0;
                y[o + 32] = d1 * ((q >> 2) & 3) as f32 - m1;
                y[o + 64] = d2 * ((q >> 4) & 3) as f32 - m2;
                y[o + 96] = d3 * (q >> 6) as f32 - m3;
            }
        }
    }
}

/// Q3_K: 16 sub-blocks of 16 with 6-bit signed scales (stored +32: low nibbles in scales[0..8],
/// two high bits each in scales[8..12]). Element 128h + 32s + l has low bits 2s..2s+2 of
/// qs[32h + l] and high bit (4h + s) of hmask[l]; a *clear* high bit means -4 (q = low - 4),
/// a set one means q = low. y = (d * scale) * q.
fn q3_k(b: &[u8; Q3_K_BYTES], y: &mut [f32; QK_K]) {
    let d = f16_at(b, 108);
    let mut dl = [0f32; 16];
    for (i, dl) in dl.iter_mut().enumerate() {
        let low = if i < 8 { b[96 + i] & 0xf } else { b[96 + i - 8] >> 4 };
        let high = (b[104 + i % 4] >> (2 * (i / 4))) & 3;
        *dl = d * ((low | high << 4) as i32 - 32) as f32;
    }
    for h in 0..2 {
        for half in 0..2 {
            // Element 128h + 32s + l, l in 16half..16half + 16, is in sub-block 8h + 2s + half.
            let i = h * 8 + half;
            let (d0, d1, d2, d3) = (dl[i], dl[i + 2], dl[i + 4], dl[i + 6]);
            for l in half * 16..half * 16 + 16 {
                let q = b[32 + h * 32 + l] as i32;
                let m = (b[l] >> (4 * h)) as i32;
                let o = h * 128 + l;
                y[o] = d0 * ((q & 3) - (((m & 1) ^ 1) << 2)) as f32;
                y[o + 32] = d1 * (((q >> 2) & 3) - ((((m >> 1) & 1) ^ 1) << 2)) as f32;
                y[o + 64] = d2 * (((q >> 4) & 3) - ((((m >> 2) & 1) ^ 1) << 2)) as f32;
                y[o + 96] = d3 * ((q >> 6) - ((((m >> 3) & 1) ^ 1) << 2)) as f32;
            }
        }
    }
}

/// The 6-bit (scale, min) of sub-block j of Q4_K / Q5_K (`get_scale_min_k4`).
#[inline(always)]
fn scale_min_k4(s: &[u8; 12], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

#[inline(always)]
fn k4_scales(b: &[u8], d: f32, dmin: f32) -> ([f32; 8], [f32; 8]) {
    let mut s = [0u8; 12];
    for (s, &x) in s.iter_mut().zip(b.iter().skip(4)) {
        *s = x;
    }
    let mut ds = [0f32; 8];
    let mut ms = [0f32; 8];
    for j in 0..8 {
        let (sc, m) = scale_min_k4(&s, j);
        ds[j] = d * sc as f32;
        ms[j] = dmin * m as f32;
    }
    (ds, ms)
}

/// Q4_K: 8 sub-blocks of 32; sub-block 2c takes the low nibbles of qs[32c..32c + 32], 2c + 1
/// the high nibbles. y = (d * scale) * q - (dmin * min).
fn q4_k(b: &[u8; Q4_K_BYTES], y: &mut [f32; QK_K]) {
    let (ds, ms) = k4_scales(b, f16_at(b, 0), f16_at(b, 2));
    for c in 0..4 {
        let (d1, m1, d2, m2) = (ds[2 * c], ms[2 * c], ds[2 * c + 1], ms[2 * c + 1]);
        for l in 0..32 {
            let q = b[16 + c * 32 + l];
            y[c * 64 + l] = d1 * (q & 0xf) as f32 - m1;
            y[c * 64 + 32 + l] = d2 * (q >> 4) as f32 - m2;
        }
    }
}

/// Q5_K: Q4_K plus a fifth bit: bit j of qh[l] for element l of sub-block j.
fn q5_k(b: &[u8; Q5_K_BYTES], y: &mut [f32; QK_K]) {
    let (ds, ms) = k4_scales(b, f16_at(b, 0), f16_at(b, 2));
    for c in 0..4 {
        let (d1, m1, d2, m2) = (ds[2 * c], ms[2 * c], ds[2 * c + 1], ms[2 * c + 1]);
        for l in 0..32 {
            let q = b[48 + c * 32 + l];
            let h = b[16 + l];
            let lo = (q & 0xf) | ((h >> (2 * c)) & 1) << 4;
            let hi = (q >> 4) | ((h >> (2 * c + 1)) & 1) << 4;
            y[c * 64 + l] = d1 * lo as f32 - m1;
            y[c * 64 + 32 + l] = d2 * hi as f32 - m2;
        }
    }
}

/// Q6_K: 16 sub-blocks of 16 with int8 scales; in each half h, element 128h + 32t + l has its
/// low nibble from ql[64h + l + 32(t & 1)] (low nibble for t < 2, high for t >= 2) and two high
/// bits 2t..2t+2 of qh[32h + l]; q is that 6-bit value - 32. y = (d * scale) * q.
fn q6_k(b: &[u8; Q6_K_BYTES], y: &mut [f32; QK_K]) {
    let d = f16_at(b, 208);
    let mut dl = [0f32; 16];
    for (i, dl) in dl.iter_mut().enumerate() {
        *dl = d * b[192 + i] as i8 as f32;
    }
    for h in 0..2 {
        for half in 0..2 {
            // Element 128h + 32t + l, l in 16half..16half + 16, is in sub-block 8h + 2t + half.
            let (s0, s1, s2, s3) = (dl[h * 8 + half], dl[h * 8 + 2 + half], dl[h * 8 + 4 + half], dl[h * 8 + 6 + half]);
            for l in half * 16..half * 16 + 16 {
                let a = b[h * 64 + l];
                let c = b[h * 64 + 32 + l];
                let qh = b[128 + h * 32 + l];
                let q1 = ((a & 0xf) | (qh & 3) << 4) as i32 - 32;
                let q2 = ((c & 0xf) | ((qh >> 2) & 3) << 4) as i32 - 32;
                let q3 = ((a >> 4) | ((qh >> 4) & 3) << 4) as i32 - 32;
                let q4 = ((c >> 4) | ((qh >> 6) & 3) << 4) as i32 - 32;
                let o = h * 128 + l;
                y[o] = s0 * q1 as f32;
                y[o + 32] = s1 * q2 as f32;
                y[o + 64] = s2 * q3 as f32;
                y[o + 96] = s3 * q4 as f32;
            }
        }
    }
}

/// Q8_K (llama.cpp's activation format): y = d * qs, d a little-endian f32; bsums unused.
fn q8_k(b: &[u8; Q8_K_BYTES], y: &mut [f32; QK_K]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for j in 0..QK_K {
        y[j] = d * b[4 + j] as i8 as f32;
    }
}

/// IQ4_XS: 8 sub-blocks of 32 with 6-bit scales (stored +32: low nibble in scales_l, two high
/// bits in scales_h); sub-block ib takes qs[16ib..16ib + 16], low nibbles then high nibbles,
/// through `kvalues_iq4nl`. y = (d * scale) * kvalue.
fn iq4_xs(b: &[u8; IQ4_XS_BYTES], y: &mut [f32; QK_K]) {
    let d = f16_at(b, 0);
    let scales_h = u16::from_le_bytes([b[2], b[3]]) as u32;
    for ib in 0..8 {
        let low = (b[4 + ib / 2] >> (4 * (ib % 2))) & 0xf;
        let high = ((scales_h >> (2 * ib)) & 3) as u8;
        let dl = d * ((low | high << 4) as i32 - 32) as f32;
        for j in 0..16 {
            let q = b[8 + ib * 16 + j];
            y[ib * 32 + j] = dl * KVALUES_IQ4NL[(q & 0xf) as usize] as f32;
            y[ib * 32 + 16 + j] = dl * KVALUES_IQ4NL[(q >> 4) as usize] as f32;
        }
    }
}
