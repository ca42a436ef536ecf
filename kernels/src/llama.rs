//! The non-linear parts of a LLaMA block, FP16 activations with FP32 math (the linears are
//! `gemv.rs` / `gemm.rs`). The residual stream stays in FP32 across layers.
use crate::ptx::{
    block_dim_x, block_x, block_y, exp2, f16x2_to_f32, fma, grid_dim_y, load_cached_v4, rsqrt, shared_array, shfl_idx, sync_threads, thread_x, unroll,
    warp_max, warp_sum, WARP,
};

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

// `NORM_THREADS` per RMSNorm block (one block per row), and the reduction is one warp sum
// plus one exchange of the warps' partials through shared memory. A single warp per row
// (the first version) spent 11 µs per row in serial load latency.
use crate::abi::NORM_THREADS;
shared_array! {
    /// One partial sum per warp of a norm block.
    fn norm_partials() -> *mut f32 = "codecllm_norm_partials"[128], align 4
}
const _: () = assert!(4 * (NORM_THREADS / WARP) as usize == 128);

/// Elements of a row each thread of a norm pass loads before it uses any. The passes
/// store into memory the compiler cannot prove apart from what they load, so element by
/// element each waited for the last one's store and its own load: a 4096-wide
/// `add_rmsnorm_f32_f16` of one row took 11.7 µs on an H200 (ncu, 256 threads, 16
/// elements a thread), 4.0 µs so (llama.cpp's `rms_norm_f32`: 4.6).
const NORM_BATCH: usize = 4;
// `norm_pass`'s unrolled lists name 4 elements.
const _: () = assert!(NORM_BATCH == 4);

/// `put(j, get(j))` for this thread's elements j = t, t + NORM_THREADS, … < d, each
/// batch's `get`s (the loads) before its `put`s.
#[inline(always)]
unsafe fn norm_pass<T: Copy + Default>(d: usize, t: usize, mut get: impl FnMut(usize) -> T, mut put: impl FnMut(usize, T)) {
    let step = NORM_THREADS as usize;
    let mut i = t;
    while i < d {
        let mut v = [T::default(); NORM_BATCH];
        unroll!(J in [0, 1, 2, 3] {
            if i + J * step < d {
                v[J] = get(i + J * step);
            }
        });
        unroll!(J in [0, 1, 2, 3] {
            if i + J * step < d {
                put(i + J * step, v[J]);
            }
        });
        i += NORM_BATCH * step;
    }
}
/// The sum of every thread's `v` over a `NORM_THREADS` block: warp shuffles, then one
/// shared slot per warp. Every thread of the block must call it (it synchronizes).
#[inline(always)]
unsafe fn block_sum(v: f32, t: usize) -> f32 {
    let parts = norm_partials();
    let v = warp_sum(v);
    if t as u32 % WARP == 0 {
        *parts.add(t / WARP as usize) = v;
    }
    sync_threads();
    let mut total = 0.0f32;
    let mut p = 0;
    while p < (NORM_THREADS / WARP) as usize {
        total += *parts.add(p);
        p += 1;
    }
    total
}

/// One block of `NORM_THREADS` per row: optionally `x += add` (the FP16 output of the
/// branch before, folded in here to save a launch), then `y = x / √(mean(x²) + eps) · w`.
#[inline(always)]
unsafe fn norm_rows(x: *mut f32, add: *const u16, w: *const f32, y: *mut u16, rows: u32, d: u32, eps: f32) {
    let row = block_x() as usize;
    if row >= rows as usize || d == 0 || block_dim_x() != NORM_THREADS {
        return;
    }
    let (t, d) = (thread_x() as usize, d as usize);
    let (xr, ar, yr) = (x.add(row * d), add.wrapping_add(row * d), y.add(row * d));
    let mut ss = 0.0f32;
    norm_pass(
        d,
        t,
        |j| if add.is_null() { *xr.add(j) } else { *xr.add(j) + h2f(ar.add(j)) },
        |j, v| {
            if !add.is_null() {
                *xr.add(j) = v;
            }
            ss += v * v;
        },
    );
    let r = rsqrt(block_sum(ss, t) / d as f32 + eps);
    norm_pass(d, t, |j| (*xr.add(j), *w.add(j)), |j, (v, wj)| *yr.add(j) = f2h(v * r * wj));
}

/// `y = rmsnorm(x) · w` per row, x FP32 → y FP16.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn rmsnorm_f32_f16(x: *mut f32, w: *const f32, y: *mut u16, rows: u32, d: u32, eps: f32) {
    crate::ptx::await_inputs();
    norm_rows(x, core::ptr::null(), w, y, rows, d, eps);
}

/// `x += add` (FP32 residual += FP16 branch output), then `y = rmsnorm(x) · w`.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn add_rmsnorm_f32_f16(x: *mut f32, add: *const u16, w: *const f32, y: *mut u16, rows: u32, d: u32, eps: f32) {
    crate::ptx::await_inputs();
    norm_rows(x, add, w, y, rows, d, eps);
}

/// `x[r, :] = table[ids[r], :] · scale` (FP16 → FP32; Gemma scales by √d); ids are checked
/// by the host.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn embed_f16_f32(table: *const u16, ids: *const u32, x: *mut f32, rows: u32, d: u32, scale: f32) {
    crate::ptx::await_inputs();
    let i = global_index();
    if i >= rows as usize * d as usize || d == 0 {
        return;
    }
    core::hint::assert_unchecked(d != 0);
    let (r, c) = (i / d as usize, i % d as usize);
    *x.add(i) = h2f(table.add(*ids.add(r) as usize * d as usize + c)) * scale;
}

/// SwiGLU: `y = silu(g) · u`.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn silu_mul_f16(g: *const u16, u: *const u16, y: *mut u16, n: u32) {
    crate::ptx::await_inputs();
    let i = global_index();
    if i < n as usize {
        let gv = h2f(g.add(i));
        // silu(g) = g / (1 + e^-g), e^-g = 2^(-g · log2 e)
        let s = gv / (1.0 + exp2(-gv * core::f32::consts::LOG2_E));
        *y.add(i) = f2h(s * h2f(u.add(i)));
    }
}

/// GeGLU: `y = gelu(g) · u`, GELU's tanh approximation (Gemma's activation).
#[no_mangle]
pub unsafe extern "ptx-kernel" fn gelu_mul_f16(g: *const u16, u: *const u16, y: *mut u16, n: u32) {
    crate::ptx::await_inputs();
    let i = global_index();
    if i < n as usize {
        let gv = h2f(g.add(i));
        // tanh(t) = 1 − 2 / (1 + e^{2t}), e^{2t} = 2^(2t · log2 e); saturates cleanly at ±inf.
        let t = 0.797_884_6 * (gv + 0.044_715 * gv * gv * gv);
        let th = 1.0 - 2.0 / (1.0 + exp2(2.0 * t * core::f32::consts::LOG2_E));
        *y.add(i) = f2h(0.5 * gv * (1.0 + th) * h2f(u.add(i)));
    }
}

/// `y[r, c] += b[c]` for `rows` rows of `n` (Qwen2's q/k/v biases).
#[no_mangle]
pub unsafe extern "ptx-kernel" fn add_bias_f16(y: *mut u16, b: *const f32, rows: u32, n: u32) {
    crate::ptx::await_inputs();
    let i = global_index();
    if n == 0 || i >= rows as usize * n as usize {
        return;
    }
    core::hint::assert_unchecked(n != 0);
    *y.add(i) = f2h(h2f(y.add(i)) + *b.add(i % n as usize));
}

/// RMSNorm of `vectors` FP16 vectors of `hd` in place, one warp each (the per-head q and
/// k norms of Qwen3 and Gemma 3): `x = x / √(mean(x²) + eps) · w`, `w` `[hd]`.
/// Launch: blockDim.x a multiple of 32, one warp per vector.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn head_rmsnorm_f16(x: *mut u16, w: *const f32, vectors: u32, hd: u32, eps: f32) {
    crate::ptx::await_inputs();
    let v = (block_x() * block_dim_x() + thread_x()) / WARP;
    let lane = (thread_x() % WARP) as usize;
    if v >= vectors || hd == 0 {
        return; // whole warps: the reduction below stays warp-uniform
    }
    let row = x.add(v as usize * hd as usize);
    let mut ss = 0.0f32;
    let mut i = lane;
    while i < hd as usize {
        let a = h2f(row.add(i));
        ss += a * a;
        i += WARP as usize;
    }
    let r = rsqrt(warp_sum(ss) / hd as f32 + eps);
    let mut i = lane;
    while i < hd as usize {
        *row.add(i) = f2h(h2f(row.add(i)) * r * *w.add(i));
        i += WARP as usize;
    }
}

/// RMSNorm of FP16 rows in place, one block of `NORM_THREADS` per row (Gemma 3's norms of
/// the attention and MLP outputs before they join the residual).
#[no_mangle]
pub unsafe extern "ptx-kernel" fn rmsnorm_f16_inplace(x: *mut u16, w: *const f32, rows: u32, d: u32, eps: f32) {
    crate::ptx::await_inputs();
    let row = block_x() as usize;
    if row >= rows as usize || d == 0 || block_dim_x() != NORM_THREADS {
        return;
    }
    let (t, d) = (thread_x() as usize, d as usize);
    let xr = x.add(row * d);
    let mut ss = 0.0f32;
    norm_pass(d, t, |j| h2f(xr.add(j)), |_, v| ss += v * v);
    let r = rsqrt(block_sum(ss, t) / d as f32 + eps);
    norm_pass(d, t, |j| (h2f(xr.add(j)), *w.add(j)), |j, (v, wj)| *xr.add(j) = f2h(v * r * wj));
}

/// RoPE on the new query and key rows at positions `*pos0 + row` (rotated in place: pair
/// `i` of a head is dimensions `2i, 2i + 1` when `split_half` is 0, `i, i + hd/2`
/// otherwise), and the rotated keys and the values stored into the caches at those
/// positions: one launch instead of three. `cos_sin` `[positions, hd / 2, 2]` is
/// precomputed by the host in f64 (the angles reach thousands of radians, beyond
/// `sin.approx`'s accurate range). Row `r`'s position and its sequence's first cache row
/// are `places[2r]` and `places[2r + 1]` (`abi::PLACE_WORDS`), read from device memory so
/// that one captured CUDA graph serves every decode step; the key and value go to cache row
/// `first + position`. One thread per pair.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "ptx-kernel" fn rope_qk_store_f16(
    q: *mut u16,
    k: *mut u16,
    v: *const u16,
    k_cache: *mut u16,
    v_cache: *mut u16,
    cos_sin: *const f32,
    rows: u32,
    heads: u32,
    kv_heads: u32,
    hd: u32,
    places: *const u32,
    split_half: u32,
) {
    crate::ptx::await_inputs();
    let i = global_index();
    let half = hd as usize / 2;
    let (q_pairs, k_pairs) = (heads as usize * half, kv_heads as usize * half);
    if half == 0 || i >= rows as usize * (q_pairs + k_pairs) {
        return;
    }
    // SAFETY: half != 0, and q_pairs + k_pairs >= half.
    core::hint::assert_unchecked(half != 0 && q_pairs + k_pairs != 0);
    let (row, r) = (i / (q_pairs + k_pairs), i % (q_pairs + k_pairs));
    let (pos, first) = (*places.add(PLACE_WORDS * row) as usize, *places.add(PLACE_WORDS * row + 1) as usize);
    // The pair's head-relative index, and the offsets of its two dimensions in the row.
    let pr = if r < q_pairs { r } else { r - q_pairs };
    let (head, p) = (pr / half, pr % half);
    let (ea, eb) = if split_half != 0 { (head * 2 * half + p, head * 2 * half + p + half) } else { (2 * pr, 2 * pr + 1) };
    let (row_q, row_k) = (row * 2 * q_pairs, row * 2 * k_pairs);
    let base = if r < q_pairs { q.add(row_q) } else { k.add(row_k) };
    let cs = cos_sin.add((pos * half + p) * 2);
    let (c, s) = (*cs, *cs.add(1));
    let (a, b) = (h2f(base.add(ea)), h2f(base.add(eb)));
    let (ra, rb) = (f2h(a * c - b * s), f2h(a * s + b * c));
    *base.add(ea) = ra;
    *base.add(eb) = rb;
    if r >= q_pairs {
        let (src, dst) = (row_k, (first + pos) * 2 * k_pairs);
        *k_cache.add(dst + ea) = ra;
        *k_cache.add(dst + eb) = rb;
        *v_cache.add(dst + ea) = *v.add(src + ea);
        *v_cache.add(dst + eb) = *v.add(src + eb);
    }
}

// `ATT_WARPS` warps per attention block (one block per query row and head). Each warp
// takes chunks of 32 cached positions, one position per lane, so a decode step with up to
// 256 positions is one chunk per warp; the warps' partial softmax states merge at the end.
// Shared memory holds the scaled query and each warp's accumulator at `ATT_MAX_HD` wide.
use crate::abi::{ATT_MAX_HEAD_DIM as ATT_MAX_HD, ATT_MAX_SPLITS, ATT_PARTIAL, ATT_WARPS, PLACE_WORDS};
shared_array! {
    /// q[256] | max[8] | sum[8] | acc[8][256], as f32.
    fn attn_shared() -> *mut f32 = "codecllm_attn"[9280], align 16
}
const _: () = assert!(4 * (ATT_MAX_HD + 2 * ATT_WARPS as usize + ATT_WARPS as usize * ATT_MAX_HD) == 9280);
/// Output dims per lane at the widest head.
const ATT_DPL: usize = ATT_MAX_HD / WARP as usize;

/// Causal grouped-query attention, `gridDim.y` blocks of `ATT_WARPS` warps per (row,
/// head): query row `r` sits at position `p = places[2r]` of the sequence whose cache
/// starts at row `places[2r + 1]` and attends to that sequence's cached keys `0..=p`, or
/// with `window > 0` (sliding-window layers) to the last `window` of them,
/// `p + 1 - window ..= p`. Scores and the online softmax are FP32; `hd` is a multiple of 32
/// up to 256; `scale` multiplies q·k. With one block per (row, head) it writes `out`; with
/// more, block `y` takes the `y`-th of `gridDim.y` equal runs of those positions and
/// writes its partial result (max, sum, unnormalized output) to `partial` for
/// `attention_merge_f16` — how a decode step, one row of a few heads, fills the GPU.
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
    places: *const u32,
    scale: f32,
    window: u32,
    partial: *mut f32,
) {
    crate::ptx::await_inputs();
    let item = block_x() as usize;
    if heads == 0 || kv_heads == 0 || item >= rows as usize * heads as usize || hd % WARP != 0 || hd as usize > ATT_MAX_HD || block_dim_x() != ATT_WARPS * WARP
    {
        return;
    }
    core::hint::assert_unchecked(heads != 0 && kv_heads != 0);
    if heads % kv_heads != 0 {
        return;
    }
    core::hint::assert_unchecked(heads / kv_heads != 0);
    let (t, warp, lane) = (thread_x() as usize, (thread_x() / WARP) as usize, thread_x() % WARP);
    let (row, head) = (item / heads as usize, item % heads as usize);
    let kvh = head / (heads / kv_heads) as usize;
    let (hd, kv_dim) = (hd as usize, kv_heads as usize * hd as usize);
    let dpl = hd / WARP as usize; // output dims per lane, ≤ ATT_DPL
    let sh = attn_shared();
    let (qs, maxes, sums, accs) = (sh, sh.add(ATT_MAX_HD), sh.add(ATT_MAX_HD + 8), sh.add(ATT_MAX_HD + 16));
    let qrow = q.add((row * heads as usize + head) * hd);
    let mut d = t;
    while d < hd {
        *qs.add(d) = h2f(qrow.add(d)) * scale;
        d += (ATT_WARPS * WARP) as usize;
    }
    sync_threads();
    let (positions, cache_first) = (*places.add(PLACE_WORDS * row) as usize + 1, *places.add(PLACE_WORDS * row + 1) as usize);
    let first = if window > 0 { positions.saturating_sub(window as usize) } else { 0 };
    // This block's run of positions: all of them, or the `split`-th of `splits` runs.
    let (split, splits) = (block_y() as usize, grid_dim_y() as usize);
    let per = (positions - first).div_ceil(splits);
    let lo = first + split * per;
    let hi = (lo + per).min(positions);
    let (kbase, vbase) = (k_cache.add(cache_first * kv_dim + kvh * hd), v_cache.add(cache_first * kv_dim + kvh * hd + lane as usize * dpl));
    let (mut m, mut l) = (f32::NEG_INFINITY, 0.0f32);
    let mut acc = [0.0f32; ATT_DPL];
    let mut c0 = lo + warp * WARP as usize;
    while c0 < hi {
        // Scores: lane j of the chunk takes position c0 + j, a full dot product over hd.
        let j = c0 + lane as usize;
        let mut s = f32::NEG_INFINITY;
        if j < hi {
            let kj = kbase.add(j * kv_dim) as *const u32;
            let mut dot = 0.0f32;
            let mut e = 0;
            while e < hd / 8 {
                let w = load_cached_v4(kj.add(4 * e));
                let mut h = 0;
                while h < 4 {
                    let (a, b) = f16x2_to_f32(w[h]);
                    dot = fma(a, *qs.add(8 * e + 2 * h), fma(b, *qs.add(8 * e + 2 * h + 1), dot));
                    h += 1;
                }
                e += 1;
            }
            s = dot;
        }
        // Lane 0's position always exists, so the chunk's max is finite.
        let m_new = {
            let c = warp_max(s);
            if c > m {
                c
            } else {
                m
            }
        };
        let corr = exp2((m - m_new) * core::f32::consts::LOG2_E);
        let p = if j < hi { exp2((s - m_new) * core::f32::consts::LOG2_E) } else { 0.0 };
        l = l * corr + warp_sum(p);
        unroll!(E in [0, 1, 2, 3, 4, 5, 6, 7] {
            acc[E] *= corr;
        });
        // Values: lanes split the head dimension; each position's weight is broadcast.
        let n = (hi - c0).min(WARP as usize);
        let mut i = 0;
        while i < n {
            let pi = shfl_idx(p, i as u32);
            let vj = vbase.add((c0 + i) * kv_dim);
            unroll!(E in [0, 1, 2, 3, 4, 5, 6, 7] {
                if E < dpl {
                    acc[E] = fma(pi, h2f(vj.add(E)), acc[E]);
                }
            });
            i += 1;
        }
        m = m_new;
        c0 += (ATT_WARPS * WARP) as usize;
    }
    if lane == 0 {
        *maxes.add(warp) = m;
        *sums.add(warp) = l;
    }
    unroll!(E in [0, 1, 2, 3, 4, 5, 6, 7] {
        if E < dpl {
            *accs.add(warp * ATT_MAX_HD + lane as usize * dpl + E) = acc[E];
        }
    });
    sync_threads();
    if warp != 0 {
        return;
    }
    // Merge: a warp with no positions has max -inf and weight 2^-inf = 0.
    let mut mm = f32::NEG_INFINITY;
    let mut w = 0;
    while w < ATT_WARPS as usize {
        let mw = *maxes.add(w);
        mm = if mw > mm { mw } else { mm };
        w += 1;
    }
    // Only a split launch (splits > 1, which passes the buffer) gets an empty run.
    let part = || partial.add((item * splits + split) * ATT_PARTIAL);
    if mm == f32::NEG_INFINITY {
        // A split past the last position (short contexts): nothing for the merge to weigh.
        if lane == 0 {
            let part = part();
            *part = mm;
            *part.add(1) = 0.0;
        }
        return;
    }
    let (mut total, mut o) = (0.0f32, [0.0f32; ATT_DPL]);
    let mut w = 0;
    while w < ATT_WARPS as usize {
        let f = exp2((*maxes.add(w) - mm) * core::f32::consts::LOG2_E);
        total += *sums.add(w) * f;
        unroll!(E in [0, 1, 2, 3, 4, 5, 6, 7] {
            if E < dpl {
                o[E] += *accs.add(w * ATT_MAX_HD + lane as usize * dpl + E) * f;
            }
        });
        w += 1;
    }
    if splits > 1 {
        let part = part();
        if lane == 0 {
            *part = mm;
            *part.add(1) = total;
        }
        unroll!(E in [0, 1, 2, 3, 4, 5, 6, 7] {
            if E < dpl {
                *part.add(2 + lane as usize * dpl + E) = o[E];
            }
        });
        return;
    }
    let orow = out.add((row * heads as usize + head) * hd + lane as usize * dpl);
    unroll!(E in [0, 1, 2, 3, 4, 5, 6, 7] {
        if E < dpl {
            *orow.add(E) = f2h(o[E] / total);
        }
    });
}

/// Combines the `splits` partial results of each (row, head) that `attention_f16` wrote
/// with `gridDim.y = splits`, one warp per item: out = Σ o_s·e^(m_s−M) / Σ l_s·e^(m_s−M)
/// over the splits that saw a position (M: their largest max).
#[no_mangle]
pub unsafe extern "ptx-kernel" fn attention_merge_f16(partial: *const f32, out: *mut u16, items: u32, splits: u32, hd: u32) {
    crate::ptx::await_inputs();
    let item = block_x() as usize;
    let lane = thread_x();
    if item >= items as usize || splits as usize > ATT_MAX_SPLITS || splits == 0 || hd % WARP != 0 || hd as usize > ATT_MAX_HD || block_dim_x() != WARP {
        return;
    }
    let (splits, hd) = (splits as usize, hd as usize);
    let base = partial.add(item * splits * ATT_PARTIAL);
    // Lane s holds split s's max and sum (splits ≤ 32 = lanes).
    let (ms, ls) = if (lane as usize) < splits {
        let p = base.add(lane as usize * ATT_PARTIAL);
        (*p, *p.add(1))
    } else {
        (f32::NEG_INFINITY, 0.0)
    };
    // Split 0 starts at the first position, which always exists: M is finite.
    let big = warp_max(ms);
    let f = if ms == f32::NEG_INFINITY { 0.0 } else { exp2((ms - big) * core::f32::consts::LOG2_E) };
    let total = warp_sum(ls * f);
    let mut o = [0.0f32; ATT_DPL];
    // Four splits' partials loaded before any is used: split by split, each waited for
    // its loads behind a branch (H200, ncu, 9 splits of a decode step: 5.1 µs, now 4.3;
    // llama.cpp's `flash_attn_combine_results` 2.6). The same batching of the attention
    // kernel's key and value loads made it slower (7.1 → 7.7 µs at 82 registers): not kept.
    // A split without positions left its partials unwritten: they are loaded, never used.
    let mut sp = 0;
    while sp < splits {
        let mut v = [[0.0f32; ATT_DPL]; 4];
        unroll!(S in [0, 1, 2, 3] {
            if sp + S < splits {
                let p = base.add((sp + S) * ATT_PARTIAL + 2);
                unroll!(E in [0, 1, 2, 3, 4, 5, 6, 7] {
                    if E * (WARP as usize) < hd {
                        v[S][E] = *p.add(E * WARP as usize + lane as usize);
                    }
                });
            }
        });
        unroll!(S in [0, 1, 2, 3] {
            if sp + S < splits {
                let fs = shfl_idx(f, (sp + S) as u32);
                if fs != 0.0 {
                    unroll!(E in [0, 1, 2, 3, 4, 5, 6, 7] {
                        if E * (WARP as usize) < hd {
                            o[E] = fma(fs, v[S][E], o[E]);
                        }
                    });
                }
            }
        });
        sp += 4;
    }
    let orow = out.add(item * hd);
    unroll!(E in [0, 1, 2, 3, 4, 5, 6, 7] {
        if E * (WARP as usize) < hd {
            *orow.add(E * WARP as usize + lane as usize) = f2h(o[E] / total);
        }
    });
}
