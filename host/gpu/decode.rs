//! Decoding compressed tensors on the GPU, from VRAM. Zstd and ANS: the `scatter_chunks`
//! kernel turns a device-resident chunk table into nvCOMP's argument arrays (and copies
//! raw chunks), nvCOMP decodes. rANS: `rans_decode_chunks` decodes (and copies raw chunks)
//! straight from the table, with the tensors' decode tables in VRAM. Either way every
//! chunk's status and size land in the same arrays, and `check_decoded` folds them into
//! one flag. No host round trip and no allocation per decode.
use super::ggml::GgmlWeights;
use super::linear::{Int8Weights, WeightsView};
use super::nvcomp::Nvcomp;
use super::Gpu;
use crate::abi::{ChunkEntry, RANS_LUT_ENTRIES, RANS_WARPS, RAW_SLOT};
use crate::codec::rans::{decode_lut, FreqTable};
use crate::codec::{decode_blob, Int8Matrix};
use crate::container::{Codec, Container, DType, Encoding, DEFAULT_CHUNK_SIZE};
use crate::error::{Error, GpuError, Result};
use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, CudaView, DevicePtr, LaunchConfig, PushKernelArg};
use std::sync::Arc;

// SAFETY: `ChunkEntry` is `repr(C)`, 32 bytes of integers without padding (asserted in abi).
unsafe impl bytemuck::Zeroable for ChunkEntry {}
unsafe impl bytemuck::Pod for ChunkEntry {}

/// Everything the GPU needs to decode one quantized tensor except its stored bytes: the
/// chunk table (device-resident), the nvCOMP slot map and the decoded scales. Shared by
/// VRAM-resident tensors and the streaming engine, whose stored bytes arrive per use.
pub struct DeviceChunkTable {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    pub group_size: usize,
    pub codec: Codec,
    pub chunk_size: usize,
    /// Bytes the stored chunks span (padding included).
    pub stored_len: usize,
    /// The tensor's chunks this table covers (all of them unless built for a row band).
    pub chunk_range: std::ops::Range<usize>,
    table: CudaSlice<u8>,
    /// The table's host copy, for merging tables into a `ChunkBatch`.
    entries: Vec<ChunkEntry>,
    scales: CudaSlice<f32>,
    chunks: usize,
    /// Chunk index of each nvCOMP slot (coded chunks only).
    slot_chunks: Vec<u32>,
    /// `rans`: the tensor's decode table (`RANS_LUT_ENTRIES` entries), on the device and
    /// on the host (for merging into a `ChunkBatch`).
    rans_lut: Option<(CudaSlice<u32>, Vec<u32>)>,
    /// GGUF blocks in the kernels' planes (`abi::GGML_LAYOUTS` index) instead of INT8: the
    /// decoded bytes are the planes, and there are no scales.
    pub ggml: Option<usize>,
}

impl DeviceChunkTable {
    /// The table of tensor `name` on the device (its stored bytes are read by the caller,
    /// wherever they are to live).
    pub fn build(gpu: &Gpu, c: &Container, name: &str) -> Result<Self> {
        DeviceChunkTable::build_rows(gpu, c, name, None)
    }

    /// The table of rows `rows` of tensor `name` (all rows when `None`): a band that starts
    /// on a chunk boundary and ends on one or at the tensor's end, so that it is a run of
    /// whole chunks (`chunk_range`).
    pub fn build_rows(gpu: &Gpu, c: &Container, name: &str, rows: Option<std::ops::Range<usize>>) -> Result<Self> {
        let t = c.tensor(name).ok_or_else(|| Error::format(c.path(), format!("no tensor named '{name}'")))?;
        let Encoding::Int8 { group_size, scales, .. } = &t.encoding else {
            return Err(Error::format(c.path(), format!("tensor '{name}' is not INT8")));
        };
        let (all_rows, cols) = t.matrix_dims().expect("validated: INT8 tensors are 2-D");
        let (all_rows, cols) = (all_rows as usize, cols as usize);
        let band = rows.unwrap_or(0..all_rows);
        let chunk_range = t.row_chunks(name, &band).map_err(Error::Invalid)?;
        let b0 = band.start * cols;
        let (first_offset, stored_len) = t.data.chunk_extent(chunk_range.clone());
        let mut slot_chunks = Vec::new();
        let table: Vec<ChunkEntry> = t
            .data
            .spans()
            .skip(chunk_range.start)
            .take(chunk_range.len())
            .map(|s| {
                let slot = if s.record.raw {
                    RAW_SLOT
                } else {
                    slot_chunks.push(s.index as u32);
                    slot_chunks.len() as u32 - 1
                };
                ChunkEntry {
                    src_offset: s.offset - first_offset,
                    dst_offset: s.decoded_offset - b0 as u64,
                    stored_len: s.record.stored_len,
                    decoded_len: s.decoded_len,
                    slot,
                    lut: 0,
                }
            })
            .collect();
        let rans_lut = match &t.data.rans_table {
            // Validated with the index; a table this build rejects never reaches a kernel.
            Some(freqs) => {
                let lut = decode_lut(&FreqTable::from_freqs(freqs).map_err(|e| Error::format(c.path(), format!("tensor '{name}': {e}")))?);
                Some((gpu.stream.clone_htod(&lut)?, lut))
            }
            None => None,
        };
        let scale_bytes = decode_blob(c, name, scales)?;
        let scale_values = DType::F32.widen(&scale_bytes).expect("f32 is floating point");
        let groups = cols.div_ceil(*group_size as usize);
        let s = &gpu.stream;
        Ok(DeviceChunkTable {
            name: name.to_owned(),
            rows: band.len(),
            cols,
            group_size: *group_size as usize,
            codec: t.data.codec,
            chunk_size: t.data.chunk_size as usize,
            stored_len: stored_len as usize,
            chunk_range,
            table: s.clone_htod(bytemuck::cast_slice::<ChunkEntry, u8>(&table))?,
            scales: s.clone_htod(&scale_values[band.start * groups..band.end * groups])?,
            chunks: table.len(),
            entries: table,
            slot_chunks,
            rans_lut,
            ggml: None,
        })
    }

    /// A table for rows `rows` of an INT8 matrix held in memory (quantized at load, not
    /// stored as INT8): its bytes are "stored" as they are, in raw chunks, so decoding them
    /// is the scatter kernel's copy.
    pub fn for_int8(gpu: &Gpu, name: &str, m: &Int8Matrix, rows: std::ops::Range<usize>) -> Result<Self> {
        if rows.is_empty() || rows.end > m.rows {
            return Err(Error::Invalid(format!("rows {rows:?} of '{name}' ({} rows)", m.rows)));
        }
        let groups = m.cols.div_ceil(m.group_size);
        let scales = gpu.stream.clone_htod(&m.scales[rows.start * groups..rows.end * groups])?;
        DeviceChunkTable::raw(gpu, name, rows.len(), m.cols, m.group_size, rows.len() * m.cols, scales, None)
    }

    /// A table for `len` bytes of GGUF blocks of a `[rows, cols]` matrix (or band) held in
    /// memory in the kernels' planes (`gpu::ggml_planes`, layout `layout`), in raw chunks
    /// like `for_int8`'s.
    pub fn for_planes(gpu: &Gpu, name: &str, layout: usize, rows: usize, cols: usize, len: usize) -> Result<Self> {
        if rows == 0 || len == 0 {
            return Err(Error::Invalid(format!("an empty band of '{name}'")));
        }
        let no_scales = gpu.stream.alloc_zeros::<f32>(1)?;
        DeviceChunkTable::raw(gpu, name, rows, cols, cols, len, no_scales, Some(layout))
    }

    #[allow(clippy::too_many_arguments)]
    fn raw(gpu: &Gpu, name: &str, rows: usize, cols: usize, group_size: usize, len: usize, scales: CudaSlice<f32>, ggml: Option<usize>) -> Result<Self> {
        let cs = DEFAULT_CHUNK_SIZE as usize;
        let entries: Vec<ChunkEntry> = (0..len)
            .step_by(cs)
            .map(|at| {
                let n = (len - at).min(cs) as u32;
                ChunkEntry { src_offset: at as u64, dst_offset: at as u64, stored_len: n, decoded_len: n, slot: RAW_SLOT, lut: 0 }
            })
            .collect();
        Ok(DeviceChunkTable {
            name: name.to_owned(),
            rows,
            cols,
            group_size,
            codec: Codec::Raw,
            chunk_size: cs,
            stored_len: len,
            chunk_range: 0..entries.len(),
            table: gpu.stream.clone_htod(bytemuck::cast_slice::<ChunkEntry, u8>(&entries))?,
            scales,
            chunks: entries.len(),
            entries,
            slot_chunks: Vec::new(),
            rans_lut: None,
            ggml,
        })
    }

    /// Decoded bytes: INT8 values, or the GGUF planes.
    pub fn len(&self) -> usize {
        match self.ggml {
            Some(_) => self.stored_len,
            None => self.rows * self.cols,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn coded_chunks(&self) -> usize {
        self.slot_chunks.len()
    }
    /// The decoded scales, resident.
    pub fn scales(&self) -> &CudaSlice<f32> {
        &self.scales
    }

    /// Device bytes of the table, scales and (rANS) decode table.
    pub fn device_bytes(&self) -> usize {
        self.table.len() + 4 * self.scales.len() + self.rans_lut.as_ref().map_or(0, |l| 4 * l.1.len())
    }

    /// Enqueues the decode of stored bytes at device address `src` (laid out as in the
    /// container) into `len()` bytes at device address `dst`, on `stream`. A chunk that
    /// fails to decode is reported by the next `decoder.check`.
    ///
    /// # Safety
    /// `src` must hold `stored_len` readable bytes and `dst` `len()` writable bytes, both
    /// valid until the work completes.
    pub unsafe fn decode_raw(&self, decoder: &mut Decoder, src: u64, dst: u64, stream: &Arc<CudaStream>) -> Result<()> {
        decoder.decode_batch(&[(self, src, dst)], stream)
    }

    /// Decoded weights `q` (`len()` bytes) with this tensor's scales, for `Gpu::linear`.
    pub fn weights_at<'a>(&'a self, q: CudaView<'a, u8>) -> WeightsView<'a> {
        match self.ggml {
            Some(layout) => WeightsView::Ggml(GgmlWeights { layout, planes: q, rows: self.rows, cols: self.cols }),
            None => WeightsView::Int8(self.int8_at(q)),
        }
    }

    /// `weights_at` of an INT8 table.
    fn int8_at<'a>(&'a self, q: CudaView<'a, u8>) -> Int8Weights<'a> {
        Int8Weights { q, scales: self.scales.slice(..), rows: self.rows, cols: self.cols, group_size: self.group_size }
    }
}

/// Several tensors whose stored bytes sit in one buffer (and whose decoded bytes go to
/// one buffer), their chunk tables merged: one scatter launch and one nvCOMP call decode
/// all of them. A streamed layer's seven tables decoded separately cost nine launches
/// more per layer, which made decoding, not the copy, the slowest stage.
pub struct ChunkBatch {
    table: CudaSlice<u8>,
    chunks: usize,
    codec: Option<Codec>,
    coded: usize,
    /// Its own slots `region..region + coded` of the decoder's arrays, checked with every
    /// other batch's by one `Decoder::check_regions`; `None`: slots from 0, checked after
    /// each decode.
    region: Option<u32>,
    /// Every chunk raw and at the same offset in source and destination: the stored bytes
    /// are the decoded bytes, and decoding is a copy that can be skipped.
    pub identity: bool,
    max_chunk: usize,
    /// Decoded bytes of the tensors with coded chunks (what nvCOMP's workspace is sized by).
    decoded: usize,
    log: DecodeLog,
    /// `rans`: the decode tables of its tensors with coded chunks, back to back (entry
    /// `lut` fields index them).
    rans_luts: Option<CudaSlice<u32>>,
}

impl ChunkBatch {
    /// Merges `parts`: each table with the offsets of its stored bytes in the source
    /// buffer and of its decoded bytes in the destination buffer. `None` when the coded
    /// chunks use more than one codec (one nvCOMP call decodes one codec).
    pub fn new(gpu: &Gpu, parts: &[(&DeviceChunkTable, usize, usize)], region: Option<u32>) -> Result<Option<Self>> {
        let mut codec = None;
        let (mut entries, mut log, mut coded, mut decoded) = (Vec::new(), DecodeLog::default(), 0u32, 0);
        let mut luts: Vec<u32> = Vec::new();
        for &(t, src, dst) in parts {
            let lut = (luts.len() / RANS_LUT_ENTRIES) as u32;
            if t.coded_chunks() > 0 {
                if codec.is_some_and(|c| c != t.codec) {
                    return Ok(None);
                }
                codec = Some(t.codec);
                log.0.push(PendingTensor { name: t.name.clone(), base: region.unwrap_or(0) + coded, chunks: t.slot_chunks.clone() });
                if let Some((_, host)) = &t.rans_lut {
                    luts.extend_from_slice(host);
                }
            }
            entries.extend(t.entries.iter().map(|e| ChunkEntry {
                src_offset: e.src_offset + src as u64,
                dst_offset: e.dst_offset + dst as u64,
                slot: if e.slot == RAW_SLOT { RAW_SLOT } else { e.slot + coded },
                lut,
                ..*e
            }));
            coded += t.coded_chunks() as u32;
            decoded += if t.coded_chunks() > 0 { t.len() } else { 0 };
        }
        let max_chunk = parts.iter().filter(|p| p.0.coded_chunks() > 0).map(|p| p.0.chunk_size).max().unwrap_or(0);
        let identity = entries.iter().all(|e| e.slot == RAW_SLOT && e.src_offset == e.dst_offset);
        let table = gpu.stream.clone_htod(bytemuck::cast_slice::<ChunkEntry, u8>(&entries))?;
        let rans_luts = if luts.is_empty() { None } else { Some(gpu.stream.clone_htod(&luts)?) };
        Ok(Some(ChunkBatch { table, chunks: entries.len(), codec, coded: coded as usize, region, identity, max_chunk, decoded, log, rans_luts }))
    }

    /// Device bytes of the merged table (and rANS decode tables).
    pub fn device_bytes(&self) -> usize {
        self.table.len() + self.rans_luts.as_ref().map_or(0, |l| 4 * l.len())
    }

    /// Coded chunks (nvCOMP slots it needs).
    pub fn coded(&self) -> usize {
        self.coded
    }
}

/// A quantized tensor whose compressed chunks live in VRAM (uploaded once, checksums
/// verified on the way), with its scales already decoded.
pub struct DeviceCompressedTensor {
    pub table: DeviceChunkTable,
    stored: CudaSlice<u8>,
}

impl std::ops::Deref for DeviceCompressedTensor {
    type Target = DeviceChunkTable;
    fn deref(&self) -> &DeviceChunkTable {
        &self.table
    }
}

impl DeviceCompressedTensor {
    pub fn upload(gpu: &Gpu, c: &Container, name: &str) -> Result<Self> {
        let table = DeviceChunkTable::build(gpu, c, name)?;
        let stored = c.read_stored_blob(name, &c.tensor(name).expect("build checked it").data)?;
        Ok(DeviceCompressedTensor { table, stored: gpu.stream.clone_htod(&stored)? })
    }

    /// Compressed bytes held in VRAM (padding included).
    pub fn stored_bytes(&self) -> usize {
        self.stored.len()
    }

    /// Device address of the stored chunks, for `DeviceChunkTable::decode_raw`.
    pub fn stored_ptr(&self, stream: &Arc<CudaStream>) -> u64 {
        self.stored.device_ptr(stream).0
    }

    /// Enqueues the decode of this tensor's INT8 values into `out` on `stream`. A chunk
    /// that fails to decode is reported by the next `decoder.check`.
    pub fn decode_into(&self, decoder: &mut Decoder, out: &mut DeviceInt8Buffer, stream: &Arc<CudaStream>) -> Result<()> {
        if out.data.len() < self.len() {
            return Err(Error::Invalid(format!("decode of '{}' needs {} bytes, the buffer has {}", self.name, self.len(), out.data.len())));
        }
        let src = self.stored.device_ptr(stream).0;
        let dst = out.data.device_ptr(stream).0;
        // SAFETY: `stored` holds the tensor's stored bytes, `out` at least len() bytes;
        // both outlive the enqueued work as long as the caller keeps them (as with any
        // cudarc buffer used asynchronously).
        unsafe { self.table.decode_raw(decoder, src, dst, stream) }
    }

    /// The decoded weights in `q` with this tensor's scales, for `Gpu::linear`.
    pub fn weights<'a>(&'a self, q: &'a DeviceInt8Buffer) -> Int8Weights<'a> {
        self.table.int8_at(q.data.slice(..self.len()))
    }
}

/// Several tensors' compressed chunks (a block's projections) resident in one VRAM
/// allocation and decoded as one merged batch — one launch (or nvCOMP call) and one status
/// check for all of them, where each tensor alone would pay its own: a rANS chunk's
/// decode is latency-bound, so the group's chunks decode side by side in the time of one.
pub struct DeviceCompressedGroup {
    pub tables: Vec<DeviceChunkTable>,
    stored: CudaSlice<u8>,
    /// Each tensor's stored and decoded offsets (256-aligned) in `stored` and in the target.
    offsets: Vec<(usize, usize)>,
    /// `None` when the tensors' coded chunks mix codecs: then one decode each.
    batch: Option<ChunkBatch>,
    decoded_len: usize,
}

impl DeviceCompressedGroup {
    /// Uploads `names` of `c` (checksums verified) into one allocation.
    pub fn upload(gpu: &Gpu, c: &Container, names: &[&str]) -> Result<Self> {
        let align = |x: usize| x.div_ceil(256) * 256;
        let tables = names.iter().map(|n| DeviceChunkTable::build(gpu, c, n)).collect::<Result<Vec<_>>>()?;
        let (mut host, mut offsets, mut decoded) = (Vec::new(), Vec::with_capacity(names.len()), 0);
        for (t, n) in tables.iter().zip(names) {
            let blob = c.read_stored_blob(n, &c.tensor(n).expect("build checked it").data)?;
            offsets.push((host.len(), decoded));
            host.extend_from_slice(&blob);
            host.resize(align(host.len()), 0);
            decoded += align(t.len());
        }
        let stored = gpu.stream.clone_htod(&host)?;
        let parts: Vec<_> = tables.iter().zip(&offsets).map(|(t, &(s, d))| (t, s, d)).collect();
        let batch = ChunkBatch::new(gpu, &parts, None)?;
        Ok(DeviceCompressedGroup { tables, stored, offsets, batch, decoded_len: decoded })
    }

    /// Bytes the decoded tensors take, back to back at 256-aligned offsets.
    pub fn decoded_len(&self) -> usize {
        self.decoded_len
    }

    /// VRAM held: the stored chunks, the tables and the merged batch.
    pub fn device_bytes(&self) -> usize {
        self.stored.len() + self.tables.iter().map(DeviceChunkTable::device_bytes).sum::<usize>() + self.batch.as_ref().map_or(0, ChunkBatch::device_bytes)
    }

    /// Enqueues the decode of every tensor into `out` (at least `decoded_len` bytes) on
    /// `stream`; failures are reported by the decoder's next check.
    pub fn decode_into(&self, decoder: &mut Decoder, out: &mut CudaSlice<u8>, stream: &Arc<CudaStream>) -> Result<()> {
        if out.len() < self.decoded_len {
            return Err(Error::Invalid(format!("a group decode needs {} bytes, the buffer has {}", self.decoded_len, out.len())));
        }
        let (src, dst) = (self.stored.device_ptr(stream).0, out.device_ptr(stream).0);
        // SAFETY: `stored` holds every tensor's stored bytes at its offset and `out` every
        // decoded one (checked above); both outlive the enqueued work as long as the caller
        // keeps them (as with any cudarc buffer used asynchronously).
        unsafe {
            match &self.batch {
                Some(b) => decoder.decode_merged(b, src, dst, stream),
                None => {
                    let items: Vec<_> = self.tables.iter().zip(&self.offsets).map(|(t, &(s, d))| (t, src + s as u64, dst + d as u64)).collect();
                    decoder.decode_batch(&items, stream)
                }
            }
        }
    }

    /// The decoded weights in `decoded` (where `decode_into` put them).
    pub fn weights<'a>(&'a self, decoded: &'a CudaSlice<u8>) -> Vec<WeightsView<'a>> {
        self.tables.iter().zip(&self.offsets).map(|(t, &(_, d))| t.weights_at(decoded.slice(d..d + t.len()))).collect()
    }
}

/// A decode target: INT8 bytes in VRAM.
pub struct DeviceInt8Buffer {
    pub data: CudaSlice<u8>,
}

impl DeviceInt8Buffer {
    pub fn new(gpu: &Gpu, len: usize) -> Result<Self> {
        Ok(DeviceInt8Buffer { data: gpu.stream.alloc_zeros(len.max(1))? })
    }
}

/// nvCOMP's workspace and argument arrays, sized once for a set of tensors and reused by
/// every decode.
pub struct Decoder {
    /// Absent when no codec needs nvCOMP (raw-only tensors).
    nvcomp: Option<Arc<Nvcomp>>,
    scatter: CudaFunction,
    rans_decode: CudaFunction,
    check_decoded: CudaFunction,
    codecs: Vec<Codec>,
    /// Coded chunks one nvCOMP call may take.
    slots: usize,
    /// Entries in the argument and status arrays: `slots`, or the sum of the batches'
    /// regions (`for_regions`).
    array_slots: usize,
    max_chunk: usize,
    max_total: usize,
    temp: CudaSlice<u8>,
    in_ptrs: CudaSlice<u64>,
    in_bytes: CudaSlice<u64>,
    out_ptrs: CudaSlice<u64>,
    out_bytes: CudaSlice<u64>,
    actual_bytes: CudaSlice<u64>,
    statuses: CudaSlice<i32>,
    first_bad: CudaSlice<u32>,
    /// Tensors decoded since the last `check`.
    pending: DecodeLog,
}

/// The tensors a decoder was given since its last check, with where their chunks sat in
/// the nvCOMP batches: what a failed chunk is traced back to. A replayed CUDA graph
/// enqueues no host code, so whoever replays keeps the log of the captured decodes.
#[derive(Clone, Debug, Default)]
pub struct DecodeLog(Vec<PendingTensor>);

#[derive(Clone, Debug)]
struct PendingTensor {
    name: String,
    /// First batch slot of the tensor's coded chunks.
    base: u32,
    /// Chunk index of each of its slots.
    chunks: Vec<u32>,
}

impl Decoder {
    /// A decoder able to decode any of `tensors`, one at a time.
    pub fn new(gpu: &Gpu, tensors: &[&DeviceChunkTable]) -> Result<Self> {
        let singles: Vec<Vec<&DeviceChunkTable>> = tensors.iter().map(|&t| vec![t]).collect();
        Decoder::for_batches(gpu, &singles)
    }

    /// A decoder able to decode each of `batches` (lists of tensors) in one nvCOMP call
    /// per codec: one call per layer instead of one per tensor, since each call costs
    /// microseconds of launches however few chunks it has.
    pub fn for_batches(gpu: &Gpu, batches: &[Vec<&DeviceChunkTable>]) -> Result<Self> {
        let coded = || batches.iter().flatten().filter(|t| t.coded_chunks() > 0);
        let codecs = distinct(coded().map(|t| t.codec));
        let per_batch = |f: fn(&DeviceChunkTable) -> usize| {
            batches.iter().map(|b| b.iter().filter(|t| t.coded_chunks() > 0).map(|t| f(t)).sum::<usize>()).max().unwrap_or(0)
        };
        let slots = per_batch(DeviceChunkTable::coded_chunks);
        let max_total = per_batch(DeviceChunkTable::len);
        let max_chunk = coded().map(|t| t.chunk_size).max().unwrap_or(0);
        Decoder::with_capacity(gpu, &codecs, slots, max_chunk, max_total)
    }

    /// A decoder for batches of up to `slots` coded chunks of at most `max_chunk` bytes
    /// (`max_total` decoded bytes per batch) in any of `codecs`.
    pub fn with_capacity(gpu: &Gpu, codecs: &[Codec], slots: usize, max_chunk: usize, max_total: usize) -> Result<Self> {
        Decoder::build(gpu, codecs, slots, slots, max_chunk, max_total)
    }

    /// A decoder for merged batches that each own a region of its arrays (see
    /// `ChunkBatch::new`); `regions` is the total of their sizes.
    pub fn for_regions(gpu: &Gpu, batches: &[&ChunkBatch], regions: usize) -> Result<Self> {
        let codecs = distinct(batches.iter().filter_map(|b| b.codec));
        let slots = batches.iter().map(|b| b.coded).max().unwrap_or(0);
        let max_chunk = batches.iter().map(|b| b.max_chunk).max().unwrap_or(0);
        let max_total = batches.iter().map(|b| b.decoded).max().unwrap_or(0);
        Decoder::build(gpu, &codecs, slots, regions.max(slots), max_chunk, max_total)
    }

    fn build(gpu: &Gpu, codecs: &[Codec], slots: usize, array_slots: usize, max_chunk: usize, max_total: usize) -> Result<Self> {
        // rANS decodes with our own kernel; only Zstd and ANS need nvCOMP and its workspace.
        let nvcomp_codecs: Vec<Codec> = codecs.iter().copied().filter(|&c| uses_nvcomp(c)).collect();
        let nvcomp = if nvcomp_codecs.is_empty() { None } else { Some(Nvcomp::get()?) };
        let mut temp_bytes = 0;
        for &codec in &nvcomp_codecs {
            temp_bytes = temp_bytes.max(nvcomp.as_ref().unwrap().decompress_temp_bytes(codec, slots, max_chunk, max_total)?);
        }
        let s = &gpu.stream;
        let n = array_slots.max(1);
        Ok(Decoder {
            nvcomp,
            scatter: gpu.kernels.scatter.clone(),
            rans_decode: gpu.kernels.rans_decode.clone(),
            check_decoded: gpu.kernels.check_decoded.clone(),
            codecs: codecs.to_vec(),
            slots,
            array_slots,
            max_chunk,
            max_total,
            temp: s.alloc_zeros(temp_bytes.max(1))?,
            in_ptrs: s.alloc_zeros(n)?,
            in_bytes: s.alloc_zeros(n)?,
            out_ptrs: s.alloc_zeros(n)?,
            out_bytes: s.alloc_zeros(n)?,
            actual_bytes: s.alloc_zeros(n)?,
            statuses: s.alloc_zeros(n)?,
            first_bad: s.clone_htod(&[u32::MAX])?,
            pending: DecodeLog::default(),
        })
    }

    /// nvCOMP temp bytes this decoder holds.
    pub fn temp_bytes(&self) -> usize {
        self.temp.len()
    }

    /// Enqueues the decode of every `(tensor, src, dst)` of `items` on `stream`: each
    /// tensor's chunks go into the shared batch, and nvCOMP runs once per run of tensors
    /// with one codec that fits the decoder's capacity.
    ///
    /// # Safety
    /// For each item, as `DeviceChunkTable::decode_raw`.
    pub unsafe fn decode_batch(&mut self, items: &[(&DeviceChunkTable, u64, u64)], stream: &Arc<CudaStream>) -> Result<()> {
        let (mut run, mut slots, mut total): (Option<Codec>, usize, usize) = (None, 0, 0);
        for &(t, src, dst) in items {
            let coded = t.coded_chunks();
            if coded > 0 {
                if !self.codecs.contains(&t.codec) || coded > self.slots || t.chunk_size > self.max_chunk || t.len() > self.max_total {
                    return Err(Error::Invalid(format!("the decoder was not sized for tensor '{}' ({} chunks)", t.name, t.codec.name())));
                }
                if let Some(codec) = run.filter(|&c| c != t.codec || slots + coded > self.slots || total + t.len() > self.max_total) {
                    self.decode(codec, slots, 0, true, stream)?;
                    (slots, total) = (0, 0);
                }
            }
            if let (Codec::Rans, Some((lut, _))) = (t.codec, &t.rans_lut) {
                // Decoded and checked on its own, from slot 0, after any nvCOMP run before it.
                if let Some(codec) = run.take() {
                    self.decode(codec, slots, 0, true, stream)?;
                    (slots, total) = (0, 0);
                }
                // SAFETY: the caller's guarantee; coded <= self.slots (checked above).
                self.rans(&t.table, t.chunks, src, dst, lut.device_ptr(stream).0, 0, stream)?;
                self.pending.0.push(PendingTensor { name: t.name.clone(), base: 0, chunks: t.slot_chunks.clone() });
                self.check_slots(0, coded, stream)?;
                continue;
            }
            // SAFETY: the caller's guarantee; slots + coded <= self.slots after the flush.
            self.scatter(&t.table, t.chunks, src, dst, slots as u32, stream)?;
            if coded > 0 {
                self.pending.0.push(PendingTensor { name: t.name.clone(), base: slots as u32, chunks: t.slot_chunks.clone() });
                run = Some(t.codec);
                slots += coded;
                total += t.len();
            }
        }
        if let Some(codec) = run {
            self.decode(codec, slots, 0, true, stream)?;
        }
        Ok(())
    }

    /// Enqueues the decode of `batch`, its stored bytes at `src`, decoded into `dst`.
    ///
    /// # Safety
    /// `src` and `dst` hold every offset the batch was built with, valid until the work
    /// completes.
    pub unsafe fn decode_merged(&mut self, batch: &ChunkBatch, src: u64, dst: u64, stream: &Arc<CudaStream>) -> Result<()> {
        let base = batch.region.unwrap_or(0) as usize;
        if let Some(codec) = batch.codec {
            if !self.codecs.contains(&codec)
                || batch.coded > self.slots
                || base + batch.coded > self.array_slots
                || batch.max_chunk > self.max_chunk
                || batch.decoded > self.max_total
            {
                return Err(Error::Invalid(format!("the decoder was not sized for a batch of {} {} chunks", batch.coded, codec.name())));
            }
        }
        if let (Some(Codec::Rans), Some(luts)) = (batch.codec, &batch.rans_luts) {
            // SAFETY: as below; the entries' `lut` fields index the batch's own tables.
            self.rans(&batch.table, batch.chunks, src, dst, luts.device_ptr(stream).0, base as u32, stream)?;
            self.pending.0.extend(batch.log.0.iter().cloned());
            if batch.region.is_none() {
                self.check_slots(base, batch.coded, stream)?;
            }
            return Ok(());
        }
        // SAFETY: the caller's guarantee; the batch's slots lie in base..base + coded, within
        // the arrays (checked above).
        self.scatter(&batch.table, batch.chunks, src, dst, base as u32, stream)?;
        if let Some(codec) = batch.codec {
            self.pending.0.extend(batch.log.0.iter().cloned());
            self.decode(codec, batch.coded, base, batch.region.is_none(), stream)?;
        }
        Ok(())
    }

    /// One status check over every batch region (decodes of `decode_merged` with regions),
    /// enqueued on `stream` after them.
    pub fn check_regions(&mut self, stream: &Arc<CudaStream>) -> Result<()> {
        self.check_slots(0, self.array_slots, stream)
    }

    /// Folds the status and size of slots `base..base + n` into the failure flag.
    fn check_slots(&mut self, base: usize, n: usize, stream: &Arc<CudaStream>) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let (statuses, actual, expected) = (self.statuses.slice(base..base + n), self.actual_bytes.slice(base..base + n), self.out_bytes.slice(base..base + n));
        let (n, base_u) = (n as u32, base as u32);
        let mut launch = stream.launch_builder(&self.check_decoded);
        launch.arg(&statuses).arg(&actual).arg(&expected).arg(&n).arg(&base_u).arg(&mut self.first_bad);
        // SAFETY: the three views hold n entries each.
        unsafe { launch.launch(LaunchConfig::for_num_elems(n)) }?;
        Ok(())
    }

    /// Launches `scatter_chunks` over `chunks` entries of `table`: coded chunks into the
    /// nvCOMP arrays from slot `slot_base`, raw chunks copied into place.
    ///
    /// # Safety
    /// Every entry's source range lies in readable memory at `src`, its destination in
    /// writable memory at `dst`; every slot is below `self.slots`.
    unsafe fn scatter(&mut self, table: &CudaSlice<u8>, chunks: usize, src: u64, dst: u64, slot_base: u32, stream: &Arc<CudaStream>) -> Result<()> {
        let cfg = LaunchConfig { grid_dim: (chunks as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let n = chunks as u32;
        let mut launch = stream.launch_builder(&self.scatter);
        launch
            .arg(table)
            .arg(&n)
            .arg(&slot_base)
            .arg(&src)
            .arg(&dst)
            .arg(&mut self.in_ptrs)
            .arg(&mut self.in_bytes)
            .arg(&mut self.out_ptrs)
            .arg(&mut self.out_bytes);
        launch.launch(cfg)?;
        Ok(())
    }

    /// Launches `rans_decode_chunks` over `chunks` entries of `table`: coded chunks decoded
    /// with the tables at `luts`, reporting in slots from `slot_base`; raw chunks copied.
    ///
    /// # Safety
    /// As `scatter`; `luts` holds every table the entries name.
    #[allow(clippy::too_many_arguments)]
    unsafe fn rans(&mut self, table: &CudaSlice<u8>, chunks: usize, src: u64, dst: u64, luts: u64, slot_base: u32, stream: &Arc<CudaStream>) -> Result<()> {
        let blocks = (chunks as u32).div_ceil(RANS_WARPS);
        let cfg = LaunchConfig { grid_dim: (blocks.max(1), 1, 1), block_dim: (32 * RANS_WARPS, 1, 1), shared_mem_bytes: 0 };
        let n = chunks as u32;
        let mut launch = stream.launch_builder(&self.rans_decode);
        launch.arg(table).arg(&n).arg(&slot_base).arg(&src).arg(&dst).arg(&luts).arg(&mut self.statuses).arg(&mut self.actual_bytes).arg(&mut self.out_bytes);
        launch.launch(cfg)?;
        Ok(())
    }

    /// nvCOMP over slots `base..base + coded`, then (when `check`) their status check.
    fn decode(&mut self, codec: Codec, coded: usize, base: usize, check: bool, stream: &Arc<CudaStream>) -> Result<()> {
        let nvcomp = self.nvcomp.as_ref().expect("decoders with codecs hold nvCOMP");
        let raw = stream.cu_stream();
        let p = |s: &CudaSlice<u64>| s.device_ptr(stream).0 + 8 * base as u64;
        // SAFETY: the arrays hold `base + coded` entries, written by `scatter_chunks` on
        // this stream; temp was sized by nvCOMP for `coded <= slots`.
        unsafe {
            nvcomp.decompress_async(
                codec,
                p(&self.in_ptrs),
                p(&self.in_bytes),
                p(&self.out_bytes),
                p(&self.actual_bytes),
                coded,
                self.temp.device_ptr(stream).0,
                self.temp.len(),
                p(&self.out_ptrs),
                self.statuses.device_ptr(stream).0 + 4 * base as u64,
                raw,
            )?;
        }
        if check {
            self.check_slots(base, coded, stream)?;
        }
        Ok(())
    }

    /// Waits for `stream` and reports whether every chunk decoded since the last check
    /// succeeded with its expected size.
    pub fn check(&mut self, stream: &Arc<CudaStream>) -> Result<()> {
        let log = self.take_log();
        self.check_log(&log, stream)
    }

    /// The log of what was enqueued since the last check (which it clears): for a caller
    /// that captured the decodes into a CUDA graph and checks each replay with
    /// `check_log`.
    pub fn take_log(&mut self) -> DecodeLog {
        std::mem::take(&mut self.pending)
    }

    /// `check`, for decodes described by `log` instead of those enqueued since the last
    /// check.
    pub fn check_log(&mut self, log: &DecodeLog, stream: &Arc<CudaStream>) -> Result<()> {
        let flag = stream.clone_dtoh(&self.first_bad)?[0];
        self.staged_result(flag, log, stream)
    }

    /// Enqueues a copy of the failure flag into `flag` (page-locked), for a caller that
    /// learns of completion from an event instead of synchronizing `stream`; once it has,
    /// `staged_result` reads the copy.
    pub fn stage_status(&self, flag: &mut super::PinnedBuffer<u32>, stream: &Arc<CudaStream>) -> Result<()> {
        stream.memcpy_dtoh(&self.first_bad, &mut flag.as_mut_slice()[..1])?;
        Ok(())
    }

    /// The outcome a copied failure flag reports (`u32::MAX`: every chunk decoded), the
    /// failing tensor traced with `log`; re-arms the flag on `stream` after a failure.
    pub fn staged_result(&mut self, bad: u32, log: &DecodeLog, stream: &Arc<CudaStream>) -> Result<()> {
        self.pending.0.clear();
        if bad == u32::MAX {
            return Ok(());
        }
        stream.memcpy_htod(&[u32::MAX], &mut self.first_bad)?;
        // `bad` is the lowest failing slot over every batch since the last check: the
        // tensor is certain only when a single one covered that slot.
        let covering: Vec<&PendingTensor> = log.0.iter().filter(|t| (t.base..t.base + t.chunks.len() as u32).contains(&bad)).collect();
        Err(match covering.as_slice() {
            [t] => GpuError::Decode {
                tensor: t.name.clone(),
                chunk: Some(t.chunks[(bad - t.base) as usize]),
                msg: "nvCOMP failed to decode it or returned the wrong size".into(),
            },
            _ => GpuError::Decode {
                tensor: covering.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join("' or '"),
                chunk: None,
                msg: format!("nvCOMP failed on batch slot {bad}"),
            },
        }
        .into())
    }
}

/// Whether chunks of `codec` decode with nvCOMP (rANS has its own kernel, raw is a copy).
fn uses_nvcomp(codec: Codec) -> bool {
    matches!(codec, Codec::Zstd | Codec::Ans)
}

/// The codecs of `codecs`, each once, in order of appearance.
fn distinct(codecs: impl Iterator<Item = Codec>) -> Vec<Codec> {
    let mut out = Vec::new();
    for c in codecs {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}
