//! `HostStore`: a model's compressed weights loaded once into page-locked host RAM, laid
//! out unit by unit exactly as they will sit in a device slot.
use super::plan::{align, UnitSize};
use crate::container::{Container, Encoding};
use crate::error::Result;
use crate::gpu::{ChunkBatch, Decoder, DeviceChunkTable, Gpu, Int8Weights, PinnedBuffer, WeightsView};
use crate::import::WeightSource;
use cudarc::driver::{CudaSlice, CudaStream};
use rayon::prelude::*;
use std::sync::Arc;

/// A member of a streamed unit: a whole INT8 tensor, or a band of its rows that is a run
/// of whole chunks (see `DeviceChunkTable::build_rows`), so that one matrix too large for
/// a slot can stream in pieces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitPart {
    pub name: String,
    pub rows: Option<std::ops::Range<usize>>,
    /// Rows the CPU computes in sharing passes (`WeightStream::for_each_unit_sharing`): they
    /// continue a band of the same tensor earlier in the unit, come after every GPU part,
    /// and cross the link only in full passes (large batches), joined to that band.
    pub cpu: bool,
}

impl From<String> for UnitPart {
    fn from(name: String) -> Self {
        UnitPart { name, rows: None, cpu: false }
    }
}

impl From<&str> for UnitPart {
    fn from(name: &str) -> Self {
        UnitPart { name: name.to_owned(), rows: None, cpu: false }
    }
}

/// A unit's CPU rows in host RAM, uncompressed: the CPU GEMV reads them every decode step,
/// at RAM speed.
pub struct CpuRows {
    /// The unit tensor (a GPU band) whose rows these continue: output row `r` of this
    /// matrix is row `tensors[after].table.rows + r` of the whole.
    pub after: usize,
    /// Where these rows start in the whole matrix (the band's row count).
    pub first_row: usize,
    pub matrix: CpuMatrix,
}

/// What the CPU computes its rows from.
pub enum CpuMatrix {
    /// INT8 values and scales, decoded from the container at load.
    Int8(crate::codec::Int8Matrix),
    /// GGUF blocks: rows of the whole tensor's planes, which the arena holds for full passes.
    Ggml(GgmlRows),
}

impl CpuMatrix {
    pub fn rows(&self) -> usize {
        match self {
            CpuMatrix::Int8(m) => m.rows,
            CpuMatrix::Ggml(g) => g.rows.len(),
        }
    }

    pub fn cols(&self) -> usize {
        match self {
            CpuMatrix::Int8(m) => m.cols,
            CpuMatrix::Ggml(g) => g.cols,
        }
    }

    /// Bytes the CPU reads for one product.
    pub fn bytes(&self) -> usize {
        match self {
            CpuMatrix::Int8(m) => m.q.len() + 4 * m.scales.len(),
            CpuMatrix::Ggml(g) => crate::abi::GGML_LAYOUTS[g.layout].values_bytes((g.rows.len() * g.cols) as u64) as usize,
        }
    }
}

/// Rows `rows` of a `[total_rows, cols]` GGUF block tensor whose planes sit in a
/// `HostStore`'s arena.
pub struct GgmlRows {
    pub layout: usize,
    planes: *const u8,
    planes_len: usize,
    pub total_rows: usize,
    pub cols: usize,
    pub rows: std::ops::Range<usize>,
}

impl GgmlRows {
    /// The whole tensor's planes.
    pub fn view(&self) -> super::cpu_ggml::GgmlView<'_> {
        // SAFETY: `planes` points at `planes_len` bytes of the arena of the store that owns
        // this value; the arena is written only before the store is built and never moves
        // (a page-locked allocation or a Vec's heap buffer) nor is freed while the store lives.
        let planes = unsafe { std::slice::from_raw_parts(self.planes, self.planes_len) };
        super::cpu_ggml::GgmlView { layout: self.layout, planes, rows: self.total_rows, cols: self.cols }
    }
}

/// How a unit with CPU rows streams in a sharing pass.
pub struct SplitUnit {
    /// The first `gpu_tensors` tensors (stored first) are all a sharing pass copies and
    /// decodes.
    pub(super) gpu_tensors: usize,
    pub(super) stored: usize,
    pub(super) batch: Option<ChunkBatch>,
    pub cpu: Vec<CpuRows>,
}

/// One tensor of a unit: where its stored bytes sit in the host arena and in a slot.
pub struct HostTensor {
    pub table: DeviceChunkTable,
    pub(super) host_offset: usize,
    pub(super) slot_stored_offset: usize,
    pub(super) slot_decoded_offset: usize,
    /// A GPU band that CPU rows continue: how a full pass multiplies the whole matrix.
    pub(super) joined: Option<Joined>,
}

/// How a full pass sees a GPU band and the CPU rows that continue it as one matrix.
pub(super) enum Joined {
    /// INT8: both decoded back to back in the slot; the rows of both and their scales.
    Int8 { rows: usize, scales: CudaSlice<f32> },
    /// GGUF blocks: the unit tensor at this index holds the whole matrix's planes (the CPU
    /// part's, which the CPU reads its rows from).
    Whole(usize),
}

pub struct HostUnit {
    pub tensors: Vec<HostTensor>,
    pub size: UnitSize,
    /// The tensors' tables merged at their slot offsets (one scatter and one nvCOMP call
    /// per unit); `None` when their coded chunks mix codecs.
    pub(super) batch: Option<ChunkBatch>,
    /// Set when some of the unit's rows are the CPU's.
    pub split: Option<SplitUnit>,
}

impl HostUnit {
    /// What a pass copies: the stored bytes of all tensors, or (sharing) of the GPU ones.
    pub(super) fn stored_bytes(&self, sharing: bool) -> usize {
        match (&self.split, sharing) {
            (Some(s), true) => s.stored,
            _ => self.size.stored,
        }
    }

    fn pass_batch(&self, sharing: bool) -> Option<&ChunkBatch> {
        match (&self.split, sharing) {
            (Some(s), true) => s.batch.as_ref(),
            _ => self.batch.as_ref(),
        }
    }

    fn pass_tensors(&self, sharing: bool) -> &[HostTensor] {
        match (&self.split, sharing) {
            (Some(s), true) => &self.tensors[..s.gpu_tensors],
            _ => &self.tensors,
        }
    }

    /// Stored exactly as decoded (see `ChunkBatch::identity`): copied straight into the
    /// INT8 half of its slot, never decoded.
    pub(super) fn identity(&self, sharing: bool) -> bool {
        self.pass_batch(sharing).is_some_and(|b| b.identity)
    }

    /// Identity in full passes and, when split, in sharing passes too.
    fn always_identity(&self) -> bool {
        self.identity(false) && (self.split.is_none() || self.identity(true))
    }

    /// The CPU's rows in a sharing pass (none in a full one).
    pub fn cpu_rows(&self, sharing: bool) -> &[CpuRows] {
        match (&self.split, sharing) {
            (Some(s), true) => &s.cpu,
            _ => &[],
        }
    }

    /// The weights a pass computes on the GPU from a slot's decoded half: a sharing pass
    /// the GPU tensors as stored (bands where the CPU has the other rows), a full pass
    /// every matrix whole (each CPU band joined to the band it continues).
    pub(super) fn pass_weights<'a>(&'a self, decoded: &'a CudaSlice<u8>, sharing: bool) -> Vec<WeightsView<'a>> {
        let view = |t: &HostTensor, len: usize| decoded.slice(t.slot_decoded_offset..t.slot_decoded_offset + len);
        match (&self.split, sharing) {
            (Some(s), true) => self.tensors[..s.gpu_tensors].iter().map(|t| t.table.weights_at(view(t, t.table.len()))).collect(),
            _ => self.tensors[..self.split.as_ref().map_or(self.tensors.len(), |s| s.gpu_tensors)]
                .iter()
                .map(|t| match &t.joined {
                    Some(Joined::Int8 { rows, scales }) => WeightsView::Int8(Int8Weights {
                        q: view(t, rows * t.table.cols),
                        scales: scales.slice(..),
                        rows: *rows,
                        cols: t.table.cols,
                        group_size: t.table.group_size,
                    }),
                    Some(Joined::Whole(i)) => {
                        let whole = &self.tensors[*i];
                        whole.table.weights_at(view(whole, whole.table.len()))
                    }
                    None => t.table.weights_at(view(t, t.table.len())),
                })
                .collect(),
        }
    }

    /// Enqueues the decode of the pass's stored bytes at `src` (laid out as in a slot)
    /// into `dst` on `stream`.
    ///
    /// # Safety
    /// `src` holds `stored_bytes(sharing)` readable bytes, `dst` `size.decoded` writable
    /// bytes, both valid until the work completes.
    pub(super) unsafe fn decode(&self, decoder: &mut Decoder, src: u64, dst: u64, sharing: bool, stream: &Arc<CudaStream>) -> Result<()> {
        match self.pass_batch(sharing) {
            Some(b) if b.identity => Ok(()),
            Some(b) => decoder.decode_merged(b, src, dst, stream),
            None => {
                let items: Vec<_> =
                    self.pass_tensors(sharing).iter().map(|t| (&t.table, src + t.slot_stored_offset as u64, dst + t.slot_decoded_offset as u64)).collect();
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
        // rows stream raw. GGUF blocks the GPU computes on as stored stream raw too, as
        // their rows' planes. Each entry: (arena offset, bytes).
        let mut quantized: std::collections::HashMap<String, Arc<crate::codec::Int8Matrix>> = Default::default();
        let mut blocks: std::collections::HashMap<String, Arc<Vec<u8>>> = Default::default();
        let mut from_memory: Vec<(usize, MemoryBytes)> = Vec::new();
        // (unit, tensor, rows, index of the band it continues) of every CPU part, decoded
        // into host RAM once the arena is loaded (its stored chunks stay in the arena too,
        // for the full passes of large batches).
        let mut cpu_parts = Vec::new();
        // (unit, tensor, band it continues, rows) of every GGUF CPU part.
        let mut ggml_cpu_parts = Vec::new();
        for (ui, names) in units.iter().enumerate() {
            let parts: Vec<UnitPart> = names.iter().map(|p| p.clone().into()).collect();
            let continued = split_layout(&parts)?;
            let mut tensors = Vec::with_capacity(parts.len());
            let (mut stored, mut decoded, mut gpu_stored) = (0, 0, None);
            for (pi, part) in parts.iter().enumerate() {
                if part.cpu && gpu_stored.is_none() {
                    gpu_stored = Some((pi, stored));
                }
                let stored_int8 = c.tensor(&part.name).is_none_or(|t| matches!(t.encoding, Encoding::Int8 { .. }));
                let table = if stored_int8 {
                    DeviceChunkTable::build_rows(gpu, c, &part.name, part.rows.clone())?
                } else if let Some((layout, rows, cols)) = crate::gpu::native_blocks(c, &part.name) {
                    let all = match blocks.get(&part.name) {
                        Some(b) => b.clone(),
                        None => {
                            let b = Arc::new(WeightSource::ggml_bytes(c, &part.name)?.into_owned());
                            // Kept for the tensor's other bands only.
                            if part.rows.is_some() {
                                blocks.insert(part.name.clone(), b.clone());
                            }
                            b
                        }
                    };
                    // A CPU part holds the whole matrix: a full pass computes on it, and the CPU
                    // reads its rows from it.
                    let band = if part.cpu { 0..rows } else { part.rows.clone().unwrap_or(0..rows) };
                    if band.is_empty() || band.end > rows {
                        return Err(crate::error::Error::Invalid(format!("rows {band:?} of '{}' ({rows} rows)", part.name)));
                    }
                    let row_bytes = all.len() / rows.max(1);
                    let planes = crate::gpu::ggml_planes(layout, &all[band.start * row_bytes..band.end * row_bytes])?;
                    let table = DeviceChunkTable::for_planes(gpu, &part.name, layout, band.len(), cols, planes.len())?;
                    from_memory.push((total, MemoryBytes::Planes(planes)));
                    table
                } else {
                    let m = match quantized.get(&part.name) {
                        Some(m) => m.clone(),
                        None => {
                            let m = Arc::new(WeightSource::int8(c, &part.name)?);
                            quantized.insert(part.name.clone(), m.clone());
                            m
                        }
                    };
                    let rows = part.rows.clone().unwrap_or(0..m.rows);
                    let table = DeviceChunkTable::for_int8(gpu, &part.name, &m, rows.clone())?;
                    from_memory.push((total, MemoryBytes::Int8(m, rows)));
                    table
                };
                let (len, decoded_len) = (table.stored_len, table.len());
                // An INT8 CPU part decodes right after the band it continues, whose slot space
                // was reserved for both; the band must end aligned for the decode.
                let ggml = table.ggml.is_some();
                let slot_decoded_offset = match continued[pi] {
                    Continues::Band(j) if !ggml => {
                        let band: &HostTensor = &tensors[j];
                        if !stored_int8 || !band.table.len().is_multiple_of(super::plan::ALIGN) {
                            return Err(crate::error::Error::Invalid(format!(
                                "CPU rows of '{}' must continue a band of a stored INT8 matrix ending on a {}-byte boundary",
                                part.name,
                                super::plan::ALIGN
                            )));
                        }
                        cpu_parts.push((ui, part.name.clone(), part.rows.clone().expect("split_layout: CPU parts are bands"), j));
                        band.slot_decoded_offset + band.table.len()
                    }
                    c => {
                        // GGUF planes are per field, so bands do not join: a GGUF CPU part
                        // holds its whole matrix, a tensor of its own, and its band reserves
                        // nothing for it.
                        if let Continues::Band(j) = c {
                            ggml_cpu_parts.push((ui, pi, j, part.rows.clone().expect("split_layout: CPU parts are bands")));
                        }
                        let n = match c {
                            Continues::ReserveFor(cpu_rows) if !ggml => decoded_len + cpu_rows * table.cols,
                            _ => decoded_len,
                        };
                        decoded += align(n);
                        decoded - align(n)
                    }
                };
                tensors.push(HostTensor { table, host_offset: total, slot_stored_offset: stored, slot_decoded_offset, joined: None });
                total += align(len);
                stored += align(len);
            }
            let split = gpu_stored.map(|(gpu_tensors, stored)| SplitUnit { gpu_tensors, stored, batch: None, cpu: Vec::new() });
            host_units.push(HostUnit { tensors, size: UnitSize { stored, decoded }, batch: None, split });
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
        for (at, m) in &from_memory {
            let bytes = m.bytes();
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
        // The CPU's rows, decoded on the CPU (checksums verified), and the joined scales of
        // the bands they continue.
        let decoded: Vec<_> =
            cpu_parts.par_iter().map(|(_, name, rows, _)| crate::codec::decode_int8_rows(c, name, Some(rows.clone()))).collect::<Result<_>>()?;
        for (&(u, _, _, j), matrix) in cpu_parts.iter().zip(decoded) {
            let unit = &mut store.units[u];
            let band = &unit.tensors[j];
            let joined_rows = band.table.rows + matrix.rows;
            let mut scales = gpu.stream.alloc_zeros::<f32>(band.table.scales().len() + matrix.scales.len())?;
            gpu.stream.memcpy_dtod(band.table.scales(), &mut scales.slice_mut(..band.table.scales().len()))?;
            gpu.stream.memcpy_htod(&matrix.scales, &mut scales.slice_mut(band.table.scales().len()..))?;
            unit.tensors[j].joined = Some(Joined::Int8 { rows: joined_rows, scales });
            unit.split.as_mut().expect("a unit with CPU parts is split").cpu.push(CpuRows {
                after: j,
                first_row: joined_rows - matrix.rows,
                matrix: CpuMatrix::Int8(matrix),
            });
        }
        let base = store.base_mut() as *const u8;
        for (u, i, j, rows) in ggml_cpu_parts {
            let unit = &mut store.units[u];
            let whole = &unit.tensors[i];
            let layout = whole.table.ggml.expect("a GGUF part");
            // SAFETY: the tensor's planes are [host_offset, host_offset + stored_len) of the arena.
            let planes = unsafe { base.add(whole.host_offset) };
            let g = GgmlRows { layout, planes, planes_len: whole.table.stored_len, total_rows: whole.table.rows, cols: whole.table.cols, rows: rows.clone() };
            unit.tensors[j].joined = Some(Joined::Whole(i));
            unit.split.as_mut().expect("a unit with CPU parts is split").cpu.push(CpuRows { after: j, first_row: rows.start, matrix: CpuMatrix::Ggml(g) });
        }
        gpu.stream.synchronize()?;
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

    /// What each unit takes of a slot: a unit that every pass copies straight into the
    /// decoded half (`HostUnit::identity`) needs no stored half (GGUF blocks streamed as
    /// their planes: the ring's slots halve).
    pub fn sizes(&self) -> Vec<UnitSize> {
        self.units.iter().map(|u| UnitSize { stored: if u.always_identity() { 0 } else { u.size.stored }, decoded: u.size.decoded }).collect()
    }

    /// The longest copy of a pass (what a pinned staging buffer holds).
    pub fn max_copy_bytes(&self) -> usize {
        self.units.iter().map(|u| u.size.stored).max().unwrap_or(0)
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
        let batches = self.units.iter().flat_map(|u| [u.batch.as_ref(), u.split.as_ref().and_then(|s| s.batch.as_ref())]).flatten();
        let joined = self.units.iter().flat_map(|u| &u.tensors).filter_map(|t| match &t.joined {
            Some(Joined::Int8 { scales, .. }) => Some(4 * scales.len()),
            _ => None,
        });
        batches.map(ChunkBatch::device_bytes).sum::<usize>()
            + joined.sum::<usize>()
            + self.units.iter().flat_map(|u| &u.tensors).map(|t| t.table.device_bytes()).sum::<usize>()
    }

    /// Bytes of INT8 rows (values and scales) the CPU holds and computes.
    pub fn cpu_bytes(&self) -> usize {
        self.units.iter().flat_map(|u| u.cpu_rows(true)).map(|r| r.matrix.bytes()).sum()
    }
}

/// What a unit part streams when its bytes come from memory rather than the file.
enum MemoryBytes {
    /// Rows of a matrix quantized at load.
    Int8(Arc<crate::codec::Int8Matrix>, std::ops::Range<usize>),
    /// GGUF blocks in the kernels' planes.
    Planes(Vec<u8>),
}

impl MemoryBytes {
    fn bytes(&self) -> &[u8] {
        match self {
            MemoryBytes::Int8(m, rows) => bytemuck::cast_slice(&m.q[rows.start * m.cols..rows.end * m.cols]),
            MemoryBytes::Planes(p) => p,
        }
    }
}

/// Where a unit part's decoded bytes go relative to the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Continues {
    /// On its own.
    Whole,
    /// A GPU band continued by a CPU part of this many rows: its slot space holds both.
    ReserveFor(usize),
    /// A CPU part, right after the band at this index.
    Band(usize),
}

/// Checks a unit's CPU parts (each continues the rows of an earlier GPU band of the same
/// tensor, all come after every GPU part, the band ends on `ALIGN` so the CPU part's
/// decode starts aligned) and says where each part decodes.
fn split_layout(parts: &[UnitPart]) -> Result<Vec<Continues>> {
    let mut layout = vec![Continues::Whole; parts.len()];
    let mut seen_cpu = false;
    for (i, p) in parts.iter().enumerate() {
        if !p.cpu {
            if seen_cpu {
                return Err(crate::error::Error::Invalid(format!("unit part '{}' follows a CPU part: GPU parts come first", p.name)));
            }
            continue;
        }
        seen_cpu = true;
        let rows = p.rows.clone().ok_or_else(|| crate::error::Error::Invalid(format!("CPU part of '{}' names no rows", p.name)))?;
        let band = parts[..i].iter().position(|b| !b.cpu && b.name == p.name && b.rows.as_ref().is_some_and(|r| r.end == rows.start && r.start == 0));
        let Some(j) = band else {
            return Err(crate::error::Error::Invalid(format!("CPU rows {rows:?} of '{}' continue no GPU band 0..{} of it in the unit", p.name, rows.start)));
        };
        if layout[j] != Continues::Whole {
            return Err(crate::error::Error::Invalid(format!("two CPU parts continue the band of '{}'", p.name)));
        }
        layout[j] = Continues::ReserveFor(rows.len());
        layout[i] = Continues::Band(j);
    }
    Ok(layout)
}

/// Merges each unit's tables into a `ChunkBatch` at the unit's slot offsets. When every
/// unit merges (one codec per unit), each gets its own region of the decoder's arrays and
/// the total is returned; otherwise units that merge share slots from 0 and those that
/// mix codecs decode tensor by tensor.
///
/// A split unit's GPU tensors get a batch of their own (for sharing passes) over the
/// first slots of the unit's region: its chunks are the first of the whole unit's.
fn merge_units(gpu: &Gpu, units: &mut [HostUnit]) -> Result<Option<usize>> {
    fn parts(u: &HostUnit, sharing: bool) -> Vec<(&DeviceChunkTable, usize, usize)> {
        u.pass_tensors(sharing).iter().map(|t| (&t.table, t.slot_stored_offset, t.slot_decoded_offset)).collect()
    }
    let split_batch = |u: &HostUnit, region: Option<u32>| match &u.split {
        Some(_) => ChunkBatch::new(gpu, &parts(u, true), region),
        None => Ok(None),
    };
    let mut next = 0usize;
    let mut batches = Vec::with_capacity(units.len());
    for u in units.iter() {
        match ChunkBatch::new(gpu, &parts(u, false), Some(next as u32))? {
            Some(b) => {
                batches.push((split_batch(u, Some(next as u32))?, b));
                next += batches.last().expect("pushed").1.coded();
            }
            None => {
                for u in units.iter_mut() {
                    u.batch = ChunkBatch::new(gpu, &parts(u, false), None)?;
                    let shared = split_batch(u, None)?;
                    if let Some(s) = &mut u.split {
                        s.batch = shared;
                    }
                }
                return Ok(None);
            }
        }
    }
    for (u, (shared, b)) in units.iter_mut().zip(batches) {
        u.batch = Some(b);
        if let Some(s) = &mut u.split {
            s.batch = shared;
        }
    }
    Ok(Some(next))
}
