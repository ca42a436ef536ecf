//! INT8 × scale → FP16 materialization, for callers that want plain FP16 weights (the
//! dequantize-then-cuBLAS plan of large batches, FP16 copies of resident weights).
use crate::ptx::{block_dim_x, block_x, i8_to_f32, load_stream_v4, store_v4, thread_x, unroll};

/// `out[r, c] = q[r, c] · s[r, c / group]`, one block per row (`gridDim.x` = rows).
///
/// Bandwidth-bound (1 byte in, 2 out per element): each thread moves 16 weights with one
/// 16-byte load and two 16-byte stores, and the row index comes from the grid, so there is
/// no 64-bit division per element (the previous one-element-per-thread form spent more
/// time on its index arithmetic than on memory). The vector path needs 16-byte aligned rows
/// (16 | cols) and, for per-group scales, 16 | group (every shipped shape); other shapes
/// take the scalar loop.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn dequant_i8_f16(q: *const i8, scales: *const f32, out: *mut u16, rows: u32, cols: u32, group: u32, groups: u32) {
    crate::ptx::await_inputs();
    let r = block_x();
    if r >= rows || cols == 0 || group == 0 {
        return;
    }
    let row_q = q.add(r as usize * cols as usize);
    let row_s = scales.add(r as usize * groups as usize);
    let row_out = out.add(r as usize * cols as usize);
    let (t, step) = (thread_x(), block_dim_x());
    let aligned = (row_q as usize | row_out as usize) % 16 == 0;
    if aligned && cols % 16 == 0 && (groups == 1 || group % 16 == 0) {
        let mut c = t;
        while c < cols / 16 {
            let s = *row_s.add((c * 16 / group) as usize);
            let w = load_stream_v4(row_q.add(c as usize * 16) as *const u32);
            let mut h = [0u32; 8];
            unroll!(I in [0, 1, 2, 3] {
                let biased = w[I] ^ 0x8080_8080;
                h[2 * I] = pack_f16(i8_to_f32::<0>(biased) * s, i8_to_f32::<1>(biased) * s);
                h[2 * I + 1] = pack_f16(i8_to_f32::<2>(biased) * s, i8_to_f32::<3>(biased) * s);
            });
            let dst = row_out.add(c as usize * 16) as *mut u32;
            store_v4(dst, [h[0], h[1], h[2], h[3]]);
            store_v4(dst.add(4), [h[4], h[5], h[6], h[7]]);
            c += step;
        }
    } else {
        let mut c = t;
        while c < cols {
            let v = *row_q.add(c as usize) as f32 * *row_s.add((c / group) as usize);
            *row_out.add(c as usize) = (v as f16).to_bits();
            c += step;
        }
    }
}

/// Two f32 rounded to FP16 (the same rounding as `as f16`), `lo` in the low half: one
/// `cvt.rn.f16x2.f32` where two `as f16` are two conversions and a merge.
#[inline(always)]
pub(crate) fn pack_f16(lo: f32, hi: f32) -> u32 {
    let r: u32;
    unsafe { core::arch::asm!("cvt.rn.f16x2.f32 {r}, {hi}, {lo};", r = out(reg32) r, hi = in(reg32) hi, lo = in(reg32) lo, options(pure, nomem, nostack)) };
    r
}
