//! Fused W8A16 GEMM on tensor cores (`mma.sync.m16n8k16`, FP16 × FP16 → FP32):
//! `y[m, n] = Σ_k x[m, k] · q[n, k] · s[n, k / group]`, for batches too large for the GEMV.
//!
//! No offline reshuffle: a dot product does not care in which order it visits k, as long
//! as A and B agree. Each thread loads 16 consecutive INT8 weights of
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
use crate::ptx::{
    block_x, block_y, block_z, bytes_to_f16x2x2, f32_to_f16x2, load_cached_v4, load_v4, mma_m16n8k16, mul_f16x2, shared_array, store_v4, thread_x, unroll, WARP,
};

/// Warps per block, side by side along N.
pub const WARPS: u32 = 4;

// Activation tiles of the shared-memory variant: two buffers (double buffering) of up to
// 64 rows × 128 FP16, each row padded from 256 to 272 bytes so the 8 rows a quarter-warp
// reads start in different banks (272 / 4 = 68 ≡ 4 mod 32).
const X_ROW_BYTES: usize = 272;
const X_CHUNK: u32 = 128;
const X_BUF_BYTES: usize = 64 * X_ROW_BYTES;
shared_array! {
    /// Generic address of the activation tiles (2 · X_BUF_BYTES).
    fn x_tiles() -> *mut u8 = "codecllm_gemm_x"[34816], align 16
}
const _: () = assert!(2 * X_BUF_BYTES == 34816);

#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct V4([u32; 4]);

/// Four INT8 weights → two FP16 pairs (bytes 0,1 and bytes 2,3), exactly.
#[inline(always)]
fn i8x4_to_f16x2x2(w: u32) -> [u32; 2] {
    bytes_to_f16x2x2(w ^ 0x8080_8080, 0x6480_6480) // 1152.0 = 1024 + the bias 128, both halves
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

/// Where this thread works: its lane and fragment coordinates (g = lane / 4, t = lane % 4),
/// the first output column and row of its warp, and its split's k range; `None` when the
/// block has no work (a split past k, or no scale group).
struct Tile {
    lane: u32,
    g: u32,
    t: u32,
    n0: u32,
    m0: u32,
    split: u32,
    k_begin: u32,
    k_end: u32,
}

#[inline(always)]
fn tile<const MT: usize, const NT: usize>(warps_per_block: u32, k: u32, group: u32, k_per_split: u32) -> Option<Tile> {
    let warp = thread_x() / WARP;
    let lane = thread_x() % WARP;
    let split = block_z();
    let k_begin = split * k_per_split;
    if k_begin >= k || group == 0 {
        return None;
    }
    Some(Tile {
        lane,
        g: lane / 4,
        t: lane % 4,
        n0: (block_x() * warps_per_block + warp) * (NT as u32 * 8),
        m0: block_y() * (MT as u32 * 16),
        split,
        k_begin,
        k_end: if k - k_begin > k_per_split { k_begin + k_per_split } else { k },
    })
}

/// The weight rows a thread reads (n0 + 8J + g for each n8 tile J), whether each exists,
/// and its scales; rows past `n` point at row 0 and are never loaded.
struct WeightRows<const NT: usize> {
    row: [*const i8; NT],
    ok: [bool; NT],
    scales: [*const f32; NT],
}

#[inline(always)]
unsafe fn weight_rows<const NT: usize>(q: *const i8, scales: *const f32, n: u32, k: u32, groups: u32, n0: u32, g: u32) -> WeightRows<NT> {
    let mut w = WeightRows { row: [core::ptr::null(); NT], ok: [false; NT], scales: [core::ptr::null(); NT] };
    unroll!(J in [0, 1, 2, 3, 4, 5, 6, 7] {
        if J < NT {
            let r = n0 + 8 * J as u32 + g;
            w.ok[J] = r < n;
            let r = if r < n { r } else { 0 };
            w.row[J] = q.add(r as usize * k as usize);
            w.scales[J] = scales.add(r as usize * groups as usize);
        }
    });
    w
}

/// k16 steps over `[kk, k_end)` (k % 16 == 0): 4 bytes of each weight row per thread; the
/// activations for row `I` (+8) come from `x_at(I, H, byte offset of k)`.
#[inline(always)]
unsafe fn k16_steps<const MT: usize, const NT: usize>(
    acc: &mut [[[f32; 4]; NT]; MT],
    w: &WeightRows<NT>,
    mut kk: u32,
    k_end: u32,
    t: u32,
    per_channel: bool,
    group: u32,
    x_at: impl Fn(usize, usize, u32) -> [u32; 2],
) {
    while kk < k_end {
        let off = (kk + 4 * t) as usize;
        let mut b = [[0u32; 2]; NT];
        unroll!(J in [0, 1, 2, 3, 4, 5, 6, 7] {
            if J < NT {
                let q = if w.ok[J] { *(w.row[J].add(off) as *const u32) } else { 0 };
                b[J] = i8x4_to_f16x2x2(q);
                if !per_channel {
                    let s2 = f32_to_f16x2(*w.scales[J].add(off / group as usize));
                    b[J] = [mul_f16x2(b[J][0], s2), mul_f16x2(b[J][1], s2)];
                }
            }
        });
        unroll!(I in [0, 1, 2, 3] {
            if I < MT {
                let (lo, hi) = (x_at(I, 0, kk + 4 * t), x_at(I, 1, kk + 4 * t));
                let a = [lo[0], hi[0], lo[1], hi[1]];
                unroll!(J in [0, 1, 2, 3, 4, 5, 6, 7] {
                    if J < NT {
                        mma_m16n8k16(&mut acc[I][J], a, b[J]);
                    }
                });
            }
        });
        kk += 16;
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
                        mma_m16n8k16(&mut acc[I][J], a, b[J]);
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
    let Some(Tile { lane, g, t, n0, m0, split, k_begin, k_end }) = tile::<MT, NT>(WARPS, k, group, k_per_split) else { return };
    let k_us = k as usize;
    let per_channel = groups == 1;

    // Rows this thread loads: weight rows n0 + 8j + g, activation rows m0 + 16i + g (+ 8).
    let w = weight_rows::<NT>(q, scales, n, k, groups, n0, g);
    let (w_row, w_ok, s_row) = (w.row, w.ok, w.scales);
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
    k16_steps::<MT, NT>(
        &mut acc,
        &w,
        kk,
        k_end,
        t,
        per_channel,
        group,
        |i, h, col| {
            if x_ok[i][h] {
                *(x_row[i][h].add(col as usize) as *const [u32; 2])
            } else {
                [0; 2]
            }
        },
    );

    store_tile::<MT, NT>(&acc, y, partial, scales, m, n, m0, n0, lane, split, per_channel);
}

/// Warps per block of the shared-memory variant: eight warps share one activation tile,
/// so activations cross L2 → SM once per 8·8·NT weight rows instead of once per warp.
pub const SMEM_WARPS: u32 = 8;
const SMEM_THREADS: u32 = SMEM_WARPS * WARP;

/// The activations of one k chunk: rows m0.. (16·MT of them) × X_CHUNK FP16, one 16-byte
/// vector per thread per MT (16 vectors a row). Zero outside the matrix or past `k_end`.
#[inline(always)]
unsafe fn load_x_chunk<const MT: usize>(x: *const u16, m: u32, k: u32, m0: u32, kc: u32, k_end: u32) -> [[u32; 4]; MT] {
    let mut v = [[0u32; 4]; MT];
    unroll!(P in [0, 1, 2, 3] {
        if P < MT {
            let idx = thread_x() + SMEM_THREADS * P as u32;
            let (r, c) = (m0 + idx / 16, kc + 8 * (idx % 16));
            if r < m && c < k_end {
                v[P] = load_cached_v4(x.add(r as usize * k as usize + c as usize) as *const u32);
            }
        }
    });
    v
}

#[inline(always)]
unsafe fn store_x_chunk<const MT: usize>(buf: *mut u8, v: &[[u32; 4]; MT]) {
    unroll!(P in [0, 1, 2, 3] {
        if P < MT {
            let idx = thread_x() + SMEM_THREADS * P as u32;
            store_v4(buf.add((idx / 16) as usize * X_ROW_BYTES + (idx % 16) as usize * 16) as *mut u32, v[P]);
        }
    });
}

/// Both k64 blocks of a chunk's weights for this thread (zero where a block is not full).
#[inline(always)]
unsafe fn load_w_chunk<const NT: usize>(w_row: &[*const i8; NT], w_ok: &[bool; NT], kc: u32, k_end: u32, t: u32) -> [[[u32; 4]; NT]; 2] {
    let mut w = [[[0u32; 4]; NT]; 2];
    unroll!(B in [0, 1] {
        let kk = kc + 64 * B as u32;
        if kk + 64 <= k_end {
            unroll!(J in [0, 1, 2, 3, 4, 5, 6, 7] {
                if J < NT {
                    w[B][J] = load_weights(w_row[J].add((kk + 16 * t) as usize), w_ok[J]);
                }
            });
        }
    });
    w
}

/// Like `gemm`, with the activations staged through shared memory in X_CHUNK-wide chunks
/// (double-buffered: the next chunk's global loads are in flight while this one computes,
/// and so are the next chunk's weights). Requires k_per_split % X_CHUNK == 0.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_smem<const MT: usize, const NT: usize>(
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
    // `None` is uniform over the block, so no thread skips a barrier the others wait at.
    let Some(Tile { lane, g, t, n0, m0, split, k_begin, k_end }) = tile::<MT, NT>(SMEM_WARPS, k, group, k_per_split) else { return };
    let per_channel = groups == 1;
    let w = weight_rows::<NT>(q, scales, n, k, groups, n0, g);
    let (w_row, w_ok, s_row) = (w.row, w.ok, w.scales);

    let tiles = x_tiles();
    let mut acc = [[[0.0f32; 4]; NT]; MT];
    let mut kc = k_begin;
    let mut buf = 0usize;
    store_x_chunk::<MT>(tiles, &load_x_chunk::<MT>(x, m, k, m0, kc, k_end));
    let mut w_cur = load_w_chunk::<NT>(&w_row, &w_ok, kc, k_end, t);
    crate::ptx::sync_threads();
    loop {
        let next = kc + X_CHUNK;
        let more = next < k_end;
        let (x_next, w_next) = if more {
            (load_x_chunk::<MT>(x, m, k, m0, next, k_end), load_w_chunk::<NT>(&w_row, &w_ok, next, k_end, t))
        } else {
            ([[0u32; 4]; MT], [[[0u32; 4]; NT]; 2])
        };
        let base = tiles.add(buf * X_BUF_BYTES);
        unroll!(B in [0, 1] {
            let kk = kc + 64 * B as u32;
            if kk + 64 <= k_end {
                let mut blk = Block::<MT, NT>::default();
                blk.w = w_cur[B];
                unroll!(J in [0, 1, 2, 3, 4, 5, 6, 7] {
                    if J < NT && !per_channel {
                        blk.s2[J] = f32_to_f16x2(*s_row[J].add(((kk + 16 * t) / group) as usize));
                    }
                });
                unroll!(I in [0, 1, 2, 3] {
                    if I < MT {
                        unroll!(H in [0, 1] {
                            let row = base.add((16 * I + 8 * H + g as usize) * X_ROW_BYTES + 128 * B + 32 * t as usize);
                            let (a, b) = (load_v4(row as *const u32), load_v4(row.add(16) as *const u32));
                            blk.x[I][H] = [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]];
                        });
                    }
                });
                compute_block::<MT, NT>(&mut acc, &blk, per_channel);
            } else {
                // Last chunk of a k not divisible by 64: k16 steps (k % 16 == 0).
                k16_steps::<MT, NT>(&mut acc, &w, kk, k_end, t, per_channel, group, |i, h, col| {
                    *(base.add((16 * i + 8 * h + g as usize) * X_ROW_BYTES + (col - kc) as usize * 2) as *const [u32; 2])
                });
            }
        });
        if !more {
            break;
        }
        // The other buffer was last read in the previous chunk, which every warp finished
        // before the previous barrier.
        store_x_chunk::<MT>(tiles.add((buf ^ 1) * X_BUF_BYTES), &x_next);
        w_cur = w_next;
        crate::ptx::sync_threads();
        buf ^= 1;
        kc = next;
    }
    store_tile::<MT, NT>(&acc, y, partial, scales, m, n, m0, n0, lane, split, per_channel);
}

/// Epilogue: accumulator (I, J) holds rows m0 + 16I + g (+8) and columns n0 + 8J + 2t (+1).
/// One split: FP16 `y` (per-channel scale applied here). Several: FP32 `partial[split]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn store_tile<const MT: usize, const NT: usize>(
    acc: &[[[f32; 4]; NT]; MT],
    y: *mut u16,
    partial: *mut f32,
    scales: *const f32,
    m: u32,
    n: u32,
    m0: u32,
    n0: u32,
    lane: u32,
    split: u32,
    per_channel: bool,
) {
    let (g, t) = (lane / 4, lane % 4);
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

/// Fails the build unless entry `name` is in `abi::GEMM_TILES` with this geometry, which
/// is what the host plans launches with.
const fn assert_tile(name: &str, mt: usize, nt: usize, warps: u32, smem: bool) {
    match crate::abi::gemm_tile(name) {
        Some(i) => {
            let t = crate::abi::GEMM_TILES[i];
            assert!(t.mt == mt && t.nt == nt && t.warps == warps as usize && t.smem == smem);
        }
        None => panic!("a GEMM entry missing from abi::GEMM_TILES"),
    }
}

macro_rules! gemm_smem_entry {
    ($($name:ident = ($mt:literal, $nt:literal)),* $(,)?) => {$(
        /// Launch: blockDim.x = 32 · SMEM_WARPS; grid = (ceil(n / (SMEM_WARPS·8·NT)),
        /// ceil(m / (16·MT)), splits); k_per_split a multiple of 128.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(
            x: *const u16, q: *const i8, scales: *const f32, y: *mut u16, partial: *mut f32,
            m: u32, n: u32, k: u32, group: u32, groups: u32, k_per_split: u32,
        ) {
            crate::ptx::await_inputs();
            gemm_smem::<$mt, $nt>(x, q, scales, y, partial, m, n, k, group, groups, k_per_split)
        }
        const _: () = assert_tile(stringify!($name), $mt, $nt, SMEM_WARPS, true);
    )*};
}

// Kept: the variants that won some shape in `bench kernels --tune` on H100
// (docs/bench/2026-11-26-h100-tune.json); the others never did and were dropped.
gemm_smem_entry!(gemm_smem_mt1_nt2 = (1, 2), gemm_smem_mt2_nt2 = (2, 2),);

macro_rules! gemm_entry {
    ($($name:ident = ($mt:literal, $nt:literal, $pf:literal)),* $(,)?) => {$(
        /// Launch: blockDim.x = 32 · WARPS; grid = (ceil(n / (WARPS·8·NT)), ceil(m / (16·MT)), splits).
        /// `partial` null: write `y`; else FP32 partials `[splits, m, n]`.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(
            x: *const u16, q: *const i8, scales: *const f32, y: *mut u16, partial: *mut f32,
            m: u32, n: u32, k: u32, group: u32, groups: u32, k_per_split: u32,
        ) {
            crate::ptx::await_inputs();
            gemm::<$mt, $nt, $pf>(x, q, scales, y, partial, m, n, k, group, groups, k_per_split)
        }
        const _: () = assert_tile(stringify!($name), $mt, $nt, WARPS, false);
    )*};
}

// Names: m16 tiles × n8 tiles per warp; the flag prefetches the next k64 block. The
// mt4_nt4 prefetching variant spills 140 bytes (ptxas -v) yet was the fastest at M ≥ 256.
gemm_entry!(gemm_w8a16_mt1_nt2 = (1, 2, true), gemm_w8a16_mt2_nt4 = (2, 4, true), gemm_w8a16_mt4_nt4_pf = (4, 4, true),);

/// `y[m, n] = Σ_z partial[z, m, n] · (per-channel ? s[n] : 1)`, summed in split order.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn gemm_reduce_splits(partial: *const f32, scales: *const f32, y: *mut u16, m: u32, n: u32, splits: u32, groups: u32) {
    crate::ptx::await_inputs();
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
        // SAFETY: n == 0 returned above; this tells LLVM, which otherwise keeps a panic path.
        core::hint::assert_unchecked(n != 0);
        v *= *scales.add(i % n as usize);
    }
    *y.add(i) = (v as f16).to_bits();
}
