//! The CPU's product with GGUF Q4_K and Q6_K blocks in integer arithmetic: the activation
//! row is quantized once to int8 in llama.cpp's Q8_K scheme ([`Q8Row`]), and each weight
//! block's dot product with it is summed exactly in i32 (`maddubs`: u8 quant × i8
//! activation → i16 pair sums, `madd` with the sub-block scales → i32), then scaled by the
//! block's two f32 factors, as ggml's `ggml_vec_dot_q4_K_q8_K` / `ggml_vec_dot_q6_K_q8_K`
//! do. `cpu_ggml`'s f32 product makes each weight's f32 value and multiplies it (~2–5 G
//! weights/s a core); here a register of 32 or 64 weights takes a handful of integer
//! instructions: Q4_K 14336x4096 from RAM, ~25 G weights/s on one core of the 2-core EPYC
//! dev machine, 12 on one core of a 16-core 2.1 GHz Xeon and 150 on all 16 (85 GB/s).
//!
//! ```text
//! Q4_K: y_r = Σ_b dx_b · (d_b · Σ_j sc_j Σ_{i∈j} q_i x8_i  −  dmin_b · Σ_j mn_j Σ_{i∈j} x8_i)
//! Q6_K: y_r = Σ_b dx_b · d_b · Σ_j sc_j (Σ_{i∈j} q_i x8_i − 32 Σ_{i∈j} x8_i)       q_i ∈ 0..64
//! ```
//!
//! The integer sums are exact (no i16 pair saturates: q ≤ 63 and |x8| ≤ 127; no i32 sum
//! exceeds 2³¹), so every build (portable, AVX2, AVX-512) gets the same integers a block;
//! the f32 steps after them are one fixed sequence shared by all builds (`q4k_row`,
//! `q6k_row`: a block's factors, their products, one running sum in block order), so
//! every build gives the same bits, whatever the thread count. The result is the product with x̂, the row as
//! the [`Q8Row`] holds it (`x8 · dx`), not with x: each activation moves by up to half its
//! block's step, `dx / 2 = absmax / 254`.
//!
//! No Rust crate computes integer dot products on GGUF's block layouts (ggml does, in C),
//! hence this file. It reads the blocks in the kernels' planes (`abi::GgmlLayout`): field f
//! of block b at `plane(f, blocks) + b · fields[f]`.
use crate::abi::GGML_LAYOUTS;
use crate::error::{Error, Result};
use crate::stream::cpu_gemv::Kernel;
use crate::stream::cpu_ggml::GgmlView;
use rayon::prelude::*;
use std::ops::Range;

/// Values a Q8_K block (and a Q4_K / Q6_K super-block) holds.
const QK: usize = 256;
/// Output rows a rayon task computes (as `cpu_ggml`'s: a 4096-wide Q4_K row is 2.3 KB).
const ROWS_PER_TASK: usize = 16;
/// Indices in `GGML_LAYOUTS`.
const Q4_K: usize = 5;
const Q6_K: usize = 7;

const _: () = assert!(crate::abi::same_name(GGML_LAYOUTS[Q4_K].name, "Q4_K") && crate::abi::same_name(GGML_LAYOUTS[Q6_K].name, "Q6_K"));

/// An activation row quantized for `gemv_q8`: llama.cpp's Q8_K (256 values a block).
///
/// Block b: `d = absmax / 127`, `q = round(x / d)` (ties to even) clamped to ±127, so
/// that x̂ = d · q; and the sums of q over each 16 values. A block with a non-finite value
/// gets `d = NaN` (every product with it is NaN, as the f32 product would be inf or NaN);
/// an all-zero block, or one so small that `d` would be subnormal (absmax < 127 ·
/// `f32::MIN_POSITIVE` ≈ 1.5e-36), gets `d = 0` and q = 0.
#[derive(Clone, Debug)]
pub struct Q8Row {
    q: Vec<[i8; QK]>,
    d: Vec<f32>,
    bsums: Vec<[i16; 16]>,
}

impl Q8Row {
    /// `x.len()` must be a multiple of 256 (error otherwise).
    pub fn quantize(x: &[f32]) -> Result<Q8Row> {
        if !x.len().is_multiple_of(QK) {
            return Err(Error::Invalid(format!("cpu_ggml_q8: {} activations are not whole blocks of {QK}", x.len())));
        }
        let (blocks, _) = x.as_chunks::<QK>();
        let mut row = Q8Row { q: vec![[0; QK]; blocks.len()], d: vec![0.0; blocks.len()], bsums: vec![[0; 16]; blocks.len()] };
        for (((x, q), d), bsums) in blocks.iter().zip(&mut row.q).zip(&mut row.d).zip(&mut row.bsums) {
            *d = quantize_block(x, q);
            for (s, q) in bsums.iter_mut().zip(q.as_chunks::<16>().0) {
                *s = q.iter().map(|&v| v as i16).sum();
            }
        }
        Ok(row)
    }

    /// Values.
    pub fn len(&self) -> usize {
        self.q.len() * QK
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// The int8 values, `len()` of them: x̂[k] = `scales()[k / 256] · quants()[k]`.
    pub fn quants(&self) -> &[i8] {
        self.q.as_flattened()
    }

    /// Each block's step d.
    pub fn scales(&self) -> &[f32] {
        &self.d
    }
}

/// Block `x` into `q`; returns its step.
fn quantize_block(x: &[f32; QK], q: &mut [i8; QK]) -> f32 {
    if !x.iter().all(|v| v.is_finite()) {
        return f32::NAN;
    }
    let d = x.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
    // A subnormal d would not hold absmax / 127 to f32's precision (nor keep x / d ≤ 127).
    if d < f32::MIN_POSITIVE {
        return 0.0;
    }
    // Adding 1.5 · 2²³ rounds to the nearest integer, ties to even, into the low mantissa
    // bits (ggml's `nearest_int`): unlike `round_ties_even` and `as i8` it vectorizes
    // without SSE4.1. Clamping first is the same as after, as ±127 are integers.
    const ROUND: f32 = 12_582_912.0;
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (((v / d).clamp(-127.0, 127.0) + ROUND).to_bits() as i32 - ROUND.to_bits() as i32) as i8;
    }
    d
}

/// Whether `gemv_q8` computes this layout (index in abi::GGML_LAYOUTS) on this CPU: Q4_K
/// and Q6_K with AVX2 (the AVX-512 build is picked at run time where the CPU has it);
/// false otherwise (callers then use cpu_ggml's f32 path).
pub fn q8_supported(layout: usize) -> bool {
    (layout == Q4_K || layout == Q6_K) && Kernel::best() != Kernel::Scalar
}

/// y[r - rows.start] = Σ_k dequantize(W)[r, k] · x̂[k] for r in rows, where x̂ is x as the
/// Q8Row holds it; rows shared out over the *current* rayon pool (runs of 16 rows) — the
/// caller calls it inside `pool.install`. Errors (never panics) on: unsupported
/// layout/CPU, `w.check()` failing, rows out of range, `x.len() != w.cols`,
/// `y.len() < rows.len()`. Only `y[..rows.len()]` is written.
pub fn gemv_q8(w: &GgmlView, rows: Range<usize>, x: &Q8Row, y: &mut [f32]) -> Result<()> {
    let kernel = Kernel::best();
    if kernel == Kernel::Scalar {
        return Err(Error::Invalid("cpu_ggml_q8: this CPU has no AVX2 (use cpu_ggml's f32 product)".into()));
    }
    gemv_q8_with(kernel, w, rows, x, y)
}

/// `gemv_q8` with a given build: `Scalar` the portable one, `Avx2` 256-bit integer vectors
/// (AVX2), `Avx512` 512-bit ones (AVX-512 F and BW). Every build gives the same bits.
pub fn gemv_q8_with(kernel: Kernel, w: &GgmlView, rows: Range<usize>, x: &Q8Row, y: &mut [f32]) -> Result<()> {
    if !kernel.is_supported() {
        return Err(Error::Invalid(format!("cpu_ggml_q8: this CPU does not support the {} kernel", kernel.name())));
    }
    let l = w.check()?;
    if w.layout != Q4_K && w.layout != Q6_K {
        return Err(Error::Invalid(format!("cpu_ggml_q8: no integer product for {} (Q4_K and Q6_K only)", l.name)));
    }
    if rows.start > rows.end || rows.end > w.rows {
        return Err(Error::Invalid(format!("cpu_ggml_q8: rows {rows:?} of a {}-row matrix", w.rows)));
    }
    if x.len() != w.cols || y.len() < rows.len() {
        return Err(Error::Invalid(format!("cpu_ggml_q8: x holds {} values for {} columns, y {} for {} rows", x.len(), w.cols, y.len(), rows.len())));
    }
    let blocks = w.rows * (w.cols / QK);
    // Field f's plane as whole fields, one a block.
    let plane = |f: usize| &w.planes[l.plane(f, blocks as u64) as usize..][..l.fields[f] as usize * blocks];
    let planes = if w.layout == Q4_K {
        Planes::Q4k(Q4kPlanes { d: plane(0).as_chunks().0, dmin: plane(1).as_chunks().0, scales: plane(2).as_chunks().0, qs: plane(3).as_chunks().0 })
    } else {
        Planes::Q6k(Q6kPlanes { ql: plane(0).as_chunks().0, qh: plane(1).as_chunks().0, scales: plane(2).as_chunks().0, d: plane(3).as_chunks().0 })
    };
    let first = rows.start;
    y[..rows.len()].par_chunks_mut(ROWS_PER_TASK).enumerate().for_each(|(c, out)| {
        let r0 = first + c * ROWS_PER_TASK;
        match kernel {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `is_supported` checked that the CPU has AVX-512 F, BW and VL.
            Kernel::Avx512 => unsafe { rows_avx512(&planes, r0, x, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `is_supported` checked that the CPU has AVX2.
            Kernel::Avx2 => unsafe { rows_avx2(&planes, r0, x, out) },
            _ => rows_scalar(&planes, r0, x, out),
        }
    });
    Ok(())
}

/// A Q4_K matrix's planes, one entry a block (row-major).
struct Q4kPlanes<'a> {
    d: &'a [[u8; 2]],
    dmin: &'a [[u8; 2]],
    scales: &'a [[u8; 12]],
    qs: &'a [[u8; 128]],
}

/// A Q6_K matrix's planes, one entry a block (row-major).
struct Q6kPlanes<'a> {
    ql: &'a [[u8; 128]],
    qh: &'a [[u8; 64]],
    scales: &'a [[u8; 16]],
    d: &'a [[u8; 2]],
}

enum Planes<'a> {
    Q4k(Q4kPlanes<'a>),
    Q6k(Q6kPlanes<'a>),
}

/// IEEE half to single, exact, in integer steps inlined into every build (`half`'s
/// conversion is a call to a run-time-dispatched F16C routine, which spills the vector
/// registers twice a block). NaN payloads are kept as they are.
#[inline(always)]
fn f16(h: &[u8; 2]) -> f32 {
    let h = u16::from_le_bytes(*h) as u32;
    let sign = (h & 0x8000) << 16;
    f32::from_bits(match h & 0x7c00 {
        // Zero or subnormal: man · 2⁻²⁴, exact.
        0 => ((h & 0x3ff) as f32 * f32::from_bits(0x3380_0000)).to_bits() | sign,
        0x7c00 => sign | 0x7f80_0000 | (h & 0x3ff) << 13,
        _ => sign | ((h & 0x7fff) + 0x1_c000) << 13,
    })
}

/// Blocks ahead of the one computed whose fields are prefetched (a row of 4096 columns).
/// The hardware prefetchers alone leave a core waiting on RAM: on a 16-core Xeon (AMX,
/// 2.1 GHz), 14336x4096 from RAM in one run, Q4_K went from 10 to 19 G weights/s on one
/// core and from 114 to 171 on 16, Q6_K from 10 to 15 and from 98 to 132; 32 blocks ahead
/// did no better; no change on the 2-core EPYC.
const PREFETCH_BLOCKS: usize = 16;

/// Asks for the cache line at `p` (a hint: it reads nothing and cannot fault, whatever
/// the address; `wrapping_add` makes addresses past the planes without undefined behaviour).
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: a prefetch never faults and changes no memory, so any address is sound.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Row `r`'s Q4_K product: `dot` gives each block's (Σ_j sc_j Σ q x8, Σ_j mn_j Σ x8) from
/// its unpacked scales and mins, quants, the activations and their 16-value sums.
#[inline(always)]
fn q4k_row(p: &Q4kPlanes, r: usize, x: &Q8Row, dot: impl Fn(&[u8; 16], &[u8; 128], &[i8; QK], &[i16; 16]) -> (i32, i32)) -> f32 {
    let bpr = x.q.len();
    let s = r * bpr..(r + 1) * bpr;
    let weights = p.d[s.clone()].iter().zip(&p.dmin[s.clone()]).zip(&p.scales[s.clone()]).zip(&p.qs[s]);
    let mut acc = 0f32;
    for (b, ((((d, dmin), scales), qs), ((xq, bsums), &dx))) in weights.zip(x.q.iter().zip(&x.bsums).zip(&x.d)).enumerate() {
        let ahead = r * bpr + b + PREFETCH_BLOCKS;
        prefetch(p.qs.as_ptr().wrapping_add(ahead));
        prefetch(p.qs.as_ptr().wrapping_add(ahead).cast::<u8>().wrapping_add(64));
        prefetch(p.scales.as_ptr().wrapping_add(ahead));
        prefetch(p.d.as_ptr().wrapping_add(ahead));
        prefetch(p.dmin.as_ptr().wrapping_add(ahead));
        let (sumi, summ) = dot(&q4k_scales(scales), qs, xq, bsums);
        // The f32 steps every build shares.
        acc += (dx * f16(d)) * sumi as f32 - (dx * f16(dmin)) * summ as f32;
    }
    acc
}

/// Row `r`'s Q6_K product: `dot` gives each block's Σ_j sc_j (Σ q x8 − 32 Σ x8) from its
/// low and high quant bits, scales, the activations and their 16-value sums.
#[inline(always)]
fn q6k_row(p: &Q6kPlanes, r: usize, x: &Q8Row, dot: impl Fn(&[u8; 128], &[u8; 64], &[u8; 16], &[i8; QK], &[i16; 16]) -> i32) -> f32 {
    let bpr = x.q.len();
    let s = r * bpr..(r + 1) * bpr;
    let weights = p.ql[s.clone()].iter().zip(&p.qh[s.clone()]).zip(&p.scales[s.clone()]).zip(&p.d[s]);
    let mut acc = 0f32;
    for (b, ((((ql, qh), scales), d), ((xq, bsums), &dx))) in weights.zip(x.q.iter().zip(&x.bsums).zip(&x.d)).enumerate() {
        let ahead = r * bpr + b + PREFETCH_BLOCKS;
        prefetch(p.ql.as_ptr().wrapping_add(ahead));
        prefetch(p.ql.as_ptr().wrapping_add(ahead).cast::<u8>().wrapping_add(64));
        prefetch(p.qh.as_ptr().wrapping_add(ahead));
        prefetch(p.scales.as_ptr().wrapping_add(ahead));
        prefetch(p.d.as_ptr().wrapping_add(ahead));
        // The f32 steps every build shares.
        acc += (dx * f16(d)) * dot(ql, qh, scales, xq, bsums) as f32;
    }
    acc
}

/// Q4_K's twelve scale bytes as eight 6-bit scales then eight 6-bit mins
/// (`get_scale_min_k4` for every sub-block at once, as ggml's x86 code unpacks them).
#[inline(always)]
fn q4k_scales(s: &[u8; 12]) -> [u8; 16] {
    let word = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (u0, u1, u2) = (word(0), word(1), word(2));
    let (low6, low4, top2) = (0x3f3f_3f3f, 0x0f0f_0f0f, 0x0303_0303);
    let words = [u0 & low6, (u2 & low4) | (((u0 >> 6) & top2) << 4), u1 & low6, ((u2 >> 4) & low4) | (((u1 >> 6) & top2) << 4)];
    let mut out = [0u8; 16];
    for (o, w) in out.as_chunks_mut::<4>().0.iter_mut().zip(words) {
        *o = w.to_le_bytes();
    }
    out
}

/// The portable build.
fn rows_scalar(p: &Planes, r0: usize, x: &Q8Row, out: &mut [f32]) {
    for (i, y) in out.iter_mut().enumerate() {
        *y = match p {
            Planes::Q4k(p) => q4k_row(p, r0 + i, x, q4k_dot_scalar),
            Planes::Q6k(p) => q6k_row(p, r0 + i, x, q6k_dot_scalar),
        };
    }
}

/// Sub-block 2c takes the low nibbles of qs[32c..32c + 32], 2c + 1 the high ones.
fn q4k_dot_scalar(sm: &[u8; 16], qs: &[u8; 128], xq: &[i8; QK], bsums: &[i16; 16]) -> (i32, i32) {
    let mut sumi = 0;
    for (c, (qs, xq)) in qs.as_chunks::<32>().0.iter().zip(xq.as_chunks::<64>().0).enumerate() {
        let (mut lo, mut hi) = (0i32, 0i32);
        for l in 0..32 {
            lo += (qs[l] & 0xf) as i32 * xq[l] as i32;
            hi += (qs[l] >> 4) as i32 * xq[32 + l] as i32;
        }
        sumi += sm[2 * c] as i32 * lo + sm[2 * c + 1] as i32 * hi;
    }
    let summ = (0..8).map(|j| sm[8 + j] as i32 * (bsums[2 * j] as i32 + bsums[2 * j + 1] as i32)).sum();
    (sumi, summ)
}

/// In half h, value 128h + 32t + l has the low nibble of ql[64h + 32(t % 2) + l] (t < 2)
/// or its high nibble (t ≥ 2), and bits 2t, 2t + 1 of qh[32h + l] above them.
fn q6k_dot_scalar(ql: &[u8; 128], qh: &[u8; 64], scales: &[u8; 16], xq: &[i8; QK], bsums: &[i16; 16]) -> i32 {
    let mut sub = [0i32; 16];
    for h in 0..2 {
        for l in 0..32 {
            let (a, b, hb) = (ql[64 * h + l], ql[64 * h + 32 + l], qh[32 * h + l]);
            let q = [(a & 0xf) | (hb & 3) << 4, (b & 0xf) | ((hb >> 2) & 3) << 4, (a >> 4) | ((hb >> 4) & 3) << 4, (b >> 4) | ((hb >> 6) & 3) << 4];
            for (t, q) in q.into_iter().enumerate() {
                let k = 128 * h + 32 * t + l;
                sub[k / 16] += q as i32 * xq[k] as i32;
            }
        }
    }
    (0..16).map(|j| scales[j] as i8 as i32 * (sub[j] - 32 * bsums[j] as i32)).sum()
}

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The AVX2 build: 32 quants a register.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn rows_avx2(p: &Planes, r0: usize, x: &Q8Row, out: &mut [f32]) {
    for (i, y) in out.iter_mut().enumerate() {
        *y = match p {
            Planes::Q4k(p) => q4k_row(p, r0 + i, x, |sm, qs, xq, bs| q4k_dot_avx2(sm, qs, xq, bs)),
            Planes::Q6k(p) => q6k_row(p, r0 + i, x, |ql, qh, sc, xq, bs| q6k_dot_avx2(ql, qh, sc, xq, bs)),
        };
    }
}

/// The 32 bytes from element `at` of `p`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn load256<T, const N: usize>(p: &[T; N], at: usize) -> __m256i {
    assert!(at * size_of::<T>() + 32 <= N * size_of::<T>());
    // SAFETY: in bounds (the assert, on constants once inlined); loadu takes any alignment.
    unsafe { _mm256_loadu_si256(p.as_ptr().add(at).cast()) }
}

/// The 16 bytes from element `at` of `p`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn load128<T, const N: usize>(p: &[T; N], at: usize) -> __m128i {
    assert!(at * size_of::<T>() + 16 <= N * size_of::<T>());
    // SAFETY: in bounds (the assert, on constants once inlined); loadu takes any alignment.
    unsafe { _mm_loadu_si128(p.as_ptr().add(at).cast()) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn hsum256(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s)))
}

/// Σ_j mn_j · (bsums[2j] + bsums[2j + 1]) as eight i32 sums, from the unpacked scales.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn q4k_mins(sm: __m128i, bsums: &[i16; 16]) -> __m256i {
    // Each min twice, as i16, against the two 16-value sums of its sub-block.
    let mins = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm));
    _mm256_madd_epi16(load256(bsums, 0), mins)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn q4k_dot_avx2(sm: &[u8; 16], qs: &[u8; 128], xq: &[i8; QK], bsums: &[i16; 16]) -> (i32, i32) {
    let sm = load128(sm, 0);
    // The eight scales as i16 in both lanes; `shuffle_epi8` with bytes 2j, 2j + 1 repeated
    // spreads scale j over a register.
    let scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
    let spread = |j: i16| _mm256_shuffle_epi8(scales, _mm256_set1_epi16(((2 * j + 1) << 8) | (2 * j)));
    let nibble = _mm256_set1_epi8(0xf);
    let mut acc = _mm256_setzero_si256();
    for c in 0..4 {
        let q = load256(qs, 32 * c);
        let lo = _mm256_maddubs_epi16(_mm256_and_si256(q, nibble), load256(xq, 64 * c));
        let hi = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16::<4>(q), nibble), load256(xq, 64 * c + 32));
        let j = 2 * c as i16;
        acc = _mm256_add_epi32(acc, _mm256_add_epi32(_mm256_madd_epi16(lo, spread(j)), _mm256_madd_epi16(hi, spread(j + 1))));
    }
    (hsum256(acc), hsum256(q4k_mins(sm, bsums)))
}

/// Q6_K's quants of one half: value sets t = 0..4 (values 128h + 32t + l).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn q6k_quants_avx2(ql: &[u8; 128], qh: &[u8; 64], h: usize) -> [__m256i; 4] {
    let (a, b, hb) = (load256(ql, 64 * h), load256(ql, 64 * h + 32), load256(qh, 32 * h));
    let (nibble, top) = (_mm256_set1_epi8(0xf), _mm256_set1_epi8(0x30));
    // 16-bit shifts move bits across bytes, but only into bits the masks clear.
    let low = |v: __m256i| _mm256_and_si256(v, nibble);
    let high = |v: __m256i| _mm256_and_si256(v, top);
    [
        _mm256_or_si256(low(a), high(_mm256_slli_epi16::<4>(hb))),
        _mm256_or_si256(low(b), high(_mm256_slli_epi16::<2>(hb))),
        _mm256_or_si256(low(_mm256_srli_epi16::<4>(a)), high(hb)),
        _mm256_or_si256(low(_mm256_srli_epi16::<4>(b)), high(_mm256_srli_epi16::<2>(hb))),
    ]
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn q6k_dot_avx2(ql: &[u8; 128], qh: &[u8; 64], scales: &[u8; 16], xq: &[i8; QK], bsums: &[i16; 16]) -> i32 {
    let s16 = _mm256_cvtepi8_epi16(load128(scales, 0));
    // Σ_j sc_j · Σ x8 over sub-block j, taken 32 times at the end.
    let offset = _mm256_madd_epi16(load256(bsums, 0), s16);
    let mut acc = _mm256_setzero_si256();
    for h in 0..2 {
        // Scales 8h..8h + 8 in both lanes; a register of 32 values spans sub-blocks 2i (low
        // lane) and 2i + 1 (high lane).
        let s = if h == 0 { _mm256_permute4x64_epi64::<0x44>(s16) } else { _mm256_permute4x64_epi64::<0xee>(s16) };
        for (t, q) in q6k_quants_avx2(ql, qh, h).into_iter().enumerate() {
            let t = t as i16;
            let pick = _mm256_set_m128i(_mm_set1_epi16(((4 * t + 3) << 8) | (4 * t + 2)), _mm_set1_epi16(((4 * t + 1) << 8) | (4 * t)));
            let p = _mm256_maddubs_epi16(q, load256(xq, 128 * h + 32 * t as usize));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_shuffle_epi8(s, pick)));
        }
    }
    hsum256(_mm256_sub_epi32(acc, _mm256_slli_epi32::<5>(offset)))
}

/// The AVX-512 build: 64 quants a register.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn rows_avx512(p: &Planes, r0: usize, x: &Q8Row, out: &mut [f32]) {
    for (i, y) in out.iter_mut().enumerate() {
        *y = match p {
            Planes::Q4k(p) => q4k_row(p, r0 + i, x, |sm, qs, xq, bs| q4k_dot_avx512(sm, qs, xq, bs)),
            Planes::Q6k(p) => q6k_row(p, r0 + i, x, |ql, qh, sc, xq, bs| q6k_dot_avx512(ql, qh, sc, xq, bs)),
        };
    }
}

/// The 64 bytes from element `at` of `p`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn load512<T, const N: usize>(p: &[T; N], at: usize) -> __m512i {
    assert!(at * size_of::<T>() + 64 <= N * size_of::<T>());
    // SAFETY: in bounds (the assert, on constants once inlined); loadu takes any alignment.
    unsafe { _mm512_loadu_si512(p.as_ptr().add(at).cast()) }
}

#[cfg(target_arch = "x86_64")]
/// `shuffle_epi8` indices of the AVX-512 Q4_K build: for chunk c, scale 2c (bytes 4c,
/// 4c + 1 of each lane) in i16 lanes 0..16 and scale 2c + 1 in lanes 16..32.
const Q4K_PICK: [[i16; 32]; 4] = {
    let mut t = [[0i16; 32]; 4];
    let mut c = 0;
    while c < 4 {
        let mut i = 0;
        while i < 32 {
            let j = (4 * c + 2 * (i / 16)) as i16;
            t[c][i] = ((j + 1) << 8) | j;
            i += 1;
        }
        c += 1;
    }
    t
};

#[cfg(target_arch = "x86_64")]
/// `permutexvar_epi16` indices of the AVX-512 Q6_K build: register u of half h (values
/// 128h + 64u..+64) holds sub-block 8h + 4u + i in 128-bit lane i, whose scale is i16 8h
/// + 4u + i of the sixteen.
const Q6K_PICK: [[i16; 32]; 4] = {
    let mut t = [[0i16; 32]; 4];
    let mut r = 0;
    while r < 4 {
        let mut i = 0;
        while i < 32 {
            t[r][i] = (4 * r + i / 8) as i16;
            i += 1;
        }
        r += 1;
    }
    t
};

#[cfg(target_arch = "x86_64")]
/// Per-16-bit-lane shifts of the AVX-512 Q6_K build that bring the high bits of value sets
/// 0 | 1 (left by 4 | 2) and of sets 2 | 3 (right by 0 | 2) to bits 4 and 5.
const Q6K_UP: [i16; 32] = {
    let mut t = [4i16; 32];
    let mut i = 16;
    while i < 32 {
        t[i] = 2;
        i += 1;
    }
    t
};
#[cfg(target_arch = "x86_64")]
const Q6K_DOWN: [i16; 32] = {
    let mut t = [0i16; 32];
    let mut i = 16;
    while i < 32 {
        t[i] = 2;
        i += 1;
    }
    t
};

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
fn q4k_dot_avx512(sm: &[u8; 16], qs: &[u8; 128], xq: &[i8; QK], bsums: &[i16; 16]) -> (i32, i32) {
    let sm = load128(sm, 0);
    // The eight scales as i16 in every 128-bit lane; `shuffle_epi8` spreads scale 2c over
    // the low half of a register and 2c + 1 over the high half.
    let scales = _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(sm));
    let nibble = _mm512_set1_epi8(0xf);
    let mut acc = _mm512_setzero_si512();
    for (c, pick) in Q4K_PICK.iter().enumerate() {
        // qs[32c..32c + 32] in both halves: the low nibbles in the low half and the high
        // ones in the high half are values 64c..64c + 64 in order.
        let q = _mm512_broadcast_i64x4(load256(qs, 32 * c));
        let q = _mm512_and_si512(_mm512_mask_srli_epi16::<4>(q, 0xffff_0000, q), nibble);
        let p = _mm512_maddubs_epi16(q, load512(xq, 64 * c));
        acc = _mm512_add_epi32(acc, _mm512_madd_epi16(p, _mm512_shuffle_epi8(scales, load512(pick, 0))));
    }
    (_mm512_reduce_add_epi32(acc), hsum256(q4k_mins(sm, bsums)))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
fn q6k_dot_avx512(ql: &[u8; 128], qh: &[u8; 64], scales: &[u8; 16], xq: &[i8; QK], bsums: &[i16; 16]) -> i32 {
    let s16 = _mm256_cvtepi8_epi16(load128(scales, 0));
    let offset = _mm256_madd_epi16(load256(bsums, 0), s16);
    let s16 = _mm512_castsi256_si512(s16);
    let (nibble, top) = (_mm512_set1_epi8(0xf), _mm512_set1_epi8(0x30));
    let (up, down) = (load512(&Q6K_UP, 0), load512(&Q6K_DOWN, 0));
    let mut acc = _mm512_setzero_si512();
    for h in 0..2 {
        // ql[64h..64h + 64]: low nibbles are value sets 0 | 1 (values 128h..128h + 64),
        // high nibbles sets 2 | 3; qh[32h..32h + 32] in both halves.
        let a = load512(ql, 64 * h);
        let hb = _mm512_broadcast_i64x4(load256(qh, 32 * h));
        let q01 = _mm512_or_si512(_mm512_and_si512(a, nibble), _mm512_and_si512(_mm512_sllv_epi16(hb, up), top));
        let q23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(a), nibble), _mm512_and_si512(_mm512_srlv_epi16(hb, down), top));
        for (u, q) in [q01, q23].into_iter().enumerate() {
            let p = _mm512_maddubs_epi16(q, load512(xq, 128 * h + 64 * u));
            acc = _mm512_add_epi32(acc, _mm512_madd_epi16(p, _mm512_permutexvar_epi16(load512(&Q6K_PICK[2 * h + u], 0), s16)));
        }
    }
    _mm512_reduce_add_epi32(acc) - 32 * hsum256(offset)
}
