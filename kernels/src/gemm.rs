//! Fused W8A16 GEMM on tensor cores (`mma.sync.m16n8k16`, FP16 × FP16 → FP32):
//! `y[m, n] = Σ_k x[m, k] · q[n, k] · s[n, k / group]`, for batches too large for the GEMV.
//!
//! No shared memory and no offline reshuffle: a dot product does not care in which order
//! it visits k, as long as A and B agree. Each thread loads 16 consecutive INT8 weights of
//! its row (one 16-byte load) and the 16 matching FP16 activations (two 16-byte loads),
//! and feeds 4 of each to each of 4 mma steps as if they sat at the k positions the
//! fragment layout names. Thread (g = lane / 4, t = lane % 4) of k64 block step s holds
//! physical k = 16t + 4s + {0, 1, 2, 3} in the slots of logical k = {2t, 2t+1, 2t+8, 2t+9}.
//!
//! INT8 → FP16 in registers: `prmt` puts the biased byte under the exponent of 1024, one
//! `sub.f16x2` removes 1024 + 128 (exact: integers below 2048 are exact in FP16). Per-channel
//! scales multiply the FP32 accumulators at the end; per-group scales are folded into the
//! FP16 weights (q·s rounded to FP16, as an FP16 checkpoint would hold them).
//!
//! Grid: x over N (WARPS warps × NT n8 tiles each), y over M (MT m16 tiles), z over K
//! splits. With one split the kernel writes FP16 `y`; with several each split writes FP32
//! partials to `partial[z, m, n]` and `gemm_reduce_splits` sums them in fixed order
//! (deterministic, no atomics). Requires k % 16 == 0 (the host checks).
use crate::ptx::{block_x, thread_x, unroll, WARP};
use core::arch::asm;
use core::arch::nvptx::{_block_idx_y, _block_idx_z};

/// Warps per block, side by side along N.
pub const WARPS: u32 = 4;

#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct V4([u32; 4]);

/// Tensor-core step: `d += a·b` for one 16×8×16 tile. Not `pure`: `mma.sync` needs the
/// whole warp, so it must not be moved under a lane-dependent branch.
#[inline(always)]
fn mma(acc: &mut [f32; 4], a: [u32; 4], b: [u32; 2]) {
    unsafe {
        asm!(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {{{d0}, {d1}, {d2}, {d3}}}, {{{a0}, {a1}, {a2}, {a3}}}, {{{b0}, {b1}}}, {{{d0}, {d1}, {d2}, {d3}}};",
            d0 = inout(reg32) acc[0],
            d1 = inout(reg32) acc[1],
            d2 = inout(reg32) acc[2],
            d3 = inout(reg32) acc[3],
            a0 = in(reg32) a[0],
            a1 = in(reg32) a[1],
            a2 = in(reg32) a[2],
            a3 = in(reg32) a[3],
            b0 = in(reg32) b[0],
            b1 = in(reg32) b[1],
            options(nostack),
        );
    }
}

/// Four INT8 weights → two FP16 pairs (bytes 0,1 and bytes 2,3), exactly.
#[inline(always)]
fn i8x4_to_f16x2x2(w: u32) -> [u32; 2] {
    let biased = w ^ 0x8080_8080;
    let (lo, hi): (u32, u32);
    unsafe {
        asm!(
            "prmt.b32 {lo}, {w}, {e}, 0x4140;",
            "prmt.b32 {hi}, {w}, {e}, 0x4342;",
            "sub.f16x2 {lo}, {lo}, {bias};",
            "sub.f16x2 {hi}, {hi}, {bias};",
            lo = out(reg32) lo,
            hi = out(reg32) hi,
            w = in(reg32) biased,
            e = in(reg32) 0x6464_6464u32,
            bias = in(reg32) 0x6480_6480u32, // 1152.0 in both halves
            options(pure, nomem, nostack),
        );
    }
    [lo, hi]
}

/// Both halves times the FP16 pair `s2`.
#[inline(always)]
fn mul_f16x2(v: u32, s2: u32) -> u32 {
    let r: u32;
    unsafe { asm!("mul.rn.f16x2 {r}, {v}, {s};", r = out(reg32) r, v = in(reg32) v, s = in(reg32) s2, options(pure, nomem, nostack)) };
    r
}

#[inline(always)]
fn f32_to_f16x2(s: f32) -> u32 {
    let h = (s as f16).to_bits() as u32;
    h | (h << 16)
}

#[inline(always)]
unsafe fn load_weights(q: *const i8, valid: bool) -> [u32; 4] {
    if valid {
        crate::ptx::load_stream_v4(q as *const u32)
    } else {
        [0; 4]
    }
}

#[inline(always)]
unsafe fn load_x16(x: *const u16, valid: bool) -> [u32; 8] {
    if valid {
        let a = *(x as *const V4);
        let b = *(x.add(8) as *const V4);
        [a.0[0], a.0[1], a.0[2], a.0[3], b.0[0], b.0[1], b.0[2], b.0[3]]
    } else {
        [0; 8]
    }
}

/// One k64 block's operands in registers: 16 INT8 weights per row (NT rows), their group
/// scales as FP16 pairs, 16 FP16 activations per row (MT × 2 rows).
#[derive(Clone, Copy)]
struct Block<const MT: usize, const NT: usize> {
    w: [[u32; 4]; NT],
    s2: [u32; NT],
    x: [[[u32; 8]; 2]; MT],
}

impl<const MT: usize, const NT: usize> Default for Block<MT, NT> {
    fn default() -> Self {
        Block { w: [[0; 4]; NT], s2: [0; NT], x: [[[0; 8]; 2]; MT] }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn load_block<const MT: usize, const NT: usize>(
    w_row: &[*const i8; NT],
    w_ok: &[bool; NT],
    s_row: &[*const f32; NT],
    x_row: &[[*const u16; 2]; MT],
    x_ok: &[[bool; 2]; MT],
    off: usize,
    per_channel: bool,
    group: u32,
) -> Block<MT, NT> {
    let mut b = Block::<MT, NT>::default();
    unroll!(J in [0, 1, 2, 3, 4, 5, 6, 7] {
        if J < NT {
            b.w[J] = load_weights(w_row[J].add(off), w_ok[J]);
            if !per_channel {
                b.s2[J] = f32_to_f16x2(*s_row[J].add(off / group as usize));
            }
        }
    });
    unroll!(I in [0, 1, 2, 3] {
        if I < MT {
            b.x[I][0] = load_x16(x_row[I][0].add(off), x_ok[I][0]);
            b.x[I][1] = load_x16(x_row[I][1].add(off), x_ok[I][1]);
        }
    });
    b
}

/// The 4 mma steps of a k64 block (see the module docs for the k permutation).
#[inline(always)]
fn compute_block<const MT: usize, const NT: usize>(acc: &mut [[[f32; 4]; NT]; MT], blk: &Block<MT, NT>, per_channel: bool) {
    unroll!(S in [0, 1, 2, 3] {
        let mut b = [[0u32; 2]; NT];
        unroll!(J in [0, 1, 2, 3, 4, 5, 6, 7] {
            if J < NT {
                b[J] = i8x4_to_f16x2x2(blk.w[J][S]);
                if !per_channel {
                    b[J] = [mul_f16x2(b[J][0], blk.s2[J]), mul_f16x2(b[J][1], blk.s2[J])];
                }
            }
        });
        unroll!(I in [0, 1, 2, 3] {
            if I < MT {
                let a = [blk.x[I][0][2 * S], blk.x[I][1][2 * S], blk.x[I][0][2 * S + 1], blk.x[I][1][2 * S + 1]];
                unroll!(J in [0, 1, 2, 3, 4, 5, 6, 7] {
                    if J < NT {
                        mma(&mut acc[I][J], a, b[J]);
                    }
                });
            }
        });
    });
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm<const MT: usize, const NT: usize, const PREFETCH: bool>(
    x: *const u16,
    q: *const i8,
    scales: *const f32,
    y: *mut u16,
    partial: *mut f32,
    m: u32,
    n: u32,
    k: u32,
    group: u32,
    groups: u32,
    k_per_split: u32,
) {
    let warp = thread_x() / WARP;
    let lane = thread_x() % WARP;
    let (g, t) = (lane / 4, lane % 4);
    let n0 = (block_x() * WARPS + warp) * (NT as u32 * 8);
    let m0 = _block_idx_y() * (MT as u32 * 16);
    let split = _block_idx_z();
    let k_begin = split * k_per_split;
    if k_begin >= k || group == 0 {
        return;
    }
    let k_end = if k - k_begin > k_per_split { k_begin + k_per_split } else { k };
    let k_us = k as usize;
    let per_channel = groups == 1;

    // Rows this thread loads: weight rows n0 + 8j + g, activation rows m0 + 16i + g (+ 8).
    let mut w_row = [core::ptr::null::<i8>(); NT];
    let mut w_ok = [false; NT];
    let mut s_row = [core::ptr::null::<f32>(); NT];
    unroll!(J in [0, 1, 2, 3, 4, 5, 6, 7] {
        if J < NT {
            let r = n0 + 8 * J as u32 + g;
            w_ok[J] = r < n;
            let r = if r < n { r } else { 0 };
            w_row[J] = q.add(r as usize * k_us);
            s_row[J] = scales.add(r as usize * groups as usize);
        }
    });
    let mut x_row = [[core::ptr::null::<u16>(); 2]; MT];
    let mut x_ok = [[false; 2]; MT];
    unroll!(I in [0, 1, 2, 3] {
        if I < MT {
            unroll!(H in [0, 1] {
                let r = m0 + 16 * I as u32 + 8 * H as u32 + g;
                x_ok[I][H] = r < m;
                x_row[I][H] = x.add(if r < m { r } else { 0 } as usize * k_us);
            });
        }
    });

    let mut acc = [[[0.0f32; 4]; NT]; MT];
    let mut kk = k_begin;
    // Main loop: k64 blocks, 16 bytes of each weight row per thread. With PREFETCH the
    // next block's loads are issued before this block's mma work (one stage of software
    // pipelining in registers), doubling the bytes each warp keeps in flight.
    if kk + 64 <= k_end {
        let mut cur = load_block::<MT, NT>(&w_row, &w_ok, &s_row, &x_row, &x_ok, (kk + 16 * t) as usize, per_channel, group);
        loop {
            let next = kk + 64;
            let more = next + 64 <= k_end;
            let nxt = if PREFETCH && more {
                load_block::<MT, NT>(&w_row, &w_ok, &s_row, &x_row, &x_ok, (next + 16 * t) as usize, per_channel, group)
            } else {
                Block::default()
            };
            compute_block::<MT, NT>(&mut acc, &cur, per_channel);
            kk = next;
            if !more {
                break;
            }
            cur = if PREFETCH { nxt } else { load_block::<MT, NT>(&w_row, &w_ok, &s_row, &x_row, &x_ok, (kk + 16 * t) as usize, per_channel, group) };
        }
    }
    // Tail: k16 steps, 4 bytes of each weight row per thread (k % 16 == 0).
    while kk < k_end {
        let off = (kk + 4 * t) as usize;
        let mut b = [[0u32; 2]; NT];
        unroll!(J in [0, 1, 2, 3, 4, 5, 6, 7] {
            if J < NT {
                let w = if w_ok[J] { *(w_row[J].add(off) as *const u32) } else { 0 };
                b[J] = i8x4_to_f16x2x2(w);
                if !per_channel {
                    let s2 = f32_to_f16x2(*s_row[J].add(off / group as usize));
                    b[J] = [mul_f16x2(b[J][0], s2), mul_f16x2(b[J][1], s2)];
                }
            }
        });
        unroll!(I in [0, 1, 2, 3] {
            if I < MT {
                let lo = if x_ok[I][0] { *(x_row[I][0].add(off) as *const [u32; 2]) } else { [0; 2] };
                let hi = if x_ok[I][1] { *(x_row[I][1].add(off) as *const [u32; 2]) } else { [0; 2] };
                let a = [lo[0], hi[0], lo[1], hi[1]];
                unroll!(J in [0, 1, 2, 3, 4, 5, 6, 7] {
                    if J < NT {
                        mma(&mut acc[I][J], a, b[J]);
                    }
                });
            }
        });
        kk += 16;
    }

    // Accumulator (I, J) holds rows m0 + 16I + g (+8) and columns n0 + 8J + 2t (+1).
    let direct = partial.is_null();
    unroll!(I in [0, 1, 2, 3] {
        if I < MT {
            unroll!(J in [0, 1, 2, 3, 4, 5, 6, 7] {
                if J < NT {
                    let col = n0 + 8 * J as u32 + 2 * t;
                    unroll!(H in [0, 1] {
                        let row = m0 + 16 * I as u32 + 8 * H as u32 + g;
                        if row < m {
                            unroll!(C in [0, 1] {
                                let c = col + C as u32;
                                if c < n {
                                    let v = acc[I][J][2 * H + C];
                                    let idx = row as usize * n as usize + c as usize;
                                    if direct {
                                        let s = if per_channel { *scales.add(c as usize) } else { 1.0 };
                                        *y.add(idx) = ((v * s) as f16).to_bits();
                                    } else {
                                        *partial.add(split as usize * m as usize * n as usize + idx) = v;
                                    }
                                }
                            });
                        }
                    });
                }
            });
        }
    });
}

macro_rules! gemm_entry {
    ($($name:ident = ($mt:literal, $nt:literal, $pf:literal)),* $(,)?) => {$(
        /// Launch: blockDim.x = 32 · WARPS; grid = (ceil(n / (WARPS·8·NT)), ceil(m / (16·MT)), splits).
        /// `partial` null: write `y`; else FP32 partials `[splits, m, n]`.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(
            x: *const u16, q: *const i8, scales: *const f32, y: *mut u16, partial: *mut f32,
            m: u32, n: u32, k: u32, group: u32, groups: u32, k_per_split: u32,
        ) {
            gemm::<$mt, $nt, $pf>(x, q, scales, y, partial, m, n, k, group, groups, k_per_split)
        }
    )*};
}

// Names: m16 tiles × n8 tiles per warp, and whether the next k64 block is prefetched
// (only where the registers allow it without spilling: ptxas -v, BENCHMARKS.md).
gemm_entry!(
    gemm_w8a16_mt1_nt2 = (1, 2, true),
    gemm_w8a16_mt1_nt4 = (1, 4, true),
    gemm_w8a16_mt2_nt4 = (2, 4, true),
    gemm_w8a16_mt4_nt4 = (4, 4, false),
    gemm_w8a16_mt4_nt4_pf = (4, 4, true),
);

/// `y[m, n] = Σ_z partial[z, m, n] · (per-channel ? s[n] : 1)`, summed in split order.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn gemm_reduce_splits(partial: *const f32, scales: *const f32, y: *mut u16, m: u32, n: u32, splits: u32, groups: u32) {
    let i = block_x() as usize * crate::ptx::block_dim_x() as usize + thread_x() as usize;
    let total = m as usize * n as usize;
    if i >= total || n == 0 {
        return;
    }
    let mut v = 0.0f32;
    let mut z = 0;
    while z < splits as usize {
        v += *partial.add(z * total + i);
        z += 1;
    }
    if groups == 1 {
        v *= *scales.add(i % n as usize);
    }
    *y.add(i) = (v as f16).to_bits();
}
