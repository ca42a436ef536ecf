//! Fused W8A16 GEMV for small batches (M = 1..=8): `y[m, n] = Σ_k x[m, k] · q[n, k] · s[n, k / group]`.
//!
//! One warp per output row. Each lane streams 16 INT8 weights per step with one 16-byte
//! load, widens them in registers (no dequantized copy ever touches memory) and keeps M
//! FP32 accumulators; a butterfly shuffle sums the lanes. The activations (≤ 8 × k FP16)
//! are re-read by every warp and stay in L1/L2, so DRAM traffic is the weight bytes alone.
use crate::ptx::{block_dim_x, block_x, f16x2_to_f32, fma, i8_to_f32, load_stream_v4, thread_x, unroll, warp_sum, WARP};

/// Weight vectors each lane has in flight before the first use: four 16-byte loads per
/// lane (2 KiB per warp) cover DRAM latency at full occupancy on sm_80/sm_90. The
/// `unroll!` lists below spell out 0..UNROLL.
const UNROLL: u32 = 4;

#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct V4([u32; 4]);

/// Σ over 16 elements of x (FP16, 16-byte aligned) times the INT8 weights in `w`.
#[inline(always)]
unsafe fn dot16(x: *const u16, w: [u32; 4]) -> f32 {
    let xa = *(x as *const V4);
    let xb = *(x.add(8) as *const V4);
    let xs = [xa.0[0], xa.0[1], xa.0[2], xa.0[3], xb.0[0], xb.0[1], xb.0[2], xb.0[3]];
    let mut sum = 0.0f32;
    unroll!(I in [0, 1, 2, 3] {
        let biased = w[I] ^ 0x8080_8080;
        let (x0, x1) = f16x2_to_f32(xs[2 * I]);
        let (x2, x3) = f16x2_to_f32(xs[2 * I + 1]);
        sum = fma(x0, i8_to_f32::<0>(biased), sum);
        sum = fma(x1, i8_to_f32::<1>(biased), sum);
        sum = fma(x2, i8_to_f32::<2>(biased), sum);
        sum = fma(x3, i8_to_f32::<3>(biased), sum);
    });
    sum
}

/// This warp's row over the whole grid.
#[inline(always)]
fn warp_row() -> u32 {
    block_x() * (block_dim_x() / WARP) + thread_x() / WARP
}

#[inline(always)]
unsafe fn gemv<const M: usize>(x: *const u16, q: *const i8, scales: *const f32, y: *mut u16, n: u32, k: u32, group: u32, groups: u32) {
    gemv_row::<M>(x, q, scales, y, warp_row(), n, k, group, groups)
}

/// Row `row` of `y`, computed by the calling warp.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn gemv_row<const M: usize>(x: *const u16, q: *const i8, scales: *const f32, y: *mut u16, row: u32, n: u32, k: u32, group: u32, groups: u32) {
    let lane = thread_x() % WARP;
    if row >= n || group == 0 {
        return;
    }
    let k_us = k as usize;
    let row_q = q.add(row as usize * k_us);
    let row_s = scales.add(row as usize * groups as usize);
    let mut acc = [0.0f32; M];

    if k % 16 == 0 {
        let chunks = k / 16;
        let per_channel = groups == 1;
        // Per-group scales need the group of each 16-wide chunk; `group` is a multiple of 16.
        let chunks_per_group = core::cmp::max(group / 16, 1);
        let mut c = lane;
        while c + (UNROLL - 1) * WARP < chunks {
            let mut w = [[0u32; 4]; UNROLL as usize];
            unroll!(U in [0, 1, 2, 3] {
                w[U] = load_stream_v4(row_q.add(((c + U as u32 * WARP) * 16) as usize) as *const u32);
            });
            unroll!(U in [0, 1, 2, 3] {
                let cu = c + U as u32 * WARP;
                let s = if per_channel { 1.0 } else { *row_s.add((cu / chunks_per_group) as usize) };
                unroll!(MI in [0, 1, 2, 3, 4, 5, 6, 7] {
                    if MI < M {
                        acc[MI] = fma(s, dot16(x.add(MI * k_us + cu as usize * 16), w[U]), acc[MI]);
                    }
                });
            });
            c += UNROLL * WARP;
        }
        while c < chunks {
            let w = load_stream_v4(row_q.add((c * 16) as usize) as *const u32);
            let s = if per_channel { 1.0 } else { *row_s.add((c / chunks_per_group) as usize) };
            unroll!(MI in [0, 1, 2, 3, 4, 5, 6, 7] {
                if MI < M {
                    acc[MI] = fma(s, dot16(x.add(MI * k_us + c as usize * 16), w), acc[MI]);
                }
            });
            c += WARP;
        }
        if per_channel {
            let s = *row_s;
            unroll!(MI in [0, 1, 2, 3, 4, 5, 6, 7] {
                if MI < M {
                    acc[MI] *= s;
                }
            });
        }
    } else {
        // Rows not 16-byte aligned (k % 16 != 0): element-wise, same arithmetic.
        let mut kk = lane;
        while kk < k {
            let w = *row_q.add(kk as usize) as f32 * *row_s.add((kk / group) as usize);
            unroll!(MI in [0, 1, 2, 3, 4, 5, 6, 7] {
                if MI < M {
                    let xv = f16::from_bits(*x.add(MI * k_us + kk as usize)) as f32;
                    acc[MI] = fma(xv, w, acc[MI]);
                }
            });
            kk += WARP;
        }
    }

    unroll!(MI in [0, 1, 2, 3, 4, 5, 6, 7] {
        if MI < M {
            let total = warp_sum(acc[MI]);
            if lane == 0 {
                *y.add(MI * n as usize + row as usize) = (total as f16).to_bits();
            }
        }
    });
}

macro_rules! gemv_entry {
    ($($name:ident = $m:literal),* $(,)?) => {$(
        /// Launch: blockDim.x a multiple of 32 (one warp per row), gridDim.x = ceil(n / warps per block).
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(
            x: *const u16, q: *const i8, scales: *const f32, y: *mut u16,
            n: u32, k: u32, group: u32, groups: u32,
        ) {
            crate::ptx::await_inputs();
            gemv::<$m>(x, q, scales, y, n, k, group, groups)
        }
        // The host launches batch m as `abi::GEMV_KERNELS[m - 1]`.
        const _: () = assert!(crate::abi::same_name(stringify!($name), crate::abi::GEMV_KERNELS[$m - 1]));
    )*};
}

gemv_entry!(
    gemv_w8a16_m1 = 1,
    gemv_w8a16_m2 = 2,
    gemv_w8a16_m3 = 3,
    gemv_w8a16_m4 = 4,
    gemv_w8a16_m5 = 5,
    gemv_w8a16_m6 = 6,
    gemv_w8a16_m7 = 7,
    gemv_w8a16_m8 = 8,
);

/// M = 1 over up to three matrices that share `k` and the scale grouping (a block's q, k
/// and v projections, or gate and up) in one launch: warp rows run over the matrices one
/// after another, each row computed exactly as `gemv_w8a16_m1` would. At SmolLM2's size a
/// projection is a few microseconds, so the launches saved are a large part of a step.
/// Launch: as `gemv_w8a16_m1` with n = n0 + n1 + n2 (n2 = 0 for two matrices).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "ptx-kernel" fn gemv3_w8a16_m1(
    x: *const u16,
    q0: *const i8,
    s0: *const f32,
    y0: *mut u16,
    n0: u32,
    q1: *const i8,
    s1: *const f32,
    y1: *mut u16,
    n1: u32,
    q2: *const i8,
    s2: *const f32,
    y2: *mut u16,
    n2: u32,
    k: u32,
    group: u32,
    groups: u32,
) {
    crate::ptx::await_inputs();
    let row = warp_row();
    if row < n0 {
        gemv_row::<1>(x, q0, s0, y0, row, n0, k, group, groups)
    } else if row - n0 < n1 {
        gemv_row::<1>(x, q1, s1, y1, row - n0, n1, k, group, groups)
    } else {
        gemv_row::<1>(x, q2, s2, y2, row - n0 - n1, n2, k, group, groups)
    }
}

/// Σ over 8 elements of x (FP16, 16-byte aligned) times the FP16 weights in `w`.
#[inline(always)]
unsafe fn dot8_f16(x: *const u16, w: [u32; 4]) -> f32 {
    let xs = *(x as *const V4);
    let mut sum = 0.0f32;
    unroll!(I in [0, 1, 2, 3] {
        let (x0, x1) = f16x2_to_f32(xs.0[I]);
        let (w0, w1) = f16x2_to_f32(w[I]);
        sum = fma(x0, w0, sum);
        sum = fma(x1, w1, sum);
    });
    sum
}

/// FP16 weights (the FP16 mode's baseline), M = 1: `y[n] = Σ_k x[k] · w[n, k]`, one warp
/// per row as `gemv`, 8 weights per 16-byte load, FP32 accumulation. A cuBLAS call per
/// product at M = 1 left the FP16 mode at 0.79× llama.cpp's F16 on H200; at M = 4–8 this
/// kernel measured 0.40–0.71× cuBLAS (2026-12-02), so larger batches go to cuBLAS.
///
/// Launch: as `gemv_w8a16_m1`; x and w 16-byte aligned.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn gemv_f16_m1(x: *const u16, w: *const u16, y: *mut u16, n: u32, k: u32) {
    crate::ptx::await_inputs();
    let (row, lane) = (warp_row(), thread_x() % WARP);
    if row >= n {
        return;
    }
    let k_us = k as usize;
    let row_w = w.add(row as usize * k_us);
    let mut acc = 0.0f32;
    if k % 8 == 0 {
        let chunks = k / 8;
        let mut c = lane;
        while c + (UNROLL - 1) * WARP < chunks {
            let mut v = [[0u32; 4]; UNROLL as usize];
            unroll!(U in [0, 1, 2, 3] {
                v[U] = load_stream_v4(row_w.add(((c + U as u32 * WARP) * 8) as usize) as *const u32);
            });
            unroll!(U in [0, 1, 2, 3] {
                acc += dot8_f16(x.add((c + U as u32 * WARP) as usize * 8), v[U]);
            });
            c += UNROLL * WARP;
        }
        while c < chunks {
            let v = load_stream_v4(row_w.add((c * 8) as usize) as *const u32);
            acc += dot8_f16(x.add(c as usize * 8), v);
            c += WARP;
        }
    } else {
        // Rows not 16-byte aligned (k % 8 != 0): element-wise.
        let mut kk = lane as usize;
        while kk < k_us {
            acc = fma(f16::from_bits(*x.add(kk)) as f32, f16::from_bits(*row_w.add(kk)) as f32, acc);
            kk += WARP as usize;
        }
    }
    let total = warp_sum(acc);
    if lane == 0 {
        *y.add(row as usize) = (total as f16).to_bits();
    }
}
const _: () = assert!(crate::abi::same_name("gemv_f16_m1", crate::abi::GEMV_F16));
