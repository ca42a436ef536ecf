//! GPU decode of `rans` chunks (host/codec/rans.rs is the format's CPU oracle): one warp
//! per chunk, 32 interleaved rANS states, lane `j` decoding bytes `128t + 4j .. + 3` of
//! step `t` and storing them as one `u32`, so a warp writes 128 contiguous bytes a step;
//! refills read the shared 16-bit word stream in lane order (ballot + prefix popcount).
//! The words come from a window in registers, not from memory: lane `j` holds words
//! `wb + j` and `wb + 32 + j` (one `u32`), a refilling lane takes its word with one
//! `shfl.sync.idx`, and once the refills have passed `wb + 32` the window slides by 32
//! words, its new upper half a coalesced load issued two slides earlier; the stream is
//! asked into L2 `AHEAD` words early, so that those loads hit L2 (see `decode_chunk`).
//! Each chunk is checked on the way as the CPU decoder checks it (stored length, lane
//! states in range, words never read past the end, every lane ending in the encoder's
//! start state, every word consumed) and its outcome written
//! into the status/size arrays that `check_decoded` folds, as for nvCOMP's chunks; raw
//! chunks are copied.
use crate::abi::{ChunkEntry, RANS_HEADER_BYTES, RANS_LUT_ENTRIES, RANS_WARPS, RAW_SLOT};
use crate::ptx::{ballot, block_x, lanemask_lt, load_nc_u32, prefetch_l2, prmt, shfl_idx_u32, slide_in_u16, thread_x, unroll, WARP};

/// Lower bound of a lane's state; also the state every lane starts encoding from, hence
/// the one a correct decode ends in.
const STATE_LOWER: u32 = 1 << 16;
/// Statuses written for a coded chunk (0: decoded in full).
const BAD_LENGTH: i32 = 1;
const OVERRUN: i32 = 2;
const BAD_END: i32 = 3;
const BAD_START: i32 = 4;
/// Words a window half holds: one per lane. A sub-step takes at most 32 words, so with the
/// window base `wb` kept within 32 words of the next word to take, every word a sub-step
/// can take is among the 64 that the window holds.
const WINDOW: usize = 32;
/// How far past the window base the word stream has been asked into L2, in words (1 KiB):
/// ~40 sub-steps at 6 bits a symbol, a few thousand cycles, well over DRAM latency.
const AHEAD: usize = 512;
/// `prmt` selectors putting byte 0 of the second operand into byte `i` of the first.
const INSERT_BYTE: [u32; 4] = [0x3214, 0x3240, 0x3410, 0x4210];

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
///
/// Word window (the words `>= nwords` held as 0 and never read): lane `j` holds word
/// `wb + j` in the low half of `win`, `wb + 32 + j` in its high half, and the next two
/// windows' words `wb + 64 + j`, `wb + 96 + j` in `next[(slides + 1) % 2]`,
/// `next[slides % 2]`, with `wb = 32 · slides`. A sub-step whose predecessors took
/// `rel = base - wb >= 32` words past `wb` first slides the window (once: a sub-step takes
/// at most 32 words, so `rel < 64`), after issuing its table load so that the two overlap:
/// `win` takes the `next` of the new parity as its high half, which is then loaded with the
/// words two windows on (one coalesced 64-byte load), to be read two slides later, 5 or so
/// sub-steps at 6 bits a symbol: the lead that hides an L2 hit. (The two `next` are used by
/// parity, in two branches, rather than as a shift register: moving a register along a ring
/// waits for its load, which would cut the lead to one slide.) Then `rel < 32`, and the
/// sub-step's refills take words `base + rank` = `wb + k`, `k = rel + rank < 64`: half
/// `k >> 5` of lane `k & 31`'s `win`, one shuffle that every lane does. Each slide also asks
/// L2 for the 32 words `AHEAD` past the new base (the first `AHEAD` at the start), so that
/// those loads hit L2 rather than DRAM.
///
/// The CPU decoder's checks, by other means: a lane reads past the stream's end exactly
/// when the words taken exceed `nwords` (`base` only grows, and a sub-step taking `c` words
/// reads words up to `base + c - 1`), so `base > nwords` at the end is the overrun; such a
/// lane gets 0, as the window holds there, and decoding goes on as before.
#[inline(always)]
unsafe fn decode_chunk(from: *const u8, to: *mut u8, n: usize, nwords: usize, lut: *const u32, lane: u32) -> i32 {
    let words = from.add(RANS_HEADER_BYTES as usize) as *const u16;
    let j = lane as usize;
    // The window's loads and the first prefetches go first, to overlap the states' load.
    let mut w = Window {
        win: word_or_zero(words, j, nwords) | word_or_zero(words, WINDOW + j, nwords) << 16,
        next: [word_or_zero(words, 3 * WINDOW + j, nwords), word_or_zero(words, 2 * WINDOW + j, nwords)],
        rel: 0,
        slides: 0,
        next0: words.wrapping_add(3 * WINDOW + j),
        // Slide s loads word 32s + 96 + j and prefetches word 32s + AHEAD - 32 + j.
        load_slides: (nwords.saturating_sub(3 * WINDOW + j) as u32).div_ceil(WINDOW as u32),
        prefetch_slides: (nwords.saturating_sub(AHEAD - WINDOW + j) as u32).div_ceil(WINDOW as u32),
    };
    // Words 0..AHEAD: an address in each 32-byte sector of lane j's 32 bytes.
    prefetch_word(words, 16 * j, nwords);
    prefetch_word(words, 16 * j + 15, nwords);
    // States: 32 u32 at the chunk's start (4-aligned: chunks start 16-aligned).
    let mut x = *(from as *const u32).add(j);
    // The encoder never leaves a state below L; the CPU decoder refuses such a chunk too.
    if ballot(x < STATE_LOWER) != 0 {
        return BAD_START;
    }
    let below = lanemask_lt();
    let full = n / 128;
    let mut t = 0;
    while t < full {
        let mut v = 0u32;
        unroll!(I in [0, 1, 2, 3] {
            let d = symbol(lut, &mut x, true, &mut w, below);
            v = prmt(v, d, INSERT_BYTE[I]);
        });
        *(to.add(128 * t + 4 * j) as *mut u32) = v;
        t += 1;
    }
    if !n.is_multiple_of(128) {
        let at = 128 * full + 4 * j;
        let mut v = 0u32;
        unroll!(I in [0, 1, 2, 3] {
            let d = symbol(lut, &mut x, at + I < n, &mut w, below);
            v = prmt(v, d, INSERT_BYTE[I]);
        });
        if at + 3 < n {
            *(to.add(at) as *mut u32) = v;
        } else {
            let mut i = 0;
            while i < 4 && at + i < n {
                *to.add(at + i) = (v >> (8 * i)) as u8;
                i += 1;
            }
        }
    }
    let base = WINDOW * w.slides as usize + w.rel as usize;
    if base > nwords {
        OVERRUN
    } else if ballot(x != STATE_LOWER) != 0 || base != nwords {
        BAD_END
    } else {
        0
    }
}

/// The warp's word window, as `decode_chunk` describes it.
struct Window {
    win: u32,
    next: [u32; 2],
    /// `base - wb`: below 64, and below 32 once a sub-step has slid the window.
    rel: u32,
    /// `wb / 32`.
    slides: u32,
    /// Where slide 0 would load from (word 96 + j); slide s adds 32s words.
    next0: *const u16,
    /// Slides before this one load a word of the stream; later ones leave their `next` 0.
    load_slides: u32,
    /// Likewise for the prefetch.
    prefetch_slides: u32,
}

/// One sub-step of lane `x`: slides the window if the last refills passed its lower half,
/// decodes a symbol if `active` and returns its table entry (0 if not: the byte then stays
/// 0), then refills the lanes that need it from the window, in lane order. The slide comes
/// after the table load is issued, so that it overlaps the load instead of delaying it.
#[inline(always)]
unsafe fn symbol(lut: *const u32, x: &mut u32, active: bool, w: &mut Window, below: u32) -> u32 {
    let d = if active { load_nc_u32(lut.add((*x & 4095) as usize)) } else { 0 };
    if w.rel >= WINDOW as u32 {
        w.rel -= WINDOW as u32;
        w.slides += 1;
        let p = w.next0.wrapping_add(WINDOW * w.slides as usize);
        let load = w.slides < w.load_slides;
        if w.slides.is_multiple_of(2) {
            slide_in_u16(&mut w.win, &mut w.next[0], p, load);
        } else {
            slide_in_u16(&mut w.win, &mut w.next[1], p, load);
        }
        if w.slides < w.prefetch_slides {
            prefetch_l2(p.wrapping_add(AHEAD - 4 * WINDOW) as *const u8);
        }
    }
    if active {
        let freq = ((d >> 8) & 0xfff) + 1;
        *x = freq.wrapping_mul(*x >> 12).wrapping_add(*x & 4095).wrapping_sub(d >> 20);
    }
    let need = active && *x < STATE_LOWER;
    let m = ballot(need);
    // This lane's word, base + rank, is word k of the window.
    let k = w.rel + (m & below).count_ones();
    let pair = shfl_idx_u32(w.win, k);
    // x << 16 | half k >> 5 of `pair`: its bytes 0, 1 or 2, 3, then bytes 0, 1 of x.
    let refilled = prmt(pair, *x, if k & 32 != 0 { 0x5432 } else { 0x5410 });
    *x = if need { refilled } else { *x };
    w.rel += m.count_ones();
    d
}

/// Word `w` of the stream widened to `u32`, or 0 past its end (never read).
#[inline(always)]
unsafe fn word_or_zero(words: *const u16, w: usize, nwords: usize) -> u32 {
    if w < nwords {
        *words.add(w) as u32
    } else {
        0
    }
}

/// Asks L2 for word `w`'s line, if the stream has that word.
#[inline(always)]
unsafe fn prefetch_word(words: *const u16, w: usize, nwords: usize) {
    if w < nwords {
        prefetch_l2(words.add(w) as *const u8);
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
