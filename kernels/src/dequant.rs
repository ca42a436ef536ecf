//! INT8 × scale → FP16 materialization, for callers that want plain FP16 weights.
use crate::ptx::{block_dim_x, block_x, thread_x};

/// `out[r, c] = q[r, c] · s[r, c / group]`, one element per thread over a 1-D grid.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn dequant_i8_f16(q: *const i8, scales: *const f32, out: *mut u16, rows: u32, cols: u32, group: u32, groups: u32) {
    let i = block_x() as u64 * block_dim_x() as u64 + thread_x() as u64;
    if cols == 0 || group == 0 || i >= rows as u64 * cols as u64 {
        return;
    }
    let r = i / cols as u64;
    let c = (i % cols as u64) as u32;
    let s = *scales.add((r * groups as u64 + (c / group) as u64) as usize);
    let v = *q.add(i as usize) as f32 * s;
    *out.add(i as usize) = (v as f16).to_bits();
}
