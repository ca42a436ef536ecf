//! LLaMA forward pass on the GPU: the block's non-linear kernels (`kernels/src/llama.rs`)
//! around the linears, whose weights live in one of four places (`WeightMode`): FP16 in
//! VRAM with cuBLAS (the baseline), INT8 in VRAM, compressed chunks in VRAM decoded per
//! layer, or compressed chunks in pinned host RAM streamed per layer with the LM head in
//! row bands (`stream`) — the last three through codecllm's fused W8A16 kernels, on the
//! same INT8 values, so they agree bit for bit. FP16 activations, FP32 residual stream, a
//! KV cache per layer; prefill takes the whole prompt as one batch; a single-token step is
//! captured once into a CUDA graph and replayed, its inputs and outputs staged in pinned
//! memory so that the graph's addresses never change.
use super::{Gpu, Int8Weights};
use crate::error::{Error, Result};
use crate::format::Container;
use crate::llama::{block_names, LlamaConfig, WeightSource};
use crate::stream::UnitPart;
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
    /// The INT8 weights, when they are INT8.
    fn int8(&self) -> Option<Int8Weights<'_>> {
        match self {
            LinRef::Owned(Linear::Int8 { q, s, rows, cols, group }) => Some(Int8Weights { q: q.slice(..), scales: s.slice(..), rows: *rows, cols: *cols, group_size: *group }),
            LinRef::Owned(Linear::Fp16 { .. }) => None,
            LinRef::Int8(w) => Some(Int8Weights { q: w.q.slice(..), scales: w.scales.slice(..), rows: w.rows, cols: w.cols, group_size: w.group_size }),
        }
    }

    fn apply(&self, gpu: &Gpu, blas: Option<&CudaBlas>, x: &CudaSlice<f16>, m: usize, y: &mut CudaSlice<f16>) -> Result<()> {
        match self {
            LinRef::Owned(l) => l.apply(gpu, blas, x, m, y),
            LinRef::Int8(w) => gpu.linear(x, m, w, y, &gpu.stream),
        }
    }
}

/// The output projection: `output.weight`, or the token embedding where they are tied.
fn lm_head_name(src: &dyn WeightSource) -> &'static str {
    if src.has("output.weight") {
        "output.weight"
    } else {
        "token_embd.weight"
    }
}

/// Rows of the LM head per streamed unit: 6144 × 576 INT8 is 3.5 MB, the size of one
/// SmolLM2 block, so the LM head's pieces fit the blocks' slots. A piece is rounded down to
/// whole chunks of the container (see `stream_units`).
const LM_PIECE_BYTES: usize = 6144 * 576;

/// The token embedding: on the device, or (streaming) in host RAM, rows gathered per step.
enum Embedding {
    Device(CudaSlice<f16>),
    Host(Vec<f32>),
}

/// Page-locked staging of one forward's inputs and outputs: the host fills and reads
/// these, the step (captured or not) copies from and to them, and `ready` tells the host
/// that the outputs are in — while a streamed step goes on prefetching the next one's
/// weights.
struct StepIo {
    pos: super::PinnedBuffer<u32>,
    /// Token ids (device embedding) or their embedding rows (host embedding).
    ids: super::PinnedBuffer<u32>,
    rows: super::PinnedBuffer<f32>,
    logits: super::PinnedBuffer<f16>,
    /// The decoder's failure flag, copied after the last decode the logits depend on.
    decode_status: super::PinnedBuffer<u32>,
    started: cudarc::driver::CudaEvent,
    ready: cudarc::driver::CudaEvent,
}

/// A forward submitted and not yet finished.
struct Pending {
    m: usize,
    /// The decodes it enqueued (`None`: a graph replay, whose log the graph keeps).
    decodes: Option<super::DecodeLog>,
    sample_vram: bool,
}

/// A captured single-token step (everything `enqueue_step` enqueues).
struct StepGraph {
    graph: cudarc::driver::CudaGraph,
    /// The decodes inside it, to trace a failed chunk after each replay.
    decodes: super::DecodeLog,
    launched: bool,
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
    /// Resident LM head; the stream mode streams it as the ring's last units instead.
    lm_head: Option<Linear>,
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
    pending: Option<Pending>,
    io: StepIo,
    /// Whether each step ends by prefetching the next step's first weights (streaming,
    /// when the ring allows it: `WeightStream::can_prefetch_next_pass`).
    prefetch_next: bool,
    /// Seconds the device spent on forward passes since loading, from the inputs' upload
    /// to the logits being ready: with wall time, it tells device- from host-bound decoding.
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
    /// The same without what the driver's pool holds reserved but unallocated at each
    /// sample (`Gpu::pool_slack`): memory the process holds but the model does not use.
    pub peak_vram_net: usize,
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
        let want = Self::stream_units(c)?;
        let matches = store.units.len() == want.len()
            && store.units.iter().zip(&want).all(|(u, w)| {
                u.tensors.len() == w.len() && u.tensors.iter().zip(w).all(|(t, p)| t.table.name == p.name && p.rows.as_ref().is_none_or(|r| r.len() == t.table.rows))
            });
        if !matches {
            return Err(Error::Invalid("the host store was not loaded with GpuLlama::stream_units of this container".into()));
        }
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

    /// The units `load_streamed` expects in its store: each block's seven projections,
    /// then the LM head in row bands of about `LM_PIECE_BYTES`, whole chunks each.
    pub fn stream_units(c: &Container) -> Result<Vec<Vec<UnitPart>>> {
        let cfg = LlamaConfig::from_metadata(&c.index.metadata)?;
        let mut units: Vec<Vec<UnitPart>> = (0..cfg.layers).map(|i| {
            let n = block_names(i);
            LINEARS.iter().map(|&j| n[j].clone().into()).collect()
        }).collect();
        let name = lm_head_name(c);
        let t = c.tensor(name).ok_or_else(|| Error::format(c.path(), format!("no tensor named '{name}'")))?;
        let [rows, cols] = t.shape[..] else { return Err(Error::format(c.path(), format!("'{name}' is not a matrix"))) };
        let (rows, cols, chunk) = (rows as usize, cols.max(1) as usize, t.data.chunk_size as usize);
        // Bands of a tensor stored as INT8 start on chunk boundaries (a multiple of
        // lcm(cols, chunk) / cols rows); one quantized at load (`HostStore::load`) may
        // start anywhere.
        let stored_int8 = matches!(t.encoding, crate::format::Encoding::Int8 { .. });
        let step = if stored_int8 { chunk / gcd(cols, chunk) } else { 1 };
        let band = (LM_PIECE_BYTES / cols / step).max(1) * step;
        units.extend((0..rows).step_by(band).map(|r0| vec![UnitPart { name: name.into(), rows: Some(r0..(r0 + band).min(rows)) }]));
        Ok(units)
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
        let lm_head = match mode {
            WeightMode::Stream => None,
            WeightMode::Fp16Resident => Some(Linear::load(gpu, src, lm_head_name(src), mode)?),
            _ => Some(Linear::load(gpu, src, lm_head_name(src), WeightMode::Int8Resident)?),
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
            logits: st.alloc_zeros(cfg.vocab)?,
        };
        let embed_bytes = match &embed {
            Embedding::Device(e) => 2 * e.len(),
            Embedding::Host(_) => 0,
        };
        let weight_bytes = block_bytes + lm_head.as_ref().map_or(0, Linear::bytes) + embed_bytes;
        let scratch = 4 * (s.x.len() + s.ids.len()) + 2 * (s.h.len() + s.q.len() + s.k.len() + s.v.len() + s.att.len() + s.o.len() + s.g.len() + s.u.len() + s.logits.len());
        let per_block: usize = blocks.iter().map(|b| 4 * (b.attn_norm.len() + b.ffn_norm.len()) + 2 * (b.k_cache.len() + b.v_cache.len())).sum();
        let vram_accounted = weight_bytes + scratch + per_block + 4 * (rope.len() + d + 1);
        let host_rows = if matches!(embed, Embedding::Host(_)) { max_m * d } else { 0 };
        let prefetch_next = matches!(&weights, Weights::Streamed(ws) if ws.can_prefetch_next_pass());
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
            pending: None,
            io: StepIo {
                pos: super::PinnedBuffer::new(gpu, 1)?,
                ids: super::PinnedBuffer::new(gpu, max_m)?,
                rows: super::PinnedBuffer::new(gpu, host_rows)?,
                logits: super::PinnedBuffer::new(gpu, cfg.vocab)?,
                decode_status: super::PinnedBuffer::new(gpu, 1)?,
                started: timed_event(gpu)?,
                ready: timed_event(gpu)?,
            },
            prefetch_next,
            device_seconds: 0.0,
            max_context,
            len: 0,
            weight_bytes,
            cfg,
            mode,
            free_before,
            peak_vram: 0,
            peak_vram_net: 0,
            vram_accounted,
        };
        model.sample_vram()?;
        Ok(model)
    }

    fn sample_vram(&mut self) -> Result<()> {
        let (free, _) = self.gpu.mem_info()?;
        let in_use = self.free_before.saturating_sub(free);
        self.peak_vram_net = self.peak_vram_net.max(in_use.saturating_sub(self.gpu.pool_slack()?));
        self.peak_vram = self.peak_vram.max(self.free_before.saturating_sub(free));
        Ok(())
    }

    /// Forgets the KV cache. A forward still in flight is waited for and its logits dropped
    /// (a device error it hit shows at the next call).
    pub fn reset(&mut self) {
        if self.pending.take().is_some() {
            let _ = self.io.ready.synchronize();
        }
        self.len = 0;
    }

    /// Feeds `ids` at the next positions (one batch; prefill or a single decode step) and
    /// returns the logits after the last of them: `submit` then `finish`.
    pub fn forward(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        self.submit(ids)?;
        self.finish()
    }

    /// Starts a forward of `ids` at the next positions and returns without waiting; the
    /// host can work (print the previous token) while the device runs it. `finish`
    /// collects the logits; nothing else may be submitted before.
    pub fn submit(&mut self, ids: &[u32]) -> Result<()> {
        let m = ids.len();
        if self.pending.is_some() {
            return Err(Error::Invalid("a forward is in flight: finish it before submitting another".into()));
        }
        if m == 0 || m > self.max_m {
            return Err(Error::Invalid(format!("batch of {m} tokens; this model was loaded for 1..={}", self.max_m)));
        }
        if self.len + m > self.max_context {
            return Err(Error::Invalid(format!("{} positions exceed the context of {}", self.len + m, self.max_context)));
        }
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= self.cfg.vocab) {
            return Err(Error::Invalid(format!("token {bad} is outside the vocabulary of {}", self.cfg.vocab)));
        }
        // The previous step's copies from these buffers were done before its `ready`.
        self.io.pos.as_mut_slice()[0] = self.len as u32;
        match &self.embed {
            Embedding::Device(_) => self.io.ids.as_mut_slice()[..m].copy_from_slice(ids),
            Embedding::Host(table) => {
                let d = self.cfg.dim;
                for (row, &t) in self.io.rows.as_mut_slice().chunks_exact_mut(d).zip(ids) {
                    row.copy_from_slice(&table[t as usize * d..(t as usize + 1) * d]);
                }
            }
        }
        // A replay allocates nothing, so device memory in use is sampled on the first
        // launch of a graph and after every other forward (cuMemGetInfo costs microseconds).
        let step = if m == 1 && self.use_graph && self.capture_step()? {
            let graph = self.step_graph.as_mut().expect("captured above");
            graph.graph.launch()?;
            Pending { m, decodes: None, sample_vram: !std::mem::replace(&mut graph.launched, true) }
        } else {
            self.enqueue_step(m)?;
            Pending { m, decodes: Some(self.take_decode_log()), sample_vram: true }
        };
        self.pending = Some(step);
        Ok(())
    }

    /// Waits for the submitted forward and returns its logits (those of its last row).
    pub fn finish(&mut self) -> Result<Vec<f32>> {
        let step = self.pending.take().ok_or_else(|| Error::Invalid("no forward was submitted".into()))?;
        self.io.ready.synchronize()?;
        self.device_seconds += self.io.started.elapsed_ms(&self.io.ready)? as f64 / 1e3;
        let flag = self.io.decode_status.as_slice()[0];
        let log = step.decodes.as_ref().or(self.step_graph.as_ref().map(|g| &g.decodes)).expect("a graph when no log");
        match &mut self.weights {
            Weights::Compressed { decoder, .. } => decoder.staged_result(flag, log, &self.gpu.stream)?,
            Weights::Streamed(ws) => ws.decode_result(flag, log)?,
            Weights::Resident(_) => {}
        }
        self.len += step.m;
        if step.sample_vram {
            self.sample_vram()?;
        }
        let mut out = vec![0f32; self.io.logits.as_slice().len()];
        // In bulk (F16C where the CPU has it): per element, 49,152 logits cost ~0.1 ms a step.
        half::slice::HalfFloatSliceExt::convert_to_f32_slice(self.io.logits.as_slice(), &mut out);
        Ok(out)
    }

    /// The decodes enqueued since the last take (empty for resident weights).
    fn take_decode_log(&mut self) -> super::DecodeLog {
        match &mut self.weights {
            Weights::Compressed { decoder, .. } => decoder.take_log(),
            Weights::Streamed(ws) => ws.take_decode_log(),
            Weights::Resident(_) => Default::default(),
        }
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
        let enqueued = self.enqueue_step(1);
        let captured = st.end_capture(cudarc::driver::sys::CUgraphInstantiate_flags(0));
        let decodes = self.take_decode_log();
        match (enqueued, captured) {
            (Ok(()), Ok(Some(graph))) => {
                graph.upload()?;
                self.step_graph = Some(StepGraph { graph, decodes, launched: false });
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

    /// Enqueues one forward of `m` rows whose inputs are in `io`: uploads, embedding,
    /// layers, logits and decode status back into `io`, `io.ready`; then (streaming) the
    /// next step's first weights. Waits on the host for nothing, so that it can be
    /// captured.
    fn enqueue_step(&mut self, m: usize) -> Result<()> {
        let (gpu, st, d) = (self.gpu, &self.gpu.stream, self.cfg.dim);
        super::record_external(&self.io.started, st)?;
        st.memcpy_htod(self.io.pos.as_slice(), &mut self.pos)?;
        let sc = &mut self.s;
        match &self.embed {
            Embedding::Device(table) => {
                st.memcpy_htod(&self.io.ids.as_slice()[..m], &mut sc.ids.slice_mut(..m))?;
                let (mu, du) = (m as u32, d as u32);
                let mut l = st.launch_builder(&gpu.kernels.embed);
                l.arg(table).arg(&sc.ids).arg(&mut sc.x).arg(&mu).arg(&du);
                // SAFETY: ids < vocab (checked by submit), x holds m·d.
                unsafe { l.launch(launch_1d(m * d)) }?;
            }
            Embedding::Host(_) => st.memcpy_htod(&self.io.rows.as_slice()[..m * d], &mut sc.x.slice_mut(..m * d))?,
        }
        self.enqueue_layers(m)?;
        st.memcpy_dtoh(&self.s.logits, self.io.logits.as_mut_slice())?;
        match &self.weights {
            Weights::Compressed { decoder, .. } => decoder.stage_status(&mut self.io.decode_status, st)?,
            Weights::Streamed(ws) => ws.stage_decode_status(&mut self.io.decode_status)?,
            Weights::Resident(_) => {}
        }
        super::record_external(&self.io.ready, st)?;
        if let (true, Weights::Streamed(ws)) = (self.prefetch_next, &mut self.weights) {
            ws.prefetch_next_pass()?;
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
                // Units: the blocks, then the LM head in row bands (`stream_units`).
                let (layers, mut row) = (blocks.len(), 0);
                ws.for_each_unit(|u, w, _stream| {
                    if u < layers {
                        let refs: Vec<LinRef> = w.iter().map(LinRef::Int8).collect();
                        return ctx.block(&mut blocks[u], sc, &refs, u == 0);
                    }
                    if u == layers {
                        final_norm(gpu, sc, out_norm, m, d, cfg.eps)?;
                    }
                    let n = w[0].rows;
                    gpu.linear_m1_fused(&sc.h, &mut [(&w[0], &mut sc.logits.slice_mut(row..row + n))], st)?;
                    row += n;
                    Ok(())
                })?;
                return Ok(());
            }
        }
        final_norm(gpu, sc, out_norm, m, d, cfg.eps)?;
        lm_head.as_ref().expect("resident modes hold the LM head").apply(gpu, blas, &sc.h, 1, &mut sc.logits)
    }
}

/// The last block's MLP output added in and the final norm, on the last row only (the
/// only one whose logits are computed): `sc.h[0..d]`.
fn final_norm(gpu: &Gpu, sc: &mut Scratch, w: &CudaSlice<f32>, m: usize, d: usize, eps: f32) -> Result<()> {
    let last = (m - 1) * d..m * d;
    norm(gpu, &mut sc.x.slice_mut(last.clone()), Some(&sc.o.slice(last)), w, &mut sc.h, 1, d, eps)
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
        // One row on INT8 weights (a decode step): q, k and v in one launch, as gate and up.
        let fused = |i: &[usize]| if m == 1 { i.iter().map(|&j| lin[j].int8()).collect::<Option<Vec<_>>>() } else { None };
        if let Some(w) = fused(&[Q, K, V]) {
            gpu.linear_m1_fused(&sc.h, &mut [(&w[0], &mut sc.q.slice_mut(..)), (&w[1], &mut sc.k.slice_mut(..)), (&w[2], &mut sc.v.slice_mut(..))], st)?;
        } else {
            lin[Q].apply(gpu, self.blas, &sc.h, m, &mut sc.q)?;
            lin[K].apply(gpu, self.blas, &sc.h, m, &mut sc.k)?;
            lin[V].apply(gpu, self.blas, &sc.h, m, &mut sc.v)?;
        }
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
        if let Some(w) = fused(&[GATE, UP]) {
            gpu.linear_m1_fused(&sc.h, &mut [(&w[0], &mut sc.g.slice_mut(..)), (&w[1], &mut sc.u.slice_mut(..))], st)?;
        } else {
            lin[GATE].apply(gpu, self.blas, &sc.h, m, &mut sc.g)?;
            lin[UP].apply(gpu, self.blas, &sc.h, m, &mut sc.u)?;
        }
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


fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

