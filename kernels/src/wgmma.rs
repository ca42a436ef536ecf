//! Hopper W8A16 GEMM on `wgmma.mma_async` (sm_90a only: lib.rs compiles this file into the
//! sm_90a PTX alone): `y[m, n] = Σ_k x[m, k] · q[n, k] · s[n, k / group]`.
//!
//! **Roles (A and B swapped, as mixed-input Hopper GEMMs such as Machete do).** The wgmma M side (64 rows per warpgroup) is the
//! weights, so a block of `warpgroups` warpgroups covers 64·warpgroups output channels; the
//! wgmma N side is the batch (`bm` rows of x, 16 to 256), so a batch of 16 wastes no
//! tensor-core rows. Each warpgroup accumulates the transposed tile D = W·Xᵀ (64 × bm, FP32)
//! and the epilogue stores it into row-major y.
//!
//! **A (weights) from registers.** A stage's INT8 tile holds `bn` rows of `WGMMA_BK` bytes
//! (row pitch `WGMMA_A_PITCH`, conflict-free below). The fragment of one k16 step is the
//! mma.m16n8k16 A fragment per warp (PTX ISA "wgmma .m64nNk16 register fragment, matrix A";
//! CUTLASS `ALayout_64x16`): warp w of the warpgroup holds rows 16w..16w+15, lane
//! (g = lane / 4, t = lane % 4) holds a0 = (row g, k 2t, 2t+1), a1 = (row g+8, k 2t, 2t+1),
//! a2 = (row g, k 2t+8, 2t+9), a3 = (row g+8, k 2t+8, 2t+9), the lower k in the low half.
//! Bytes 2t, 2t+1 of the step's 16 lie in 32-bit word t / 2 at byte 2·(t % 2), so one
//! `ld.shared.u32` and one `prmt` per pair: the byte, biased by `^ 0x80`, goes under 0x64
//! (FP16 1024 + 128 + q, exact), and `sub.f16x2` of 1152 leaves q. Per-group scales multiply
//! the FP16 pairs (q·s rounded to FP16, as gemm.rs does); a per-channel scale multiplies the
//! FP32 result in the epilogue.
//!
//! **B (activations) from shared memory**, by matrix descriptor, K-major (x's own order: k
//! contiguous per batch row), no swizzle. Core matrix = 8 batch rows × 8 k = 8 rows of 16
//! bytes, 128 contiguous bytes. Core matrix (i = row / 8, j = k / 8) sits at (8i + j)·128 in
//! the stage's B tile, so 16-byte chunk c = 64i + 8j + (row % 8) sits at 16c: `cp.async`
//! thread c writes address 16c (no bank conflicts) and a warp reads 8 rows × 64 bytes of x.
//! Descriptor (PTX ISA "matrix descriptor"; CUTLASS `make_gmma_desc<Major::K>`,
//! INTERLEAVE: `((8,n),2):((1,SBO),LBO)` in 16-byte units): start address >> 4 in bits
//! 0–13, LBO = 128 bytes (the two K-adjacent core matrices of a k16 step) >> 4 in 16–29,
//! SBO = 1024 bytes (the next 8 batch rows) >> 4 in 32–45, base offset 0 (49–51), swizzle
//! mode 0 (62–63). k16 step s of a stage starts 256·s bytes into its B tile.
//!
//! **Pipeline.** A `stages`-deep ring of k blocks in dynamic shared memory, filled by every
//! thread with `cp.async` (16 bytes each, zero-filled past m, n and the split's k end) in
//! one commit group per block. Iteration i: `wgmma.fence`, four k16 wgmmas on block i
//! (fragments converted during the previous iteration), commit; wait for block i + 1's
//! copies, `fence.proxy.async` (cp.async writes are generic-proxy writes; the wgmma reads
//! B through the async proxy), barrier; refill the slot of block i − 1 with block
//! i + stages − 1; convert block i + 1's fragments while the wgmmas run; `wgmma.wait_group
//! 0`. One barrier per k block; the conversion of block i + 1 overlaps the tensor-core
//! work of block i, and the copies of the next stages − 2 blocks are in flight throughout.
//!
//! Grid: x over N (`bn` channels), y over M (`bm` rows), z over K splits (multiples of
//! `WGMMA_BK`). One split: FP16 `y`; several: FP32 partials `partial[z, m, n]` summed by
//! `gemm_reduce_splits`, as gemm.rs. Requires k % 16 == 0 (16-byte rows for `cp.async`)
//! and, with several groups, group % 16 == 0 (one scale per k16 step); the host checks.
use crate::abi::{WGMMA_A_PITCH, WGMMA_BK, WGMMA_TILES};
use crate::ptx::{
    block_x, block_y, block_z, cp_async_16, cp_async_commit, cp_async_wait, f32_to_f16x2, fence_proxy_async_shared, ld_shared_u32, mul_f16x2, sync_threads,
    thread_x, unroll, WARP,
};
use core::arch::asm;

const BK: u32 = WGMMA_BK as u32;
const PITCH: u32 = WGMMA_A_PITCH as u32;
const WG_THREADS: u32 = 128;
/// LBO and SBO of the B tiles (see the module docs), and the descriptor bits they give.
const B_LBO: u64 = 128;
const B_SBO: u64 = 128 * (WGMMA_BK as u64 / 8);
const B_DESC_HI: u64 = ((B_SBO >> 4) << 32) | ((B_LBO >> 4) << 16);
const _: () = assert!(WGMMA_BK == 64 && WGMMA_A_PITCH % 16 == 0);

// The ring: dynamic shared memory (`smem_bytes()` of the tile, set by the host at launch).
core::arch::global_asm!(".extern .shared .align 128 .b8 codecllm_wgmma_smem[];");

/// Shared-window address of the ring (what `cp.async`, `ld.shared` and descriptors take).
#[inline(always)]
fn smem_base() -> u32 {
    let a: u32;
    unsafe { asm!("{{ .reg .u64 t64; mov.u64 t64, codecllm_wgmma_smem; cvt.u32.u64 {a}, t64; }}", a = out(reg32) a, options(pure, nomem, nostack)) };
    a
}

/// Matrix descriptor of a B tile (k16 step) starting at shared address `addr`.
#[inline(always)]
fn b_desc(addr: u32) -> u64 {
    B_DESC_HI | ((addr as u64 >> 4) & 0x3FFF)
}

/// Two INT8 weights (bytes `sel` picks: 0x4140 bytes 0, 1; 0x4342 bytes 2, 3) → FP16 pair.
#[inline(always)]
fn i8x2_to_f16x2(w: u32, sel: u32) -> u32 {
    let r: u32;
    unsafe {
        asm!(
            "prmt.b32 {r}, {w}, {e}, {s};",
            "sub.f16x2 {r}, {r}, {bias};",
            r = out(reg32) r,
            w = in(reg32) w ^ 0x8080_8080,
            e = in(reg32) 0x6464_6464u32,
            s = in(reg32) sel,
            bias = in(reg32) 0x6480_6480u32, // 1152.0 in both halves
            options(pure, nomem, nostack),
        );
    }
    r
}

/// `wgmma.fence`: orders this thread's writes of the A fragments (and of the accumulators,
/// last written by `wait`) before the wgmmas that read them. The fragments pass through as
/// operands so that their conversion cannot be scheduled after the fence.
#[inline(always)]
unsafe fn wgmma_fence(a: &mut [[u32; 4]; 4]) {
    asm!(
        "wgmma.fence.sync.aligned;",
        "// {a00} {a01} {a02} {a03} {a10} {a11} {a12} {a13} {a20} {a21} {a22} {a23} {a30} {a31} {a32} {a33}",
        a00 = inout(reg32) a[0][0],
        a01 = inout(reg32) a[0][1],
        a02 = inout(reg32) a[0][2],
        a03 = inout(reg32) a[0][3],
        a10 = inout(reg32) a[1][0],
        a11 = inout(reg32) a[1][1],
        a12 = inout(reg32) a[1][2],
        a13 = inout(reg32) a[1][3],
        a20 = inout(reg32) a[2][0],
        a21 = inout(reg32) a[2][1],
        a22 = inout(reg32) a[2][2],
        a23 = inout(reg32) a[2][3],
        a30 = inout(reg32) a[3][0],
        a31 = inout(reg32) a[3][1],
        a32 = inout(reg32) a[3][2],
        a33 = inout(reg32) a[3][3],
        options(nostack),
    );
}

/// Closes the wgmmas issued since the last commit into one group (`wait` counts groups).
#[inline(always)]
unsafe fn wgmma_commit() {
    asm!("wgmma.commit_group.sync.aligned;", options(nostack));
}

/// Per wgmma N: `mma` (one m64nNk16 step, A from registers, B by descriptor, D += A·B) and
/// `wait` (`wgmma.wait_group 0`). `wait` takes the accumulators as in-out operands, so no
/// use of them is scheduled before it, and the fragments of the waited-on steps as inputs,
/// so their registers stay untouched while the tensor cores may still read them. Neither
/// is `pure`: both need the whole warpgroup and must not move under a branch.
macro_rules! wgmma_shape {
    ($m:ident, $n:literal, [$d0:literal $(, $d:literal)*]) => {
        mod $m {
            use core::arch::asm;
            #[inline(always)]
            pub unsafe fn mma(acc: &mut [f32; $n / 2], a: &[u32; 4], desc: u64) {
                asm!(
                    "{{",
                    ".reg .pred p;",
                    "setp.ne.b32 p, {one}, 0;",
                    concat!(
                        "wgmma.mma_async.sync.aligned.m64n", $n, "k16.f32.f16.f16 {{{", $d0, "}", $(", {", $d, "}",)*
                        "}}, {{{a0}, {a1}, {a2}, {a3}}}, {desc}, p, 1, 1, 0;"
                    ),
                    "}}",
                    inout(reg32) acc[$d0],
                    $(inout(reg32) acc[$d],)*
                    a0 = in(reg32) a[0],
                    a1 = in(reg32) a[1],
                    a2 = in(reg32) a[2],
                    a3 = in(reg32) a[3],
                    desc = in(reg64) desc,
                    one = in(reg32) 1u32,
                    options(nostack),
                );
            }
            #[inline(always)]
            pub unsafe fn wait(acc: &mut [f32; $n / 2], a: &[[u32; 4]; 4]) {
                asm!(
                    "wgmma.wait_group.sync.aligned 0;",
                    concat!("// {", $d0, "}", $(" {", $d, "}",)*),
                    "// {a00} {a01} {a02} {a03} {a10} {a11} {a12} {a13} {a20} {a21} {a22} {a23} {a30} {a31} {a32} {a33}",
                    inout(reg32) acc[$d0],
                    $(inout(reg32) acc[$d],)*
                    a00 = in(reg32) a[0][0],
                    a01 = in(reg32) a[0][1],
                    a02 = in(reg32) a[0][2],
                    a03 = in(reg32) a[0][3],
                    a10 = in(reg32) a[1][0],
                    a11 = in(reg32) a[1][1],
                    a12 = in(reg32) a[1][2],
                    a13 = in(reg32) a[1][3],
                    a20 = in(reg32) a[2][0],
                    a21 = in(reg32) a[2][1],
                    a22 = in(reg32) a[2][2],
                    a23 = in(reg32) a[2][3],
                    a30 = in(reg32) a[3][0],
                    a31 = in(reg32) a[3][1],
                    a32 = in(reg32) a[3][2],
                    a33 = in(reg32) a[3][3],
                    options(nostack),
                );
            }
        }
    };
}

wgmma_shape!(n16, 16, [0, 1, 2, 3, 4, 5, 6, 7]);
wgmma_shape!(n32, 32, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
wgmma_shape!(n64, 64, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31]);
wgmma_shape!(
    n128,
    128,
    [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39,
        40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63
    ]
);
wgmma_shape!(
    n256,
    256,
    [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39,
        40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77,
        78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111,
        112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127
    ]
);

/// `mma` of the shape with `R` accumulators per thread (R = N / 2; the entries assert it).
#[inline(always)]
unsafe fn mma<const R: usize>(acc: &mut [f32; R], a: &[u32; 4], desc: u64) {
    let p = acc.as_mut_ptr();
    match R {
        8 => n16::mma(&mut *(p as *mut [f32; 8]), a, desc),
        16 => n32::mma(&mut *(p as *mut [f32; 16]), a, desc),
        32 => n64::mma(&mut *(p as *mut [f32; 32]), a, desc),
        64 => n128::mma(&mut *(p as *mut [f32; 64]), a, desc),
        128 => n256::mma(&mut *(p as *mut [f32; 128]), a, desc),
        _ => {}
    }
}

#[inline(always)]
unsafe fn wait<const R: usize>(acc: &mut [f32; R], a: &[[u32; 4]; 4]) {
    let p = acc.as_mut_ptr();
    match R {
        8 => n16::wait(&mut *(p as *mut [f32; 8]), a),
        16 => n32::wait(&mut *(p as *mut [f32; 16]), a),
        32 => n64::wait(&mut *(p as *mut [f32; 32]), a),
        64 => n128::wait(&mut *(p as *mut [f32; 64]), a),
        128 => n256::wait(&mut *(p as *mut [f32; 128]), a),
        _ => {}
    }
}

/// What one block works on, shared by the loads, the fragment conversion and the epilogue.
#[derive(Clone, Copy)]
struct Work {
    x: *const u16,
    q: *const i8,
    m: u32,
    n: u32,
    k: u32,
    k_end: u32,
    /// First weight row (output channel) and batch row of the block.
    n0: u32,
    m0: u32,
}

/// Issues this thread's `cp.async` copies of the k block starting at column `kb` into the
/// stage at shared address `dst`: weight rows n0.. (`bn` × `WGMMA_BK` bytes, pitch
/// `WGMMA_A_PITCH`), then batch rows m0.. (`bm` × `WGMMA_BK` FP16, core-matrix order).
/// Outside the matrix or past `k_end` the copy reads nothing and writes zeros.
#[inline(always)]
unsafe fn load_stage<const T: usize>(w: &Work, dst: u32, kb: u32) {
    let tile = WGMMA_TILES[T];
    let threads = tile.threads() as u32;
    let tid = thread_x();
    let k = w.k as usize;
    // Weights: 16-byte chunk c is row c / 4, columns kb + 16·(c % 4) (4 chunks a row).
    let a_chunks = tile.bn() as u32 * (BK / 16);
    unroll!(P in [0, 1, 2, 3] {
        if (P as u32) * threads < a_chunks {
            let c = tid + threads * P as u32;
            let (row, u) = (c / (BK / 16), c % (BK / 16));
            let (r, kk) = (w.n0 + row, kb + 16 * u);
            let ok = r < w.n && kk < w.k_end;
            let src = if ok { w.q.add(r as usize * k + kk as usize) } else { w.q };
            cp_async_16(dst + row * PITCH + 16 * u, src as *const u8, if ok { 16 } else { 0 });
        }
    });
    // Activations: chunk c = 64i + 8j + r is batch row 8i + r, columns kb + 8j.
    let b_chunks = tile.bm as u32 * (BK / 8);
    let b_dst = dst + tile.bn() as u32 * PITCH;
    unroll!(P in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15] {
        if (P as u32) * threads < b_chunks {
            let c = tid + threads * P as u32;
            if c < b_chunks {
                let (r8, j, i) = (c % 8, (c / 8) % (BK / 8), c / (8 * (BK / 8)));
                let (row, kk) = (w.m0 + 8 * i + r8, kb + 8 * j);
                let ok = row < w.m && kk < w.k_end;
                let src = if ok { w.x.add(row as usize * k + kk as usize) } else { w.x };
                cp_async_16(b_dst + 16 * c, src as *const u8, if ok { 16 } else { 0 });
            }
        }
    });
}

/// This thread's place in the A fragments and the scales of its two rows.
#[derive(Clone, Copy)]
struct Frag {
    /// Offset of its first word in a stage: row 64·wg + 16·warp + g, byte 4·(t / 2).
    off: u32,
    /// `prmt` selector of bytes 2·(t % 2), 2·(t % 2) + 1 of a word.
    sel: u32,
    per_channel: bool,
    group: u32,
    /// Scale rows of weight rows g and g + 8 (row 0 for rows past n: their weights are 0).
    scales: [*const f32; 2],
}

/// The four k16 steps' A fragments of the k block at column `kb`, from the stage at `stage`.
#[inline(always)]
unsafe fn fragments(f: &Frag, stage: u32, kb: u32, k_end: u32) -> [[u32; 4]; 4] {
    let mut a = [[0u32; 4]; 4];
    unroll!(S in [0, 1, 2, 3] {
        let p = stage + f.off + 16 * S as u32;
        let lo0 = i8x2_to_f16x2(ld_shared_u32(p), f.sel);
        let hi0 = i8x2_to_f16x2(ld_shared_u32(p + 8), f.sel);
        let lo1 = i8x2_to_f16x2(ld_shared_u32(p + 8 * PITCH), f.sel);
        let hi1 = i8x2_to_f16x2(ld_shared_u32(p + 8 * PITCH + 8), f.sel);
        a[S] = [lo0, lo1, hi0, hi1];
        let kk = kb + 16 * S as u32;
        // Uniform over the block (k_end, group): no lane skips what another does.
        if !f.per_channel && kk < k_end {
            let gi = (kk / f.group) as usize;
            let (s0, s1) = (f32_to_f16x2(*f.scales[0].add(gi)), f32_to_f16x2(*f.scales[1].add(gi)));
            a[S] = [mul_f16x2(lo0, s0), mul_f16x2(lo1, s1), mul_f16x2(hi0, s0), mul_f16x2(hi1, s1)];
        }
    });
    a
}

/// The ring's geometry for one block.
#[derive(Clone, Copy)]
struct Pipe {
    /// Shared address of stage 0, bytes per stage, offset of the B tile in a stage.
    base: u32,
    stage_bytes: u32,
    b_offset: u32,
    stages: u32,
    /// k blocks of this split, and its first column.
    blocks: u32,
    k_begin: u32,
}

/// Iteration i of the main loop (see the module docs): the wgmmas of block i (in `slot`)
/// on fragments `cur`, the refill of the slot before it, block i + 1's fragments into
/// `next`, the wait. Returns block i + 1's slot.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn k_block<const T: usize, const R: usize, const WAIT_NEXT: u32>(
    w: &Work,
    f: &Frag,
    p: &Pipe,
    acc: &mut [f32; R],
    cur: &mut [[u32; 4]; 4],
    next: &mut [[u32; 4]; 4],
    i: u32,
    slot: u32,
) -> u32 {
    let stage = p.base + slot * p.stage_bytes;
    wgmma_fence(cur);
    unroll!(S in [0, 1, 2, 3] {
        mma::<R>(acc, &cur[S], b_desc(stage + p.b_offset + 256 * S as u32));
    });
    wgmma_commit();
    // Block i + 1 has landed (this thread's copies; everyone's after the barrier), and every
    // warpgroup has waited for its wgmmas of block i − 1, whose slot (the one before `slot`)
    // now takes block i + stages − 1.
    cp_async_wait::<WAIT_NEXT>();
    fence_proxy_async_shared();
    sync_threads();
    let refill = if slot == 0 { p.stages - 1 } else { slot - 1 };
    if i + p.stages - 1 < p.blocks {
        load_stage::<T>(w, p.base + refill * p.stage_bytes, p.k_begin + BK * (i + p.stages - 1));
    }
    cp_async_commit();
    let after = if slot + 1 == p.stages { 0 } else { slot + 1 };
    if i + 1 < p.blocks {
        *next = fragments(f, p.base + after * p.stage_bytes, p.k_begin + BK * (i + 1), w.k_end);
    }
    wait::<R>(acc, cur);
    after
}

/// The kernel body of `WGMMA_TILES[T]` (R = bm / 2 accumulators per thread; WAIT_FIRST =
/// stages − 2 and WAIT_NEXT = stages − 3 groups left in flight at the two waits).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm<const T: usize, const R: usize, const WAIT_FIRST: u32, const WAIT_NEXT: u32>(
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
    let tile = WGMMA_TILES[T];
    let (bm, bn, stages) = (tile.bm as u32, tile.bn() as u32, tile.stages as u32);
    let stage_bytes = tile.stage_bytes() as u32;
    let b_offset = bn * PITCH;

    // Uniform over the block, so no thread skips a barrier the others wait at.
    let split = block_z();
    let k_begin = split * k_per_split;
    if k_begin >= k || group == 0 {
        return;
    }
    // SAFETY: checked just above; tells LLVM, which otherwise keeps a panic path.
    core::hint::assert_unchecked(group != 0);
    let k_end = if k - k_begin > k_per_split { k_begin + k_per_split } else { k };
    let blocks = (k_end - k_begin).div_ceil(BK);
    let w = Work { x, q, m, n, k, k_end, n0: block_x() * bn, m0: block_y() * bm };

    let tid = thread_x();
    let (wg, warp, lane) = (tid / WG_THREADS, (tid / WARP) % 4, tid % WARP);
    let (g, t) = (lane / 4, lane % 4);
    let a_row = 64 * wg + 16 * warp + g;
    let rows = [w.n0 + a_row, w.n0 + a_row + 8];
    let scale_row = |r: u32| scales.add(if r < n { r } else { 0 } as usize * groups as usize);
    let f = Frag {
        off: a_row * PITCH + 4 * (t / 2),
        sel: if t % 2 == 0 { 0x4140 } else { 0x4342 },
        per_channel: groups == 1,
        group,
        scales: [scale_row(rows[0]), scale_row(rows[1])],
    };
    let base = smem_base();

    // Prologue: blocks 0 .. stages − 1 in flight, one commit group each (empty past the end,
    // so that the group counts below hold for every k).
    let mut s = 0;
    while s < stages - 1 {
        if s < blocks {
            load_stage::<T>(&w, base + s * stage_bytes, k_begin + BK * s);
        }
        cp_async_commit();
        s += 1;
    }
    cp_async_wait::<WAIT_FIRST>();
    fence_proxy_async_shared();
    sync_threads();

    let mut acc = [0.0f32; R];
    // Two fragment sets, alternating between iterations (the loop is unrolled by two): the
    // set the in-flight wgmmas read is never the one being converted, so ptxas need not
    // serialize the wgmmas (C7513) to protect their input registers.
    let mut a_even = fragments(&f, base, k_begin, k_end);
    let mut a_odd = [[0u32; 4]; 4];
    let p = Pipe { base, stage_bytes, b_offset, stages, blocks, k_begin };
    let (mut i, mut slot) = (0u32, 0u32);
    loop {
        slot = k_block::<T, R, WAIT_NEXT>(&w, &f, &p, &mut acc, &mut a_even, &mut a_odd, i, slot);
        i += 1;
        if i >= blocks {
            break;
        }
        slot = k_block::<T, R, WAIT_NEXT>(&w, &f, &p, &mut acc, &mut a_odd, &mut a_even, i, slot);
        i += 1;
        if i >= blocks {
            break;
        }
    }
    cp_async_wait::<0>();

    store::<R>(&acc, y, partial, scales, &w, rows, lane, split, groups == 1);
}

/// Epilogue: accumulator 4j + 2h + c holds weight row `rows[h]` (g + 8h of the warp's 16)
/// and batch row m0 + 8j + 2t + c (PTX ISA "wgmma .m64nNk16 D fragment"; CUTLASS
/// `CLayout_64xN`). One split: FP16 y (per-channel scale applied). Several: FP32 partials.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn store<const R: usize>(
    acc: &[f32; R],
    y: *mut u16,
    partial: *mut f32,
    scales: *const f32,
    w: &Work,
    rows: [u32; 2],
    lane: u32,
    split: u32,
    per_channel: bool,
) {
    let t = lane % 4;
    let direct = partial.is_null();
    let (m, n) = (w.m as usize, w.n as usize);
    unroll!(H in [0, 1] {
        let row = rows[H];
        if row < w.n {
            let s = if direct && per_channel { *scales.add(row as usize) } else { 1.0 };
            unroll!(J in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31] {
                if 4 * J < R {
                    unroll!(C in [0, 1] {
                        let col = w.m0 + 8 * J as u32 + 2 * t + C as u32;
                        if col < w.m {
                            let v = acc[4 * J + 2 * H + C];
                            let idx = col as usize * n + row as usize;
                            if direct {
                                *y.add(idx) = ((v * s) as f16).to_bits();
                            } else {
                                *partial.add(split as usize * m * n + idx) = v;
                            }
                        }
                    });
                }
            });
        }
    });
}

/// Fails the build unless entry `name` is in `abi::WGMMA_TILES` with `r` = bm / 2
/// accumulators, a wgmma shape this file has, a ring of at least 3 stages, and shared
/// memory within Hopper's 227 KiB per block.
const fn tile_index(name: &str, r: usize) -> usize {
    match crate::abi::wgmma_tile(name) {
        Some(i) => {
            let t = WGMMA_TILES[i];
            assert!(t.bm == 2 * r && matches!(r, 8 | 16 | 32 | 64 | 128) && t.stages >= 3 && t.smem_bytes() <= 227 * 1024);
            i
        }
        None => panic!("a wgmma entry missing from abi::WGMMA_TILES"),
    }
}

macro_rules! wgmma_entry {
    ($($name:ident = $r:literal),* $(,)?) => {$(
        /// Launch: blockDim.x = `threads()`; grid = (ceil(n / bn), ceil(m / bm), splits);
        /// dynamic shared memory `smem_bytes()`; k_per_split a multiple of `WGMMA_BK`.
        /// `partial` null: write `y`; else FP32 partials `[splits, m, n]`.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(
            x: *const u16, q: *const i8, scales: *const f32, y: *mut u16, partial: *mut f32,
            m: u32, n: u32, k: u32, group: u32, groups: u32, k_per_split: u32,
        ) {
            crate::ptx::await_inputs();
            const T: usize = tile_index(stringify!($name), $r);
            gemm::<T, $r, { WGMMA_TILES[T].stages as u32 - 2 }, { WGMMA_TILES[T].stages as u32 - 3 }>(
                x, q, scales, y, partial, m, n, k, group, groups, k_per_split,
            )
        }
    )*};
}

wgmma_entry!(wgmma_w8a16_m16 = 8, wgmma_w8a16_m64 = 32, wgmma_w8a16_m128 = 64, wgmma_w8a16_m256 = 128,);
