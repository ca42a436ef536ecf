//! `HostStore`: a model's compressed weights loaded once into page-locked host RAM, laid
//! out unit by unit exactly as they will sit in a device slot.
use super::plan::{align, UnitSize};
use crate::container::{Container, Encoding};
use crate::error::Result;
use crate::gpu::{ChunkBatch, Decoder, DeviceChunkTable, Gpu, PinnedBuffer};
use crate::import::WeightSource;
use cudarc::driver::CudaStream;
use rayon::prelude::*;
use std::sync::Arc;

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
    pub(super) host_offset: usize,
    pub(super) slot_stored_offset: usize,
    pub(super) slot_decoded_offset: usize,
}

pub struct HostUnit {
    pub tensors: Vec<HostTensor>,
    pub size: UnitSize,
    /// The tensors' tables merged at their slot offsets (one scatter and one nvCOMP call
    /// per unit); `None` when their coded chunks mix codecs.
    pub(super) batch: Option<ChunkBatch>,
}

impl HostUnit {
    /// Stored exactly as decoded (see `ChunkBatch::identity`): copied straight into the
    /// INT8 half of its slot, never decoded.
    pub(super) fn identity(&self) -> bool {
        self.batch.as_ref().is_some_and(|b| b.identity)
    }

    /// Enqueues the decode of the unit's stored bytes at `src` (laid out as in a slot)
    /// into `dst` on `stream`.
    ///
    /// # Safety
    /// `src` holds `size.stored` readable bytes, `dst` `size.decoded` writable bytes, both
    /// valid until the work completes.
    pub(super) unsafe fn decode(&self, decoder: &mut Decoder, src: u64, dst: u64, stream: &Arc<CudaStream>) -> Result<()> {
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
        let mut quantized: std::collections::HashMap<String, Arc<crate::codec::Int8Matrix>> = Default::default();
        let mut from_memory = Vec::new();
        for names in units {
            let mut tensors = Vec::with_capacity(names.len());
            let (mut stored, mut decoded) = (0, 0);
            for part in names {
                let part: UnitPart = part.clone().into();
                let stored_int8 = c.tensor(&part.name).is_none_or(|t| matches!(t.encoding, Encoding::Int8 { .. }));
                let table = if stored_int8 {
                    DeviceChunkTable::build_rows(gpu, c, &part.name, part.rows)?
                } else {
                    let m = match quantized.get(&part.name) {
                        Some(m) => m.clone(),
                        None => {
                            let m = Arc::new(WeightSource::int8(c, &part.name)?);
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
                    eprintln!(
                        "codecllm: pinning {:.1} MB of host memory failed ({e}); streaming from pageable memory through a pinned staging ring",
                        total as f64 / 1e6
                    );
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

    pub(super) fn bytes(&self, offset: usize, len: usize) -> &[u8] {
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
    pub(super) fn decoder(&self, gpu: &Gpu) -> Result<Decoder> {
        match self.regions {
            Some(n) => Decoder::for_regions(gpu, &self.units.iter().filter_map(|u| u.batch.as_ref()).collect::<Vec<_>>(), n),
            None => Decoder::for_batches(gpu, &self.units.iter().map(|u| u.tensors.iter().map(|t| &t.table).collect()).collect::<Vec<_>>()),
        }
    }

    /// Enqueues the status check of every unit's region on `stream` (no-op without regions,
    /// whose decodes are checked as they go).
    pub(super) fn check_regions(&self, decoder: &mut Decoder, stream: &Arc<CudaStream>) -> Result<()> {
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
