//! Small inline-PTX helpers, each for something core does not expose on nvptx.
use core::arch::asm;
use core::arch::nvptx::{_block_dim_x, _block_idx_x, _block_idx_y, _block_idx_z, _grid_dim_y, _thread_idx_x};

pub const WARP: u32 = 32;

/// Repeats a block with `$i` bound to each listed constant. LLVM does not always unroll
/// loops whose body is large, and a register array indexed in a rolled loop moves to
/// local memory, so hot loops over register arrays are unrolled here by hand.
macro_rules! unroll {
    ($i:ident in [$($n:literal),*] $body:block) => {{ $( { const $i: usize = $n; $body } )* }};
}
pub(crate) use unroll;

/// Declares a module-level `.shared` array and a function returning its generic address:
/// Rust has no syntax for the `.shared` state space on nvptx, so the array is PTX.
macro_rules! shared_array {
    ($(#[$doc:meta])* fn $name:ident() -> *mut $t:ty = $sym:literal [$bytes:literal], align $align:literal) => {
        core::arch::global_asm!(concat!(".shared .align ", $align, " .b8 ", $sym, "[", $bytes, "];"));
        $(#[$doc])*
        #[inline(always)]
        fn $name() -> *mut $t {
            let p: u64;
            unsafe { core::arch::asm!(concat!("cvta.shared.u64 {p}, ", $sym, ";"), p = out(reg64) p, options(pure, nomem, nostack)) };
            p as *mut $t
        }
    };
}
pub(crate) use shared_array;

#[inline(always)]
pub fn thread_x() -> u32 {
    unsafe { _thread_idx_x() }
}

#[inline(always)]
pub fn block_x() -> u32 {
    unsafe { _block_idx_x() }
}

#[inline(always)]
pub fn block_y() -> u32 {
    unsafe { _block_idx_y() }
}

#[inline(always)]
pub fn block_z() -> u32 {
    unsafe { _block_idx_z() }
}

#[inline(always)]
pub fn grid_dim_y() -> u32 {
    unsafe { _grid_dim_y() }
}

#[inline(always)]
pub fn block_dim_x() -> u32 {
    unsafe { _block_dim_x() }
}

/// Both halves times the FP16 pair `s2` (the GEMMs scale dequantized weights in pairs).
#[inline(always)]
pub fn mul_f16x2(v: u32, s2: u32) -> u32 {
    let r: u32;
    unsafe { asm!("mul.rn.f16x2 {r}, {v}, {s};", r = out(reg32) r, v = in(reg32) v, s = in(reg32) s2, options(pure, nomem, nostack)) };
    r
}

/// Bytes 0, 1 and bytes 2, 3 of `w` as FP16 pairs `1024 + b − bias`, exactly: `prmt` puts
/// each byte under the exponent of 1024 (whose ulp is 1) and one `sub.f16x2` removes
/// `bias2` (1024 + bias in both halves); integers below 2048 are exact in FP16.
#[inline(always)]
pub fn bytes_to_f16x2x2(w: u32, bias2: u32) -> [u32; 2] {
    let (lo, hi): (u32, u32);
    unsafe {
        asm!(
            "prmt.b32 {lo}, {w}, {e}, 0x4140;",
            "prmt.b32 {hi}, {w}, {e}, 0x4342;",
            "sub.f16x2 {lo}, {lo}, {bias};",
            "sub.f16x2 {hi}, {hi}, {bias};",
            lo = out(reg32) lo,
            hi = out(reg32) hi,
            w = in(reg32) w,
            e = in(reg32) 0x6464_6464u32,
            bias = in(reg32) bias2,
            options(pure, nomem, nostack),
        );
    }
    [lo, hi]
}

/// Tensor-core step: `d += a·b` for one 16×8×16 tile (FP16 in, FP32 accumulators). Not
/// `pure`: `mma.sync` needs the whole warp, so it must not be moved under a lane-dependent
/// branch.
#[inline(always)]
pub fn mma_m16n8k16(acc: &mut [f32; 4], a: [u32; 4], b: [u32; 2]) {
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

/// `s` rounded to FP16 in both halves (the pair `mul_f16x2` scales by).
#[inline(always)]
pub fn f32_to_f16x2(s: f32) -> u32 {
    let h = (s as f16).to_bits() as u32;
    h | (h << 16)
}

/// `a·b + c` with one rounding: rustc never contracts a multiply-add on its own.
#[inline(always)]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    let r: f32;
    unsafe {
        asm!(
            "fma.rn.f32 {r}, {a}, {b}, {c};",
            r = out(reg32) r,
            a = in(reg32) a,
            b = in(reg32) b,
            c = in(reg32) c,
            options(pure, nomem, nostack),
        );
    }
    r
}

/// 16-byte loads into four registers (asm, so the words stay in registers instead of
/// an aligned temporary), one function per cache policy.
macro_rules! load_v4 {
    ($($(#[$doc:meta])* $name:ident = $instr:literal;)*) => {$(
        $(#[$doc])*
        #[inline(always)]
        pub unsafe fn $name(p: *const u32) -> [u32; 4] {
            let (a, b, c, d): (u32, u32, u32, u32);
            asm!(
                concat!($instr, " {{{a}, {b}, {c}, {d}}}, [{p}];"),
                p = in(reg64) p,
                a = out(reg32) a,
                b = out(reg32) b,
                c = out(reg32) c,
                d = out(reg32) d,
                options(pure, readonly, nostack),
            );
            [a, b, c, d]
        }
    )*};
}

load_v4! {
    /// Weight bytes read once per launch: skip L1 (`no_allocate`) so that the activations,
    /// which every warp re-reads, keep it; `.nc` lets the load use the read-only path.
    load_stream_v4 = "ld.global.nc.L1::no_allocate.v4.u32";
    /// Activations: read-only path, L1-allocating (other warps read them too).
    load_cached_v4 = "ld.global.nc.v4.u32";
    /// Generic address (shared-memory tiles).
    load_v4 = "ld.v4.u32";
}

/// Butterfly reduction step: core has no warp shuffle intrinsic for nvptx. Deliberately
/// not `pure`: a pure asm block may be sunk into a branch that only some lanes take, and
/// `shfl.sync` with a full mask needs every lane (this happened: the sum moved under
/// `lane == 0`).
#[inline(always)]
pub fn shfl_xor(v: f32, mask: u32) -> f32 {
    let r: f32;
    unsafe {
        asm!(
            "shfl.sync.bfly.b32 {r}, {v}, {m}, 31, -1;",
            r = out(reg32) r,
            v = in(reg32) v,
            m = in(reg32) mask,
            options(nostack),
        );
    }
    r
}

/// Sum over the 32 lanes of a warp; every lane gets the total.
#[inline(always)]
pub fn warp_sum(mut v: f32) -> f32 {
    let mut m = 16;
    while m > 0 {
        v += shfl_xor(v, m);
        m >>= 1;
    }
    v
}

/// Maximum over the 32 lanes of a warp; every lane gets it.
#[inline(always)]
pub fn warp_max(mut v: f32) -> f32 {
    let mut m = 16;
    while m > 0 {
        let o = shfl_xor(v, m);
        v = if o > v { o } else { v };
        m >>= 1;
    }
    v
}

/// Lane `src`'s `v`, for every lane (not `pure`, for the reason given at `shfl_xor`).
#[inline(always)]
pub fn shfl_idx(v: f32, src: u32) -> f32 {
    f32::from_bits(shfl_idx_u32(v.to_bits(), src))
}

/// [`shfl_idx`] on raw bits: lane `src & 31`'s `v` (the hardware reads bits 4..0 of `src`
/// only), for integer data that must not round-trip through f32.
#[inline(always)]
pub fn shfl_idx_u32(v: u32, src: u32) -> u32 {
    let r: u32;
    unsafe {
        asm!(
            "shfl.sync.idx.b32 {r}, {v}, {s}, 31, -1;",
            r = out(reg32) r,
            v = in(reg32) v,
            s = in(reg32) src,
            options(nostack),
        );
    }
    r
}

/// Bytes of the pair `{b, a}` (`a` bytes 0..3, `b` bytes 4..7) picked by the nibbles of
/// `sel` (`prmt.b32`): one instruction where shifts, masks and an `or` take three.
#[inline(always)]
pub fn prmt(a: u32, b: u32, sel: u32) -> u32 {
    let r: u32;
    unsafe { asm!("prmt.b32 {r}, {a}, {b}, {s};", r = out(reg32) r, a = in(reg32) a, b = in(reg32) b, s = in(reg32) sel, options(pure, nomem, nostack)) };
    r
}

/// Byte `i` of `w` as a signed INT8 value in f32, without an I2F conversion (a slow pipe on
/// sm_80/sm_90): the float `byte_over_2p23` makes is 2^23 + (b + 128) exactly, and one
/// subtraction recovers b. `biased` is `w ^ 0x80808080`.
#[inline(always)]
pub fn i8_to_f32<const I: u32>(biased: u32) -> f32 {
    byte_over_2p23::<I>(biased) - 8_388_736.0
}

/// Byte `i` of `w` as an unsigned value in f32 (the same trick, no bias).
#[inline(always)]
pub fn u8_to_f32<const I: u32>(w: u32) -> f32 {
    byte_over_2p23::<I>(w) - 8_388_608.0
}

/// 2^23 + byte `I` of `w`, exactly: `prmt` places the byte under the exponent of 2^23.
#[inline(always)]
fn byte_over_2p23<const I: u32>(w: u32) -> f32 {
    let bits: u32;
    // Selector nibbles, low to high: result byte 0 = byte I of `w`; bytes 1, 2, 3 = bytes
    // 4, 5, 7 of the pair {0x4B00_0000, w}, i.e. 0x00, 0x00, 0x4B.
    let selector: u32 = I | 0x7540;
    unsafe {
        asm!(
            "prmt.b32 {r}, {a}, {b}, {s};",
            r = out(reg32) bits,
            a = in(reg32) w,
            b = in(reg32) 0x4B00_0000u32,
            s = in(reg32) selector,
            options(pure, nomem, nostack),
        );
    }
    f32::from_bits(bits)
}

/// Low and high FP16 halves of a 32-bit word, widened to f32.
#[inline(always)]
pub fn f16x2_to_f32(w: u32) -> (f32, f32) {
    let lo = f16::from_bits(w as u16) as f32;
    let hi = f16::from_bits((w >> 16) as u16) as f32;
    (lo, hi)
}

/// The first statement of every entry point: waits until the grids this one depends on
/// have finished and their writes are visible (`griddepcontrol.wait`), then lets the grid
/// that depends on this one start its blocks (`griddepcontrol.launch_dependents`), which
/// stop at this same wait. The host makes a captured step's kernel-to-kernel edges
/// programmatic (Hopper's programmatic dependent launch), so that a kernel's launch and
/// block start-up overlap its predecessor's last blocks instead of following them; with
/// plain launches both instructions are no-ops. Every thread waits before touching global
/// memory and before any early return: a grid that finished without waiting would let the
/// one after it run ahead of the one before. sm_90 and up; earlier PTX has neither.
#[inline(always)]
pub fn await_inputs() {
    #[cfg(target_feature = "sm_90")]
    unsafe {
        // Not `nomem`: no load or store of the kernel may move above the wait.
        asm!("griddepcontrol.wait;", "griddepcontrol.launch_dependents;", options(nostack));
    }
}

/// Block-wide barrier (`bar.sync 0`).
#[inline(always)]
pub fn sync_threads() {
    unsafe { core::arch::nvptx::_syncthreads() }
}

/// 16 bytes to a generic address (shared memory tiles).
#[inline(always)]
pub unsafe fn store_v4(p: *mut u32, v: [u32; 4]) {
    asm!(
        "st.v4.u32 [{p}], {{{a}, {b}, {c}, {d}}};",
        p = in(reg64) p,
        a = in(reg32) v[0],
        b = in(reg32) v[1],
        c = in(reg32) v[2],
        d = in(reg32) v[3],
        options(nostack),
    );
}

/// 2^x (`ex2.approx`, ~2 ulp): core has no exponential on nvptx.
#[inline(always)]
pub fn exp2(x: f32) -> f32 {
    let r: f32;
    unsafe { asm!("ex2.approx.ftz.f32 {r}, {x};", r = out(reg32) r, x = in(reg32) x, options(pure, nomem, nostack)) };
    r
}

/// 1/√x (`rsqrt.approx`).
#[inline(always)]
pub fn rsqrt(x: f32) -> f32 {
    let r: f32;
    unsafe { asm!("rsqrt.approx.ftz.f32 {r}, {x};", r = out(reg32) r, x = in(reg32) x, options(pure, nomem, nostack)) };
    r
}

/// Bit mask of the lanes whose `pred` is true (`vote.sync.ballot`). Not `pure`, so it is
/// never sunk under a branch some lanes skip: the full mask needs all 32 lanes.
#[inline(always)]
pub fn ballot(pred: bool) -> u32 {
    let r: u32;
    unsafe {
        asm!(
            "{{ .reg .pred p; setp.ne.u32 p, {v}, 0; vote.sync.ballot.b32 {r}, p, -1; }}",
            r = out(reg32) r,
            v = in(reg32) pred as u32,
            options(nostack),
        );
    }
    r
}

/// Mask of the lanes below this one (`%lanemask_lt`): with a ballot, a lane's rank among
/// the lanes that voted.
#[inline(always)]
pub fn lanemask_lt() -> u32 {
    let r: u32;
    unsafe { asm!("mov.u32 {r}, %lanemask_lt;", r = out(reg32) r, options(pure, nomem, nostack)) };
    r
}

/// A 32-bit load through the read-only data cache: decode tables every warp of a launch
/// reads stay in L1.
#[inline(always)]
pub unsafe fn load_nc_u32(p: *const u32) -> u32 {
    let r: u32;
    asm!("ld.global.nc.u32 {r}, [{p}];", r = out(reg32) r, p = in(reg64) p, options(pure, readonly, nostack));
    r
}

/// Asks L2 for the line holding `p` (`prefetch.global.L2`): unlike a load it writes no
/// register, so nothing waits for it, and a later load of that line hits L2 instead of DRAM.
#[inline(always)]
pub unsafe fn prefetch_l2(p: *const u8) {
    asm!("prefetch.global.L2 [{p}];", p = in(reg64) p, options(readonly, nostack));
}

/// `*win = *win >> 16 | *next << 16`, then `*next` = the `u16` at `p` if `load`, else 0.
/// One block so that the load writes the register `*next` already holds: as two statements
/// ptxas loaded into a fresh register and copied it into place at once, and the copy waits
/// for the load, which is meant to stay in flight until `*next` is read.
#[inline(always)]
pub unsafe fn slide_in_u16(win: &mut u32, next: &mut u32, p: *const u16, load: bool) {
    asm!(
        "{{ .reg .pred p; setp.ne.u32 p, {l}, 0; shf.r.wrap.b32 {w}, {w}, {n}, 16; mov.b32 {n}, 0; @p ld.global.u16 {n}, [{a}]; }}",
        w = inout(reg32) *win,
        n = inout(reg32) *next,
        a = in(reg64) p,
        l = in(reg32) load as u32,
        options(readonly, nostack),
    );
}

// Asynchronous copies, proxy fences and 32-bit shared-memory addresses, for the Hopper GEMM
// (`wgmma.rs`, compiled into the sm_90a PTX only, hence the `allow`s elsewhere).

/// 16 bytes global → shared without a register round trip (`cp.async.cg`, cached in L2
/// only: weights are read once); `src_bytes` < 16 zero-fills the rest and 0 reads nothing,
/// which is how the tiles' tails are padded. `dst` is a shared-window address.
#[cfg_attr(not(target_feature = "sm_90a"), allow(dead_code))]
#[inline(always)]
pub unsafe fn cp_async_16(dst: u32, src: *const u8, src_bytes: u32) {
    asm!(
        "cp.async.cg.shared.global [{d}], [{s}], 16, {n};",
        d = in(reg32) dst,
        s = in(reg64) src,
        n = in(reg32) src_bytes,
        options(nostack),
    );
}

/// Closes this thread's group of `cp.async` copies (`cp_async_wait` counts groups).
#[cfg_attr(not(target_feature = "sm_90a"), allow(dead_code))]
#[inline(always)]
pub fn cp_async_commit() {
    unsafe { asm!("cp.async.commit_group;", options(nostack)) };
}

/// Waits until at most `N` of this thread's committed `cp.async` groups are in flight; the
/// data of the others is then visible to this thread (to others after a barrier).
#[cfg_attr(not(target_feature = "sm_90a"), allow(dead_code))]
#[inline(always)]
pub fn cp_async_wait<const N: u32>() {
    unsafe { asm!("cp.async.wait_group {n};", n = const N, options(nostack)) };
}

/// Orders this thread's earlier shared-memory writes in the generic proxy (plain stores,
/// `cp.async`) before later accesses by the async proxy (`wgmma` operand reads): Hopper's
/// tensor cores do not snoop generic writes without it.
#[cfg_attr(not(target_feature = "sm_90a"), allow(dead_code))]
#[inline(always)]
pub fn fence_proxy_async_shared() {
    unsafe { asm!("fence.proxy.async.shared::cta;", options(nostack)) };
}

/// A 32-bit load from a shared-window address (`ld.shared`): the tiles are addressed with
/// the 32-bit offsets that `cp.async` and the wgmma descriptors take, not generic pointers.
#[cfg_attr(not(target_feature = "sm_90a"), allow(dead_code))]
#[inline(always)]
pub unsafe fn ld_shared_u32(addr: u32) -> u32 {
    let r: u32;
    asm!("ld.shared.u32 {r}, [{a}];", r = out(reg32) r, a = in(reg32) addr, options(pure, readonly, nostack));
    r
}
