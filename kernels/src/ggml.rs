//! GGUF block types computed on as stored: fused GEMVs for M = 1 (CUDA cores, f32) and
//! M = 2..=16 (tensor cores) (`y[m, n] = Σ_k x[m, k] · w[n, k]`, w dequantized in
//! registers), and a dequantization to FP16 for larger batches (then cuBLAS), for Q4_0,
//! Q4_1, Q5_0, Q5_1, Q8_0 and Q2_K to Q6_K. The blocks sit in VRAM in `abi::GgmlLayout`'s
//! planes (one per struct field, aligned).
//!
//! The blocks' bits are read by `ggml_blocks` (shared with the host's tests): sub-blocks
//! with `value = scale · u − off`, one task (32 or 64 values) per lane at a time, in groups
//! of 8 consecutive values. From M = 2 the GEMV runs on tensor cores (`mma.sync.m16n8k16`):
//! each group is dequantized in registers with the reference's f32 arithmetic and rounded
//! to FP16 (the weights the larger batches' dequantization writes, bit for bit), and 16
//! rows × 8 or 16 batch rows come out of each block's mmas, so M = 8 reads what M = 1 does
//! and the FMAs per value and batch row of a CUDA-core dot product are gone.
use crate::abi::{GGML_GEMV1_ROWS, GGML_GEMV1_WARPS, GGML_LAYOUTS, GGML_MMA_ROWS, GGML_MMA_TILES, GGML_MMA_WARPS};
use crate::dequant::pack_f16;
use crate::ggml_blocks::{Blocks, Mem, Planes, Task, NO_TASK, Q2_K, Q3_K, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0};
use crate::ptx::{
    block_dim_x, block_x, f16x2_to_f32, fma, i8_to_f32, load_cached_v4, load_stream_v4, load_v4, mma_m16n8k16, shared_array, store_v4, sync_threads, thread_x,
    u8_to_f32, unroll, warp_sum, WARP,
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

const R: usize = GGML_GEMV1_ROWS as usize;
const _: () = assert!(R == 2, "the unroll! lists below spell out rows 0..R");

/// M = 1 on CUDA cores, in f32 from the stored quants: each warp computes `R` rows (each
/// activation load and conversion serves them all: at 4–6 bits a weight, re-reading the
/// activations per row would cost more L1 traffic than the weights cost DRAM traffic), a
/// task per lane at a time; per sub-block a lane sums `x·u` and `x` and adds
/// `scale · Σx·u − off · Σx`, so the offset costs nothing per value. At M = 1 this
/// outruns the tensor-core kernel below (H200, 2026-12-02: Q4_K 14336×4096 24 µs against
/// 28 µs), whose FP16 conversion of every weight is paid for by one batch column only.
#[inline(always)]
unsafe fn gemv_one<F: Blocks>(x: *const u16, w: *const u8, y: *mut u16, n: u32, k: u32) {
    let layout = &GGML_LAYOUTS[F::LAYOUT];
    let lane = thread_x() % WARP;
    let row0 = (block_x() * (block_dim_x() / WARP) + thread_x() / WARP) * GGML_GEMV1_ROWS;
    if row0 >= n {
        return;
    }
    let bpr = k / layout.block_elems;
    let p = Planes { base: w, blocks: n as u64 * bpr as u64 };
    // A last odd row is computed twice (the second copy is not stored).
    let rows = [row0, core::cmp::min(row0 + 1, n - 1)];
    let mut acc = [0f32; R];
    let mut t = lane;
    while t < bpr * F::TASKS {
        let (blk, part) = ((t / F::TASKS) as u64, t % F::TASKS);
        let mut task = [NO_TASK; R];
        unroll!(RI in [0, 1] {
            task[RI] = F::load::<Device>(&p, rows[RI] as u64 * bpr as u64 + blk, part);
        });
        let xb = blk as usize * layout.block_elems as usize;
        let mut psum = [0f32; R];
        let mut xsum = 0f32;
        unroll!(G in [0, 1, 2, 3, 4, 5, 6, 7] {
            if G < F::GROUPS {
                let u = [quants_f32::<F>(F::quants::<G>(&task[0], part)), quants_f32::<F>(F::quants::<G>(&task[1], part))];
                let xv = x8(x.add(xb + F::x_index::<G>(part) as usize));
                unroll!(I in [0, 1, 2, 3, 4, 5, 6, 7] {
                    xsum += xv[I];
                    psum[0] = fma(xv[I], u[0][I], psum[0]);
                    psum[1] = fma(xv[I], u[1][I], psum[1]);
                });
                if G % F::SUB == F::SUB - 1 {
                    let s = G / F::SUB;
                    unroll!(RI in [0, 1] {
                        acc[RI] = fma(task[RI].scale[s], psum[RI], fma(-task[RI].off[s], xsum, acc[RI]));
                        psum[RI] = 0.0;
                    });
                    xsum = 0.0;
                }
            }
        });
        t += WARP;
    }
    unroll!(RI in [0, 1] {
        let total = warp_sum(acc[RI]);
        if lane == 0 && row0 + (RI as u32) < n {
            *y.add(row0 as usize + RI) = (total as f16).to_bits();
        }
    });
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

/// Group `G`'s 8 values of a task, the reference's arithmetic in f32 (the dequantization
/// and the GEMV both use it, so the GEMV multiplies by exactly the FP16 weights the larger
/// batches' dequantization writes).
#[inline(always)]
fn group_values<F: Blocks, const G: usize>(task: &Task, part: u32) -> [f32; 8] {
    let u = quants_f32::<F>(F::quants::<G>(task, part));
    let (scale, off) = (task.scale[G / F::SUB], task.off[G / F::SUB]);
    let mut v = [0f32; 8];
    unroll!(I in [0, 1, 2, 3, 4, 5, 6, 7] {
        v[I] = if F::ZP != 0.0 { scale * (u[I] - F::ZP) } else { scale * u[I] - off };
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
            let xo = st.x0 + F::x_index::<G>(st.part) as usize;
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
    // Two steps' loads in flight before either's arithmetic.
    while s < steps {
        let a = load_step::<F>(&p, rows, bpr, s, t);
        let b = load_step::<F>(&p, rows, bpr, s + WARPS, t);
        mma_step::<F, NT>(&mut acc, &a, x, k as usize, g as usize, m as usize);
        mma_step::<F, NT>(&mut acc, &b, x, k as usize, g as usize, m as usize);
        s += 2 * WARPS;
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
                let dst = row_out.add(xb + F::x_index::<G>(part) as usize) as *mut u32;
                store_v4(dst, group_f16::<F, G>(&task, part));
            }
        });
        t += block_dim_x();
    }
}

macro_rules! ggml_entries {
    ($ty:ident: $gemv:ident, $n8:ident, $n16:ident, $dequant:ident) => {
        /// Launch (M = 1): blockDim.x = 32 · GGML_GEMV1_WARPS, gridDim.x = ceil(n /
        /// (GGML_GEMV1_ROWS · GGML_GEMV1_WARPS)); k a multiple of the block's values, x and y
        /// 16-byte aligned.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $gemv(x: *const u16, w: *const u8, y: *mut u16, n: u32, k: u32) {
            gemv_one::<$ty>(x, w, y, n, k)
        }
        /// Launch (M = m ≤ 8): blockDim.x = 32 · GGML_MMA_WARPS, gridDim.x = ceil(n /
        /// GGML_MMA_ROWS); k a multiple of the block's values, x and y 16-byte aligned.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $n8(x: *const u16, w: *const u8, y: *mut u16, n: u32, k: u32, m: u32) {
            gemv_mma::<$ty, 1>(x, w, y, n, k, m)
        }
        /// As the n8 entry, for m ≤ 16.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $n16(x: *const u16, w: *const u8, y: *mut u16, n: u32, k: u32, m: u32) {
            gemv_mma::<$ty, 2>(x, w, y, n, k, m)
        }
        /// Launch: gridDim.x = rows of the band from `row0` (one block per row), any
        /// blockDim.x; `out` 16-byte aligned.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $dequant(w: *const u8, out: *mut u16, n: u32, k: u32, row0: u32) {
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
