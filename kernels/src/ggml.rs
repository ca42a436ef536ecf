//! GGUF block types computed on as stored: fused GEMVs on tensor cores for M ≤ 2 (exact
//! integer weights) and M = 3..=16 (FP16 weights) (`y[m, n] = Σ_k x[m, k] · w[n, k]`, w
//! decoded in registers), and a dequantization to FP16 for larger batches (then cuBLAS),
//! for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q2_K to Q6_K. The blocks sit in VRAM in
//! `abi::GgmlLayout`'s planes (one per struct field, aligned).
//!
//! The blocks' bits are read by `ggml_blocks` (shared with the host's tests): sub-blocks
//! with `value = scale · u − off`, one task (32 or 64 values) per lane at a time, in groups
//! of 8 consecutive values. Both GEMVs use `mma.sync.m16n8k16` with the weights as A (16
//! rows a block) and x as B. At M ≤ 2 A holds the stored quants as FP16 integers and B is
//! block-diagonal, so each lane gets its own task's sums and applies the sub-block scales
//! in f32 (two conversion instructions per pair of weights; a CUDA-core f32 GEMV spent ~6.6
//! instructions per weight). From M = 3 each group is dequantized with the reference's f32
//! arithmetic and rounded to FP16 (the weights the larger batches' dequantization writes,
//! bit for bit), and 16 rows × 8 or 16 batch rows come out of each block's mmas, so M = 8
//! reads what M = 1 does.
use crate::abi::{GGML_LAYOUTS, GGML_MMA_ROWS, GGML_MMA_TILES, GGML_MMA_WARPS};
use crate::dequant::pack_f16;
use crate::ggml_blocks::{value, Blocks, Mem, Planes, Task, NO_TASK, Q2_K, Q3_K, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0};
use crate::ptx::{
    block_dim_x, block_x, bytes_to_f16x2x2, f16x2_to_f32, fma, i8_to_f32, load_cached_v4, load_stream_v4, load_v4, mma_m16n8k16, shared_array, shfl_idx,
    shfl_xor, store_v4, sync_threads, thread_x, u8_to_f32, unroll, WARP,
};

/// Weight loads that skip L1 (read once), FP16 widened by `cvt`.
struct Device;
impl Mem for Device {
    #[inline(always)]
    unsafe fn v4(p: *const u8) -> [u32; 4] {
        load_stream_v4(p as *const u32)
    }
    #[inline(always)]
    unsafe fn word(p: *const u8) -> u32 {
        *(p as *const u32)
    }
    #[inline(always)]
    unsafe fn half(p: *const u8) -> f32 {
        f16::from_bits(*(p as *const u16)) as f32
    }
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

/// One lane's share of one step: its task of rows g and g + 8 (`NO_TASK` past the row's
/// end) and where the task's values start in the row.
struct Step {
    task: [Task; 2],
    part: u32,
    x0: usize,
    valid: bool,
}

/// Step `s` of rows `rows`: lane t takes task 4s + t of each row.
#[inline(always)]
unsafe fn load_step<F: Blocks>(p: &Planes, rows: [u32; 2], bpr: u32, s: u32, t: u32) -> Step {
    let i = 4 * s + t;
    let valid = i < bpr * F::TASKS;
    let (blk, part) = (i / F::TASKS, i % F::TASKS);
    let mut task = [NO_TASK; 2];
    if valid {
        unroll!(R in [0, 1] {
            task[R] = F::load::<Device>(p, rows[R] as u64 * bpr as u64 + blk as u64, part);
        });
    }
    Step { task, part, x0: (blk * GGML_LAYOUTS[F::LAYOUT].block_elems) as usize, valid }
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

/// Group `G`'s 8 values of a task, the reference's arithmetic in f32 (the dequantization
/// and the GEMV both use it, so the GEMV multiplies by exactly the FP16 weights the larger
/// batches' dequantization writes).
#[inline(always)]
fn group_values<F: Blocks, const G: usize>(task: &Task, part: u32) -> [f32; 8] {
    let u = quants_f32::<F>(F::quants::<G>(task, part));
    let (scale, off) = (task.scale[G / F::SUB], task.off[G / F::SUB]);
    let mut v = [0f32; 8];
    unroll!(I in [0, 1, 2, 3, 4, 5, 6, 7] {
        v[I] = value::<F>(u[I], scale, off);
    });
    v
}

/// Group `G`'s values of a task as FP16 pairs (values 0,1 | 2,3 | 4,5 | 6,7).
#[inline(always)]
fn group_f16<F: Blocks, const G: usize>(task: &Task, part: u32) -> [u32; 4] {
    let v = group_values::<F, G>(task, part);
    [pack_f16(v[0], v[1]), pack_f16(v[2], v[3]), pack_f16(v[4], v[5]), pack_f16(v[6], v[7])]
}

/// The step's products into the lane's accumulators: per group and n8 tile two m16n8k16
/// steps, the group's values 0–3 and 4–7 at the k slots this lane owns (a dot product does
/// not care in which order it visits k as long as A and B agree: slots 2t, 2t+1 take values
/// 0, 1 and slots 2t+8, 2t+9 values 2, 3 of the group's half). Column g of tile j is x's row
/// 8j + g, zero past m. Even and odd groups accumulate apart, so that consecutive mmas do
/// not wait on each other.
#[inline(always)]
unsafe fn mma_step<F: Blocks, const NT: usize>(acc: &mut [[[f32; 4]; 2]; NT], st: &Step, x: *const u16, k: usize, g: usize, m: usize) {
    unroll!(G in [0, 1, 2, 3, 4, 5, 6, 7] {
        if G < F::GROUPS {
            let (w0, w8) = (group_f16::<F, G>(&st.task[0], st.part), group_f16::<F, G>(&st.task[1], st.part));
            let xo = st.x0 + F::x_index(st.part, G as u32) as usize;
            unroll!(J in [0, 1] {
                if J < NT {
                    let row = 8 * J + g;
                    let xv = if st.valid && row < m { load_cached_v4(x.add(row * k + xo) as *const u32) } else { [0; 4] };
                    mma_m16n8k16(&mut acc[J][G % 2], [w0[0], w8[0], w0[1], w8[1]], [xv[0], xv[1]]);
                    mma_m16n8k16(&mut acc[J][G % 2], [w0[2], w8[2], w0[3], w8[3]], [xv[2], xv[3]]);
                }
            });
        }
    });
}

/// Warps of a block: each takes every `WARPS`-th step of the block's 16 rows, so that a
/// 4096-wide K-quant row (16 steps) keeps 8 warps' loads in flight; the warps' 16×8 tiles
/// are then summed in shared memory in a fixed order.
const WARPS: u32 = GGML_MMA_WARPS;
shared_array! {
    /// The warps' accumulators, `[tile][warp][lane][4]` f32.
    fn partials() -> *mut f32 = "codecllm_ggml_mma_partials"[8192], align 16
}
const _: () = assert!(GGML_MMA_TILES as u32 * WARPS * WARP * 4 * 4 == 8192 && GGML_MMA_ROWS == 16 && GGML_MMA_TILES == 2);

/// Rows `16 · blockIdx.x ..+16` of `y` for a batch of `m` ≤ 8 · NT on tensor cores: the
/// weights are A (16 rows × k16), dequantized to FP16 in registers, the activations B (k16 ×
/// 8 columns, 8 rows of x per tile). Lane (g, t) = (lane / 4, lane % 4) holds rows g and
/// g + 8 (A's fragment layout) and, per step of 4 tasks, task 4s + t of both rows; its C
/// fragment of tile j is y[8j + 2t, 8j + 2t + 1][rows g, g + 8]. Each product is the
/// FP16-rounded weight (bit for bit the dequantization's) times the FP16 activation, summed
/// in FP32. The dequantization, the costly part, serves all NT tiles.
#[inline(always)]
unsafe fn gemv_mma<F: Blocks, const NT: usize>(x: *const u16, w: *const u8, y: *mut u16, n: u32, k: u32, m: u32) {
    let layout = &GGML_LAYOUTS[F::LAYOUT];
    let (lane, warp) = (thread_x() % WARP, thread_x() / WARP);
    let (g, t) = (lane / 4, lane % 4);
    let row0 = block_x() * GGML_MMA_ROWS;
    let bpr = k / layout.block_elems;
    let p = Planes { base: w, blocks: n as u64 * bpr as u64 };
    // Rows past n read row n − 1 (not stored).
    let rows = [core::cmp::min(row0 + g, n - 1), core::cmp::min(row0 + g + 8, n - 1)];
    let steps = (bpr * F::TASKS).div_ceil(4);
    let mut acc = [[[0f32; 4]; 2]; NT];
    let mut s = warp;
    if layout.mma_bounds[NT - 1].steps == 2 {
        // Two steps' loads in flight before either's arithmetic.
        while s < steps {
            let a = load_step::<F>(&p, rows, bpr, s, t);
            let b = load_step::<F>(&p, rows, bpr, s + WARPS, t);
            mma_step::<F, NT>(&mut acc, &a, x, k as usize, g as usize, m as usize);
            mma_step::<F, NT>(&mut acc, &b, x, k as usize, g as usize, m as usize);
            s += 2 * WARPS;
        }
    } else {
        // One step at a time: more warps an SM hold the loads in flight instead.
        while s < steps {
            let a = load_step::<F>(&p, rows, bpr, s, t);
            mma_step::<F, NT>(&mut acc, &a, x, k as usize, g as usize, m as usize);
            s += WARPS;
        }
    }
    unroll!(J in [0, 1] {
        if J < NT {
            let mine = partials().add((4 * ((J as u32 * WARPS) * WARP + thread_x())) as usize);
            store_v4(mine as *mut u32, [0, 1, 2, 3].map(|i| (acc[J][0][i] + acc[J][1][i]).to_bits()));
        }
    });
    sync_threads();
    if warp != 0 {
        return;
    }
    unroll!(J in [0, 1] {
        if J < NT {
            let mut sum = [0f32; 4];
            for wi in 0..WARPS {
                let v = load_v4(partials().add((4 * ((J as u32 * WARPS + wi) * WARP + lane)) as usize) as *const u32);
                unroll!(I in [0, 1, 2, 3] {
                    sum[I] += f32::from_bits(v[I]);
                });
            }
            unroll!(I in [0, 1, 2, 3] {
                let (b, r) = (8 * J as u32 + 2 * t + I as u32 % 2, row0 + g + 8 * (I as u32 / 2));
                if b < m && r < n {
                    *y.add(b as usize * n as usize + r as usize) = (sum[I] as f16).to_bits();
                }
            });
        }
    });
}

/// What A subtracts from each stored quant at M ≤ 2: the zero point of the symmetric types
/// (Q8_0's bias of 128 included), so that their products need no offset term; 0 for the
/// types with mins.
#[inline(always)]
fn centre<F: Blocks>() -> u32 {
    if F::SIGNED {
        128
    } else {
        F::ZP as u32
    }
}

/// Group `G`'s quants of a task as exact FP16 integers `u − centre` in A's pairs (values
/// 0,1 | 2,3 | 4,5 | 6,7): the FP16 bits of 1024 + c are 0x6400 + c.
#[inline(always)]
fn group_ints<F: Blocks, const G: usize>(task: &Task, part: u32) -> [u32; 4] {
    let bias2 = (0x6400 + centre::<F>()) * 0x0001_0001;
    let u = F::quants::<G>(task, part);
    let ([p0, p1], [p2, p3]) = (bytes_to_f16x2x2(u[0], bias2), bytes_to_f16x2x2(u[1], bias2));
    [p0, p1, p2, p3]
}

/// A group's 8 activations added in a fixed order (both sub-block sums use it, so the
/// shared and per-step sums agree bit for bit).
#[inline(always)]
fn group_sum(v: [f32; 8]) -> f32 {
    ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]))
}

/// Σ x over each of a task's sub-blocks, for x's rows 0 and 1 (types with mins: their
/// offsets multiply it). Lane (g, t) sums group g of task t and the lanes of one sub-block
/// add theirs; each lane then takes its task's sums. Index [sub-block][x row].
#[inline(always)]
unsafe fn sub_block_x_sums<F: Blocks>(st: &Step, x: *const u16, k: usize, g: u32, t: u32, m: u32) -> [[f32; 2]; 4] {
    let mut own = [0f32; 2];
    unroll!(B in [0, 1] {
        if (B as u32) < m {
            if st.valid && (g as usize) < F::GROUPS {
                own[B] = group_sum(x8(x.add(B * k + st.x0 + F::x_index(st.part, g) as usize)));
            }
            // Lanes g of one sub-block differ in lane bits 2 and up.
            own[B] += shfl_xor(own[B], 4);
            if F::SUB == 4 {
                own[B] += shfl_xor(own[B], 8);
            }
        }
    });
    let mut sums = [[0f32; 2]; 4];
    unroll!(S in [0, 1, 2, 3] {
        if S < F::GROUPS / F::SUB {
            unroll!(B in [0, 1] {
                if (B as u32) < m {
                    sums[S][B] = shfl_idx(own[B], 4 * (F::SUB * S) as u32 + t);
                }
            });
        }
    });
    sums
}

// The sub-block sums of x for the types whose tasks are one sub-block with a min (Q4_1,
// Q5_1): dynamic shared memory of `GgmlLayout::gemv_shared_bytes`, set by the host at
// launch. Summing x in each step costs such a task as much as its 32 weights' products
// (a 1.03-1.2x slower GEMV, H200, 2026-12-03); for the K-quants, whose tasks hold 2 or 4
// sub-blocks, shared sums measured no faster (Q4_K 0.95-1.03x, Q5_K 0.92-0.98x: spills).
core::arch::global_asm!(".extern .shared .align 16 .b8 codecllm_ggml_x_sums[];");

/// `[j][b]`: Σ x[b, j · V ..+ V] over sub-block j (V = 8 · SUB values) of x's row b < 2.
#[inline(always)]
fn x_sums() -> *mut f32 {
    let p: u64;
    unsafe { core::arch::asm!("cvta.shared.u64 {p}, codecllm_ggml_x_sums;", p = out(reg64) p, options(pure, nomem, nostack)) };
    p as *mut f32
}

/// Whether `gemv_exact` reads its sub-block sums of x from `x_sums`.
#[inline(always)]
const fn shared_x_sums<F: Blocks>() -> bool {
    !F::SIGNED && F::ZP == 0.0 && F::GROUPS == F::SUB
}

/// Fills `x_sums` for x's m rows (zeros for rows past m), by the whole block: every row
/// of weights multiplies the same sums, so each block adds x once rather than each step
/// once for its task (`shared_x_sums` types; `sync_threads` before reading).
#[inline(always)]
unsafe fn fill_x_sums<F: Blocks>(x: *const u16, k: u32, m: u32) {
    let values = 8 * F::SUB as u32;
    let mut j = thread_x();
    while j < k / values {
        let mut sums = [0f32; 2];
        unroll!(B in [0, 1] {
            if (B as u32) < m {
                // The order of the sums is fixed: groups in pairs, then the pairs.
                let mut own = [0f32; 4];
                unroll!(G in [0, 1, 2, 3] {
                    if G < F::SUB {
                        own[G] = group_sum(x8(x.add(B * k as usize + (j * values) as usize + 8 * G)));
                    }
                });
                sums[B] = if F::SUB == 4 { (own[0] + own[1]) + (own[2] + own[3]) } else { own[0] + own[1] };
            }
        });
        *(x_sums().add(2 * j as usize) as *mut [f32; 2]) = sums;
        j += block_dim_x();
    }
}

/// The lane's task's `x_sums`, `[sub-block][x row]`.
#[inline(always)]
unsafe fn task_x_sums<F: Blocks>(st: &Step) -> [[f32; 2]; 4] {
    let mut sums = [[0f32; 2]; 4];
    if st.valid {
        unroll!(S in [0, 1, 2, 3] {
            if S < F::GROUPS / F::SUB {
                let j = (st.x0 + F::x_index(st.part, (S * F::SUB) as u32) as usize) / (8 * F::SUB);
                sums[S] = *(x_sums().add(2 * j) as *const [f32; 2]);
            }
        });
    }
    sums
}

/// The step's products into the lane's sums for M ≤ 2, in exact integers: A is the stored
/// quants (`group_ints`), and B holds x only where its column meets the lane's own k slots
/// (column 2t + b takes x's row b on lane t's slots, zero elsewhere: block-diagonal), so
/// that C[g][2t + b] is lane t's task alone and the lane can apply its task's sub-block
/// scales: per sub-block, `scale · C − off · Σx` in f32. The tensor cores add exact
/// products of small integers and FP16 activations, so no weight is ever rounded, and
/// converting a quant costs half a `prmt` and half a `sub.f16x2`.
#[inline(always)]
unsafe fn exact_step<F: Blocks>(acc: &mut [f32; 4], st: &Step, x: *const u16, k: usize, g: u32, t: u32, m: u32) {
    let xs = if shared_x_sums::<F>() {
        task_x_sums::<F>(st)
    } else if centre::<F>() == 0 {
        sub_block_x_sums::<F>(st, x, k, g, t, m)
    } else {
        [[0f32; 2]; 4]
    };
    // The x row this lane's B fragment carries, if any (g − 2t wraps past 1 otherwise).
    let b = g.wrapping_sub(2 * t);
    let loads = st.valid && b < m;
    let mut c = [0f32; 4];
    unroll!(G in [0, 1, 2, 3, 4, 5, 6, 7] {
        if G < F::GROUPS {
            let (w0, w8) = (group_ints::<F, G>(&st.task[0], st.part), group_ints::<F, G>(&st.task[1], st.part));
            let xo = b as usize * k + st.x0 + F::x_index(st.part, G as u32) as usize;
            let xv = if loads { load_cached_v4(x.add(xo) as *const u32) } else { [0; 4] };
            if G % F::SUB == 0 {
                c = [0.0; 4];
            }
            mma_m16n8k16(&mut c, [w0[0], w8[0], w0[1], w8[1]], [xv[0], xv[1]]);
            mma_m16n8k16(&mut c, [w0[2], w8[2], w0[3], w8[3]], [xv[2], xv[3]]);
            if G % F::SUB == F::SUB - 1 {
                let s = G / F::SUB;
                // c[2r + b]: row g + 8r, x row b.
                unroll!(I in [0, 1, 2, 3] {
                    let task = &st.task[I / 2];
                    acc[I] = fma(task.scale[s], c[I], acc[I]);
                    if centre::<F>() == 0 {
                        acc[I] = fma(-task.off[s], xs[s][I % 2], acc[I]);
                    }
                });
            }
        }
    });
}

/// Rows `16 · tile ..+16` of `y` for a batch of m ≤ 2 (`abi::GGML_GEMV_BATCH`), on
/// tensor cores with exact integer weights (`exact_step`): lanes and steps as `gemv_mma`'s,
/// each lane's sums of rows g, g + 8 and x rows 0, 1 added over the lanes of a row, then
/// over the warps in shared memory. The weights are the reference's `scale · u − off` in
/// f32 arithmetic, not rounded to FP16.
#[inline(always)]
unsafe fn gemv_exact<F: Blocks>(x: *const u16, w: *const u8, y: *mut u16, n: u32, k: u32, m: u32, tile: u32) {
    // The host sizes `x_sums` by the layout's `gemv_sum_values`.
    const {
        let v = GGML_LAYOUTS[F::LAYOUT].gemv_sum_values;
        assert!(if shared_x_sums::<F>() { v == 8 * F::SUB as u32 } else { v == 0 });
    };
    let layout = &GGML_LAYOUTS[F::LAYOUT];
    let (lane, warp) = (thread_x() % WARP, thread_x() / WARP);
    let (g, t) = (lane / 4, lane % 4);
    let row0 = tile * GGML_MMA_ROWS;
    let bpr = k / layout.block_elems;
    let p = Planes { base: w, blocks: n as u64 * bpr as u64 };
    // Rows past n read row n − 1 (not stored).
    let rows = [core::cmp::min(row0 + g, n - 1), core::cmp::min(row0 + g + 8, n - 1)];
    let steps = (bpr * F::TASKS).div_ceil(4);
    let mut acc = [0f32; 4];
    let mut s = warp;
    if shared_x_sums::<F>() {
        fill_x_sums::<F>(x, k, m);
        sync_threads();
    }
    if layout.gemv_bounds.steps == 2 {
        // Two steps' loads in flight before either's arithmetic.
        while s < steps {
            let a = load_step::<F>(&p, rows, bpr, s, t);
            let b = load_step::<F>(&p, rows, bpr, s + WARPS, t);
            exact_step::<F>(&mut acc, &a, x, k as usize, g, t, m);
            exact_step::<F>(&mut acc, &b, x, k as usize, g, t, m);
            s += 2 * WARPS;
        }
    } else {
        // One step at a time: more warps an SM hold the loads in flight instead.
        while s < steps {
            let a = load_step::<F>(&p, rows, bpr, s, t);
            exact_step::<F>(&mut acc, &a, x, k as usize, g, t, m);
            s += WARPS;
        }
    }
    unroll!(I in [0, 1, 2, 3] {
        acc[I] += shfl_xor(acc[I], 1);
        acc[I] += shfl_xor(acc[I], 2);
    });
    store_v4(partials().add(4 * thread_x() as usize) as *mut u32, acc.map(f32::to_bits));
    sync_threads();
    if warp != 0 || t != 0 {
        return;
    }
    let mut sum = [0f32; 4];
    for wi in 0..WARPS {
        let v = load_v4(partials().add((4 * (wi * WARP + lane)) as usize) as *const u32);
        unroll!(I in [0, 1, 2, 3] {
            sum[I] += f32::from_bits(v[I]);
        });
    }
    unroll!(I in [0, 1, 2, 3] {
        let (b, r) = (I as u32 % 2, row0 + g + 8 * (I as u32 / 2));
        if b < m && r < n {
            *y.add(b as usize * n as usize + r as usize) = (sum[I] as f16).to_bits();
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
        let task = F::load::<Device>(&p, r as u64 * bpr as u64 + blk, part);
        let xb = blk as usize * layout.block_elems as usize;
        unroll!(G in [0, 1, 2, 3, 4, 5, 6, 7] {
            if G < F::GROUPS {
                let dst = row_out.add(xb + F::x_index(part, G as u32) as usize) as *mut u32;
                store_v4(dst, group_f16::<F, G>(&task, part));
            }
        });
        t += block_dim_x();
    }
}

macro_rules! ggml_entries {
    ($ty:ident: $gemv:ident, $n8:ident, $n16:ident, $dequant:ident) => {
        /// `y_i = x · w_iᵀ` for up to three matrices of this type and width k (q, k and v,
        /// or gate and up: the narrow k and v fill few SMs alone), `n_i` rows each (0: none).
        /// Launch (M = m ≤ GGML_GEMV_BATCH): blockDim.x = 32 · GGML_MMA_WARPS, gridDim.x =
        /// Σ ceil(n_i / GGML_MMA_ROWS), the first matrix's tiles first; k a multiple of the
        /// block's values, x and the y_i 16-byte aligned; dynamic shared memory of
        /// `GgmlLayout::gemv_shared_bytes(k)`.
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "ptx-kernel" fn $gemv(
            x: *const u16,
            w0: *const u8,
            y0: *mut u16,
            n0: u32,
            w1: *const u8,
            y1: *mut u16,
            n1: u32,
            w2: *const u8,
            y2: *mut u16,
            n2: u32,
            k: u32,
            m: u32,
        ) {
            crate::ptx::await_inputs();
            // The block's matrix picked first, so that the kernel body exists once.
            let (t0, t1, b) = (n0.div_ceil(GGML_MMA_ROWS), n1.div_ceil(GGML_MMA_ROWS), block_x());
            let (w, y, n, tile) = if b < t0 {
                (w0, y0, n0, b)
            } else if b < t0 + t1 {
                (w1, y1, n1, b - t0)
            } else {
                (w2, y2, n2, b - t0 - t1)
            };
            gemv_exact::<$ty>(x, w, y, n, k, m, tile)
        }
        /// Launch (M = m ≤ 8): blockDim.x = 32 · GGML_MMA_WARPS, gridDim.x = ceil(n /
        /// GGML_MMA_ROWS); k a multiple of the block's values, x and y 16-byte aligned.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $n8(x: *const u16, w: *const u8, y: *mut u16, n: u32, k: u32, m: u32) {
            crate::ptx::await_inputs();
            gemv_mma::<$ty, 1>(x, w, y, n, k, m)
        }
        /// As the n8 entry, for m ≤ 16.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $n16(x: *const u16, w: *const u8, y: *mut u16, n: u32, k: u32, m: u32) {
            crate::ptx::await_inputs();
            gemv_mma::<$ty, 2>(x, w, y, n, k, m)
        }
        /// Launch: gridDim.x = rows of the band from `row0` (one block per row), any
        /// blockDim.x; `out` 16-byte aligned.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $dequant(w: *const u8, out: *mut u16, n: u32, k: u32, row0: u32) {
            crate::ptx::await_inputs();
            dequant::<$ty>(w, out, n, k, row0)
        }
        const _: () = {
            let l = &GGML_LAYOUTS[<$ty as Blocks>::LAYOUT];
            assert!(crate::abi::same_name(stringify!($gemv), l.gemv));
            assert!(crate::abi::same_name(stringify!($n8), l.mma[0]) && crate::abi::same_name(stringify!($n16), l.mma[1]));
            assert!(crate::abi::same_name(stringify!($dequant), l.dequant));
        };
    };
}

ggml_entries!(Q4_0: ggml_gemv_q4_0, ggml_mma_q4_0_n8, ggml_mma_q4_0_n16, ggml_dequant_q4_0);
ggml_entries!(Q4_1: ggml_gemv_q4_1, ggml_mma_q4_1_n8, ggml_mma_q4_1_n16, ggml_dequant_q4_1);
ggml_entries!(Q5_0: ggml_gemv_q5_0, ggml_mma_q5_0_n8, ggml_mma_q5_0_n16, ggml_dequant_q5_0);
ggml_entries!(Q5_1: ggml_gemv_q5_1, ggml_mma_q5_1_n8, ggml_mma_q5_1_n16, ggml_dequant_q5_1);
ggml_entries!(Q8_0: ggml_gemv_q8_0, ggml_mma_q8_0_n8, ggml_mma_q8_0_n16, ggml_dequant_q8_0);
ggml_entries!(Q4_K: ggml_gemv_q4_k, ggml_mma_q4_k_n8, ggml_mma_q4_k_n16, ggml_dequant_q4_k);
ggml_entries!(Q5_K: ggml_gemv_q5_k, ggml_mma_q5_k_n8, ggml_mma_q5_k_n16, ggml_dequant_q5_k);
ggml_entries!(Q6_K: ggml_gemv_q6_k, ggml_mma_q6_k_n8, ggml_mma_q6_k_n16, ggml_dequant_q6_k);
ggml_entries!(Q2_K: ggml_gemv_q2_k, ggml_mma_q2_k_n8, ggml_mma_q2_k_n16, ggml_dequant_q2_k);
ggml_entries!(Q3_K: ggml_gemv_q3_k, ggml_mma_q3_k_n8, ggml_mma_q3_k_n16, ggml_dequant_q3_k);
