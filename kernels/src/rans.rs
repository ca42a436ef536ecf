//! GPU decode of `rans` chunks (host/codec/rans.rs is the format's CPU oracle): one warp
//! per chunk, 32 interleaved rANS states, lane `j` decoding bytes `128t + 4j .. + 3` of
//! step `t` and storing them as one `u32`, so a warp writes 128 contiguous bytes a step;
//! refills read the shared 16-bit word stream in lane order (ballot + prefix popcount).
//! Each chunk is checked on the way as the CPU decoder checks it (stored length, lane
//! states in range, words never read past the end, every lane ending in the encoder's
//! start state, every word consumed) and its outcome written
//! into the status/size arrays that `check_decoded` folds, as for nvCOMP's chunks; raw
//! chunks are copied.
use crate::abi::{ChunkEntry, RANS_HEADER_BYTES, RANS_LUT_ENTRIES, RANS_WARPS, RAW_SLOT};
use crate::ptx::{ballot, block_x, lanemask_lt, load_nc_u32, thread_x, WARP};

/// Lower bound of a lane's state; also the state every lane starts encoding from, hence
/// the one a correct decode ends in.
const STATE_LOWER: u32 = 1 << 16;
/// Statuses written for a coded chunk (0: decoded in full).
const BAD_LENGTH: i32 = 1;
const OVERRUN: i32 = 2;
const BAD_END: i32 = 3;
const BAD_START: i32 = 4;

/// Launch: blockDim.x = 32 · RANS_WARPS, gridDim.x = ceil(chunks / RANS_WARPS). Entry `c`
/// of `table` (stored bytes at `src + src_offset`, decoded to `dst + dst_offset`) decodes
/// with the 4096-entry table `luts + RANS_LUT_ENTRIES · lut` (`sym | (freq-1) << 8 |
/// cum << 20`) and reports in slot `slot_base + slot` of `statuses` / `actual_bytes` /
/// `expected_bytes`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "ptx-kernel" fn rans_decode_chunks(
    table: *const ChunkEntry,
    chunks: u32,
    slot_base: u32,
    src: *const u8,
    dst: *mut u8,
    luts: *const u32,
    statuses: *mut i32,
    actual_bytes: *mut usize,
    expected_bytes: *mut usize,
) {
    crate::ptx::await_inputs();
    let lane = thread_x() % WARP;
    let c = block_x() * RANS_WARPS + thread_x() / WARP;
    if c >= chunks {
        return; // a whole warp: the ballots below stay warp-uniform
    }
    let e = &*table.add(c as usize);
    let from = src.add(e.src_offset as usize);
    let to = dst.add(e.dst_offset as usize);
    let n = e.decoded_len as usize;
    if e.slot == RAW_SLOT {
        copy_warp(from, to, e.stored_len as usize, lane);
        return;
    }
    let s = (slot_base + e.slot) as usize;
    let status = if e.stored_len < RANS_HEADER_BYTES || (e.stored_len - RANS_HEADER_BYTES) % 2 != 0 {
        BAD_LENGTH
    } else {
        decode_chunk(from, to, n, ((e.stored_len - RANS_HEADER_BYTES) / 2) as usize, luts.add(RANS_LUT_ENTRIES * e.lut as usize), lane)
    };
    if lane == 0 {
        *statuses.add(s) = status;
        *actual_bytes.add(s) = if status == 0 { n } else { 0 };
        *expected_bytes.add(s) = n;
    }
}

/// One chunk of `n` decoded bytes from `nwords` words; returns its status (the same in
/// every lane).
#[inline(always)]
unsafe fn decode_chunk(from: *const u8, to: *mut u8, n: usize, nwords: usize, lut: *const u32, lane: u32) -> i32 {
    // States: 32 u32 at the chunk's start (4-aligned: chunks start 16-aligned).
    let mut x = *(from as *const u32).add(lane as usize);
    // The encoder never leaves a state below L; the CPU decoder refuses such a chunk too.
    if ballot(x < STATE_LOWER) != 0 {
        return BAD_START;
    }
    let words = from.add(RANS_HEADER_BYTES as usize) as *const u16;
    let below = lanemask_lt();
    let mut base = 0usize;
    let mut overrun = false;
    let steps = n.div_ceil(128);
    let mut t = 0;
    while t < steps {
        let at = 128 * t + 4 * lane as usize;
        let mut v = 0u32;
        let mut i = 0;
        while i < 4 {
            let active = at + i < n;
            if active {
                let d = load_nc_u32(lut.add((x & 4095) as usize));
                let freq = ((d >> 8) & 0xfff) + 1;
                x = freq.wrapping_mul(x >> 12).wrapping_add(x & 4095).wrapping_sub(d >> 20);
                v |= (d & 0xff) << (8 * i);
            }
            let need = active && x < STATE_LOWER;
            let m = ballot(need);
            if need {
                let w = base + (m & below).count_ones() as usize;
                // A word past the stream's end: the chunk is corrupt; read nothing.
                let word = if w < nwords { *words.add(w) as u32 } else { 0 };
                overrun |= w >= nwords;
                x = (x << 16) | word;
            }
            base += m.count_ones() as usize;
            i += 1;
        }
        if at + 3 < n {
            *(to.add(at) as *mut u32) = v;
        } else {
            let mut i = 0;
            while i < 4 && at + i < n {
                *to.add(at + i) = (v >> (8 * i)) as u8;
                i += 1;
            }
        }
        t += 1;
    }
    let lane_bad = overrun || x != STATE_LOWER;
    if ballot(overrun) != 0 {
        OVERRUN
    } else if ballot(lane_bad) != 0 || base != nwords {
        BAD_END
    } else {
        0
    }
}

/// `len` bytes from `from` to `to` by one warp, 16 at a time where both ends allow it.
#[inline(always)]
unsafe fn copy_warp(from: *const u8, to: *mut u8, len: usize, lane: u32) {
    let vectors = if (to as usize) % 16 == 0 && (from as usize) % 16 == 0 { len / 16 } else { 0 };
    let mut i = lane as usize;
    while i < vectors {
        *(to as *mut u128).add(i) = *(from as *const u128).add(i);
        i += WARP as usize;
    }
    let mut j = vectors * 16 + lane as usize;
    while j < len {
        *to.add(j) = *from.add(j);
        j += WARP as usize;
    }
}
