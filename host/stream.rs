//! Low-VRAM streaming: a model's compressed weights stay in page-locked host RAM; a fixed
//! ring of device slots receives one unit (a layer, or a group such as a transformer
//! block) at a time. Three streams overlap the work, ordered only by events:
//!
//! ```text
//! copy    │ H2D u0 │ H2D u1 │ H2D u2 ........ │ H2D u3 │
//! decode  │        │ dec u0 │ dec u1 │        │ dec u2 │          (nvCOMP, into the slot)
//! compute │                 │ GEMM u0 │ GEMM u1 │ GEMM u2 │       (fused W8A16 kernels)
//! ```
//!
//! A slot's compressed half is overwritten only after its decode finished, its INT8 half
//! only after its compute finished, so at most `slots` units are live and peak VRAM does
//! not depend on the model's depth. Nothing is allocated per unit.
//!
//! ```no_run
//! # use codecllm::{format::Container, gpu::Gpu, stream::{HostStore, WeightStream}};
//! # fn main() -> codecllm::Result<()> {
//! let gpu = Gpu::new(0)?;
//! let c = Container::open("model.clm".as_ref())?;
//! let units = vec![vec!["layers.0.q.weight".to_string(), "layers.0.o.weight".to_string()]];
//! let store = HostStore::load(&gpu, &c, &units, true)?;    // pinned once
//! let mut ws = WeightStream::new(&gpu, &store, 2, None, 1)?; // 2 slots, no budget, M ≤ 1
//! let x = gpu.stream.clone_htod(&vec![half::f16::ONE; ws.input_width()])?;
//! let mut y = gpu.stream.alloc_zeros::<half::f16>(ws.output_width())?;
//! let run = ws.forward_mlp_stack(&x, 1, &mut y)?;
//! println!("peak VRAM {} bytes", run.peak_vram_measured);
//! # Ok(()) }
//! ```
use crate::error::{Error, Result};
use crate::format::Container;
use crate::gpu::{ChunkBatch, DecodeLog, Decoder, DeviceChunkTable, Gpu, Int8Weights, PinnedBuffer};
use cudarc::driver::{CudaEvent, CudaSlice, CudaStream, DevicePtr, PinnedHostSlice};
use half::f16;
use rayon::prelude::*;
use std::sync::Arc;

/// Offsets inside the arena and the slots are multiples of this (DMA- and nvCOMP-friendly).
const ALIGN: usize = 256;

fn align(x: usize) -> usize {
    x.div_ceil(ALIGN) * ALIGN
}

/// Sizes the slot ring must hold for one unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnitSize {
    pub stored: usize,
    pub decoded: usize,
}

/// The device memory a stream engine takes, decided before anything is allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SlotPlan {
    pub slots: usize,
    pub slot_stored: usize,
    pub slot_decoded: usize,
    /// Everything else: nvCOMP temp, chunk tables, scales, activations.
    pub fixed: usize,
}

impl SlotPlan {
    pub fn total(&self) -> usize {
        self.slots * (self.slot_stored + self.slot_decoded) + self.fixed
    }

    /// Slots sized for the largest unit; fails when `budget` cannot hold `slots` of them.
    pub fn new(units: &[UnitSize], slots: usize, fixed: usize, budget: Option<usize>) -> Result<SlotPlan> {
        if slots == 0 || units.is_empty() {
            return Err(Error::Invalid("streaming needs at least one unit and one slot".into()));
        }
        let plan = SlotPlan {
            slots,
            slot_stored: units.iter().map(|u| align(u.stored)).max().unwrap_or(0),
            slot_decoded: units.iter().map(|u| align(u.decoded)).max().unwrap_or(0),
            fixed,
        };
        if let Some(b) = budget {
            let one = SlotPlan { slots: 1, ..plan };
            if one.total() > b {
                return Err(Error::Invalid(format!(
                    "VRAM budget of {:.1} MB is too small: even one unit needs {:.1} MB ({:.1} MB compressed + {:.1} MB INT8 + {:.1} MB fixed)",
                    b as f64 / 1e6,
                    one.total() as f64 / 1e6,
                    plan.slot_stored as f64 / 1e6,
                    plan.slot_decoded as f64 / 1e6,
                    fixed as f64 / 1e6
                )));
            }
            if plan.total() > b {
                let fit = (b - fixed) / (plan.slot_stored + plan.slot_decoded);
                return Err(Error::Invalid(format!(
                    "VRAM budget of {:.1} MB holds {fit} slot(s), {slots} requested ({:.1} MB needed)",
                    b as f64 / 1e6,
                    plan.total() as f64 / 1e6
                )));
            }
        }
        Ok(plan)
    }
}

/// What the host enqueues, in order, for `units` units over `slots` slots: every unit is
/// prefetched (copy + decode) before it is computed, and unit `u + slots` — which reuses
/// unit `u`'s slot — only after unit `u`'s compute was enqueued (the event it waits on).
/// `warm`: the first `slots` units are in their slots already (the previous pass
/// prefetched them, see `WeightStream::prefetch_next_pass`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Prefetch { unit: usize, slot: usize },
    Compute { unit: usize, slot: usize },
}

pub fn schedule(units: usize, slots: usize, warm: bool) -> Vec<Step> {
    let first = if warm { 0 } else { units.min(slots) };
    let mut steps: Vec<Step> = (0..first).map(|u| Step::Prefetch { unit: u, slot: u % slots }).collect();
    for u in 0..units {
        steps.push(Step::Compute { unit: u, slot: u % slots });
        if u + slots < units {
            steps.push(Step::Prefetch { unit: u + slots, slot: (u + slots) % slots });
        }
    }
    steps
}

/// A member of a streamed unit: a whole INT8 tensor, or a band of its rows that is a run
/// of whole chunks (see `DeviceChunkTable::build_rows`), so that one matrix too large for
/// a slot can stream in pieces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitPart {
    pub name: String,
    pub rows: Option<std::ops::Range<usize>>,
}

impl From<String> for UnitPart {
    fn from(name: String) -> Self {
        UnitPart { name, rows: None }
    }
}

impl From<&str> for UnitPart {
    fn from(name: &str) -> Self {
        UnitPart { name: name.to_owned(), rows: None }
    }
}

/// One tensor of a unit: where its stored bytes sit in the host arena and in a slot.
pub struct HostTensor {
    pub table: DeviceChunkTable,
    host_offset: usize,
    slot_stored_offset: usize,
    slot_decoded_offset: usize,
}

pub struct HostUnit {
    pub tensors: Vec<HostTensor>,
    pub size: UnitSize,
    /// The tensors' tables merged at their slot offsets (one scatter and one nvCOMP call
    /// per unit); `None` when their coded chunks mix codecs.
    batch: Option<ChunkBatch>,
}

impl HostUnit {
    /// Stored exactly as decoded (see `ChunkBatch::identity`): copied straight into the
    /// INT8 half of its slot, never decoded.
    fn identity(&self) -> bool {
        self.batch.as_ref().is_some_and(|b| b.identity)
    }

    /// Enqueues the decode of the unit's stored bytes at `src` (laid out as in a slot)
    /// into `dst` on `stream`.
    ///
    /// # Safety
    /// `src` holds `size.stored` readable bytes, `dst` `size.decoded` writable bytes, both
    /// valid until the work completes.
    unsafe fn decode(&self, decoder: &mut Decoder, src: u64, dst: u64, stream: &Arc<CudaStream>) -> Result<()> {
        match &self.batch {
            Some(_) if self.identity() => Ok(()),
            Some(b) => decoder.decode_merged(b, src, dst, stream),
            None => {
                let items: Vec<_> = self.tensors.iter().map(|t| (&t.table, src + t.slot_stored_offset as u64, dst + t.slot_decoded_offset as u64)).collect();
                decoder.decode_batch(&items, stream)
            }
        }
    }
}

// SAFETY (Send/Sync below): the arena is written only in `load`, before the store is
// shared; afterwards it is only read (by copies and the staging path).
unsafe impl Send for HostStore {}
unsafe impl Sync for HostStore {}

enum Arena {
    /// One page-locked allocation holding every unit.
    Pinned(PinnedBuffer<u8>),
    /// Pinning was refused: pageable memory, copied through a pinned staging ring.
    Pageable(Vec<u8>),
}

/// A model's compressed weights in host RAM, loaded once.
pub struct HostStore {
    arena: Arena,
    pub units: Vec<HostUnit>,
    /// Bytes held page-locked (the arena, or 0 when it fell back to pageable memory).
    pub pinned_bytes: usize,
    pub total_bytes: usize,
    /// Free device memory when loading began (after trimming the driver's pool): the
    /// baseline against which a model streaming from this store measures its VRAM, since
    /// the store's chunk tables and scales live on the device too.
    pub vram_baseline: usize,
    /// Decoder array slots when every unit decodes into its own region (one status check
    /// per pass, `Decoder::check_regions`); `None` when some unit mixes codecs.
    regions: Option<usize>,
}

impl HostStore {
    /// Loads `units` (lists of tensors or row bands of them, `UnitPart`; a tensor may appear
    /// in several units, each gets its own copy) from `c`, checksums verified, into one
    /// pinned arena — or, when `pin` is false or pinning is refused, into pageable memory
    /// (said in one log line).
    pub fn load<P: Clone + Into<UnitPart>>(gpu: &Gpu, c: &Container, units: &[Vec<P>], pin: bool) -> Result<Self> {
        gpu.release_cached_memory()?;
        let vram_baseline = gpu.mem_info()?.0;
        let mut host_units = Vec::with_capacity(units.len());
        let mut total = 0;
        // Tensors not stored as INT8 (a tied embedding used as the LM head) are quantized
        // here, once each, as every other mode does at load (`WeightSource::int8`); their
        // rows stream raw. Each entry: (arena offset, matrix, rows).
        let mut quantized: std::collections::HashMap<String, Arc<crate::quant::Int8Matrix>> = Default::default();
        let mut from_memory = Vec::new();
        for names in units {
            let mut tensors = Vec::with_capacity(names.len());
            let (mut stored, mut decoded) = (0, 0);
            for part in names {
                let part: UnitPart = part.clone().into();
                let stored_int8 = c.tensor(&part.name).is_none_or(|t| matches!(t.encoding, crate::format::Encoding::Int8 { .. }));
                let table = if stored_int8 {
                    DeviceChunkTable::build_rows(gpu, c, &part.name, part.rows)?
                } else {
                    let m = match quantized.get(&part.name) {
                        Some(m) => m.clone(),
                        None => {
                            let m = Arc::new(crate::llama::WeightSource::int8(c, &part.name)?);
                            quantized.insert(part.name.clone(), m.clone());
                            m
                        }
                    };
                    let rows = part.rows.unwrap_or(0..m.rows);
                    let table = DeviceChunkTable::for_int8(gpu, &part.name, &m, rows.clone())?;
                    from_memory.push((total, m, rows));
                    table
                };
                let (len, decoded_len) = (table.stored_len, table.len());
                tensors.push(HostTensor { table, host_offset: total, slot_stored_offset: stored, slot_decoded_offset: decoded });
                total += align(len);
                stored += align(len);
                decoded += align(decoded_len);
            }
            host_units.push(HostUnit { tensors, size: UnitSize { stored, decoded }, batch: None });
        }
        let regions = merge_units(gpu, &mut host_units)?;
        let pinned = if pin {
            match PinnedBuffer::new(gpu, total) {
                Ok(buf) => Some(buf),
                Err(e) => {
                    eprintln!("codecllm: pinning {:.1} MB of host memory failed ({e}); streaming from pageable memory through a pinned staging ring", total as f64 / 1e6);
                    None
                }
            }
        } else {
            None
        };
        let (arena, pinned_bytes) = match pinned {
            Some(buf) => (Arena::Pinned(buf), total),
            None => (Arena::Pageable(vec![0u8; total.max(1)]), 0),
        };
        let mut store = HostStore { arena, units: host_units, pinned_bytes, total_bytes: total, vram_baseline, regions };
        // Each tensor's chunks go from the file straight into its region of the arena
        // (checksums verified there), in parallel: nothing is staged on the way.
        let base = store.base_mut() as usize;
        for (at, m, rows) in &from_memory {
            let bytes: &[u8] = bytemuck::cast_slice(&m.q[rows.start * m.cols..rows.end * m.cols]);
            // SAFETY: the band owns [at, at + bytes.len()) of the arena (its table's
            // stored_len), disjoint from every other tensor's region.
            unsafe { std::slice::from_raw_parts_mut((base + at) as *mut u8, bytes.len()) }.copy_from_slice(bytes);
        }
        let from_file: Vec<&HostTensor> = store.units.iter().flat_map(|u| &u.tensors).filter(|t| !from_memory.iter().any(|f| f.0 == t.host_offset)).collect();
        from_file.par_iter().try_for_each(|t| {
            let blob = &c.tensor(&t.table.name).expect("build checked it").data;
            // SAFETY: each tensor owns [host_offset, host_offset + stored_len) of the arena;
            // the regions are disjoint and the arena outlives this loop.
            let region = unsafe { std::slice::from_raw_parts_mut((base + t.host_offset) as *mut u8, t.table.stored_len) };
            c.read_stored_chunks_into(&t.table.name, blob, t.table.chunk_range.clone(), region)
        })?;
        Ok(store)
    }

    fn base_mut(&mut self) -> *mut u8 {
        match &mut self.arena {
            Arena::Pinned(buf) => buf.as_mut_slice().as_mut_ptr(),
            Arena::Pageable(v) => v.as_mut_ptr(),
        }
    }

    fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        match &self.arena {
            Arena::Pinned(buf) => &buf.as_slice()[offset..offset + len],
            Arena::Pageable(v) => &v[offset..offset + len],
        }
    }

    pub fn is_pinned(&self) -> bool {
        matches!(self.arena, Arena::Pinned(_))
    }

    pub fn sizes(&self) -> Vec<UnitSize> {
        self.units.iter().map(|u| u.size).collect()
    }

    /// A decoder for this store's units.
    fn decoder(&self, gpu: &Gpu) -> Result<Decoder> {
        match self.regions {
            Some(n) => Decoder::for_regions(gpu, &self.units.iter().filter_map(|u| u.batch.as_ref()).collect::<Vec<_>>(), n),
            None => Decoder::for_batches(gpu, &self.units.iter().map(|u| u.tensors.iter().map(|t| &t.table).collect()).collect::<Vec<_>>()),
        }
    }

    /// Enqueues the status check of every unit's region on `stream` (no-op without regions,
    /// whose decodes are checked as they go).
    fn check_regions(&self, decoder: &mut Decoder, stream: &Arc<CudaStream>) -> Result<()> {
        match self.regions {
            Some(_) => decoder.check_regions(stream),
            None => Ok(()),
        }
    }

    /// Device bytes of all chunk tables and scales (resident for the whole run).
    pub fn table_bytes(&self) -> usize {
        let merged: usize = self.units.iter().filter_map(|u| u.batch.as_ref()).map(ChunkBatch::device_bytes).sum();
        merged + self.units.iter().flat_map(|u| &u.tensors).map(|t| t.table.device_bytes()).sum::<usize>()
    }
}

struct Slot {
    stored: CudaSlice<u8>,
    decoded: CudaSlice<u8>,
    copied: CudaEvent,
    decoded_done: CudaEvent,
    computed: CudaEvent,
}

/// Page-locked bounce buffer for a pageable arena.
struct Staging {
    mem: PinnedHostSlice<u8>,
    copied: CudaEvent,
}

/// The result of one streamed forward pass.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct StreamRun {
    pub seconds: f64,
    /// Compressed bytes copied host → device.
    pub h2d_bytes: usize,
    /// Device memory in use above the level before the engine was built (chunk tables
    /// and scales, loaded with the store, are not in it): the high-water mark of
    /// `cuMemGetInfo` samples taken after every unit.
    pub peak_vram_measured: usize,
    /// What the engine itself allocated (slots + fixed).
    pub vram_accounted: usize,
}

/// Drives a `HostStore` through a ring of device slots; see the module docs.
pub struct WeightStream<'a> {
    gpu: &'a Gpu,
    store: &'a HostStore,
    /// One copy stream per slot: two copies in flight hide each one's setup behind the
    /// other's transfer (a SmolLM2 block is 3.5 MB, and copies that size run one after
    /// another left the link idle about a tenth of the time).
    copy: Vec<Arc<CudaStream>>,
    decode: Arc<CudaStream>,
    compute: Arc<CudaStream>,
    /// Per copy stream, recorded after its last copy of a pass: where
    /// `prefetch_next_pass` takes over the link.
    copies_done: Vec<CudaEvent>,
    /// Where a pass forks from the default stream, where its decodes were checked, where
    /// its last compute ended (reused by every pass).
    pass_start: CudaEvent,
    decodes_checked: CudaEvent,
    pass_done: CudaEvent,
    /// The first `slots` units are in their slots (see `prefetch_next_pass`).
    warm: bool,
    /// Recorded on the decode stream after `prefetch_next_pass`'s decodes.
    next_pass_ready: CudaEvent,
    slots: Vec<Slot>,
    staging: Vec<Staging>,
    decoder: Decoder,
    /// Activation buffers of `forward_mlp_stack` (taken out while it runs).
    acts: Option<[CudaSlice<f16>; 3]>,
    max_m: usize,
    pub plan: SlotPlan,
    free_before: usize,
}

impl<'a> WeightStream<'a> {
    /// Allocates `slots` slots, the decoder and activation buffers for batches up to
    /// `max_m` rows — or fails, before allocating, when `vram_budget` cannot hold them.
    pub fn new(gpu: &'a Gpu, store: &'a HostStore, slots: usize, vram_budget: Option<usize>, max_m: usize) -> Result<Self> {
        gpu.release_cached_memory()?;
        let (free_before, _) = gpu.mem_info()?;
        let tables: Vec<&DeviceChunkTable> = store.units.iter().flat_map(|u| u.tensors.iter().map(|t| &t.table)).collect();
        let max_width = tables.iter().map(|t| t.rows.max(t.cols)).max().unwrap_or(1);
        let widths_ok = store.units.iter().all(|u| !u.tensors.is_empty());
        if !widths_ok {
            return Err(Error::Invalid("every streamed unit needs at least one tensor".into()));
        }
        let decoder = store.decoder(gpu)?;
        let act_bytes = 3 * 2 * max_m.max(1) * max_width;
        let fixed = decoder.temp_bytes() + store.table_bytes() + act_bytes;
        let plan = SlotPlan::new(&store.sizes(), slots, fixed, vram_budget)?;
        let s = &gpu.stream;
        let ev = || gpu.ctx.new_event(None);
        let slots = (0..plan.slots)
            .map(|_| {
                Ok(Slot {
                    stored: s.alloc_zeros::<u8>(plan.slot_stored.max(1))?,
                    decoded: s.alloc_zeros::<u8>(plan.slot_decoded.max(1))?,
                    copied: ev()?,
                    decoded_done: ev()?,
                    computed: ev()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let staging = if store.is_pinned() {
            Vec::new()
        } else {
            (0..2)
                .map(|_| {
                    // SAFETY: written before each copy reads it.
                    let mem = unsafe { gpu.ctx.alloc_pinned::<u8>(plan.slot_stored.max(1)) }
                        .map_err(|e| Error::Gpu(format!("even the {:.1} MB pinned staging buffer was refused: {e}", plan.slot_stored as f64 / 1e6)))?;
                    Ok(Staging { mem, copied: ev()? })
                })
                .collect::<Result<Vec<_>>>()?
        };
        let acts = [s.alloc_zeros::<f16>(act_bytes / 6)?, s.alloc_zeros::<f16>(act_bytes / 6)?, s.alloc_zeros::<f16>(act_bytes / 6)?];
        s.synchronize()?;
        Ok(WeightStream {
            gpu,
            store,
            copy: (0..plan.slots).map(|_| gpu.ctx.new_stream()).collect::<std::result::Result<_, _>>()?,
            decode: gpu.ctx.new_stream()?,
            compute: gpu.ctx.new_stream()?,
            copies_done: (0..plan.slots).map(|_| ev()).collect::<std::result::Result<_, _>>()?,
            pass_start: ev()?,
            decodes_checked: ev()?,
            pass_done: ev()?,
            warm: false,
            next_pass_ready: ev()?,
            slots,
            staging,
            decoder,
            acts: Some(acts),
            max_m,
            plan,
            free_before,
        })
    }

    /// Width of the first unit's input (`cols` of its first tensor).
    pub fn input_width(&self) -> usize {
        self.store.units[0].tensors[0].table.cols
    }

    /// Width of the last unit's output (`rows` of its last tensor).
    pub fn output_width(&self) -> usize {
        self.store.units.last().and_then(|u| u.tensors.last()).map_or(0, |t| t.table.rows)
    }

    /// Raises `peak` to the device memory now in use above the level before the engine.
    fn sample_vram(&self, peak: &mut usize) -> Result<()> {
        let (free, _) = self.gpu.mem_info()?;
        *peak = (*peak).max(self.free_before.saturating_sub(free));
        Ok(())
    }

    /// Copy and decode unit `u` into slot `s` (copy, then decode, each on its stream).
    fn prefetch(&mut self, u: usize, s: usize, staging_turn: &mut usize) -> Result<()> {
        let unit = &self.store.units[u];
        let slot = &mut self.slots[s];
        // The copy lands in the compressed half, last read by the decode of the slot's
        // previous unit — or, for an identity unit (stored exactly as decoded), straight in
        // the INT8 half, last read by that unit's compute; it then needs no decode.
        let identity = unit.identity();
        let copy = &self.copy[s];
        copy.wait(if identity { &slot.computed } else { &slot.decoded_done })?;
        // A unit's tensors sit back to back in the arena exactly as in a slot: one copy.
        let first = unit.tensors[0].host_offset;
        let src = self.store.bytes(first, unit.size.stored);
        let mut dst = if identity { slot.decoded.slice_mut(..unit.size.stored) } else { slot.stored.slice_mut(..unit.size.stored) };
        if self.staging.is_empty() {
            copy.memcpy_htod(src, &mut dst)?;
        } else {
            // Pageable arena: bounce through alternating pinned buffers; the host waits
            // until the buffer's previous copy has left it.
            let st = &mut self.staging[*staging_turn % 2];
            *staging_turn += 1;
            st.copied.synchronize()?;
            let staged = &mut st.mem.as_mut_slice()?[..unit.size.stored];
            staged.par_chunks_mut(1 << 20).zip(src.par_chunks(1 << 20)).for_each(|(d, s)| d.copy_from_slice(s));
            copy.memcpy_htod(&st.mem.as_slice()?[..unit.size.stored], &mut dst)?;
            st.copied.record(copy)?;
        }
        slot.copied.record(copy)?;
        self.decode.wait(&slot.copied)?;
        // The slot's INT8 half was last read by the compute of unit u - slots.
        self.decode.wait(&slot.computed)?;
        let (src_base, dst_base) = (slot.stored.device_ptr(&self.decode).0, slot.decoded.device_ptr(&self.decode).0);
        if !identity {
            // SAFETY: the unit's layout fits the slot (SlotPlan); the events above order the
            // copy before and the previous compute before.
            unsafe { unit.decode(&mut self.decoder, src_base, dst_base, &self.decode)? };
        }
        slot.decoded_done.record(&self.decode)?;
        Ok(())
    }

    /// Runs every linear on `stream` instead of the engine's own compute stream (a model
    /// whose other kernels run there).
    pub fn set_compute_stream(&mut self, stream: Arc<CudaStream>) {
        self.compute = stream;
    }

    /// Streams every unit once: as soon as unit `u`'s weights are decoded, calls
    /// `compute(u, weights, stream)`, which must enqueue all its work on `stream` (the
    /// compute stream); the slot is recycled after that work.
    ///
    /// When the default stream is being captured into a CUDA graph, the whole pass is
    /// captured with it: nothing waits on the host, decode errors are left to the caller
    /// (`take_decode_log` / `stage_decode_status` / `decode_result`), and the run's
    /// figures are zero.
    pub fn for_each_unit<F>(&mut self, mut compute: F) -> Result<StreamRun>
    where
        F: FnMut(usize, &[Int8Weights], &Arc<CudaStream>) -> Result<()>,
    {
        let capturing = self.gpu.stream.capture_status()? != cudarc::driver::sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
        if capturing && !self.staging.is_empty() {
            return Err(Error::Invalid("a pageable store waits on the host between copies: it cannot be captured into a graph".into()));
        }
        let started = std::time::Instant::now();
        let warm = std::mem::take(&mut self.warm);
        // Every stream forks from the default stream, and every slot's events are marked
        // there: all earlier passes, and a prefetch for this one, are ordered before this
        // point. In a capture this makes each wait below one on an event of the same
        // graph, as capture requires.
        self.pass_start.record(&self.gpu.stream)?;
        for s in self.copy.iter().chain([&self.compute, &self.decode]) {
            s.wait(&self.pass_start)?;
        }
        for slot in &self.slots {
            slot.decoded_done.record(&self.gpu.stream)?;
            slot.computed.record(&self.gpu.stream)?;
        }
        let mut peak = 0usize;
        let mut staging_turn = 0;
        for step in schedule(self.store.units.len(), self.slots.len(), warm) {
            match step {
                Step::Prefetch { unit, slot } => self.prefetch(unit, slot, &mut staging_turn)?,
                Step::Compute { unit, slot } => {
                    let s = &self.slots[slot];
                    self.compute.wait(&s.decoded_done)?;
                    let weights: Vec<Int8Weights> = self.store.units[unit]
                        .tensors
                        .iter()
                        .map(|t| t.table.weights_at(s.decoded.slice(t.slot_decoded_offset..t.slot_decoded_offset + t.table.len())))
                        .collect();
                    compute(unit, &weights, &self.compute)?;
                    self.slots[slot].computed.record(&self.compute)?;
                    if !capturing {
                        self.sample_vram(&mut peak)?;
                    }
                }
            }
        }
        // One status check for the pass's decodes, joined into the default stream before
        // anything there reads the failure flag.
        self.store.check_regions(&mut self.decoder, &self.decode)?;
        self.decodes_checked.record(&self.decode)?;
        self.gpu.stream.wait(&self.decodes_checked)?;
        for (c, e) in self.copy.iter().zip(&self.copies_done) {
            e.record(c)?;
        }
        // Join: the default stream continues after the last compute (the last decode and
        // copy are ordered before it).
        self.pass_done.record(&self.compute)?;
        self.gpu.stream.wait(&self.pass_done)?;
        if capturing {
            return Ok(StreamRun { seconds: 0.0, h2d_bytes: 0, peak_vram_measured: 0, vram_accounted: self.plan.total() });
        }
        self.compute.synchronize()?;
        self.decoder.check(&self.decode)?;
        self.sample_vram(&mut peak)?;
        Ok(StreamRun {
            seconds: started.elapsed().as_secs_f64(),
            h2d_bytes: self.store.units.iter().map(|u| u.size.stored).sum(),
            peak_vram_measured: peak,
            vram_accounted: self.plan.total(),
        })
    }

    /// Whether `prefetch_next_pass` can work: the ring must end a pass with unit 0's slot
    /// next, so the unit count must be a multiple of the slot count.
    pub fn can_prefetch_next_pass(&self) -> bool {
        self.store.units.len() % self.slots.len() == 0
    }

    /// After a pass: copies and decodes the first `slots` units for the next pass into
    /// the slots their last occupants free, after the pass's last copy (the link works
    /// while the host reads results and launches the next pass). The default stream waits
    /// for it, so the next pass, which starts there, finds them ready.
    pub fn prefetch_next_pass(&mut self) -> Result<()> {
        if !self.can_prefetch_next_pass() {
            return Err(Error::Invalid(format!("{} units over {} slots: a pass does not end where the next begins", self.store.units.len(), self.slots.len())));
        }
        for (c, e) in self.copy.iter().flat_map(|c| self.copies_done.iter().map(move |e| (c, e))) {
            c.wait(e)?;
        }
        let mut staging_turn = 0;
        for u in 0..self.slots.len().min(self.store.units.len()) {
            self.prefetch(u, u % self.slots.len(), &mut staging_turn)?;
        }
        self.next_pass_ready.record(&self.decode)?;
        self.gpu.stream.wait(&self.next_pass_ready)?;
        self.warm = true;
        Ok(())
    }

    /// Enqueues a copy of the decoder's failure flag (see `Decoder::stage_status`).
    pub fn stage_decode_status(&self, flag: &mut crate::gpu::PinnedBuffer<u32>) -> Result<()> {
        self.decoder.stage_status(flag, &self.gpu.stream)
    }

    /// The outcome of a staged failure flag (see `Decoder::staged_result`).
    pub fn decode_result(&mut self, flag: u32, log: &DecodeLog) -> Result<()> {
        self.decoder.staged_result(flag, log, &self.gpu.stream)
    }

    /// The decodes a captured pass enqueued (see `for_each_unit`).
    pub fn take_decode_log(&mut self) -> DecodeLog {
        self.decoder.take_log()
    }

    /// Streams every unit once: `y = stack(x)`, `x` `[m, input_width]`, `y` `[m, output_width]`.
    ///
    /// Within a unit each linear reads the previous linear's output when its width fits,
    /// else the unit's input (so a LLaMA block [q, k, v, o, gate, up, down] uses every
    /// matrix); the unit's last output feeds the next unit.
    pub fn forward_mlp_stack(&mut self, x: &CudaSlice<f16>, m: usize, y: &mut CudaSlice<f16>) -> Result<StreamRun> {
        if m == 0 || m > self.max_m {
            return Err(Error::Invalid(format!("batch {m} is outside 1..={} this engine was built for", self.max_m)));
        }
        let (width, out_width) = (self.input_width(), self.output_width());
        let mut acts = self.acts.take().expect("activation buffers are put back after every pass");
        // Queued on the default stream; for_each_unit orders the compute stream after it.
        self.gpu.stream.memcpy_dtod(&x.slice(..m * width), &mut acts[0].slice_mut(..m * width))?;
        let gpu = self.gpu;
        let mut input = 0;
        let run = self.for_each_unit(|u, weights, stream| {
            input = run_unit(gpu, &self.store.units[u], weights, &mut acts, input, m, stream)?;
            Ok(())
        });
        let result = run.and_then(|run| {
            self.gpu.stream.memcpy_dtod(&acts[input].slice(..m * out_width), &mut y.slice_mut(..m * out_width))?;
            Ok(run)
        });
        self.acts = Some(acts);
        result
    }
}

/// Runs one unit's linears on `stream` (see `forward_mlp_stack` for the wiring), with the
/// unit's decoded `weights`. Returns the index of the output buffer.
fn run_unit(gpu: &Gpu, unit: &HostUnit, weights: &[Int8Weights], acts: &mut [CudaSlice<f16>; 3], input: usize, m: usize, stream: &Arc<CudaStream>) -> Result<usize> {
    let in_width = unit.tensors[0].table.cols;
    let (mut cur, mut cur_width) = (input, in_width);
    for (t, w) in unit.tensors.iter().zip(weights) {
        let src = if cur_width == t.table.cols {
            cur
        } else if in_width == t.table.cols {
            input
        } else {
            return Err(Error::Invalid(format!("tensor '{}' takes width {}, the stack offers {cur_width} or {in_width}", t.table.name, t.table.cols)));
        };
        let dst = (0..3).find(|&i| i != src && i != input).expect("three buffers");
        let (xs, ys) = split_two(acts, src, dst);
        gpu.linear(xs, m, w, ys, stream)?;
        cur = dst;
        cur_width = t.table.rows;
    }
    Ok(cur)
}

/// `&acts[a]` and `&mut acts[b]` for a ≠ b.
pub(crate) fn split_two(acts: &mut [CudaSlice<f16>; 3], a: usize, b: usize) -> (&CudaSlice<f16>, &mut CudaSlice<f16>) {
    assert_ne!(a, b);
    let [x, y, z] = acts;
    match (a, b) {
        (0, 1) => (x, y),
        (0, 2) => (x, z),
        (1, 0) => (y, x),
        (1, 2) => (y, z),
        (2, 0) => (z, x),
        (2, 1) => (z, y),
        _ => unreachable!("indices below 3"),
    }
}

/// The same stack with every unit decoded into VRAM first: the reference a streamed
/// forward must equal bit for bit (same kernels, same plans).
pub fn forward_resident(gpu: &Gpu, store: &HostStore, x: &CudaSlice<f16>, m: usize, y: &mut CudaSlice<f16>) -> Result<()> {
    let s = &gpu.stream;
    let tables: Vec<&DeviceChunkTable> = store.units.iter().flat_map(|u| u.tensors.iter().map(|t| &t.table)).collect();
    let mut decoder = store.decoder(gpu)?;
    let max_width = tables.iter().map(|t| t.rows.max(t.cols)).max().unwrap_or(1);
    let mut acts = [s.alloc_zeros::<f16>(m * max_width)?, s.alloc_zeros::<f16>(m * max_width)?, s.alloc_zeros::<f16>(m * max_width)?];
    let width = store.units[0].tensors[0].table.cols;
    s.memcpy_dtod(&x.slice(..m * width), &mut acts[0].slice_mut(..m * width))?;
    let mut input = 0;
    for unit in &store.units {
        let stored = s.clone_htod(store.bytes(unit.tensors[0].host_offset, unit.size.stored))?;
        let mut decoded = s.alloc_zeros::<u8>(unit.size.decoded.max(1))?;
        let (src, dst) = (stored.device_ptr(s).0, decoded.device_ptr(s).0);
        // SAFETY: the unit's tensors are contiguous in the arena from its first tensor, at
        // the same relative offsets as in a slot; buffers outlive the sync below.
        unsafe { unit.decode(&mut decoder, src, dst, s)? };
        let half = if unit.identity() { &stored } else { &decoded };
        let weights: Vec<Int8Weights> = unit.tensors.iter().map(|t| t.table.weights_at(half.slice(t.slot_decoded_offset..t.slot_decoded_offset + t.table.len()))).collect();
        input = run_unit(gpu, unit, &weights, &mut acts, input, m, s)?;
        s.synchronize()?;
        let _ = &mut decoded;
    }
    store.check_regions(&mut decoder, s)?;
    decoder.check(s)?;
    let out_width = store.units.last().and_then(|u| u.tensors.last()).map_or(0, |t| t.table.rows);
    s.memcpy_dtod(&acts[input].slice(..m * out_width), &mut y.slice_mut(..m * out_width))?;
    Ok(())
}

/// Merges each unit's tables into a `ChunkBatch` at the unit's slot offsets. When every
/// unit merges (one codec per unit), each gets its own region of the decoder's arrays and
/// the total is returned; otherwise units that merge share slots from 0 and those that
/// mix codecs decode tensor by tensor.
fn merge_units(gpu: &Gpu, units: &mut [HostUnit]) -> Result<Option<usize>> {
    fn parts(u: &HostUnit) -> Vec<(&DeviceChunkTable, usize, usize)> {
        u.tensors.iter().map(|t| (&t.table, t.slot_stored_offset, t.slot_decoded_offset)).collect()
    }
    let mut next = 0usize;
    let mut batches = Vec::with_capacity(units.len());
    for u in units.iter() {
        match ChunkBatch::new(gpu, &parts(u), Some(next as u32))? {
            Some(b) => {
                next += b.coded();
                batches.push(b);
            }
            None => {
                for u in units.iter_mut() {
                    u.batch = ChunkBatch::new(gpu, &parts(u), None)?;
                }
                return Ok(None);
            }
        }
    }
    for (u, b) in units.iter_mut().zip(batches) {
        u.batch = Some(b);
    }
    Ok(Some(next))
}
