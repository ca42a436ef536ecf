//! The non-linear parts of a LLaMA block, FP16 activations with FP32 math (the linears are
//! `gemv.rs` / `gemm.rs`). The residual stream stays in FP32 across layers.
use crate::ptx::{block_dim_x, block_x, exp2, rsqrt, thread_x, warp_sum, WARP};

#[inline(always)]
fn global_index() -> usize {
    block_x() as usize * block_dim_x() as usize + thread_x() as usize
}

#[inline(always)]
unsafe fn h2f(p: *const u16) -> f32 {
    f16::from_bits(*p) as f32
}

#[inline(always)]
fn f2h(v: f32) -> u16 {
    (v as f16).to_bits()
}

/// One warp per row: `y = x / √(mean(x²) + eps) · w`, x FP32 → y FP16.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn rmsnorm_f32_f16(x: *const f32, w: *const f32, y: *mut u16, rows: u32, d: u32, eps: f32) {
    let row = global_index() / WARP as usize;
    let lane = thread_x() % WARP;
    if row >= rows as usize || d == 0 {
        return;
    }
    core::hint::assert_unchecked(d != 0);
    let xr = x.add(row * d as usize);
    let mut ss = 0.0f32;
    let mut i = lane;
    while i < d {
        let v = *xr.add(i as usize);
        ss += v * v;
        i += WARP;
    }
    let r = rsqrt(warp_sum(ss) / d as f32 + eps);
    let mut i = lane;
    while i < d {
        *y.add(row * d as usize + i as usize) = f2h(*xr.add(i as usize) * r * *w.add(i as usize));
        i += WARP;
    }
}

/// `x[r, :] = table[ids[r], :]` (FP16 → FP32); ids are checked by the host.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn embed_f16_f32(table: *const u16, ids: *const u32, x: *mut f32, rows: u32, d: u32) {
    let i = global_index();
    if i >= rows as usize * d as usize || d == 0 {
        return;
    }
    core::hint::assert_unchecked(d != 0);
    let (r, c) = (i / d as usize, i % d as usize);
    *x.add(i) = h2f(table.add(*ids.add(r) as usize * d as usize + c));
}

/// `x += y` (FP32 residual += FP16 branch output).
#[no_mangle]
pub unsafe extern "ptx-kernel" fn add_f16_to_f32(x: *mut f32, y: *const u16, n: u32) {
    let i = global_index();
    if i < n as usize {
        *x.add(i) += h2f(y.add(i));
    }
}

/// SwiGLU: `y = silu(g) · u`.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn silu_mul_f16(g: *const u16, u: *const u16, y: *mut u16, n: u32) {
    let i = global_index();
    if i < n as usize {
        let gv = h2f(g.add(i));
        // silu(g) = g / (1 + e^-g), e^-g = 2^(-g · log2 e)
        let s = gv / (1.0 + exp2(-gv * core::f32::consts::LOG2_E));
        *y.add(i) = f2h(s * h2f(u.add(i)));
    }
}

/// RoPE in place on `x` `[rows, heads · hd]` at positions `*pos0 + row`, rotating adjacent
/// pairs; `cos_sin` `[positions, hd / 2, 2]` is precomputed by the host in f64 (the angles
/// reach thousands of radians, beyond `sin.approx`'s accurate range). The position is read
/// from device memory so that one captured CUDA graph serves every decode step.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn rope_f16(x: *mut u16, cos_sin: *const f32, rows: u32, heads: u32, hd: u32, pos0: *const u32) {
    let i = global_index();
    let half = hd as usize / 2;
    let pairs = rows as usize * heads as usize * half;
    if i >= pairs || half == 0 || heads == 0 {
        return;
    }
    let per_row = half * heads as usize;
    // SAFETY: both factors are non-zero and their product (≤ pairs) does not overflow.
    core::hint::assert_unchecked(half != 0 && per_row != 0);
    let p = i % half;
    let row = i / per_row;
    let at = x.add(2 * i);
    let cs = cos_sin.add(((*pos0 as usize + row) * half + p) * 2);
    let (c, s) = (*cs, *cs.add(1));
    let (a, b) = (h2f(at), h2f(at.add(1)));
    *at = f2h(a * c - b * s);
    *at.add(1) = f2h(a * s + b * c);
}

/// `k_cache[*pos0 + r] = k[r]`, `v_cache[*pos0 + r] = v[r]` for the `n / kv_dim` new rows
/// (a kernel, not a copy, because the destination moves with the position on the device).
#[no_mangle]
pub unsafe extern "ptx-kernel" fn kv_store_f16(k: *const u16, v: *const u16, k_cache: *mut u16, v_cache: *mut u16, pos0: *const u32, n: u32, kv_dim: u32) {
    let i = global_index();
    if i < n as usize {
        let at = *pos0 as usize * kv_dim as usize + i;
        *k_cache.add(at) = *k.add(i);
        *v_cache.add(at) = *v.add(i);
    }
}

/// Causal grouped-query attention, one warp per (row, head): query row `r` sits at position
/// `*pos0 + r` and attends to cached keys `0..=*pos0 + r`. Lanes split the head dimension
/// (`hd / 32` ≤ 4 each); scores use an online softmax in FP32.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "ptx-kernel" fn attention_f16(
    q: *const u16,
    k_cache: *const u16,
    v_cache: *const u16,
    out: *mut u16,
    rows: u32,
    heads: u32,
    kv_heads: u32,
    hd: u32,
    pos0: *const u32,
    scale: f32,
) {
    let w = global_index() / WARP as usize;
    let lane = (thread_x() % WARP) as usize;
    if heads == 0 || kv_heads == 0 || w >= rows as usize * heads as usize || hd % WARP != 0 || hd > 4 * WARP {
        return;
    }
    core::hint::assert_unchecked(heads != 0 && kv_heads != 0);
    if heads % kv_heads != 0 {
        return;
    }
    core::hint::assert_unchecked(heads / kv_heads != 0);
    let (row, head) = (w / heads as usize, w % heads as usize);
    let kvh = head / (heads / kv_heads) as usize;
    let dpl = (hd / WARP) as usize; // dims per lane
    let (hd_us, kv_dim) = (hd as usize, kv_heads as usize * hd as usize);
    let qrow = q.add(row * heads as usize * hd_us + head * hd_us);
    let mut qv = [0.0f32; 4];
    let mut acc = [0.0f32; 4];
    let mut d = 0;
    while d < 4 {
        if d < dpl {
            qv[d] = h2f(qrow.add(lane * dpl + d)) * scale;
        }
        d += 1;
    }
    let (mut m, mut l) = (f32::NEG_INFINITY, 0.0f32);
    let last = *pos0 as usize + row;
    let mut j = 0;
    while j <= last {
        let kj = k_cache.add(j * kv_dim + kvh * hd_us + lane * dpl);
        let mut part = 0.0;
        let mut d = 0;
        while d < 4 {
            if d < dpl {
                part += qv[d] * h2f(kj.add(d));
            }
            d += 1;
        }
        let s = warp_sum(part);
        let m_new = if s > m { s } else { m };
        let corr = exp2((m - m_new) * core::f32::consts::LOG2_E);
        let p = exp2((s - m_new) * core::f32::consts::LOG2_E);
        l = l * corr + p;
        let vj = v_cache.add(j * kv_dim + kvh * hd_us + lane * dpl);
        let mut d = 0;
        while d < 4 {
            if d < dpl {
                acc[d] = acc[d] * corr + p * h2f(vj.add(d));
            }
            d += 1;
        }
        m = m_new;
        j += 1;
    }
    let orow = out.add(row * heads as usize * hd_us + head * hd_us + lane * dpl);
    let mut d = 0;
    while d < 4 {
        if d < dpl {
            *orow.add(d) = f2h(acc[d] / l);
        }
        d += 1;
    }
}
