//! GGUF block types computed on as stored: a fused GEMV for M = 1..=8
//! (`y[m, n] = Σ_k x[m, k] · w[n, k]`, w dequantized in registers) and a dequantization to
//! FP16 for larger batches (then cuBLAS), for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q2_K to Q6_K.
//! The blocks sit in VRAM in `abi::GgmlLayout`'s planes (one per struct field, aligned).
//!
//! The blocks' bits are read by `ggml_blocks` (shared with the host's tests): sub-blocks
//! with `value = scale · u − off`, one task (32 or 64 values) per lane at a time, in groups
//! of 8 consecutive values, one 16-byte activation load each. Per sub-block a lane sums
//! `x·u` and `x` and adds `scale · Σx·u − off · Σx`, so the offset costs nothing per value.
//! Each warp computes `GGML_GEMV_ROWS` rows, so that each activation load and conversion
//! serves them all (at 4–6 bits a weight, re-reading the activations per row would cost
//! more L1 traffic than the weights cost DRAM traffic).
use crate::abi::{GEMV_MAX_M, GGML_GEMV_ROWS, GGML_LAYOUTS};
use crate::dequant::pack_f16;
use crate::ggml_blocks::{Blocks, Mem, Planes, NO_TASK, Q2_K, Q3_K, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0};
use crate::ptx::{block_dim_x, block_x, f16x2_to_f32, fma, i8_to_f32, load_cached_v4, load_stream_v4, store_v4, thread_x, u8_to_f32, unroll, warp_sum, WARP};

const R: usize = GGML_GEMV_ROWS as usize;
const _: () = assert!(R == 2, "the unroll! lists below spell out rows 0..R");

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
            task[RI] = F::load::<Device>(&p, rows[RI] as u64 * bpr as u64 + blk, part);
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
        let task = F::load::<Device>(&p, r as u64 * bpr as u64 + blk, part);
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
ggml_entries!(Q2_K: ggml_dequant_q2_k, [ggml_gemv_q2_k_m1 = 1, ggml_gemv_q2_k_m2 = 2, ggml_gemv_q2_k_m3 = 3, ggml_gemv_q2_k_m4 = 4, ggml_gemv_q2_k_m5 = 5, ggml_gemv_q2_k_m6 = 6, ggml_gemv_q2_k_m7 = 7, ggml_gemv_q2_k_m8 = 8]);
ggml_entries!(Q3_K: ggml_dequant_q3_k, [ggml_gemv_q3_k_m1 = 1, ggml_gemv_q3_k_m2 = 2, ggml_gemv_q3_k_m3 = 3, ggml_gemv_q3_k_m4 = 4, ggml_gemv_q3_k_m5 = 5, ggml_gemv_q3_k_m6 = 6, ggml_gemv_q3_k_m7 = 7, ggml_gemv_q3_k_m8 = 8]);
