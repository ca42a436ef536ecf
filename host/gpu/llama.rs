//! LLaMA forward pass on the GPU: the block's non-linear kernels (`kernels/src/llama.rs`)
//! around the linears, whose weights live in one of four places (`WeightMode`): FP16 in
//! VRAM with cuBLAS (the baseline), INT8 in VRAM, compressed chunks in VRAM decoded per
//! layer, or compressed chunks in pinned host RAM streamed per layer (`stream`) — the last
//! three through codecllm's fused W8A16 kernels, on the same INT8 values, so they agree bit
//! for bit. FP16 activations, FP32 residual stream, a KV cache per layer; prefill takes the
//! whole prompt as one batch.
use super::{Gpu, Int8Weights};
use crate::error::{Error, Result};
use crate::format::Container;
use crate::llama::{block_names, LlamaConfig, WeightSource};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DevicePtr, LaunchConfig, PushKernelArg};
use half::f16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum WeightMode {
    /// FP16 weights resident, cuBLAS for every product (the baseline).
    #[value(name = "fp16-resident")]
    Fp16Resident,
    /// INT8 weights resident, codecllm's fused dequant kernels for every product.
    #[value(name = "int8-resident")]
    Int8Resident,
    /// Compressed chunks resident in VRAM, each layer decoded by nvCOMP right before use.
    #[value(name = "compressed-resident")]
    CompressedResident,
    /// Compressed chunks in pinned host RAM, streamed layer by layer (`stream::WeightStream`).
    #[value(name = "stream")]
    Stream,
}

enum Linear {
    Fp16 { w: CudaSlice<f16>, rows: usize, cols: usize },
    Int8 { q: CudaSlice<u8>, s: CudaSlice<f32>, rows: usize, cols: usize, group: usize },
}

impl Linear {
    fn load(gpu: &Gpu, src: &dyn WeightSource, name: &str, mode: WeightMode) -> Result<Self> {
        let st = &gpu.stream;
        Ok(match mode {
            WeightMode::CompressedResident | WeightMode::Stream => {
                return Err(Error::Invalid(format!("{mode:?} weights come from a container: use load_compressed / load_streamed")))
            }
            _ if gpu_only(src, name) => {
                // ANS chunks have no CPU decoder: decode on the GPU, once, at load.
                let c = src.container().expect("gpu_only implies a container");
                let t = super::DeviceCompressedTensor::upload(gpu, c, name)?;
                let mut decoder = super::Decoder::new(gpu, &[&t.table])?;
                let mut q = super::DeviceInt8Buffer::new(gpu, t.len())?;
                t.decode_into(&mut decoder, &mut q, st)?;
                decoder.check(st)?;
                let (rows, cols, group) = (t.rows, t.cols, t.group_size);
                let s = st.clone_dtod(t.table.scales())?;
                if mode == WeightMode::Fp16Resident {
                    let mut w = st.alloc_zeros::<f16>(rows * cols)?;
                    gpu.dequantize(&Int8Weights { q: q.data.slice(..rows * cols), scales: s.slice(..), rows, cols, group_size: group }, &mut w, st)?;
                    Linear::Fp16 { w, rows, cols }
                } else {
                    Linear::Int8 { q: q.data, s, rows, cols, group }
                }
            }
            WeightMode::Fp16Resident => {
                let shape = src.shape(name).ok_or_else(|| Error::Invalid(format!("no tensor named '{name}'")))?;
                let [rows, cols] = shape[..] else { return Err(Error::Invalid(format!("tensor '{name}' is not a matrix"))) };
                let w: Vec<f16> = src.f32(name)?.into_iter().map(f16::from_f32).collect();
                Linear::Fp16 { w: st.clone_htod(&w)?, rows, cols }
            }
            WeightMode::Int8Resident => {
                let m = src.int8(name)?;
                Linear::Int8 { q: st.clone_htod(bytemuck::cast_slice::<i8, u8>(&m.q))?, s: st.clone_htod(&m.scales)?, rows: m.rows, cols: m.cols, group: m.group_size }
            }
        })
    }

    fn rows(&self) -> usize {
        match self {
            Linear::Fp16 { rows, .. } | Linear::Int8 { rows, .. } => *rows,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Linear::Fp16 { w, .. } => 2 * w.len(),
            Linear::Int8 { q, s, .. } => q.len() + 4 * s.len(),
        }
    }

    /// `y[m, rows] = x[m, cols] · Wᵀ`.
    fn apply(&self, gpu: &Gpu, blas: Option<&CudaBlas>, x: &CudaSlice<f16>, m: usize, y: &mut CudaSlice<f16>) -> Result<()> {
        match self {
            Linear::Fp16 { w, rows, cols } => {
                let blas = blas.expect("FP16 weights exist only in the FP16 mode, which creates cuBLAS");
                super::cublas_fp16_linear(blas, w, x, y, m, *rows, *cols)
            }
            Linear::Int8 { q, s, rows, cols, group } => {
                let w = Int8Weights { q: q.slice(..), scales: s.slice(..), rows: *rows, cols: *cols, group_size: *group };
                gpu.linear(x, m, &w, y, &gpu.stream)
            }
        }
    }
}

/// The seven projections of a block, in this order (indices into `block_names`).
const LINEARS: [usize; 7] = [1, 2, 3, 4, 6, 7, 8];
const Q: usize = 0;
const K: usize = 1;
const V: usize = 2;
const O: usize = 3;
const GATE: usize = 4;
const UP: usize = 5;
const DOWN: usize = 6;

/// Per-layer state that is always resident: norms and the KV cache.
/// Whether tensor `name` of `src` is stored in a codec only the GPU decodes.
fn gpu_only(src: &dyn WeightSource, name: &str) -> bool {
    src.container().and_then(|c| c.tensor(name)).is_some_and(|t| t.data.codec == crate::format::Codec::Ans)
}

struct Block {
    attn_norm: CudaSlice<f32>,
    ffn_norm: CudaSlice<f32>,
    k_cache: CudaSlice<f16>,
    v_cache: CudaSlice<f16>,
}

/// Where the blocks' linear weights live.
enum Weights<'g> {
    Resident(Vec<Vec<Linear>>),
    Compressed { layers: Vec<Vec<super::DeviceCompressedTensor>>, decoder: super::Decoder, buf: CudaSlice<u8> },
    Streamed(Box<crate::stream::WeightStream<'g>>),
}

/// A linear's weights for one use: owned resident ones, or INT8 views of decoded bytes.
enum LinRef<'a> {
    Owned(&'a Linear),
    Int8(&'a Int8Weights<'a>),
}

impl LinRef<'_> {
    fn apply(&self, gpu: &Gpu, blas: Option<&CudaBlas>, x: &CudaSlice<f16>, m: usize, y: &mut CudaSlice<f16>) -> Result<()> {
        match self {
            LinRef::Owned(l) => l.apply(gpu, blas, x, m, y),
            LinRef::Int8(w) => gpu.linear(x, m, w, y, &gpu.stream),
        }
    }
}

/// The output projection: resident like the blocks, or (streaming) in pinned host RAM.
enum LmHead {
    Resident(Linear),
    Streamed(LmHeadStream),
}

impl LmHead {
    fn rows(&self) -> usize {
        match self {
            LmHead::Resident(l) => l.rows(),
            LmHead::Streamed(l) => l.rows,
        }
    }
    /// Device bytes it holds.
    fn bytes(&self) -> usize {
        match self {
            LmHead::Resident(l) => l.bytes(),
            LmHead::Streamed(l) => l.bufs.iter().map(|b| b.len()).sum::<usize>() + 4 * l.scales.len() + 2 * l.out.len(),
        }
    }
}

/// Rows of the streamed LM head per piece: 6144 × 576 INT8 is 3.5 MB, the size of one
/// SmolLM2 block, so the LM head needs no larger buffers than the blocks' slots.
const LM_PIECE_BYTES: usize = 6144 * 576;

/// The LM head when streaming: INT8 rows in pinned host RAM, copied in pieces through two
/// device buffers (a copy stream fills one while the other multiplies); scales resident.
struct LmHeadStream {
    /// Owns the pinned rows `host_ptr` points at.
    _host: cudarc::driver::PinnedHostSlice<u8>,
    /// `host`'s address, taken once: `PinnedHostSlice::as_slice` synchronizes an event,
    /// which a graph capture forbids.
    host_ptr: *const u8,
    scales: CudaSlice<f32>,
    rows: usize,
    cols: usize,
    group: usize,
    piece_rows: usize,
    bufs: [CudaSlice<u8>; 2],
    out: CudaSlice<f16>,
    copy: std::sync::Arc<cudarc::driver::CudaStream>,
    copied: [cudarc::driver::CudaEvent; 2],
    used: [cudarc::driver::CudaEvent; 2],
}

impl LmHeadStream {
    fn load(gpu: &Gpu, src: &dyn WeightSource, name: &str) -> Result<Self> {
        let m = src.int8(name)?;
        // SAFETY: written right below, before any copy reads it.
        let mut host = unsafe { gpu.ctx.alloc_pinned::<u8>(m.q.len().max(1)) }?;
        host.as_mut_slice()?[..m.q.len()].copy_from_slice(bytemuck::cast_slice(&m.q));
        let host_ptr = host.as_ptr()?;
        // At least two pieces, so the double buffering is always exercised.
        let piece_rows = (LM_PIECE_BYTES / m.cols.max(1)).min(m.rows.div_ceil(2)).max(1);
        let st = &gpu.stream;
        Ok(LmHeadStream {
            scales: st.clone_htod(&m.scales)?,
            bufs: [st.alloc_zeros(piece_rows * m.cols)?, st.alloc_zeros(piece_rows * m.cols)?],
            out: st.alloc_zeros(piece_rows)?,
            copy: gpu.ctx.new_stream()?,
            copied: [gpu.ctx.new_event(None)?, gpu.ctx.new_event(None)?],
            used: [gpu.ctx.new_event(None)?, gpu.ctx.new_event(None)?],
            _host: host,
            host_ptr,
            rows: m.rows,
            cols: m.cols,
            group: m.group_size,
            piece_rows,
        })
    }

    /// `logits = h · Wᵀ` for one row `h`, piece by piece on the default stream. The first
    /// two pieces are copied as soon as `link_free` (the blocks' last copy) has happened,
    /// so the link goes on from the blocks to the LM head without waiting for compute.
    fn apply(&mut self, gpu: &Gpu, h: &CudaSlice<f16>, logits: &mut CudaSlice<f16>, link_free: &cudarc::driver::CudaEvent) -> Result<()> {
        let st = &gpu.stream;
        let groups = self.cols.div_ceil(self.group);
        // SAFETY: `host_ptr` points at `host`, alive as long as self, written only in `load`.
        let host = unsafe { std::slice::from_raw_parts(self.host_ptr, self.rows * self.cols) };
        // Both buffers are free then: their last readers, the previous step's products,
        // ran on the default stream before this step's streams forked from it.
        self.copy.wait(link_free)?;
        for (p, r0) in (0..self.rows).step_by(self.piece_rows).enumerate() {
            let (b, n) = (p % 2, (self.rows - r0).min(self.piece_rows));
            if p >= 2 {
                // The buffer was last read by the product of piece p - 2.
                self.copy.wait(&self.used[b])?;
            }
            self.copy.memcpy_htod(&host[r0 * self.cols..(r0 + n) * self.cols], &mut self.bufs[b].slice_mut(..n * self.cols))?;
            self.copied[b].record(&self.copy)?;
            st.wait(&self.copied[b])?;
            let w = Int8Weights { q: self.bufs[b].slice(..n * self.cols), scales: self.scales.slice(r0 * groups..), rows: n, cols: self.cols, group_size: self.group };
            gpu.linear(h, 1, &w, &mut self.out, st)?;
            st.memcpy_dtod(&self.out.slice(..n), &mut logits.slice_mut(r0..r0 + n))?;
            self.used[b].record(st)?;
        }
        Ok(())
    }
}

/// The token embedding: on the device, or (streaming) in host RAM, rows gathered per step.
enum Embedding {
    Device(CudaSlice<f16>),
    Host(Vec<f32>),
}

/// A captured single-token step: the blocks, the final norm and the LM head; the
/// embedding before it and the logits' copy after it stay outside.
struct StepGraph {
    graph: cudarc::driver::CudaGraph,
    /// The decodes inside it, to trace a failed chunk after each replay.
    decodes: super::DecodeLog,
}

/// Scratch activations for batches up to `max_m` rows.
struct Scratch {
    ids: CudaSlice<u32>,
    x: CudaSlice<f32>,
    h: CudaSlice<f16>,
    q: CudaSlice<f16>,
    k: CudaSlice<f16>,
    v: CudaSlice<f16>,
    att: CudaSlice<f16>,
    o: CudaSlice<f16>,
    g: CudaSlice<f16>,
    u: CudaSlice<f16>,
    logits: CudaSlice<f16>,
}

pub struct GpuLlama<'g> {
    gpu: &'g Gpu,
    /// Only the FP16 mode uses cuBLAS; the others do not pay for its handle and kernels.
    blas: Option<CudaBlas>,
    pub cfg: LlamaConfig,
    pub mode: WeightMode,
    embed: Embedding,
    out_norm: CudaSlice<f32>,
    lm_head: LmHead,
    blocks: Vec<Block>,
    weights: Weights<'g>,
    rope: CudaSlice<f32>,
    /// The first position the current batch writes, read by the kernels on the device.
    pos: CudaSlice<u32>,
    s: Scratch,
    max_m: usize,
    /// Whether single-token steps replay a captured CUDA graph (on by default): at this
    /// size a step is hundreds of small launches, and the graph issues them from the GPU.
    pub use_graph: bool,
    step_graph: Option<StepGraph>,
    /// Timing events around each forward's device work.
    timers: [cudarc::driver::CudaEvent; 2],
    /// Seconds the device spent on forward passes since loading (from the pos upload to
    /// the logits): with wall time, it tells device-bound from host-bound decoding.
    pub device_seconds: f64,
    pub max_context: usize,
    /// Positions filled in the KV cache.
    pub len: usize,
    /// Bytes the weights take in VRAM (compressed bytes for the compressed modes; the
    /// streaming ring for `Stream`).
    pub weight_bytes: usize,
    free_before: usize,
    /// High-water mark of device memory in use above the level before loading.
    pub peak_vram: usize,
    /// Device bytes the model allocated: weights (as `weight_bytes`), norms, KV cache,
    /// activations, RoPE table.
    pub vram_accounted: usize,
}

/// An event that records a timestamp (cudarc's default events do not).
fn timed_event(gpu: &Gpu) -> Result<cudarc::driver::CudaEvent> {
    Ok(gpu.ctx.new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))?)
}

fn launch_1d(n: usize) -> LaunchConfig {
    LaunchConfig::for_num_elems(n as u32)
}

impl<'g> GpuLlama<'g> {
    /// FP16- or INT8-resident weights from `src` (a container, or a GGUF for the original
    /// values); batches up to `max_m` tokens, contexts up to `max_context` positions.
    pub fn load(gpu: &'g Gpu, src: &dyn WeightSource, mode: WeightMode, max_m: usize, max_context: usize) -> Result<Self> {
        if !matches!(mode, WeightMode::Fp16Resident | WeightMode::Int8Resident) {
            return Err(Error::Invalid(format!("{mode:?} weights come from a container: use load_compressed / load_streamed")));
        }
        let cfg = LlamaConfig::from_metadata(src.metadata())?;
        let free_before = Self::baseline(gpu)?;
        let layers = (0..cfg.layers)
            .map(|i| {
                let n = block_names(i);
                LINEARS.iter().map(|&j| Linear::load(gpu, src, &n[j], mode)).collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let bytes = layers.iter().flatten().map(Linear::bytes).sum();
        let embed = Embedding::Device(gpu.stream.clone_htod(&src.f32("token_embd.weight")?.into_iter().map(f16::from_f32).collect::<Vec<_>>())?);
        Self::assemble(gpu, src, cfg, mode, Weights::Resident(layers), bytes, embed, max_m, max_context, free_before)
    }

    /// Compressed chunks of every block resident in VRAM (checksums verified on upload),
    /// decoded layer by layer into one reused buffer.
    pub fn load_compressed(gpu: &'g Gpu, c: &Container, max_m: usize, max_context: usize) -> Result<Self> {
        let cfg = LlamaConfig::from_metadata(&c.index.metadata)?;
        let free_before = Self::baseline(gpu)?;
        let layers = (0..cfg.layers)
            .map(|i| {
                let n = block_names(i);
                LINEARS.iter().map(|&j| super::DeviceCompressedTensor::upload(gpu, c, &n[j])).collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let tables: Vec<&super::DeviceChunkTable> = layers.iter().flatten().map(|t| &t.table).collect();
        let decoder = super::Decoder::new(gpu, &tables)?;
        let per_layer = layers.iter().map(|l| l.iter().map(|t| t.len().div_ceil(256) * 256).sum::<usize>()).max().unwrap_or(1);
        let bytes = layers.iter().flatten().map(|t| t.stored_bytes() + t.device_bytes()).sum::<usize>() + decoder.temp_bytes() + per_layer;
        let buf = gpu.stream.alloc_zeros::<u8>(per_layer)?;
        let embed = Embedding::Device(gpu.stream.clone_htod(&c.f32("token_embd.weight")?.into_iter().map(f16::from_f32).collect::<Vec<_>>())?);
        Self::assemble(gpu, c, cfg, WeightMode::CompressedResident, Weights::Compressed { layers, decoder, buf }, bytes, embed, max_m, max_context, free_before)
    }

    /// Blocks streamed from `store` (one unit per block: q, k, v, o, gate, up, down, as
    /// `stream_units` lists them) through `slots` device slots; the embedding stays in
    /// host RAM.
    pub fn load_streamed(gpu: &'g Gpu, c: &Container, store: &'g crate::stream::HostStore, slots: usize, max_m: usize, max_context: usize) -> Result<Self> {
        let cfg = LlamaConfig::from_metadata(&c.index.metadata)?;
        // Measured from before the store's device tables, which belong to this mode too.
        let free_before = store.vram_baseline;
        let mut ws = crate::stream::WeightStream::new(gpu, store, slots, None, 1)?;
        ws.set_compute_stream(gpu.stream.clone());
        // The ring, the decoder and the store's tables and scales (in the plan's fixed part).
        let bytes = ws.plan.total();
        // FP16-rounded like the device table of the other modes, so all INT8 modes agree
        // bit for bit.
        let embed = Embedding::Host(c.f32("token_embd.weight")?.into_iter().map(|v| f16::from_f32(v).to_f32()).collect());
        Self::assemble(gpu, c, cfg, WeightMode::Stream, Weights::Streamed(Box::new(ws)), bytes, embed, max_m, max_context, free_before)
    }

    /// The units `load_streamed` expects in its store: each block's seven projections.
    pub fn stream_units(cfg: &LlamaConfig) -> Vec<Vec<String>> {
        (0..cfg.layers).map(|i| {
            let n = block_names(i);
            LINEARS.iter().map(|&j| n[j].clone()).collect()
        }).collect()
    }

    fn baseline(gpu: &Gpu) -> Result<usize> {
        gpu.release_cached_memory()?;
        Ok(gpu.mem_info()?.0)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        gpu: &'g Gpu,
        src: &dyn WeightSource,
        cfg: LlamaConfig,
        mode: WeightMode,
        weights: Weights<'g>,
        block_bytes: usize,
        embed: Embedding,
        max_m: usize,
        max_context: usize,
        free_before: usize,
    ) -> Result<Self> {
        if cfg.head_dim % 32 != 0 || cfg.head_dim > 128 {
            return Err(Error::Invalid(format!("head dimension {} is not supported by the attention kernel (32, 64, 96 or 128)", cfg.head_dim)));
        }
        let max_context = max_context.min(cfg.context).max(1);
        let st = &gpu.stream;
        let norm = |name: &str| -> Result<CudaSlice<f32>> { Ok(st.clone_htod(&src.f32(name)?)?) };
        let kv_dim = cfg.kv_heads * cfg.head_dim;
        let blocks = (0..cfg.layers)
            .map(|i| {
                let n = block_names(i);
                Ok(Block { attn_norm: norm(&n[0])?, ffn_norm: norm(&n[5])?, k_cache: st.alloc_zeros(max_context * kv_dim)?, v_cache: st.alloc_zeros(max_context * kv_dim)? })
            })
            .collect::<Result<Vec<_>>>()?;
        let head_name = if src.has("output.weight") { "output.weight" } else { "token_embd.weight" };
        let head_mode = if mode == WeightMode::Fp16Resident { mode } else { WeightMode::Int8Resident };
        let lm_head = if mode == WeightMode::Stream {
            LmHead::Streamed(LmHeadStream::load(gpu, src, head_name)?)
        } else {
            LmHead::Resident(Linear::load(gpu, src, head_name, head_mode)?)
        };
        // cos/sin of every (position, pair), in f64: angles reach thousands of radians.
        let half = cfg.head_dim / 2;
        let mut rope = Vec::with_capacity(max_context * half * 2);
        for p in 0..max_context {
            for i in 0..half {
                let theta = p as f64 * (cfg.rope_base as f64).powf(-2.0 * i as f64 / cfg.head_dim as f64);
                rope.push(theta.cos() as f32);
                rope.push(theta.sin() as f32);
            }
        }
        let (d, f) = (cfg.dim, cfg.ffn);
        let s = Scratch {
            ids: st.alloc_zeros(max_m)?,
            x: st.alloc_zeros(max_m * d)?,
            h: st.alloc_zeros(max_m * f.max(d))?,
            q: st.alloc_zeros(max_m * d)?,
            k: st.alloc_zeros(max_m * kv_dim)?,
            v: st.alloc_zeros(max_m * kv_dim)?,
            att: st.alloc_zeros(max_m * d)?,
            o: st.alloc_zeros(max_m * d)?,
            g: st.alloc_zeros(max_m * f)?,
            u: st.alloc_zeros(max_m * f)?,
            logits: st.alloc_zeros(lm_head.rows())?,
        };
        let embed_bytes = match &embed {
            Embedding::Device(e) => 2 * e.len(),
            Embedding::Host(_) => 0,
        };
        let weight_bytes = block_bytes + lm_head.bytes() + embed_bytes;
        let scratch = 4 * (s.x.len() + s.ids.len()) + 2 * (s.h.len() + s.q.len() + s.k.len() + s.v.len() + s.att.len() + s.o.len() + s.g.len() + s.u.len() + s.logits.len());
        let per_block: usize = blocks.iter().map(|b| 4 * (b.attn_norm.len() + b.ffn_norm.len()) + 2 * (b.k_cache.len() + b.v_cache.len())).sum();
        let vram_accounted = weight_bytes + scratch + per_block + 4 * (rope.len() + d + 1);
        let mut model = GpuLlama {
            blas: if mode == WeightMode::Fp16Resident { Some(CudaBlas::new(st.clone()).map_err(|e| Error::Gpu(format!("cuBLAS: {e}")))?) } else { None },
            gpu,
            embed,
            out_norm: norm("output_norm.weight")?,
            lm_head,
            blocks,
            weights,
            rope: st.clone_htod(&rope)?,
            pos: st.alloc_zeros(1)?,
            s,
            max_m,
            use_graph: true,
            step_graph: None,
            timers: [timed_event(gpu)?, timed_event(gpu)?],
            device_seconds: 0.0,
            max_context,
            len: 0,
            weight_bytes,
            cfg,
            mode,
            free_before,
            peak_vram: 0,
            vram_accounted,
        };
        model.sample_vram()?;
        Ok(model)
    }

    fn sample_vram(&mut self) -> Result<()> {
        let (free, _) = self.gpu.mem_info()?;
        self.peak_vram = self.peak_vram.max(self.free_before.saturating_sub(free));
        Ok(())
    }

    /// Forgets the KV cache.
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Feeds `ids` at the next positions (one batch; prefill or a single decode step) and
    /// returns the logits after the last of them.
    pub fn forward(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        let m = ids.len();
        if m == 0 || m > self.max_m {
            return Err(Error::Invalid(format!("batch of {m} tokens; this model was loaded for 1..={}", self.max_m)));
        }
        if self.len + m > self.max_context {
            return Err(Error::Invalid(format!("{} positions exceed the context of {}", self.len + m, self.max_context)));
        }
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= self.cfg.vocab) {
            return Err(Error::Invalid(format!("token {bad} is outside the vocabulary of {}", self.cfg.vocab)));
        }
        let st = &self.gpu.stream;
        self.timers[0].record(st)?;
        st.memcpy_htod(&[self.len as u32], &mut self.pos)?;
        self.embed(ids)?;
        if m == 1 && self.use_graph && self.capture_step()? {
            let step = self.step_graph.as_ref().expect("captured above");
            step.graph.launch()?;
            match &mut self.weights {
                Weights::Compressed { decoder, .. } => decoder.check_log(&step.decodes, st)?,
                Weights::Streamed(ws) => ws.check_decodes(&step.decodes)?,
                Weights::Resident(_) => {}
            }
        } else {
            self.enqueue_layers(m)?;
            if let Weights::Compressed { decoder, .. } = &mut self.weights {
                decoder.check(st)?;
            }
        }
        self.len += m;
        let logits = st.clone_dtoh(&self.s.logits)?;
        self.timers[1].record(st)?;
        self.device_seconds += self.timers[0].elapsed_ms(&self.timers[1])? as f64 / 1e3;
        self.sample_vram()?;
        let mut out = vec![0f32; logits.len()];
        // In bulk (F16C where the CPU has it): per element, 49,152 logits cost ~0.1 ms a step.
        half::slice::HalfFloatSliceExt::convert_to_f32_slice(logits.as_slice(), &mut out);
        Ok(out)
    }

    /// Captures the single-token step into a graph unless one exists; false (and graphs
    /// off, said once) when this mode's work cannot be captured.
    fn capture_step(&mut self) -> Result<bool> {
        if self.step_graph.is_some() {
            return Ok(true);
        }
        let st = self.gpu.stream.clone();
        // Relaxed: cuBLAS and nvCOMP may query or set up state while being captured.
        st.begin_capture(cudarc::driver::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)?;
        let enqueued = self.enqueue_layers(1);
        let captured = st.end_capture(cudarc::driver::sys::CUgraphInstantiate_flags(0));
        let decodes = match &mut self.weights {
            Weights::Compressed { decoder, .. } => decoder.take_log(),
            Weights::Streamed(ws) => ws.take_decode_log(),
            Weights::Resident(_) => Default::default(),
        };
        match (enqueued, captured) {
            (Ok(()), Ok(Some(graph))) => {
                graph.upload()?;
                self.step_graph = Some(StepGraph { graph, decodes });
                Ok(true)
            }
            (enqueued, captured) => {
                let why = enqueued.err().map(|e| e.to_string()).or(captured.err().map(|e| e.to_string())).unwrap_or_else(|| "the capture was empty".into());
                eprintln!("codecllm: capturing the decode step into a CUDA graph failed ({why}); launching its kernels one by one");
                self.use_graph = false;
                Ok(false)
            }
        }
    }

    /// `sc.x` = the embeddings of `ids`, on the default stream (outside any graph: the
    /// host-side lookup copies from pageable memory).
    fn embed(&mut self, ids: &[u32]) -> Result<()> {
        let (gpu, st, d, m) = (self.gpu, &self.gpu.stream, self.cfg.dim, ids.len());
        let sc = &mut self.s;
        match &self.embed {
            Embedding::Device(table) => {
                st.memcpy_htod(ids, &mut sc.ids.slice_mut(..m))?;
                let (mu, du) = (m as u32, d as u32);
                let mut l = st.launch_builder(&gpu.kernels.embed);
                l.arg(table).arg(&sc.ids).arg(&mut sc.x).arg(&mu).arg(&du);
                // SAFETY: ids < vocab (checked by forward), x holds m·d.
                unsafe { l.launch(launch_1d(m * d)) }?;
            }
            Embedding::Host(table) => {
                let rows: Vec<f32> = ids.iter().flat_map(|&t| table[t as usize * d..(t as usize + 1) * d].iter().copied()).collect();
                st.memcpy_htod(&rows, &mut sc.x.slice_mut(..m * d))?;
            }
        }
        Ok(())
    }

    /// Enqueues the blocks, the final norm and the LM head for a batch of `m` rows whose
    /// embeddings are in `sc.x`; logits of the last row land in `sc.logits`. Waits on the
    /// host for nothing, so that it can be captured.
    fn enqueue_layers(&mut self, m: usize) -> Result<()> {
        let (gpu, st) = (self.gpu, &self.gpu.stream);
        let cfg = &self.cfg;
        let d = cfg.dim;
        let GpuLlama { blas, blocks, weights, rope, pos, s: sc, out_norm, lm_head, .. } = self;
        let blas = blas.as_ref();
        let ctx = BlockCtx { gpu, blas, cfg, rope, pos, m };
        match weights {
            Weights::Resident(layers) => {
                for (i, (b, lin)) in blocks.iter_mut().zip(layers.iter()).enumerate() {
                    let refs: Vec<LinRef> = lin.iter().map(LinRef::Owned).collect();
                    ctx.block(b, sc, &refs, i == 0)?;
                }
            }
            Weights::Compressed { layers, decoder, buf } => {
                let base = buf.device_ptr(st).0;
                for (i, (b, lin)) in blocks.iter_mut().zip(layers.iter()).enumerate() {
                    let offsets: Vec<usize> = lin.iter().scan(0, |at, t| Some(std::mem::replace(at, *at + t.len().div_ceil(256) * 256))).collect();
                    let items: Vec<_> = lin.iter().zip(&offsets).map(|(t, &o)| (&t.table, t.stored_ptr(st), base + o as u64)).collect();
                    // SAFETY: the buffer holds the largest layer's INT8 bytes (256-aligned per
                    // tensor); compressed bytes are resident for the model's life.
                    unsafe { decoder.decode_batch(&items, st)? };
                    let views: Vec<Int8Weights> = lin.iter().zip(&offsets).map(|(t, &o)| t.table.weights_at(buf.slice(o..o + t.len()))).collect();
                    let refs: Vec<LinRef> = views.iter().map(LinRef::Int8).collect();
                    ctx.block(b, sc, &refs, i == 0)?;
                }
            }
            Weights::Streamed(ws) => {
                ws.for_each_unit(|u, w, _stream| {
                    let refs: Vec<LinRef> = w.iter().map(LinRef::Int8).collect();
                    ctx.block(&mut blocks[u], sc, &refs, u == 0)
                })?;
            }
        }
        // The last block's MLP output, the final norm and the LM head: on the last row only.
        let last = (m - 1) * d..m * d;
        norm(gpu, &mut sc.x.slice_mut(last.clone()), Some(&sc.o.slice(last)), out_norm, &mut sc.h, 1, d, cfg.eps)?;
        match lm_head {
            LmHead::Resident(l) => l.apply(gpu, blas, &sc.h, 1, &mut sc.logits),
            LmHead::Streamed(l) => {
                let Weights::Streamed(ws) = weights else { unreachable!("the LM head streams only in the stream mode") };
                l.apply(gpu, &sc.h, &mut sc.logits, &ws.copies_done)
            }
        }
    }
}

/// What a block's computation needs besides its weights.
struct BlockCtx<'a> {
    gpu: &'a Gpu,
    blas: Option<&'a CudaBlas>,
    cfg: &'a LlamaConfig,
    rope: &'a CudaSlice<f32>,
    /// The batch's first position, on the device.
    pos: &'a CudaSlice<u32>,
    m: usize,
}

impl BlockCtx<'_> {
    /// One transformer block on the default stream: attention with RoPE and the KV cache,
    /// then SwiGLU; both branches go into the FP32 residual `sc.x`, each folded into the
    /// next norm (the MLP's output is left in `sc.o` for the next block or the final
    /// norm; `first` says there is none yet).
    fn block(&self, b: &mut Block, sc: &mut Scratch, lin: &[LinRef], first: bool) -> Result<()> {
        let (gpu, cfg, m) = (self.gpu, self.cfg, self.m);
        let st = &gpu.stream;
        let k = &gpu.kernels;
        let (d, hd) = (cfg.dim, cfg.head_dim);
        let mu = m as u32;
        let pending = (!first).then(|| sc.o.slice(..m * d));
        norm(gpu, &mut sc.x.slice_mut(..m * d), pending.as_ref(), &b.attn_norm, &mut sc.h, m, d, cfg.eps)?;
        drop(pending);
        lin[Q].apply(gpu, self.blas, &sc.h, m, &mut sc.q)?;
        lin[K].apply(gpu, self.blas, &sc.h, m, &mut sc.k)?;
        lin[V].apply(gpu, self.blas, &sc.h, m, &mut sc.v)?;
        // Kernel safety below: `forward` checked that positions *pos .. *pos + m lie within
        // max_context, which the RoPE table and the caches cover.
        let (h, kvh, hdu) = (cfg.heads as u32, cfg.kv_heads as u32, hd as u32);
        let mut l = st.launch_builder(&k.rope_qk_store);
        l.arg(&mut sc.q).arg(&mut sc.k).arg(&sc.v).arg(&mut b.k_cache).arg(&mut b.v_cache).arg(self.rope).arg(&mu).arg(&h).arg(&kvh).arg(&hdu).arg(self.pos);
        // SAFETY: q holds m·heads·hd, k and v m·kv_heads·hd; one thread per rotated pair.
        unsafe { l.launch(launch_1d(m * (cfg.heads + cfg.kv_heads) * hd / 2)) }?;
        let scale = 1.0 / (hd as f32).sqrt();
        let mut l = st.launch_builder(&k.attention);
        l.arg(&sc.q).arg(&b.k_cache).arg(&b.v_cache).arg(&mut sc.att).arg(&mu).arg(&h).arg(&kvh).arg(&hdu).arg(self.pos).arg(&scale);
        let cfg_att = LaunchConfig { grid_dim: ((m * cfg.heads) as u32, 1, 1), block_dim: (ATT_THREADS, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: one block per (row, head); caches hold positions ≤ *pos + m - 1.
        unsafe { l.launch(cfg_att) }?;
        lin[O].apply(gpu, self.blas, &sc.att, m, &mut sc.o)?;
        norm(gpu, &mut sc.x.slice_mut(..m * d), Some(&sc.o.slice(..m * d)), &b.ffn_norm, &mut sc.h, m, d, cfg.eps)?;
        lin[GATE].apply(gpu, self.blas, &sc.h, m, &mut sc.g)?;
        lin[UP].apply(gpu, self.blas, &sc.h, m, &mut sc.u)?;
        let n = (m * cfg.ffn) as u32;
        let mut l = st.launch_builder(&k.silu_mul);
        l.arg(&sc.g).arg(&sc.u).arg(&mut sc.h).arg(&n);
        // SAFETY: g, u, h hold m·ffn.
        unsafe { l.launch(launch_1d(m * cfg.ffn)) }?;
        lin[DOWN].apply(gpu, self.blas, &sc.h, m, &mut sc.o)
    }
}

/// Threads of an RMSNorm block and of an attention block: `NORM_THREADS` and
/// `ATT_WARPS · 32` in kernels/src/llama.rs, which return without writing on any other size.
const NORM_THREADS: u32 = 256;
const ATT_THREADS: u32 = 8 * 32;

/// `x += add` when given, then `h = x / rms(x) · w`, for `rows` rows of `d` (one block per row).
#[allow(clippy::too_many_arguments)]
fn norm(gpu: &Gpu, x: &mut CudaViewMut<f32>, add: Option<&CudaView<f16>>, w: &CudaSlice<f32>, h: &mut CudaSlice<f16>, rows: usize, d: usize, eps: f32) -> Result<()> {
    let (r, du) = (rows as u32, d as u32);
    let cfg = LaunchConfig { grid_dim: (r, 1, 1), block_dim: (NORM_THREADS, 1, 1), shared_mem_bytes: 0 };
    let k = &gpu.kernels;
    let mut l = gpu.stream.launch_builder(if add.is_some() { &k.add_rmsnorm } else { &k.rmsnorm });
    l.arg(x);
    if let Some(a) = add {
        l.arg(a);
    }
    l.arg(w).arg(h).arg(&r).arg(&du).arg(&eps);
    // SAFETY: x (and add) hold rows·d, h at least rows·d.
    unsafe { l.launch(cfg) }?;
    Ok(())
}
