//! The GGUF block types' bits as the kernels read them (`ggml.rs`): each type written as
//! sub-blocks of 16 or 32 values with `value = scale · u − off`, `u` the unsigned stored
//! quant (Q8_0: the signed byte, `off` = 0), read one *task* at a time (a 32-value block,
//! or 64 values of a 256-value super-block) in groups of 8 consecutive values. Shared with
//! the host (included with `#[path]`, like `abi.rs`; only `core`), whose tests replay it
//! over the planes against the CPU dequantizer bit for bit; the kernels add the thread
//! mapping, the loads' cache hints and the arithmetic.
use crate::abi::{GgmlLayout, GGML_LAYOUTS};

/// One lane's loads for one (row, task): quant words, high-bit words, and the task's
/// sub-block scales and offsets (at most 4 sub-blocks a task).
#[derive(Clone, Copy)]
pub struct Task {
    pub q: [u32; 8],
    pub h: [u32; 8],
    pub scale: [f32; 4],
    pub off: [f32; 4],
}

pub const NO_TASK: Task = Task { q: [0; 8], h: [0; 8], scale: [0.0; 4], off: [0.0; 4] };

/// How the block logic reads memory: the kernels with their cache-hinted loads and FP16
/// conversion, the host's replay with plain reads. Every pointer is aligned for its width
/// (the planes' guarantee).
pub trait Mem {
    /// # Safety
    /// `p` points at 16 readable, 16-byte aligned bytes.
    unsafe fn v4(p: *const u8) -> [u32; 4];
    /// # Safety
    /// `p` points at 4 readable, 4-byte aligned bytes.
    unsafe fn word(p: *const u8) -> u32;
    /// The FP16 at `p`, widened exactly.
    ///
    /// # Safety
    /// `p` points at 2 readable, 2-byte aligned bytes.
    unsafe fn half(p: *const u8) -> f32;
}

/// A tensor's planes: `blocks` blocks of one layout.
pub struct Planes {
    pub base: *const u8,
    pub blocks: u64,
}

impl Planes {
    /// # Safety
    /// `base` holds `layout.bytes(blocks)` bytes.
    #[inline(always)]
    pub unsafe fn field(&self, layout: &GgmlLayout, f: usize) -> *const u8 {
        self.base.add(layout.plane(f, self.blocks) as usize)
    }
}

pub trait Blocks {
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
    /// # Safety
    /// `p` holds the planes of more than `blk` blocks; `part < TASKS`.
    unsafe fn load<L: Mem>(p: &Planes, blk: u64, part: u32) -> Task;
    /// Group `G`'s 8 quants, one byte each in value order.
    fn quants<const G: usize>(t: &Task, part: u32) -> [u32; 2];
    /// Index within the block of the first value of group `group` of task `part` (a
    /// runtime group for the GEMV's activation sums; constant-folded elsewhere).
    fn x_index(part: u32, group: u32) -> u32;
}

/// The value of quant `u` of a sub-block with `scale` and `off` (`Task`), in the
/// reference's order of operations: what the kernels, the CPU GEMV and the host's replay
/// all compute.
#[inline(always)]
pub fn value<F: Blocks>(u: f32, scale: f32, off: f32) -> f32 {
    if F::ZP != 0.0 {
        scale * (u - F::ZP)
    } else {
        scale * u - off
    }
}

/// Quant `i` of a group's `quants` as f32 (the signed byte for `SIGNED` types), in plain
/// Rust (the kernels convert with PTX byte tricks instead).
#[inline(always)]
pub fn quant<F: Blocks>(q: [u32; 2], i: usize) -> f32 {
    let byte = (q[i / 4] >> (8 * (i % 4))) & 0xFF;
    if F::SIGNED {
        byte as f32 - 128.0
    } else {
        byte as f32
    }
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
unsafe fn f16_at<L: Mem>(p: *const u8, i: u64) -> f32 {
    L::half(p.add(2 * i as usize))
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
        #[allow(non_camel_case_types)]
        pub struct $ty;
        impl Blocks for $ty {
            const LAYOUT: usize = $layout;
            const TASKS: u32 = 1;
            const GROUPS: usize = 4;
            const SUB: usize = 4;
            const ZP: f32 = $zp;
            #[inline(always)]
            unsafe fn load<L: Mem>($p: &Planes, $blk: u64, _part: u32) -> Task {
                let $l = &GGML_LAYOUTS[$layout];
                $load
            }
            #[inline(always)]
            fn quants<const $g: usize>($t: &Task, _part: u32) -> [u32; 2] {
                $quants
            }
            #[inline(always)]
            fn x_index(_part: u32, group: u32) -> u32 {
                8 * group
            }
        }
    };
}

/// Two 16-byte loads as a task's eight words (`[0; 4]` for a second one not needed).
#[inline(always)]
fn words8(a: [u32; 4], b: [u32; 4]) -> [u32; 8] {
    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
}

/// The 16 quant bytes of a 32-value block as four words.
#[inline(always)]
unsafe fn qs16<L: Mem>(p: *const u8, blk: u64) -> [u32; 8] {
    words8(L::v4(p.add(blk as usize * 16)), [0; 4])
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

/// Q4_0 / Q4_1 (and the low bits of Q5_0 / Q5_1): group G is nibble G / 2 of bytes
/// 8·(G % 2)..+8.
#[inline(always)]
fn quants_q4<const G: usize>(t: &Task) -> [u32; 2] {
    nibbles(t.q[2 * (G % 2)], t.q[2 * (G % 2) + 1], G >= 2)
}

block32!(Q4_0, 0, zp = 8.0,
    fn load(p, blk, l) { symmetric(qs16::<L>(p.field(l, 1), blk), [0; 8], f16_at::<L>(p.field(l, 0), blk), 8.0) },
    fn quants(t, G) { quants_q4::<G>(t) });
block32!(Q4_1, 1, zp = 0.0,
    fn load(p, blk, l) { with_min(qs16::<L>(p.field(l, 2), blk), [0; 8], f16_at::<L>(p.field(l, 0), blk), f16_at::<L>(p.field(l, 1), blk)) },
    fn quants(t, G) { quants_q4::<G>(t) });

/// Q5_0 / Q5_1: value v's fifth bit is bit v of the 32-bit `qh`.
#[inline(always)]
fn quants_q5<const G: usize>(t: &Task) -> [u32; 2] {
    let [a, b] = quants_q4::<G>(t);
    let bits = t.h[0] >> (8 * G);
    [a | spread_bit4(bits), b | spread_bit4(bits >> 4)]
}

block32!(Q5_0, 2, zp = 16.0,
    fn load(p, blk, l) {
        let qh = L::word(p.field(l, 1).add(4 * blk as usize));
        symmetric(qs16::<L>(p.field(l, 2), blk), [qh, 0, 0, 0, 0, 0, 0, 0], f16_at::<L>(p.field(l, 0), blk), 16.0)
    },
    fn quants(t, G) { quants_q5::<G>(t) });
block32!(Q5_1, 3, zp = 0.0,
    fn load(p, blk, l) {
        let qh = L::word(p.field(l, 2).add(4 * blk as usize));
        with_min(qs16::<L>(p.field(l, 3), blk), [qh, 0, 0, 0, 0, 0, 0, 0], f16_at::<L>(p.field(l, 0), blk), f16_at::<L>(p.field(l, 1), blk))
    },
    fn quants(t, G) { quants_q5::<G>(t) });

/// Q8_0: 32 signed bytes, group G is bytes 8G..8G + 8.
#[allow(non_camel_case_types)]
pub struct Q8_0;
impl Blocks for Q8_0 {
    const LAYOUT: usize = 4;
    const TASKS: u32 = 1;
    const GROUPS: usize = 4;
    const SUB: usize = 4;
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn load<L: Mem>(p: &Planes, blk: u64, _part: u32) -> Task {
        let l = &GGML_LAYOUTS[Self::LAYOUT];
        let qs = p.field(l, 1).add(blk as usize * 32);
        let (a, b) = (L::v4(qs), L::v4(qs.add(16)));
        let d = f16_at::<L>(p.field(l, 0), blk);
        Task { q: words8(a, b), h: [0; 8], scale: [d, 0.0, 0.0, 0.0], off: [0.0; 4] }
    }
    #[inline(always)]
    fn quants<const G: usize>(t: &Task, _part: u32) -> [u32; 2] {
        [t.q[2 * G] ^ 0x8080_8080, t.q[2 * G + 1] ^ 0x8080_8080]
    }
    #[inline(always)]
    fn x_index(_part: u32, group: u32) -> u32 {
        8 * group
    }
}

/// Q4_K / Q5_K: task c (of 4) is values 64c..64c + 64, sub-blocks 2c (the low nibbles of
/// qs[32c..32c + 32]) and 2c + 1 (their high nibbles); group G is nibble G / 4 of bytes
/// 32c + 8·(G % 4)..+8. `y = (d · scale) · u − dmin · min`.
#[inline(always)]
unsafe fn load_k4<L: Mem>(p: &Planes, l: &GgmlLayout, qs_field: usize, blk: u64, c: u32) -> Task {
    let d = f16_at::<L>(p.field(l, 0), blk);
    let dmin = f16_at::<L>(p.field(l, 1), blk);
    let s = p.field(l, 2).add(blk as usize * 12);
    let s = [L::word(s), L::word(s.add(4)), L::word(s.add(8))];
    let qs = p.field(l, qs_field).add(blk as usize * 128 + c as usize * 32);
    let (a, b) = (L::v4(qs), L::v4(qs.add(16)));
    let (sc0, m0) = scale_min_k4(s, 2 * c);
    let (sc1, m1) = scale_min_k4(s, 2 * c + 1);
    Task { q: words8(a, b), h: [0; 8], scale: [d * sc0, d * sc1, 0.0, 0.0], off: [dmin * m0, dmin * m1, 0.0, 0.0] }
}

#[allow(non_camel_case_types)]
pub struct Q4_K;
impl Blocks for Q4_K {
    const LAYOUT: usize = 5;
    const TASKS: u32 = 4;
    const GROUPS: usize = 8;
    const SUB: usize = 4;
    #[inline(always)]
    unsafe fn load<L: Mem>(p: &Planes, blk: u64, part: u32) -> Task {
        load_k4::<L>(p, &GGML_LAYOUTS[Self::LAYOUT], 3, blk, part)
    }
    #[inline(always)]
    fn quants<const G: usize>(t: &Task, _part: u32) -> [u32; 2] {
        nibbles(t.q[2 * (G % 4)], t.q[2 * (G % 4) + 1], G >= 4)
    }
    #[inline(always)]
    fn x_index(part: u32, group: u32) -> u32 {
        64 * part + 8 * group
    }
}

/// Q5_K: Q4_K plus bit (2c + G / 4) of qh[l] as value l's fifth bit. The task keeps only
/// its two bits of each qh byte, packed: bits 2c, 2c + 1 of qh word i sit at bits 2·(i % 4)
/// and 2·(i % 4) + 1 of each byte of `h[i / 4]` (two registers instead of eight: the
/// tensor-core GEMV holds two rows' tasks of two steps at once).
#[allow(non_camel_case_types)]
pub struct Q5_K;
impl Blocks for Q5_K {
    const LAYOUT: usize = 6;
    const TASKS: u32 = 4;
    const GROUPS: usize = 8;
    const SUB: usize = 4;
    #[inline(always)]
    unsafe fn load<L: Mem>(p: &Planes, blk: u64, part: u32) -> Task {
        let l = &GGML_LAYOUTS[Self::LAYOUT];
        let mut t = load_k4::<L>(p, l, 4, blk, part);
        let qh = p.field(l, 3).add(blk as usize * 32);
        let w = words8(L::v4(qh), L::v4(qh.add(16)));
        let two = |i: usize| ((w[i] >> (2 * part)) & 0x0303_0303) << (2 * (i % 4));
        t.h[0] = two(0) | two(1) | two(2) | two(3);
        t.h[1] = two(4) | two(5) | two(6) | two(7);
        t
    }
    #[inline(always)]
    fn quants<const G: usize>(t: &Task, part: u32) -> [u32; 2] {
        let [a, b] = Q4_K::quants::<G>(t, part);
        let high = |i: usize| ((t.h[i / 4] >> (2 * (i % 4) + G / 4)) & 0x0101_0101) << 4;
        [a | high(2 * (G % 4)), b | high(2 * (G % 4) + 1)]
    }
    #[inline(always)]
    fn x_index(part: u32, group: u32) -> u32 {
        Q4_K::x_index(part, group)
    }
}

/// Q6_K: task p (of 4) is half n = p / 2 of the super-block, l in 16·(p % 2)..+16: values
/// 128n + 32v + l for v in 0..4, sub-block 8n + 2v + p % 2 (16 values, int8 scale). Value
/// set v takes the low (v < 2) or high nibble of ql[64n + 32·(v % 2) + l] and bits 2v..2v+2
/// of qh[32n + l]; group G is set G / 2, l offset 8·(G % 2). `y = (d · scale) · (u − 32)`.
#[allow(non_camel_case_types)]
pub struct Q6_K;
impl Blocks for Q6_K {
    const LAYOUT: usize = 7;
    const TASKS: u32 = 4;
    const GROUPS: usize = 8;
    const SUB: usize = 2;
    const ZP: f32 = 32.0;
    #[inline(always)]
    unsafe fn load<L: Mem>(p: &Planes, blk: u64, part: u32) -> Task {
        let l = &GGML_LAYOUTS[Self::LAYOUT];
        let (n, half) = (part / 2, part % 2);
        let ql = p.field(l, 0).add(blk as usize * 128 + (64 * n + 16 * half) as usize);
        let (a, b) = (L::v4(ql), L::v4(ql.add(32)));
        let h = L::v4(p.field(l, 1).add(blk as usize * 64 + (32 * n + 16 * half) as usize));
        let sw = L::v4(p.field(l, 2).add(blk as usize * 16));
        let d = f16_at::<L>(p.field(l, 3), blk);
        let scale_of = |v: usize| d * set_scale_byte(sw, n, half, v) as u8 as i8 as f32;
        let scale = [scale_of(0), scale_of(1), scale_of(2), scale_of(3)];
        Task { q: words8(a, b), h: words8(h, [0; 4]), scale, off: [32.0 * scale[0], 32.0 * scale[1], 32.0 * scale[2], 32.0 * scale[3]] }
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
    fn x_index(part: u32, group: u32) -> u32 {
        x_index_sets(part, group)
    }
}

/// Where group `group` of task `part` starts in the super-blocks whose tasks are half
/// n = part / 2, l in 16·(part % 2)..+16, values 128n + 32v + l for value sets v in 0..4
/// (Q2_K, Q3_K, Q6_K): group G is set G / 2, l offset 8·(G % 2).
#[inline(always)]
fn x_index_sets(part: u32, group: u32) -> u32 {
    128 * (part / 2) + 32 * (group / 2) + 16 * (part % 2) + 8 * (group % 2)
}

/// Byte `8n + half + 2v` of a 16-byte scale array held as four words: word `2n + v / 2`,
/// byte `half + 2·(v % 2)` (the sub-block of value set v in task (n, half)).
#[inline(always)]
fn set_scale_byte(sw: [u32; 4], n: u32, half: u32, v: usize) -> u32 {
    let word = if n == 0 { sw[v / 2] } else { sw[2 + v / 2] };
    (word >> (8 * (half + 2 * (v as u32 % 2)))) & 0xFF
}

/// Q2_K: tasks and value sets as Q6_K's (`x_index_sets`); value set v is bits 2v..2v+2 of
/// qs[32n + l]; sub-block 8n + 2v + half has the 4-bit scale and min of scales[that]
/// (low and high nibble). `y = (d · scale) · u − dmin · min`.
#[allow(non_camel_case_types)]
pub struct Q2_K;
impl Blocks for Q2_K {
    const LAYOUT: usize = 8;
    const TASKS: u32 = 4;
    const GROUPS: usize = 8;
    const SUB: usize = 2;
    #[inline(always)]
    unsafe fn load<L: Mem>(p: &Planes, blk: u64, part: u32) -> Task {
        let l = &GGML_LAYOUTS[Self::LAYOUT];
        let (n, half) = (part / 2, part % 2);
        let sw = L::v4(p.field(l, 0).add(blk as usize * 16));
        let q = L::v4(p.field(l, 1).add(blk as usize * 64 + (32 * n + 16 * half) as usize));
        let (d, dmin) = (f16_at::<L>(p.field(l, 2), blk), f16_at::<L>(p.field(l, 3), blk));
        let sc = |v: usize| set_scale_byte(sw, n, half, v);
        Task {
            q: words8(q, [0; 4]),
            h: [0; 8],
            scale: [d * (sc(0) & 0xF) as f32, d * (sc(1) & 0xF) as f32, d * (sc(2) & 0xF) as f32, d * (sc(3) & 0xF) as f32],
            off: [dmin * (sc(0) >> 4) as f32, dmin * (sc(1) >> 4) as f32, dmin * (sc(2) >> 4) as f32, dmin * (sc(3) >> 4) as f32],
        }
    }
    #[inline(always)]
    fn quants<const G: usize>(t: &Task, _part: u32) -> [u32; 2] {
        let (v, w) = (G / 2, 2 * (G % 2));
        [(t.q[w] >> (2 * v)) & 0x0303_0303, (t.q[w + 1] >> (2 * v)) & 0x0303_0303]
    }
    #[inline(always)]
    fn x_index(part: u32, group: u32) -> u32 {
        x_index_sets(part, group)
    }
}

/// Q3_K: tasks and value sets as Q6_K's; value set v has bits 2v..2v+2 of qs[32n + l] and,
/// as its third bit, bit 4n + v of hmask[l] (`u` = 0..8, the stored quant plus 4); sub-block
/// 8n + 2v + half has a 6-bit scale stored +32 (low nibble in scales[i % 8] — high nibble
/// for i ≥ 8 — and two high bits at 2·(i / 4) of scales[8 + i % 4]).
/// `y = (d · (scale − 32)) · (u − 4)`.
#[allow(non_camel_case_types)]
pub struct Q3_K;
impl Blocks for Q3_K {
    const LAYOUT: usize = 9;
    const TASKS: u32 = 4;
    const GROUPS: usize = 8;
    const SUB: usize = 2;
    const ZP: f32 = 4.0;
    #[inline(always)]
    unsafe fn load<L: Mem>(p: &Planes, blk: u64, part: u32) -> Task {
        let l = &GGML_LAYOUTS[Self::LAYOUT];
        let (n, half) = (part / 2, part % 2);
        let hm = L::v4(p.field(l, 0).add(blk as usize * 32 + 16 * half as usize));
        let q = L::v4(p.field(l, 1).add(blk as usize * 64 + (32 * n + 16 * half) as usize));
        let s = p.field(l, 2).add(blk as usize * 12);
        let s = [L::word(s), L::word(s.add(4)), L::word(s.add(8))];
        let d = f16_at::<L>(p.field(l, 3), blk);
        let scale_of = |v: u32| {
            let i = 8 * n + half + 2 * v;
            let low = if i < 8 { byte_of3(s, i) & 0xF } else { byte_of3(s, i - 8) >> 4 };
            let high = (byte_of3(s, 8 + i % 4) >> (2 * (i / 4))) & 3;
            d * ((low | high << 4) as i32 - 32) as f32
        };
        let scale = [scale_of(0), scale_of(1), scale_of(2), scale_of(3)];
        Task { q: words8(q, [0; 4]), h: words8(hm, [0; 4]), scale, off: [4.0 * scale[0], 4.0 * scale[1], 4.0 * scale[2], 4.0 * scale[3]] }
    }
    #[inline(always)]
    fn quants<const G: usize>(t: &Task, part: u32) -> [u32; 2] {
        let (v, w) = (G / 2, 2 * (G % 2));
        let bit = 4 * (part / 2) + v as u32;
        let u = |q: u32, h: u32| ((q >> (2 * v)) & 0x0303_0303) | ((h >> bit) & 0x0101_0101) << 2;
        [u(t.q[w], t.h[w]), u(t.q[w + 1], t.h[w + 1])]
    }
    #[inline(always)]
    fn x_index(part: u32, group: u32) -> u32 {
        x_index_sets(part, group)
    }
}
