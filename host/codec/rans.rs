//! Codec `rans`: interleaved 32-lane rANS for INT8 weight chunks, with one static
//! frequency table per tensor, in a layout one GPU warp decodes with coalesced
//! reads and writes, every chunk on its own.
//!
//! Hand-written because no crate does GPU-decodable interleaved rANS: the Rust
//! rANS crates (e.g. `rans`, a ryg_rans wrapper) are CPU coders with a few streams
//! and their own layouts, and this CPU side must be the exact oracle of our
//! kernel's stream order and decode table.
//!
//! # Chunk format
//! A chunk of `n` bytes (`n` is known from the container) is coded as
//! `[x_0 .. x_31: u32 LE][w_0 .. w_{K-1}: u16 LE]`, `128 + 2K` bytes. The table is
//! 256 `u16` frequencies `f_s` summing to [`PROB_SCALE`] = 4096 (absent symbols 0),
//! `cum_s = f_0 + .. + f_{s-1}`. Lane `j` starts in state `x_j` (`>= 2^16`). The
//! bytes are visited in steps of 128: in step `t` lane `j` owns bytes
//! `128t + 4j .. 128t + 4j + 3`, decoded in that order, so at sub-symbol `i`
//! (0..3) each lane `j` with `p = 128t + 4j + i < n` decodes one symbol:
//! `slot = x & 4095`, `s` with `cum_s <= slot < cum_s + f_s`, `out[p] = s`,
//! `x = f_s * (x >> 12) + slot - cum_s`. Then the lanes whose `x < 2^16`, in
//! increasing `j`, take the next words of the shared stream: lane `j` takes word
//! `base + popcount(need_mask & ((1 << j) - 1))`, `x = (x << 16) | w`, and `base`
//! advances by `popcount(need_mask)`. At the end every lane must be in state
//! exactly `2^16` and all `K` words must be consumed; anything else is corruption.
//!
//! # GPU decode table
//! [`decode_lut`] gives 4096 `u32` entries indexed by `slot`, each
//! `sym | (freq - 1) << 8 | cum << 20` (bits 0..8 symbol, 8..20 `freq - 1`,
//! 20..32 `cum`); one load per symbol. The CPU decoder here reads the very same
//! table, so it is an oracle for the kernel's table as well as its stream.
//!
//! # Warp kernel sketch (one warp per chunk, lane `j`)
//! ```text
//! x = states[j]; base = 0;                      // one coalesced 128-byte load
//! for t in 0..ceil(n / 128):
//!     v = 0
//!     for i in 0..4:
//!         p = 128t + 4j + i; act = p < n
//!         if act: e = lut[x & 4095]; x = ((e >> 8 & 0xfff) + 1) * (x >> 12) + (x & 4095) - (e >> 20)
//!                 v |= (e & 0xff) << 8i
//!         need = act && x < 65536; m = ballot(need)
//!         if need: x = x << 16 | words[base + popc(m & lanemask_lt)]
//!         base += popc(m)
//!     store the bytes p < n of v at out + 128t + 4j  // whole u32 if 128t + 4j + 3 < n
//! check x == 65536 on every lane and base == K
//! ```

// Symbol-indexed loops over parallel arrays read best with an index.
#![allow(clippy::needless_range_loop)]

use super::entropy::histogram;
use rayon::prelude::*;

/// Probability precision: frequencies sum to `1 << PROB_BITS`.
pub const PROB_BITS: u32 = 12;
/// Sum of the frequencies of a table (M), as the container and the kernel define it.
pub const PROB_SCALE: u32 = crate::container::RANS_PROB_SCALE;
const _: () = assert!(PROB_SCALE == 1 << PROB_BITS);
/// Interleaved states per chunk (one warp).
pub const LANES: usize = 32;
/// Symbols a lane decodes per step (one `u32` store per lane).
pub const SYMS_PER_LANE: usize = 4;
/// Bytes per step: a warp writes these contiguously.
pub const STEP_BYTES: usize = LANES * SYMS_PER_LANE;
/// Lower bound L of the normalized state interval `[L, L << 16)`; also the
/// encoder's start state, which the decoder must end in.
pub const STATE_LOWER: u32 = 1 << 16;
/// Bytes of the per-chunk header: the 32 initial decoder states.
pub const HEADER_BYTES: usize = crate::abi::RANS_HEADER_BYTES as usize;
const _: () = assert!(HEADER_BYTES == LANES * 4);
/// Entries of the decode table.
pub const LUT_SIZE: usize = crate::abi::RANS_LUT_ENTRIES;
/// Serialized table size in the container index (256 `u16`).
pub const TABLE_BYTES: usize = 256 * 2;

const SLOT_MASK: u32 = PROB_SCALE - 1;

/// Static frequency table: 256 frequencies summing to [`PROB_SCALE`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FreqTable {
    freqs: [u16; 256],
    cums: [u16; 256],
}

impl FreqTable {
    /// The table minimizing the coded size of data with this histogram: every
    /// symbol that occurs gets a frequency >= 1, absent ones 0. An empty histogram
    /// gives the table of an all-zero tensor (any table codes an empty chunk).
    pub fn from_histogram(hist: &[u64; 256]) -> Self {
        let present: Vec<usize> = (0..256).filter(|&s| hist[s] > 0).collect();
        let mut f = [0u32; 256];
        match present.len() {
            0 => f[0] = PROB_SCALE,
            1 => f[present[0]] = PROB_SCALE,
            _ => normalize(hist, &present, &mut f),
        }
        let mut freqs = [0u16; 256];
        for s in 0..256 {
            freqs[s] = f[s] as u16;
        }
        Self::from_valid(freqs)
    }

    /// Table of the bytes themselves.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self::from_histogram(&histogram(bytes))
    }

    /// Validates a serialized table (from a possibly hostile container index):
    /// exactly 256 entries, each <= 4096, summing to 4096.
    pub fn from_freqs(freqs: &[u16]) -> Result<Self, String> {
        crate::container::check_rans_table(freqs)?;
        let mut a = [0u16; 256];
        a.copy_from_slice(freqs);
        Ok(Self::from_valid(a))
    }

    fn from_valid(freqs: [u16; 256]) -> Self {
        let mut cums = [0u16; 256];
        let mut c = 0u32;
        for s in 0..256 {
            cums[s] = c as u16; // c <= 4095 wherever freqs[s] > 0
            c += freqs[s] as u32;
        }
        debug_assert_eq!(c, PROB_SCALE);
        Self { freqs, cums }
    }

    /// The 256 frequencies (what the container index stores).
    pub fn freqs(&self) -> &[u16; 256] {
        &self.freqs
    }

    /// Serialized form for the container index.
    pub fn to_freqs(&self) -> Vec<u16> {
        self.freqs.to_vec()
    }

    /// Ideal coded size in bits of data with this histogram (no header or
    /// renormalization overhead); `None` when a present symbol has frequency 0.
    pub fn cost_bits(&self, hist: &[u64; 256]) -> Option<f64> {
        let mut bits = 0.0;
        for s in 0..256 {
            if hist[s] > 0 {
                if self.freqs[s] == 0 {
                    return None;
                }
                bits += hist[s] as f64 * (PROB_BITS as f64 - (self.freqs[s] as f64).log2());
            }
        }
        Some(bits)
    }
}

/// Integer frequencies >= 1 for `present` summing to M minimizing
/// `sum c_s * -log2(f_s / M)`. Each term is convex in `f_s`, so a point with no
/// improving unit move between two symbols is the optimum: start from the
/// proportional floor, fix the sum greedily, then apply improving moves.
fn normalize(hist: &[u64; 256], present: &[usize], f: &mut [u32; 256]) {
    let total: u128 = present.iter().map(|&s| hist[s] as u128).sum();
    for &s in present {
        f[s] = ((hist[s] as u128 * PROB_SCALE as u128 / total) as u32).max(1);
    }
    // Bits saved by f+1, bits lost by f-1.
    let gain = |f: &[u32; 256], s: usize| hist[s] as f64 * ((f[s] + 1) as f64 / f[s] as f64).log2();
    let loss = |f: &[u32; 256], s: usize| {
        if f[s] <= 1 {
            f64::INFINITY
        } else {
            hist[s] as f64 * (f[s] as f64 / (f[s] - 1) as f64).log2()
        }
    };
    let best_gain = |f: &[u32; 256]| {
        let mut best = (present[0], f64::NEG_INFINITY);
        for &s in present {
            let g = gain(f, s);
            if g > best.1 {
                best = (s, g);
            }
        }
        best
    };
    let best_loss = |f: &[u32; 256]| {
        let mut best = (present[0], f64::INFINITY);
        for &s in present {
            let l = loss(f, s);
            if l < best.1 {
                best = (s, l);
            }
        }
        best
    };
    let mut sum: u32 = present.iter().map(|&s| f[s]).sum();
    while sum < PROB_SCALE {
        f[best_gain(f).0] += 1;
        sum += 1;
    }
    while sum > PROB_SCALE {
        // Possible: at most 255 symbols need f >= 1, so some f >= 2 exists.
        f[best_loss(f).0] -= 1;
        sum -= 1;
    }
    // Each move strictly lowers the cost, so this ends; the cap guards float ties.
    for _ in 0..1 << 16 {
        let (a, g) = best_gain(f);
        let (b, l) = best_loss(f);
        if g <= l * (1.0 + 1e-12) {
            break;
        }
        f[a] += 1;
        f[b] -= 1;
    }
}

/// The GPU/CPU decode table: 4096 entries indexed by `slot = x & 4095`, each
/// packed as `sym | (freq - 1) << 8 | cum << 20`:
/// bits 0..8 the symbol, bits 8..20 its frequency minus one (freq in 1..=4096),
/// bits 20..32 its cumulative frequency. Decode of one symbol from state `x`:
/// `e = lut[x & 4095]; x = ((e >> 8 & 0xfff) + 1) * (x >> 12) + (x & 4095) - (e >> 20)`.
pub fn decode_lut(table: &FreqTable) -> Vec<u32> {
    let mut lut = vec![0u32; LUT_SIZE];
    for s in 0..256 {
        let f = table.freqs[s] as u32;
        if f == 0 {
            continue;
        }
        let c = table.cums[s] as u32;
        let e = s as u32 | (f - 1) << 8 | c << 20;
        lut[c as usize..(c + f) as usize].fill(e);
    }
    lut
}

/// Encodes one chunk (any length, 0 included). `None` when a byte has frequency 0
/// in the table (the container then stores the chunk raw); never panics.
pub fn encode_chunk(table: &FreqTable, chunk: &[u8]) -> Option<Vec<u8>> {
    let n = chunk.len();
    // freq | cum << 16, one load per symbol.
    let mut enc = [0u32; 256];
    for s in 0..256 {
        enc[s] = table.freqs[s] as u32 | (table.cums[s] as u32) << 16;
    }
    let mut x = [STATE_LOWER; LANES];
    // At most one word per symbol; written in reverse of the decoder's read order.
    let mut words = vec![0u16; n];
    let mut wp = 0usize;

    // The encoder runs backwards: partial tail step first.
    let full = n / STEP_BYTES;
    if !n.is_multiple_of(STEP_BYTES) {
        let base = full * STEP_BYTES;
        for i in (0..SYMS_PER_LANE).rev() {
            for j in (0..LANES).rev() {
                let p = base + SYMS_PER_LANE * j + i;
                if p < n {
                    let e = enc[chunk[p] as usize];
                    if e & 0xffff == 0 {
                        return None;
                    }
                    x[j] = put(x[j], e, &mut words, &mut wp);
                }
            }
        }
    }
    for t in (0..full).rev() {
        let step: &[u8; STEP_BYTES] = chunk[t * STEP_BYTES..][..STEP_BYTES].try_into().unwrap();
        for i in (0..SYMS_PER_LANE).rev() {
            for j in (0..LANES).rev() {
                let e = enc[step[SYMS_PER_LANE * j + i] as usize];
                if e & 0xffff == 0 {
                    return None;
                }
                x[j] = put(x[j], e, &mut words, &mut wp);
            }
        }
    }

    let mut out = Vec::with_capacity(HEADER_BYTES + 2 * wp);
    for s in x {
        out.extend_from_slice(&s.to_le_bytes());
    }
    for &w in words[..wp].iter().rev() {
        out.extend_from_slice(&w.to_le_bytes());
    }
    Some(out)
}

/// One encoder step: renormalize (emit the low 16 bits when the state would leave
/// `[L, L << 16)`), then `x = (x / f) * M + x % f + cum`. `f << 20` is the
/// renormalization bound; written as `x >> 20 >= f` so `f = M` cannot overflow
/// (and then never emits: a certain symbol costs nothing).
#[inline(always)]
fn put(mut x: u32, e: u32, words: &mut [u16], wp: &mut usize) -> u32 {
    let f = e & 0xffff;
    let c = e >> 16;
    let emit = (x >> 20) >= f;
    // Branchless: store always, advance only on emit (wp < symbols seen so far < n).
    words[*wp] = x as u16;
    *wp += emit as usize;
    x = if emit { x >> 16 } else { x };
    ((x / f) << PROB_BITS) + (x % f) + c
}

/// Encodes `bytes` in chunks of `chunk_size` (the last may be shorter) in
/// parallel; per chunk as [`encode_chunk`]. Panics if `chunk_size == 0`.
pub fn encode_chunks(table: &FreqTable, bytes: &[u8], chunk_size: usize) -> Vec<Option<Vec<u8>>> {
    assert!(chunk_size > 0, "rans chunk size must be positive");
    bytes.par_chunks(chunk_size).map(|c| encode_chunk(table, c)).collect()
}

/// Decodes one chunk into `out`, whose length must be the chunk's decoded length.
/// `lut` is [`decode_lut`] of the tensor's table. Verifies the chunk completely
/// (state bounds, word count, final states); any violation is an `Err`, never a
/// panic, whatever the bytes.
pub fn decode_chunk(lut: &[u32], coded: &[u8], out: &mut [u8]) -> Result<(), String> {
    let lut: &[u32; LUT_SIZE] = lut.try_into().map_err(|_| format!("rans decode table has {} entries, expected {LUT_SIZE}", lut.len()))?;
    if coded.len() < HEADER_BYTES {
        return Err(format!("rans chunk of {} bytes is shorter than its {HEADER_BYTES}-byte header", coded.len()));
    }
    let (head, body) = coded.split_at(HEADER_BYTES);
    if body.len() % 2 != 0 {
        return Err(format!("rans chunk length {} is not {HEADER_BYTES} + 2 x words", coded.len()));
    }
    let nwords = body.len() / 2;
    let mut x = [0u32; LANES];
    for (j, s) in x.iter_mut().enumerate() {
        *s = u32::from_le_bytes(head[4 * j..4 * j + 4].try_into().unwrap());
        if *s < STATE_LOWER {
            return Err(format!("rans lane {j} starts in state {s:#x}, below {STATE_LOWER:#x}"));
        }
    }
    let n = out.len();
    let mut wp = 0usize;
    let full = n / STEP_BYTES;
    for t in 0..full {
        let step: &mut [u8; STEP_BYTES] = (&mut out[t * STEP_BYTES..][..STEP_BYTES]).try_into().unwrap();
        if nwords - wp >= STEP_BYTES {
            // Fast path: a step takes at most 128 words, so no read can run past the end.
            let w: &[u8; 2 * STEP_BYTES] = body[2 * wp..][..2 * STEP_BYTES].try_into().unwrap();
            let mut k = 0usize;
            for i in 0..SYMS_PER_LANE {
                for j in 0..LANES {
                    let (s, xn) = get(lut, x[j]);
                    step[SYMS_PER_LANE * j + i] = s;
                    // Arithmetic select: LLVM turns an `if` here into an unpredictable branch.
                    let need = (xn < STATE_LOWER) as u32;
                    let word = u16::from_le_bytes([w[2 * (k & 127)], w[2 * (k & 127) + 1]]) as u32;
                    x[j] = xn << (need * 16) | (word & need.wrapping_neg());
                    k += need as usize;
                }
            }
            wp += k;
        } else {
            decode_step_checked(lut, &mut x, body, &mut wp, step, t * STEP_BYTES, STEP_BYTES)?;
        }
    }
    if !n.is_multiple_of(STEP_BYTES) {
        let base = full * STEP_BYTES;
        decode_step_checked(lut, &mut x, body, &mut wp, &mut out[base..], base, n - base)?;
    }
    if wp != nwords {
        return Err(format!("rans chunk has {nwords} words, decoding used {wp}"));
    }
    if let Some(j) = x.iter().position(|&s| s != STATE_LOWER) {
        return Err(format!("rans lane {j} ends in state {:#x}, expected {STATE_LOWER:#x}", x[j]));
    }
    Ok(())
}

/// Convenience: decode into a new vector of `len` bytes.
pub fn decode_chunk_to_vec(lut: &[u32], coded: &[u8], len: usize) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; len];
    decode_chunk(lut, coded, &mut out)?;
    Ok(out)
}

/// One decoder step; wrapping arithmetic so that even an invalid table cannot panic.
#[inline(always)]
fn get(lut: &[u32; LUT_SIZE], x: u32) -> (u8, u32) {
    let slot = x & SLOT_MASK;
    let e = lut[slot as usize];
    let f = (e >> 8 & 0xfff) + 1;
    // f <= 4096 and x >> 12 < 2^20: the product fits; slot - cum < f for a valid table.
    let xn = (f * (x >> PROB_BITS)).wrapping_add(slot).wrapping_sub(e >> 20);
    (e as u8, xn)
}

/// A (possibly partial) step with bounds-checked word reads; `step` holds the
/// `len` bytes of the step starting at chunk position `base`.
fn decode_step_checked(
    lut: &[u32; LUT_SIZE],
    x: &mut [u32; LANES],
    body: &[u8],
    wp: &mut usize,
    step: &mut [u8],
    base: usize,
    len: usize,
) -> Result<(), String> {
    for i in 0..SYMS_PER_LANE {
        for j in 0..LANES {
            let q = SYMS_PER_LANE * j + i;
            if q >= len {
                continue;
            }
            let (s, mut xn) = get(lut, x[j]);
            step[q] = s;
            if xn < STATE_LOWER {
                let Some(b) = body.get(2 * *wp..2 * *wp + 2) else {
                    return Err(format!("rans word stream exhausted at byte {} (lane {j})", base + q));
                };
                xn = xn << 16 | u16::from_le_bytes([b[0], b[1]]) as u32;
                *wp += 1;
            }
            x[j] = xn;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, Normal};

    fn rng(name: &str) -> StdRng {
        let seed = std::env::var("RANS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random::<u64>);
        println!("{name}: RANS_SEED={seed}");
        StdRng::seed_from_u64(seed)
    }

    /// A model of the warp kernel: all 32 lanes in lockstep, word indices from
    /// the need mask by popcount, as the format specifies.
    fn warp_model(lut: &[u32], coded: &[u8], n: usize) -> Result<Vec<u8>, String> {
        let words: Vec<u32> = coded[HEADER_BYTES..].chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]) as u32).collect();
        let mut x: Vec<u32> = (0..LANES).map(|j| u32::from_le_bytes(coded[4 * j..4 * j + 4].try_into().unwrap())).collect();
        let mut out = vec![0u8; n];
        let mut base = 0usize;
        for t in 0..n.div_ceil(STEP_BYTES) {
            for i in 0..4 {
                let mut need = 0u32;
                for j in 0..LANES {
                    let p = t * STEP_BYTES + 4 * j + i;
                    if p < n {
                        let e = lut[(x[j] & 4095) as usize];
                        out[p] = e as u8;
                        x[j] = ((e >> 8 & 0xfff) + 1) * (x[j] >> 12) + (x[j] & 4095) - (e >> 20);
                        need |= ((x[j] < STATE_LOWER) as u32) << j;
                    }
                }
                for j in 0..LANES {
                    if need >> j & 1 == 1 {
                        let k = base + (need & ((1u32 << j) - 1)).count_ones() as usize;
                        x[j] = x[j] << 16 | *words.get(k).ok_or("exhausted")?;
                    }
                }
                base += need.count_ones() as usize;
            }
        }
        if base != words.len() || x.iter().any(|&s| s != STATE_LOWER) {
            return Err("bad end".into());
        }
        Ok(out)
    }

    fn round_trip(data: &[u8], table: &FreqTable) -> Vec<u8> {
        let coded = encode_chunk(table, data).expect("encodable");
        let lut = decode_lut(table);
        let back = decode_chunk_to_vec(&lut, &coded, data.len()).unwrap();
        assert_eq!(back, data, "round trip of {} bytes", data.len());
        assert_eq!(warp_model(&lut, &coded, data.len()).unwrap(), data, "warp model");
        coded
    }

    fn gaussian_int8(r: &mut StdRng, n: usize, width: usize) -> Vec<u8> {
        let normal = Normal::new(0.0f32, 1.0).unwrap();
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let row: Vec<f32> = (0..width).map(|_| normal.sample(r)).collect();
            let s = row.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
            out.extend(row.iter().map(|v| (v / s).round() as i8 as u8));
        }
        out.truncate(n);
        out
    }

    const LENGTHS: [usize; 12] = [0, 1, 2, 3, 4, 5, 127, 128, 129, 4095, 16384, 16385];

    fn lengths(r: &mut StdRng) -> Vec<usize> {
        let mut l = LENGTHS.to_vec();
        l.extend((0..8).map(|_| r.gen_range(0..40000)));
        l
    }

    #[test]
    fn round_trips() {
        let mut r = rng("round_trips");
        for n in lengths(&mut r) {
            let sources: Vec<(&str, Vec<u8>)> = vec![
                ("one symbol", vec![0x9c; n]),
                ("all zero", vec![0; n]),
                ("two symbols", (0..n).map(|_| if r.gen_bool(0.3) { 3 } else { 250 }).collect()),
                ("two symbols, rare", (0..n).map(|_| if r.gen_bool(0.001) { 1 } else { 0 }).collect()),
                ("uniform 256", (0..n).map(|_| r.gen()).collect()),
                ("gaussian + outliers", {
                    let mut g = gaussian_int8(&mut r, n, 4096);
                    for _ in 0..n / 500 + 1 {
                        if n > 0 {
                            let k = r.gen_range(0..n);
                            g[k] = if r.gen() { 127 } else { (-127i8) as u8 };
                        }
                    }
                    g
                }),
            ];
            for (name, data) in sources {
                let table = FreqTable::from_bytes(&data);
                let coded = round_trip(&data, &table);
                if name == "one symbol" || name == "all zero" {
                    // freq == M: the state never moves, no words at all.
                    assert_eq!(coded.len(), HEADER_BYTES, "{name} {n}");
                }
                // Also under a table with every symbol present.
                let mut h = histogram(&data);
                h.iter_mut().for_each(|c| *c += 1);
                round_trip(&data, &FreqTable::from_histogram(&h));
            }
        }
    }

    #[test]
    fn degenerate_tables() {
        let t = FreqTable::from_histogram(&[0; 256]);
        assert_eq!(t.freqs()[0], 4096);
        round_trip(&[], &t);
        let mut h = [0u64; 256];
        h[200] = 5;
        assert_eq!(FreqTable::from_histogram(&h).freqs()[200], 4096);
        h[7] = u64::MAX / 2;
        let t = FreqTable::from_histogram(&h);
        assert_eq!((t.freqs()[7], t.freqs()[200]), (4095, 1));
        let t = FreqTable::from_histogram(&[1; 256]);
        assert!(t.freqs().iter().all(|&f| f == 16));
        // 255 symbols once and one a billion times: the rare ones keep freq 1.
        let mut h = [1u64; 256];
        h[0] = 1_000_000_000;
        let t = FreqTable::from_histogram(&h);
        assert_eq!(t.freqs()[0], 4096 - 255);
    }

    #[test]
    fn zero_frequency_byte_is_none() {
        let t = FreqTable::from_bytes(&[1, 2, 3]);
        assert!(encode_chunk(&t, &[1, 2, 4]).is_none());
        assert!(encode_chunk(&t, &vec![5u8; 300]).is_none());
        assert!(encode_chunk(&t, &[]).is_some());
        let r = encode_chunks(&t, &[1, 2, 3, 9, 1, 1], 3);
        assert!(r[0].is_some() && r[1].is_none());
    }

    #[test]
    fn tables_are_optimal() {
        let mut r = rng("tables_are_optimal");
        for round in 0..200 {
            let mut h = [0u64; 256];
            let k = r.gen_range(2..=256);
            for _ in 0..k {
                let s = r.gen_range(0..256);
                h[s] = match round % 3 {
                    0 => r.gen_range(1..10),
                    1 => r.gen_range(1..1_000_000),
                    _ => 1u64 << r.gen_range(0..40),
                };
            }
            let t = FreqTable::from_histogram(&h);
            let f = t.freqs();
            assert_eq!(f.iter().map(|&v| v as u32).sum::<u32>(), 4096);
            for s in 0..256 {
                assert_eq!(h[s] > 0, f[s] > 0, "presence of {s}");
            }
            // Optimality certificate: no unit move between two symbols lowers the cost.
            let cost = t.cost_bits(&h).unwrap();
            for a in 0..256 {
                for b in 0..256 {
                    if a != b && f[a] > 0 && f[b] > 1 {
                        let mut g = f.to_vec();
                        g[a] += 1;
                        g[b] -= 1;
                        let c2 = FreqTable::from_freqs(&g).unwrap().cost_bits(&h).unwrap();
                        assert!(c2 >= cost * (1.0 - 1e-9), "move {b}->{a} improves {cost} to {c2}");
                    }
                }
            }
        }
    }

    #[test]
    fn hostile_tables_rejected() {
        let ok = FreqTable::from_bytes(b"hello").to_freqs();
        assert_eq!(FreqTable::from_freqs(&ok).unwrap().to_freqs(), ok);
        assert!(FreqTable::from_freqs(&ok[..255]).is_err());
        assert!(FreqTable::from_freqs(&[]).is_err());
        assert!(FreqTable::from_freqs(&[ok.clone(), vec![0]].concat()).is_err());
        let mut bad = ok.clone();
        bad[0] += 1;
        assert!(FreqTable::from_freqs(&bad).is_err());
        let mut bad = vec![0u16; 256];
        bad[0] = 4097;
        assert!(FreqTable::from_freqs(&bad).is_err());
        let bad = vec![u16::MAX; 256];
        assert!(FreqTable::from_freqs(&bad).is_err());
        // Sums to 4096 modulo 2^16.
        let mut bad = vec![0u16; 256];
        bad[0] = 4096;
        bad[1] = 65535;
        bad[2] = 1;
        assert!(FreqTable::from_freqs(&bad).is_err());
        let mut r = rng("hostile_tables_rejected");
        for _ in 0..1000 {
            let v: Vec<u16> = (0..256).map(|_| r.gen_range(0..40)).collect();
            let _ = FreqTable::from_freqs(&v);
        }
    }

    #[test]
    fn corrupted_chunks_never_panic() {
        let mut r = rng("corrupted_chunks_never_panic");
        for &n in &[0usize, 1, 5, 129, 700, 3000] {
            let data = gaussian_int8(&mut r, n, 4096);
            let table = FreqTable::from_bytes(&data);
            let lut = decode_lut(&table);
            let coded = encode_chunk(&table, &data).unwrap();
            let mut out = vec![0u8; n];
            for cut in 0..coded.len() {
                assert!(decode_chunk(&lut, &coded[..cut], &mut out).is_err(), "cut {cut} of {n}");
            }
            for extra in 1..=5 {
                let mut e = coded.clone();
                e.extend((0..extra).map(|_| r.gen::<u8>()));
                assert!(decode_chunk(&lut, &e, &mut out).is_err(), "extended by {extra}");
            }
            let mut undetected = 0;
            for bit in 0..coded.len() * 8 {
                let mut e = coded.clone();
                e[bit / 8] ^= 1 << (bit % 8);
                if decode_chunk(&lut, &e, &mut out).is_ok() {
                    undetected += 1;
                }
            }
            println!("n={n}: {} bit flips, {undetected} decoded without error", coded.len() * 8);
            // Wrong decoded length.
            for m in [n + 1, n.saturating_sub(1), n + 128] {
                if m != n {
                    let mut o = vec![0u8; m];
                    let _ = decode_chunk(&lut, &coded, &mut o);
                }
            }
            // Other tables, including hostile LUT contents.
            let _ = decode_chunk(&decode_lut(&FreqTable::from_histogram(&[1; 256])), &coded, &mut out);
            let junk: Vec<u32> = (0..LUT_SIZE).map(|_| r.gen()).collect();
            let _ = decode_chunk(&junk, &coded, &mut out);
            assert!(decode_chunk(&lut[..100], &coded, &mut out).is_err());
        }
        // Pure garbage.
        let lut = decode_lut(&FreqTable::from_histogram(&[1; 256]));
        for _ in 0..3000 {
            let len = r.gen_range(0..2000);
            let mut g: Vec<u8> = (0..len).map(|_| r.gen()).collect();
            if len >= HEADER_BYTES && r.gen() {
                for j in 0..LANES {
                    g[4 * j..4 * j + 4].copy_from_slice(&r.gen_range(STATE_LOWER..=u32::MAX).to_le_bytes());
                }
            }
            let mut out = vec![0u8; r.gen_range(0..3000)];
            let _ = decode_chunk(&lut, &g, &mut out);
        }
    }

    #[test]
    fn chunks_match_sequential() {
        let mut r = rng("chunks_match_sequential");
        let data = gaussian_int8(&mut r, 300_000, 14336);
        let table = FreqTable::from_bytes(&data);
        let lut = decode_lut(&table);
        let chunks = encode_chunks(&table, &data, 16384);
        assert_eq!(chunks.len(), data.len().div_ceil(16384));
        for (c, d) in chunks.iter().zip(data.chunks(16384)) {
            let c = c.as_ref().unwrap();
            assert_eq!(c, &encode_chunk(&table, d).unwrap());
            assert_eq!(decode_chunk_to_vec(&lut, c, d.len()).unwrap(), d);
        }
    }

    #[test]
    fn lut_packing() {
        let t = FreqTable::from_bytes(&[0, 0, 0, 5, 5, 255]);
        let lut = decode_lut(&t);
        for slot in 0..LUT_SIZE as u32 {
            let e = lut[slot as usize];
            let (s, f, c) = ((e & 0xff) as usize, (e >> 8 & 0xfff) + 1, e >> 20);
            assert_eq!(f, t.freqs()[s] as u32);
            assert!(c <= slot && slot < c + f);
        }
        let one = decode_lut(&FreqTable::from_bytes(&[42]));
        assert!(one.iter().all(|&e| e == 42 | 4095 << 8));
    }
}
