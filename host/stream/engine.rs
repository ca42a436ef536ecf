//! `WeightStream`: the ring of device slots a `HostStore` streams through, and the
//! copy/decode/compute streams that overlap (see the module docs).
use super::plan::{schedule, SlotPlan, Step};
use super::store::{CpuRows, HostStore};
use crate::error::{Error, GpuError, Result};
use crate::gpu::{DecodeLog, Decoder, DeviceChunkTable, Gpu, PinnedBuffer, WeightsView};
use cudarc::driver::{CudaEvent, CudaSlice, CudaStream, DevicePtr, PinnedHostSlice};
use half::f16;
use rayon::prelude::*;
use std::sync::Arc;

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
    /// `cuMemGetInfo` samples taken after every unit — `None` unless `sample_vram` is on
    /// (each sample costs microseconds, which timed passes must not pay).
    pub peak_vram_measured: Option<usize>,
    /// What the engine itself allocated (slots + fixed).
    pub vram_accounted: usize,
}

/// Drives a `HostStore` through a ring of device slots; see the module docs.
pub struct WeightStream<'a> {
    pub(super) gpu: &'a Gpu,
    pub(super) store: Arc<HostStore>,
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
    /// The first `slots` units are in their slots, prefetched for a sharing pass or not
    /// (see `prefetch_next_pass`).
    warm: Option<bool>,
    /// Recorded on the decode stream after `prefetch_next_pass`'s decodes.
    next_pass_ready: CudaEvent,
    slots: Vec<Slot>,
    staging: Vec<Staging>,
    decoder: Decoder,
    /// Activation buffers of `forward_linear_chain` (taken out while it runs).
    pub(super) acts: Option<[CudaSlice<f16>; 3]>,
    pub(super) max_m: usize,
    pub plan: SlotPlan,
    free_before: usize,
    /// Whether passes sample device memory after every unit (`StreamRun::peak_vram_measured`).
    pub sample_vram: bool,
}

impl<'a> WeightStream<'a> {
    /// The device bytes `new` checks against its budget for `store` through `slots` slots
    /// and batches up to `max_m` rows (slots, decoder workspace, the store's tables,
    /// activations), allocating only the decoder to size its workspace.
    pub fn required_bytes(gpu: &Gpu, store: &HostStore, slots: usize, max_m: usize) -> Result<usize> {
        let max_width = store.units.iter().flat_map(|u| &u.tensors).map(|t| t.table.rows.max(t.table.cols)).max().unwrap_or(1);
        let fixed = store.decoder(gpu)?.temp_bytes() + store.table_bytes() + 3 * 2 * max_m.max(1) * max_width;
        Ok(SlotPlan::new(&store.sizes(), slots, fixed, None)?.total())
    }

    /// Allocates `slots` slots, the decoder and activation buffers for batches up to
    /// `max_m` rows — or fails, before allocating, when `vram_budget` cannot hold them.
    pub fn new(gpu: &'a Gpu, store: Arc<HostStore>, slots: usize, vram_budget: Option<usize>, max_m: usize) -> Result<Self> {
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
        let plan = SlotPlan::new(&store.sizes(), slots, decoder.temp_bytes() + store.table_bytes() + act_bytes, vram_budget)?;
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
                    let mem = unsafe { gpu.ctx.alloc_pinned::<u8>(store.max_copy_bytes().max(1)) }.map_err(|source| GpuError::Pinning {
                        what: format!("even the {:.1} MB pinned staging buffer was refused", store.max_copy_bytes() as f64 / 1e6),
                        source,
                    })?;
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
            warm: None,
            next_pass_ready: ev()?,
            slots,
            staging,
            decoder,
            acts: Some(acts),
            max_m,
            plan,
            free_before,
            sample_vram: false,
        })
    }

    /// Output rows of each unit (its tensors' rows summed): for a unit that is one band of
    /// a matrix, the band's rows.
    pub fn unit_rows(&self) -> Vec<usize> {
        self.store.units.iter().map(|u| u.tensors.iter().map(|t| t.table.rows).sum()).collect()
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
    fn measure_vram(&self, peak: &mut usize) -> Result<()> {
        let (free, _) = self.gpu.mem_info()?;
        *peak = (*peak).max(self.free_before.saturating_sub(free));
        Ok(())
    }

    /// Copy and decode unit `u` into slot `s` (copy, then decode, each on its stream): in
    /// a sharing pass only its GPU tensors.
    fn prefetch(&mut self, u: usize, s: usize, sharing: bool, staging_turn: &mut usize) -> Result<()> {
        let unit = &self.store.units[u];
        let slot = &mut self.slots[s];
        // The copy lands in the compressed half, last read by the decode of the slot's
        // previous unit — or, for an identity unit (stored exactly as decoded), straight in
        // the INT8 half, last read by that unit's compute; it then needs no decode.
        let identity = unit.identity(sharing);
        let copy = &self.copy[s];
        copy.wait(if identity { &slot.computed } else { &slot.decoded_done })?;
        // A unit's tensors sit back to back in the arena exactly as in a slot (the GPU
        // ones first): one copy.
        let (first, len) = (unit.tensors[0].host_offset, unit.stored_bytes(sharing));
        let src = self.store.bytes(first, len);
        let mut dst = if identity { slot.decoded.slice_mut(..len) } else { slot.stored.slice_mut(..len) };
        if self.staging.is_empty() {
            copy.memcpy_htod(src, &mut dst)?;
        } else {
            // Pageable arena: bounce through alternating pinned buffers; the host waits
            // until the buffer's previous copy has left it.
            let st = &mut self.staging[*staging_turn % 2];
            *staging_turn += 1;
            st.copied.synchronize()?;
            let staged = &mut st.mem.as_mut_slice()?[..len];
            staged.par_chunks_mut(1 << 20).zip(src.par_chunks(1 << 20)).for_each(|(d, s)| d.copy_from_slice(s));
            copy.memcpy_htod(&st.mem.as_slice()?[..len], &mut dst)?;
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
            unsafe { unit.decode(&mut self.decoder, src_base, dst_base, sharing, &self.decode)? };
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
        F: FnMut(usize, &[WeightsView], &Arc<CudaStream>) -> Result<()>,
    {
        self.for_each_unit_sharing(false, |u, w, _, st| compute(u, w, st))
    }

    /// `for_each_unit`, and with `sharing` the units split with the CPU stream only their
    /// GPU tensors: `compute` gets those (bands where the CPU has the other rows) and the
    /// CPU's rows (`CpuRows`), whose products it enqueues itself. Without `sharing` every
    /// matrix streams and is computed whole (large batches, where the CPU would be slow).
    pub fn for_each_unit_sharing<F>(&mut self, sharing: bool, mut compute: F) -> Result<StreamRun>
    where
        F: FnMut(usize, &[WeightsView], &[CpuRows], &Arc<CudaStream>) -> Result<()>,
    {
        let capturing = self.gpu.stream.capture_status()? != cudarc::driver::sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
        if capturing && !self.staging.is_empty() {
            return Err(Error::Invalid("a pageable store waits on the host between copies: it cannot be captured into a graph".into()));
        }
        let started = std::time::Instant::now();
        // Slots prefetched for the other kind of pass are prefetched again.
        let warm = self.warm.take() == Some(sharing);
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
                Step::Prefetch { unit, slot } => self.prefetch(unit, slot, sharing, &mut staging_turn)?,
                Step::Compute { unit, slot } => {
                    let s = &self.slots[slot];
                    self.compute.wait(&s.decoded_done)?;
                    let u = &self.store.units[unit];
                    compute(unit, &u.pass_weights(&s.decoded, sharing), u.cpu_rows(sharing), &self.compute)?;
                    self.slots[slot].computed.record(&self.compute)?;
                    if self.sample_vram && !capturing {
                        self.measure_vram(&mut peak)?;
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
            return Ok(StreamRun { seconds: 0.0, h2d_bytes: 0, peak_vram_measured: None, vram_accounted: self.plan.total() });
        }
        self.compute.synchronize()?;
        self.decoder.check(&self.decode)?;
        if self.sample_vram {
            self.measure_vram(&mut peak)?;
        }
        Ok(StreamRun {
            seconds: started.elapsed().as_secs_f64(),
            h2d_bytes: self.store.units.iter().map(|u| u.stored_bytes(sharing)).sum(),
            peak_vram_measured: self.sample_vram.then_some(peak),
            vram_accounted: self.plan.total(),
        })
    }

    /// Whether `prefetch_next_pass` can work: the ring must end a pass with unit 0's slot
    /// next, so the unit count must be a multiple of the slot count.
    pub fn can_prefetch_next_pass(&self) -> bool {
        self.store.units.len().is_multiple_of(self.slots.len())
    }

    /// After a pass: copies and decodes the first `slots` units for the next pass into
    /// the slots their last occupants free, after the pass's last copy (the link works
    /// while the host reads results and launches the next pass). The default stream waits
    /// for it, so the next pass, which starts there, finds them ready — if it is of the
    /// kind prefetched (`sharing`; another kind fetches them again).
    pub fn prefetch_next_pass(&mut self, sharing: bool) -> Result<()> {
        if !self.can_prefetch_next_pass() {
            return Err(Error::Invalid(format!("{} units over {} slots: a pass does not end where the next begins", self.store.units.len(), self.slots.len())));
        }
        for (c, e) in self.copy.iter().flat_map(|c| self.copies_done.iter().map(move |e| (c, e))) {
            c.wait(e)?;
        }
        let mut staging_turn = 0;
        for u in 0..self.slots.len().min(self.store.units.len()) {
            self.prefetch(u, u % self.slots.len(), sharing, &mut staging_turn)?;
        }
        self.next_pass_ready.record(&self.decode)?;
        self.gpu.stream.wait(&self.next_pass_ready)?;
        self.warm = Some(sharing);
        Ok(())
    }

    /// Enqueues a copy of the decoder's failure flag (see `Decoder::stage_status`).
    pub fn stage_decode_status(&self, flag: &mut PinnedBuffer<u32>) -> Result<()> {
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
}
