//! GPU side of chunked decode: from a tensor's chunk table (device-resident, uploaded once)
//! write nvCOMP's per-chunk pointer/size arrays and copy raw-stored chunks into place, so
//! a decode needs no host round trip. The table layout is `abi::ChunkEntry`.
use crate::abi::{ChunkEntry, RAW_SLOT};
use crate::ptx::{block_dim_x, block_x, thread_x};

/// One block per chunk. Coded chunks: thread 0 fills slot `slot_base + slot` of the nvCOMP
/// arrays (several tensors share one nvCOMP batch, each from its own base).
/// Raw chunks: the block copies the bytes (16 at a time where both ends allow).
#[no_mangle]
pub unsafe extern "ptx-kernel" fn scatter_chunks(
    table: *const ChunkEntry,
    chunks: u32,
    slot_base: u32,
    src: *const u8,
    dst: *mut u8,
    in_ptrs: *mut *const u8,
    in_bytes: *mut usize,
    out_ptrs: *mut *mut u8,
    out_bytes: *mut usize,
) {
    crate::ptx::await_inputs();
    let b = block_x();
    if b >= chunks {
        return;
    }
    let e = &*table.add(b as usize);
    let from = src.add(e.src_offset as usize);
    let to = dst.add(e.dst_offset as usize);
    if e.slot != RAW_SLOT {
        if thread_x() == 0 {
            let s = (slot_base + e.slot) as usize;
            *in_ptrs.add(s) = from;
            *in_bytes.add(s) = e.stored_len as usize;
            *out_ptrs.add(s) = to;
            *out_bytes.add(s) = e.decoded_len as usize;
        }
        return;
    }
    let len = e.stored_len as usize;
    let step = block_dim_x() as usize;
    let mut i = thread_x() as usize;
    let vectors = if (to as usize) % 16 == 0 { len / 16 } else { 0 };
    while i < vectors {
        *(to as *mut u128).add(i) = *(from as *const u128).add(i);
        i += step;
    }
    let mut j = vectors * 16 + thread_x() as usize;
    while j < len {
        *to.add(j) = *from.add(j);
        j += step;
    }
}

/// After nvCOMP batches: records in `first_bad` (preset to `u32::MAX`) the lowest slot
/// (`base` + index into the given arrays) whose status is not success or whose decoded
/// size differs from the expected one, so the host learns of a bad chunk without copying
/// every status back.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn check_decoded(
    statuses: *const i32,
    actual_bytes: *const usize,
    expected_bytes: *const usize,
    slots: u32,
    base: u32,
    first_bad: *mut u32,
) {
    crate::ptx::await_inputs();
    let i = block_x() * block_dim_x() + thread_x();
    if i < slots && (*statuses.add(i as usize) != 0 || *actual_bytes.add(i as usize) != *expected_bytes.add(i as usize)) {
        (*(first_bad as *const core::sync::atomic::AtomicU32)).fetch_min(base + i, core::sync::atomic::Ordering::Relaxed);
    }
}
