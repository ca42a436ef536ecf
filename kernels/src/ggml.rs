//! GGUF block types computed on as stored: a fused GEMV for M = 1..=8
//! (`y[m, n] = Σ_k x[m, k] · w[n, k]`, w dequantized in registers) and a dequantization to
//! FP16 for larger batches (then cuBLAS), for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K.
//! The blocks sit in VRAM in `abi::GgmlLayout`'s planes (one per struct field, aligned).
//!
//! Every type is written as sub-blocks of 16 or 32 values with `value = scale · u − off`,
//! `u` the unsigned stored quant (Q8_0: the signed byte, `off` = 0). A lane takes one
//! *task* of a row at a time (a 32-value block, or 64 values of a 256-value super-block)
//! and walks it in groups of 8 consecutive values, one 16-byte activation load each. Per
//! sub-block it sums `x·u` and `x` and adds `scale · Σx·u − off · Σx`, so the offset costs
//! nothing per value. Each warp computes `GGML_GEMV_ROWS` rows, so that each activation
//! load and conversion serves them all (at 4–6 bits a weight, re-reading the activations
//! per row would cost more L1 traffic than the weights cost DRAM traffic).
use crate::abi::{GgmlLayout, GEMV_MAX_M, GGML_GEMV_ROWS, GGML_LAYOUTS};
use crate::dequant::pack_f16;
use crate::ptx::{block_dim_x, block_x, f16x2_to_f32, fma, i8_to_f32, load_cached_v4, load_stream_v4, store_v4, thread_x, u8_to_f32, unroll, warp_sum, WARP};

const R: usize = GGML_GEMV_ROWS as usize;
const _: () = assert!(R == 2, "the unroll! lists below spell out rows 0..R");

/// One lane's loads for one (row, task): quant words, high-bit words, and the task's
/// sub-block scales and offsets (at most 4 sub-blocks a task).
#[derive(Clone, Copy)]
struct Task {
    q: [u32; 8],
    h: [u32; 8],
    scale: [f32; 4],
    off: [f32; 4],
}

const NO_TASK: Task = Task { q: [0; 8], h: [0; 8], scale: [0.0; 4], off: [0.0; 4] };

/// A tensor's planes: `blocks` blocks of `LAYOUT`.
struct Planes {
    base: *const u8,
    blocks: u64,
}

impl Planes {
    #[inline(always)]
    unsafe fn field(&self, layout: &GgmlLayout, f: usize) -> *const u8 {
        self.base.add(layout.plane(f, self.blocks) as usize)
    }
}

trait Blocks {
    /// Index in `GGML_LAYOUTS`.
    const LAYOUT: usize;
    /// Tasks per block, 8-value groups per task, groups per sub-block.
    const TASKS: u32;
    const GROUPS: usize;
    const SUB: usize;
    /// `u` is the signed byte (`quants` gives it biased by 128, as `i8_to_f32` takes it).
    const SIGNED: bool = false;
    /// Symmetric types store `u = q + ZP` (`off` = `ZP · scale`); the dequantization
    /// computes `scale · (u − ZP)`, which is the reference's order of operations, signed
    /// zeros included.
    const ZP: f32 = 0.0;
    unsafe fn load(p: &Planes, blk: u64, part: u32) -> Task;
    /// Group `G`'s 8 quants, one byte each in value order.
    fn quants<const G: usize>(t: &Task, part: u32) -> [u32; 2];
    /// Index within the block of group `G`'s first value.
    fn x_index<const G: usize>(part: u32) -> u32;
}

const LOW: u32 = 0x0F0F_0F0F;

/// Nibble `hi` (0: low, 1: high) of each byte of two words.
#[inline(always)]
fn nibbles(a: u32, b: u32, hi: bool) -> [u32; 2] {
    if hi {
        [(a >> 4) & LOW, (b >> 4) & LOW]
    } else {
        [a & LOW, b & LOW]
    }
}

/// Bits 0..4 of `b4` moved to bit 4 of bytes 0..4: the multiplier's terms 2^(7i) send bit i
/// to bit 8i, and no two terms land on one bit, so no carry mixes them.
#[inline(always)]
fn spread_bit4(b4: u32) -> u32 {
    (((b4 & 0xF) * 0x0020_4081) & 0x0101_0101) << 4
}

#[inline(always)]
unsafe fn f16_at(p: *const u8, i: u64) -> f32 {
    f16::from_bits(*(p as *const u16).add(i as usize)) as f32
}

/// Byte `i` (runtime, < 12) of three words, without indexing a register array by a
/// runtime value (which would move it to local memory).
#[inline(always)]
fn byte_of3(w: [u32; 3], i: u32) -> u32 {
    let word = if i < 4 {
        w[0]
    } else if i < 8 {
        w[1]
    } else {
        w[2]
    };
    (word >> (8 * (i & 3))) & 0xFF
}

/// The 6-bit (scale, min) of sub-block `j` of Q4_K / Q5_K (`get_scale_min_k4`).
#[inline(always)]
fn scale_min_k4(s: [u32; 3], j: u32) -> (f32, f32) {
    let (sc, m) = if j < 4 {
        (byte_of3(s, j) & 63, byte_of3(s, j + 4) & 63)
    } else {
        let hi = byte_of3(s, j + 4);
        ((hi & 0xF) | ((byte_of3(s, j - 4) >> 6) << 4), (hi >> 4) | ((byte_of3(s, j) >> 6) << 4))
    };
    (sc as f32, m as f32)
}

/// 32-value blocks: one task each, four groups, one sub-block. Value j < 16 is the low
/// nibble of qs[j], value j + 16 its high nibble, so group G is nibble G / 2 of bytes
/// 8·(G % 2)..+8.
macro_rules! block32 {
    ($ty:ident, $layout:literal, zp = $zp:expr, fn load($p:ident, $blk:ident, $l:ident) $load:block, fn quants($t:ident, $g:ident) $quants:block) => {
        struct $ty;
        impl Blocks for $ty {
            const LAYOUT: usize = $layout;
            const TASKS: u32 = 1;
            const GROUPS: usize = 4;
            const SUB: usize = 4;
            const ZP: f32 = $zp;
            #[inline(always)]
            unsafe fn load($p: &Planes, $blk: u64, _part: u32) -> Task {
                let $l = &GGML_LAYOUTS[$layout];
                $load
            }
            #[inline(always)]
            fn quants<const $g: usize>($t: &Task, _part: u32) -> [u32; 2] {
                $quants
            }
            #[inline(always)]
            fn x_index<const G: usize>(_part: u32) -> u32 {
                8 * G as u32
            }
        }
    };
}

/// The 16 quant bytes of a 32-value block as four words.
#[inline(always)]
unsafe fn qs16(p: *const u8, blk: u64) -> [u32; 8] {
    let a = load_stream_v4(p.add(blk as usize * 16) as *const u32);
    [a[0], a[1], a[2], a[3], 0, 0, 0, 0]
}

/// A symmetric block's task: `value = d · (u − zp)`.
#[inline(always)]
fn symmetric(q: [u32; 8], h: [u32; 8], d: f32, zp: f32) -> Task {
    Task { q, h, scale: [d, 0.0, 0.0, 0.0], off: [zp * d, 0.0, 0.0, 0.0] }
}

/// An asymmetric block's task: `value = d · u + m`.
#[inline(always)]
fn with_min(q: [u32; 8], h: [u32; 8], d: f32, m: f32) -> Task {
    Task { q, h, scale: [d, 0.0, 0.0, 0.0], off: [-m, 0.0, 0.0, 0.0] }
}

block32!(Q4_0, 0, zp = 8.0,
    fn load(p, blk, l) { symmetric(qs16(p.field(l, 1), blk), [0; 8], f16_at(p.field(l, 0), blk), 8.0) },
    fn quants(t, G) { nibbles(t.q[2 * (G % 2)], t.q[2 * (G % 2) + 1], G >= 2) });
block32!(Q4_1, 1, zp = 0.0,
    fn load(p, blk, l) { with_min(qs16(p.field(l, 2), blk), [0; 8], f16_at(p.field(l, 0), blk), f16_at(p.field(l, 1), blk)) },
    fn quants(t, G) { nibbles(t.q[2 * (G % 2)], t.q[2 * (G % 2) + 1], G >= 2) });

/// Q5_0 / Q5_1: value v's fifth bit is bit v of the 32-bit `qh`.
#[inline(always)]
fn quants_q5<const G: usize>(t: &Task) -> [u32; 2] {
    let [a, b] = nibbles(t.q[2 * (G % 2)], t.q[2 * (G % 2) + 1], G >= 2);
    let bits = t.h[0] >> (8 * G);
    [a | spread_bit4(bits), b | spread_bit4(bits >> 4)]
}

block32!(Q5_0, 2, zp = 16.0,
    fn load(p, blk, l) {
        let qh = *(p.field(l, 1) as *const u32).add(blk as usize);
        symmetric(qs16(p.field(l, 2), blk), [qh, 0, 0, 0, 0, 0, 0, 0], f16_at(p.field(l, 0), blk), 16.0)
    },
    fn quants(t, G) { quants_q5::<G>(t) });
block32!(Q5_1, 3, zp = 0.0,
    fn load(p, blk, l) {
        let qh = *(p.field(l, 2) as *const u32).add(blk as usize);
        with_min(qs16(p.field(l, 3), blk), [qh, 0, 0, 0, 0, 0, 0, 0], f16_at(p.field(l, 0), blk), f16_at(p.field(l, 1), blk))
    },
    fn quants(t, G) { quants_q5::<G>(t) });

/// Q8_0: 32 signed bytes, group G is bytes 8G..8G + 8.
struct Q8_0;
impl Blocks for Q8_0 {
    const LAYOUT: usize = 4;
    const TASKS: u32 = 1;
    const GROUPS: usize = 4;
    const SUB: usize = 4;
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn load(p: &Planes, blk: u64, _part: u32) -> Task {
        let l = &GGML_LAYOUTS[Self::LAYOUT];
        let qs = p.field(l, 1).add(blk as usize * 32) as *const u32;
        let (a, b) = (load_stream_v4(qs), load_stream_v4(qs.add(4)));
        let d = f16_at(p.field(l, 0), blk);
        Task { q: [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]], h: [0; 8], scale: [d, 0.0, 0.0, 0.0], off: [0.0; 4] }
    }
    #[inline(always)]
    fn quants<const G: usize>(t: &Task, _part: u32) -> [u32; 2] {
        [t.q[2 * G] ^ 0x8080_8080, t.q[2 * G + 1] ^ 0x8080_8080]
    }
    #[inline(always)]
    fn x_index<const G: usize>(_part: u32) -> u32 {
        8 * G as u32
    }
}

/// Q4_K / Q5_K: task c (of 4) is values 64c..64c + 64, sub-blocks 2c (the low nibbles of
/// qs[32c..32c + 32]) and 2c + 1 (their high nibbles); group G is nibble G / 4 of bytes
/// 32c + 8·(G % 4)..+8. `y = (d · scale) · u − dmin · min`.
#[inline(always)]
unsafe fn load_k4(p: &Planes, l: &GgmlLayout, qs_field: usize, blk: u64, c: u32) -> Task {
    let d = f16_at(p.field(l, 0), blk);
    let dmin = f16_at(p.field(l, 1), blk);
    let s = (p.field(l, 2) as *const u32).add(blk as usize * 3);
    let s = [*s, *s.add(1), *s.add(2)];
    let qs = p.field(l, qs_field).add(blk as usize * 128 + c as usize * 32) as *const u32;
    let (a, b) = (load_stream_v4(qs), load_stream_v4(qs.add(4)));
    let (sc0, m0) = scale_min_k4(s, 2 * c);
    let (sc1, m1) = scale_min_k4(s, 2 * c + 1);
    Task { q: [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]], h: [0; 8], scale: [d * sc0, d * sc1, 0.0, 0.0], off: [dmin * m0, dmin * m1, 0.0, 0.0] }
}

struct Q4_K;
impl Blocks for Q4_K {
    const LAYOUT: usize = 5;
    const TASKS: u32 = 4;
    const GROUPS: usize = 8;
    const SUB: usize = 4;
    #[inline(always)]
    unsafe fn load(p: &Planes, blk: u64, part: u32) -> Task {
        load_k4(p, &GGML_LAYOUTS[Self::LAYOUT], 3, blk, part)
    }
    #[inline(always)]
    fn quants<const G: usize>(t: &Task, _part: u32) -> [u32; 2] {
        nibbles(t.q[2 * (G % 4)], t.q[2 * (G % 4) + 1], G >= 4)
    }
    #[inline(always)]
    fn x_index<const G: usize>(part: u32) -> u32 {
        64 * part + 8 * G as u32
    }
}

/// Q5_K: Q4_K plus bit (2c + G / 4) of qh[l] as value l's fifth bit.
struct Q5_K;
impl Blocks for Q5_K {
    const LAYOUT: usize = 6;
    const TASKS: u32 = 4;
    const GROUPS: usize = 8;
    const SUB: usize = 4;
    #[inline(always)]
    unsafe fn load(p: &Planes, blk: u64, part: u32) -> Task {
        let l = &GGML_LAYOUTS[Self::LAYOUT];
        let mut t = load_k4(p, l, 4, blk, part);
        let qh = p.field(l, 3).add(blk as usize * 32) as *const u32;
        let (a, b) = (load_stream_v4(qh), load_stream_v4(qh.add(4)));
        t.h = [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]];
        t
    }
    #[inline(always)]
    fn quants<const G: usize>(t: &Task, part: u32) -> [u32; 2] {
        let [a, b] = nibbles(t.q[2 * (G % 4)], t.q[2 * (G % 4) + 1], G >= 4);
        let bit = 2 * part + (G / 4) as u32;
        let high = |h: u32| ((h >> bit) & 0x0101_0101) << 4;
        [a | high(t.h[2 * (G % 4)]), b | high(t.h[2 * (G % 4) + 1])]
    }
    #[inline(always)]
    fn x_index<const G: usize>(part: u32) -> u32 {
        64 * part + 8 * G as u32
    }
}

/// Q6_K: task p (of 4) is half n = p / 2 of the super-block, l in 16·(p % 2)..+16: values
/// 128n + 32v + l for v in 0..4, sub-block 8n + 2v + p % 2 (16 values, int8 scale). Value
/// set v takes the low (v < 2) or high nibble of ql[64n + 32·(v % 2) + l] and bits 2v..2v+2
/// of qh[32n + l]; group G is set G / 2, l offset 8·(G % 2). `y = (d · scale) · (u − 32)`.
struct Q6_K;
impl Blocks for Q6_K {
    const LAYOUT: usize = 7;
    const TASKS: u32 = 4;
    const GROUPS: usize = 8;
    const SUB: usize = 2;
    const ZP: f32 = 32.0;
    #[inline(always)]
    unsafe fn load(p: &Planes, blk: u64, part: u32) -> Task {
        let l = &GGML_LAYOUTS[Self::LAYOUT];
        let (n, half) = (part / 2, part % 2);
        let ql = p.field(l, 0).add(blk as usize * 128 + (64 * n + 16 * half) as usize) as *const u32;
        let (a, b) = (load_stream_v4(ql), load_stream_v4(ql.add(8)));
        let h = load_stream_v4(p.field(l, 1).add(blk as usize * 64 + (32 * n + 16 * half) as usize) as *const u32);
        let sw = load_stream_v4(p.field(l, 2).add(blk as usize * 16) as *const u32);
        let d = f16_at(p.field(l, 3), blk);
        let mut scale = [0f32; 4];
        unroll!(V in [0, 1, 2, 3] {
            // Scale byte 8n + half + 2V: word 2n + V / 2, byte half + 2·(V % 2).
            let word = if n == 0 { sw[V / 2] } else { sw[2 + V / 2] };
            let sc = (word >> (8 * (half + 2 * (V as u32 % 2)))) as u8 as i8;
            scale[V] = d * sc as f32;
        });
        Task {
            q: [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]],
            h: [h[0], h[1], h[2], h[3], 0, 0, 0, 0],
            scale,
            off: [32.0 * scale[0], 32.0 * scale[1], 32.0 * scale[2], 32.0 * scale[3]],
        }
    }
    #[inline(always)]
    fn quants<const G: usize>(t: &Task, _part: u32) -> [u32; 2] {
        let v = G / 2;
        let w = 2 * (G % 2);
        let [a, b] = nibbles(t.q[w + 4 * (v % 2)], t.q[w + 4 * (v % 2) + 1], v >= 2);
        let high = |h: u32| ((h >> (2 * v)) & 0x0303_0303) << 4;
        [a | high(t.h[w]), b | high(t.h[w + 1])]
    }
    #[inline(always)]
    fn x_index<const G: usize>(part: u32) -> u32 {
        128 * (part / 2) + 32 * (G as u32 / 2) + 16 * (part % 2) + 8 * (G as u32 % 2)
    }
}

/// The 8 quants of a group as f32 (`u`, or the signed byte for `SIGNED` types).
#[inline(always)]
fn quants_f32<F: Blocks>(u: [u32; 2]) -> [f32; 8] {
    let mut v = [0f32; 8];
    unroll!(I in [0, 1] {
        if F::SIGNED {
            v[4 * I] = i8_to_f32::<0>(u[I]);
            v[4 * I + 1] = i8_to_f32::<1>(u[I]);
            v[4 * I + 2] = i8_to_f32::<2>(u[I]);
            v[4 * I + 3] = i8_to_f32::<3>(u[I]);
        } else {
            v[4 * I] = u8_to_f32::<0>(u[I]);
            v[4 * I + 1] = u8_to_f32::<1>(u[I]);
            v[4 * I + 2] = u8_to_f32::<2>(u[I]);
            v[4 * I + 3] = u8_to_f32::<3>(u[I]);
        }
    });
    v
}

/// 8 FP16 activations (16-byte aligned) as f32.
#[inline(always)]
unsafe fn x8(x: *const u16) -> [f32; 8] {
    let w = load_cached_v4(x as *const u32);
    let mut v = [0f32; 8];
    unroll!(I in [0, 1, 2, 3] {
        (v[2 * I], v[2 * I + 1]) = f16x2_to_f32(w[I]);
    });
    v
}

#[inline(always)]
unsafe fn gemv<F: Blocks, const M: usize>(x: *const u16, w: *const u8, y: *mut u16, n: u32, k: u32) {
    let layout = &GGML_LAYOUTS[F::LAYOUT];
    let lane = thread_x() % WARP;
    let row0 = (block_x() * (block_dim_x() / WARP) + thread_x() / WARP) * GGML_GEMV_ROWS;
    if row0 >= n {
        return;
    }
    let bpr = k / layout.block_elems;
    let p = Planes { base: w, blocks: n as u64 * bpr as u64 };
    // A last odd row is computed twice (the second copy is not stored).
    let rows = [row0, core::cmp::min(row0 + 1, n - 1)];
    let k_us = k as usize;
    let mut acc = [[0f32; R]; M];
    let mut t = lane;
    while t < bpr * F::TASKS {
        let (blk, part) = ((t / F::TASKS) as u64, t % F::TASKS);
        let mut task = [NO_TASK; R];
        unroll!(RI in [0, 1] {
            task[RI] = F::load(&p, rows[RI] as u64 * bpr as u64 + blk, part);
        });
        let xb = blk as usize * layout.block_elems as usize;
        let mut psum = [[0f32; R]; M];
        let mut xsum = [0f32; M];
        unroll!(G in [0, 1, 2, 3, 4, 5, 6, 7] {
            if G < F::GROUPS {
                let u = [quants_f32::<F>(F::quants::<G>(&task[0], part)), quants_f32::<F>(F::quants::<G>(&task[1], part))];
                let xo = xb + F::x_index::<G>(part) as usize;
                unroll!(MI in [0, 1, 2, 3, 4, 5, 6, 7] {
                    if MI < M {
                        let xv = x8(x.add(MI * k_us + xo));
                        unroll!(I in [0, 1, 2, 3, 4, 5, 6, 7] {
                            xsum[MI] += xv[I];
                            psum[MI][0] = fma(xv[I], u[0][I], psum[MI][0]);
                            psum[MI][1] = fma(xv[I], u[1][I], psum[MI][1]);
                        });
                    }
                });
                if G % F::SUB == F::SUB - 1 {
                    let s = G / F::SUB;
                    unroll!(MI in [0, 1, 2, 3, 4, 5, 6, 7] {
                        if MI < M {
                            unroll!(RI in [0, 1] {
                                acc[MI][RI] = fma(task[RI].scale[s], psum[MI][RI], fma(-task[RI].off[s], xsum[MI], acc[MI][RI]));
                                psum[MI][RI] = 0.0;
                            });
                            xsum[MI] = 0.0;
                        }
                    });
                }
            }
        });
        t += WARP;
    }
    unroll!(MI in [0, 1, 2, 3, 4, 5, 6, 7] {
        if MI < M {
            unroll!(RI in [0, 1] {
                let total = warp_sum(acc[MI][RI]);
                if lane == 0 && row0 + (RI as u32) < n {
                    *y.add(MI * n as usize + (row0 as usize + RI)) = (total as f16).to_bits();
                }
            });
        }
    });
}

/// `out[r - row0, c]` = the reference dequantization of w's row r, rounded to FP16 (bit
/// for bit what `codec::ggml::dequantize` gives, then `as f16`), for r = row0 + the block's
/// index: a band of rows, one block per row.
#[inline(always)]
unsafe fn dequant<F: Blocks>(w: *const u8, out: *mut u16, n: u32, k: u32, row0: u32) {
    let layout = &GGML_LAYOUTS[F::LAYOUT];
    let r = row0 + block_x();
    if r >= n {
        return;
    }
    let bpr = k / layout.block_elems;
    let p = Planes { base: w, blocks: n as u64 * bpr as u64 };
    let row_out = out.add(block_x() as usize * k as usize);
    let mut t = thread_x();
    while t < bpr * F::TASKS {
        let (blk, part) = ((t / F::TASKS) as u64, t % F::TASKS);
        let task = F::load(&p, r as u64 * bpr as u64 + blk, part);
        let xb = blk as usize * layout.block_elems as usize;
        unroll!(G in [0, 1, 2, 3, 4, 5, 6, 7] {
            if G < F::GROUPS {
                let u = quants_f32::<F>(F::quants::<G>(&task, part));
                let (scale, off) = (task.scale[G / F::SUB], task.off[G / F::SUB]);
                let mut v = [0f32; 8];
                unroll!(I in [0, 1, 2, 3, 4, 5, 6, 7] {
                    v[I] = if F::ZP != 0.0 { scale * (u[I] - F::ZP) } else { scale * u[I] - off };
                });
                let dst = row_out.add(xb + F::x_index::<G>(part) as usize) as *mut u32;
                store_v4(dst, [pack_f16(v[0], v[1]), pack_f16(v[2], v[3]), pack_f16(v[4], v[5]), pack_f16(v[6], v[7])]);
            }
        });
        t += block_dim_x();
    }
}

macro_rules! ggml_entries {
    ($ty:ident: $dequant:ident, [$($name:ident = $m:literal),*]) => {
        $(
            /// Launch: blockDim.x = 32 · GGML_GEMV_WARPS, gridDim.x = ceil(n / (GGML_GEMV_ROWS ·
            /// GGML_GEMV_WARPS)); k a multiple of the block's values, x and y 16-byte aligned.
            #[no_mangle]
            pub unsafe extern "ptx-kernel" fn $name(x: *const u16, w: *const u8, y: *mut u16, n: u32, k: u32) {
                gemv::<$ty, $m>(x, w, y, n, k)
            }
            const _: () = assert!(crate::abi::same_name(stringify!($name), GGML_LAYOUTS[<$ty as Blocks>::LAYOUT].gemv[$m - 1]));
        )*
        /// Launch: gridDim.x = rows of the band from `row0` (one block per row), any
        /// blockDim.x; `out` 16-byte aligned.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $dequant(w: *const u8, out: *mut u16, n: u32, k: u32, row0: u32) {
            dequant::<$ty>(w, out, n, k, row0)
        }
        const _: () = assert!(crate::abi::same_name(stringify!($dequant), GGML_LAYOUTS[<$ty as Blocks>::LAYOUT].dequant));
    };
}

const _: () = assert!(GEMV_MAX_M == 8);
ggml_entries!(Q4_0: ggml_dequant_q4_0, [ggml_gemv_q4_0_m1 = 1, ggml_gemv_q4_0_m2 = 2, ggml_gemv_q4_0_m3 = 3, ggml_gemv_q4_0_m4 = 4, ggml_gemv_q4_0_m5 = 5, ggml_gemv_q4_0_m6 = 6, ggml_gemv_q4_0_m7 = 7, ggml_gemv_q4_0_m8 = 8]);
ggml_entries!(Q4_1: ggml_dequant_q4_1, [ggml_gemv_q4_1_m1 = 1, ggml_gemv_q4_1_m2 = 2, ggml_gemv_q4_1_m3 = 3, ggml_gemv_q4_1_m4 = 4, ggml_gemv_q4_1_m5 = 5, ggml_gemv_q4_1_m6 = 6, ggml_gemv_q4_1_m7 = 7, ggml_gemv_q4_1_m8 = 8]);
ggml_entries!(Q5_0: ggml_dequant_q5_0, [ggml_gemv_q5_0_m1 = 1, ggml_gemv_q5_0_m2 = 2, ggml_gemv_q5_0_m3 = 3, ggml_gemv_q5_0_m4 = 4, ggml_gemv_q5_0_m5 = 5, ggml_gemv_q5_0_m6 = 6, ggml_gemv_q5_0_m7 = 7, ggml_gemv_q5_0_m8 = 8]);
ggml_entries!(Q5_1: ggml_dequant_q5_1, [ggml_gemv_q5_1_m1 = 1, ggml_gemv_q5_1_m2 = 2, ggml_gemv_q5_1_m3 = 3, ggml_gemv_q5_1_m4 = 4, ggml_gemv_q5_1_m5 = 5, ggml_gemv_q5_1_m6 = 6, ggml_gemv_q5_1_m7 = 7, ggml_gemv_q5_1_m8 = 8]);
ggml_entries!(Q8_0: ggml_dequant_q8_0, [ggml_gemv_q8_0_m1 = 1, ggml_gemv_q8_0_m2 = 2, ggml_gemv_q8_0_m3 = 3, ggml_gemv_q8_0_m4 = 4, ggml_gemv_q8_0_m5 = 5, ggml_gemv_q8_0_m6 = 6, ggml_gemv_q8_0_m7 = 7, ggml_gemv_q8_0_m8 = 8]);
ggml_entries!(Q4_K: ggml_dequant_q4_k, [ggml_gemv_q4_k_m1 = 1, ggml_gemv_q4_k_m2 = 2, ggml_gemv_q4_k_m3 = 3, ggml_gemv_q4_k_m4 = 4, ggml_gemv_q4_k_m5 = 5, ggml_gemv_q4_k_m6 = 6, ggml_gemv_q4_k_m7 = 7, ggml_gemv_q4_k_m8 = 8]);
ggml_entries!(Q5_K: ggml_dequant_q5_k, [ggml_gemv_q5_k_m1 = 1, ggml_gemv_q5_k_m2 = 2, ggml_gemv_q5_k_m3 = 3, ggml_gemv_q5_k_m4 = 4, ggml_gemv_q5_k_m5 = 5, ggml_gemv_q5_k_m6 = 6, ggml_gemv_q5_k_m7 = 7, ggml_gemv_q5_k_m8 = 8]);
ggml_entries!(Q6_K: ggml_dequant_q6_k, [ggml_gemv_q6_k_m1 = 1, ggml_gemv_q6_k_m2 = 2, ggml_gemv_q6_k_m3 = 3, ggml_gemv_q6_k_m4 = 4, ggml_gemv_q6_k_m5 = 5, ggml_gemv_q6_k_m6 = 6, ggml_gemv_q6_k_m7 = 7, ggml_gemv_q6_k_m8 = 8]);
