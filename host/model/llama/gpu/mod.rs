//! LLaMA forward pass on the GPU: the block's non-linear kernels (`kernels/src/llama.rs`)
//! around the linears, whose weights live in one of four places (`WeightMode`): FP16 in
//! VRAM with cuBLAS (the baseline), INT8 in VRAM, compressed chunks in VRAM decoded per
//! layer, or compressed chunks in pinned host RAM streamed per layer with the LM head in
//! row bands (`stream`) — the last three through codecllm's fused W8A16 kernels, on the
//! same INT8 values, so they agree bit for bit. FP16 activations, FP32 residual stream, a
//! KV cache per layer; prefill takes the whole prompt as one batch; a single-token step is
//! captured once into a CUDA graph and replayed, its inputs and outputs staged in pinned
//! memory so that the graph's addresses never change.
mod block;
mod step;
pub mod tp;
mod weights;

pub use weights::WeightMode;

use crate::abi::{ATT_MAX_PARTIALS, ATT_PARTIAL};
use crate::container::Container;
use crate::error::{Error, Result};
use crate::gpu::nccl::Communicator;
use crate::gpu::{Decoder, DeviceChunkTable, DeviceCompressedGroup, Gpu, PinnedBuffer};
use crate::import::WeightSource;
use crate::model::config::{BlockNames, ModelConfig, ROPE_FREQS};
use crate::model::placement::{plan, Placement, PlacementInput};
use crate::stream::{CpuCall, CpuShare, HostStore, UnitPart, WeightStream};
use block::{final_norm, Block, BlockCtx, Scratch};
use cudarc::cublas::CudaBlas;
use cudarc::driver::CudaSlice;
use std::sync::Arc;
use step::{Pending, StepGraph, StepIo};
pub use weights::LoadTimes;
use weights::{lm_head_name, Embedding, LinRef, Linear, Weights};

pub struct GpuLlama<'g> {
    gpu: &'g Gpu,
    /// Only the FP16 mode uses cuBLAS; the others do not pay for its handle and kernels.
    blas: Option<CudaBlas>,
    pub cfg: ModelConfig,
    pub mode: WeightMode,
    embed: Embedding,
    out_norm: CudaSlice<f32>,
    /// Resident LM head; the stream mode streams it as the ring's last units instead.
    lm_head: Option<Linear>,
    blocks: Vec<Block>,
    weights: Weights<'g>,
    /// cos/sin tables: global layers, then (sliding-window models) local layers.
    rope: Vec<CudaSlice<f32>>,
    /// Each batch row's position and its sequence's first KV cache row
    /// (`abi::PLACE_WORDS` words a row), read by the kernels on the device.
    places: CudaSlice<u32>,
    /// Positions filled in each sequence's run of the KV cache when `set_sequences` made
    /// room for several (empty: the one sequence of `len`).
    seq_len: Vec<usize>,
    s: Scratch,
    max_m: usize,
    /// Whether single-token steps replay a captured CUDA graph (on by default): at this
    /// size a step is hundreds of small launches, and the graph issues them from the GPU.
    pub use_graph: bool,
    /// Whether that graph's kernels launch as programmatic dependents of the one before
    /// (on by default; compute capability 9.0 and up): each starts while its predecessor's
    /// last blocks finish, and waits inside for its inputs (`gpu::CapturedGraph`).
    pub programmatic_launch: bool,
    /// Rows whose logits one forward can return (`reserve_logit_rows`).
    max_logit_rows: usize,
    /// Logits per row: the LM head's rows — the vocabulary, or a tensor-parallel rank's
    /// share of it.
    logit_width: usize,
    /// A tensor-parallel rank's communicator (`tp`): each block's all-reduces through it.
    comm: Option<Communicator>,
    /// Rows of each streamed LM-head band, in order (empty when the LM head is resident).
    lm_band_rows: Vec<usize>,
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
    /// Where the load's seconds went (resident weights and the embedding).
    pub load_times: LoadTimes,
}

impl<'g> GpuLlama<'g> {
    /// The model in `mode`: resident modes from any source, the compressed modes from a
    /// container (streaming through `slots` device slots, its store pinned here).
    pub fn load_mode(gpu: &'g Gpu, src: &dyn WeightSource, mode: WeightMode, slots: usize, max_m: usize, max_context: usize) -> Result<Self> {
        match mode {
            WeightMode::Fp16Resident | WeightMode::Int8Resident => GpuLlama::load(gpu, src, mode, max_m, max_context),
            WeightMode::Hybrid => GpuLlama::load_auto(gpu, src, None, slots, max_m, max_context, Some(0.0)).map(|(m, _)| m),
            _ => {
                let c = src.container().ok_or_else(|| Error::Invalid(format!("--weights {} needs a .clm container (compress the GGUF first)", mode.name())))?;
                if mode == WeightMode::CompressedResident {
                    GpuLlama::load_compressed(gpu, c, max_m, max_context)
                } else {
                    let store = HostStore::load(gpu, c, &GpuLlama::stream_units(c)?, true)?;
                    GpuLlama::load_streamed(gpu, c, Arc::new(store), slots, max_m, max_context)
                }
            }
        }
    }

    /// FP16- or INT8-resident weights from `src` (a container, or a GGUF for the original
    /// values); batches up to `max_m` tokens, contexts up to `max_context` positions.
    pub fn load(gpu: &'g Gpu, src: &dyn WeightSource, mode: WeightMode, max_m: usize, max_context: usize) -> Result<Self> {
        if !matches!(mode, WeightMode::Fp16Resident | WeightMode::Int8Resident) {
            return Err(Error::Invalid(format!("{mode:?} weights come from a container: use load_compressed / load_streamed")));
        }
        let cfg = ModelConfig::from_metadata(src.metadata())?;
        let free_before = Self::baseline(gpu)?;
        let mut times = LoadTimes::default();
        let layers = (0..cfg.layers)
            .map(|i| BlockNames::of(i).linears().iter().map(|n| Linear::load(gpu, src, n, mode, &mut times)).collect::<Result<Vec<_>>>())
            .collect::<Result<Vec<_>>>()?;
        let bytes = layers.iter().flatten().map(Linear::bytes).sum();
        let embed = Embedding::device(gpu, src, &mut times)?;
        let mut model = Self::assemble(gpu, src, cfg, mode, Weights::Resident(layers), bytes, embed, max_m, max_context, free_before, &mut times)?;
        model.load_times = times;
        Ok(model)
    }

    /// Compressed chunks of every block resident in VRAM (checksums verified on upload),
    /// decoded layer by layer into one reused buffer.
    pub fn load_compressed(gpu: &'g Gpu, c: &Container, max_m: usize, max_context: usize) -> Result<Self> {
        let cfg = ModelConfig::from_metadata(&c.index.metadata)?;
        let free_before = Self::baseline(gpu)?;
        let layers = (0..cfg.layers).map(|i| DeviceCompressedGroup::upload(gpu, c, &BlockNames::of(i).linears())).collect::<Result<Vec<_>>>()?;
        let batches: Vec<Vec<&DeviceChunkTable>> = layers.iter().map(|l| l.tables.iter().collect()).collect();
        let decoder = Decoder::for_batches(gpu, &batches)?;
        let per_layer = layers.iter().map(DeviceCompressedGroup::decoded_len).max().unwrap_or(1);
        let bytes = layers.iter().map(DeviceCompressedGroup::device_bytes).sum::<usize>() + decoder.temp_bytes() + per_layer;
        let buf = gpu.stream.alloc_zeros::<u8>(per_layer)?;
        let mut times = LoadTimes::default();
        let embed = Embedding::device(gpu, c, &mut times)?;
        let weights = Weights::Compressed { layers, decoder: Box::new(decoder), buf };
        let mut model = Self::assemble(gpu, c, cfg, WeightMode::CompressedResident, weights, bytes, embed, max_m, max_context, free_before, &mut times)?;
        model.load_times = times;
        Ok(model)
    }

    /// Blocks streamed from `store` (one unit per block: q, k, v, o, gate, up, down, as
    /// `stream_units` lists them) through `slots` device slots; the embedding stays in
    /// host RAM.
    pub fn load_streamed(gpu: &'g Gpu, c: &Container, store: Arc<HostStore>, slots: usize, max_m: usize, max_context: usize) -> Result<Self> {
        Self::load_placed(gpu, c, store, &Placement::all_streamed(slots), None, max_m, max_context)
    }

    /// Hybrid placement: blocks `0..placement.resident_blocks` (and the LM head, when the
    /// placement says so) INT8-resident, the rest streamed from `store`, which must hold
    /// `stream_units_for(c, placement)`. `ring_budget` caps the streaming engine's VRAM.
    pub fn load_placed(
        gpu: &'g Gpu,
        c: &Container,
        store: Arc<HostStore>,
        placement: &Placement,
        ring_budget: Option<usize>,
        max_m: usize,
        max_context: usize,
    ) -> Result<Self> {
        let cfg = ModelConfig::from_metadata(&c.index.metadata)?;
        let want = Self::stream_units_for(c, placement)?;
        let matches = store.units.len() == want.len()
            && store.units.iter().zip(&want).all(|(u, w)| {
                u.tensors.len() == w.len()
                    // (A GGUF CPU part holds its whole matrix: `HostStore::load`.)
                    && u.tensors.iter().zip(w).all(|(t, p)| {
                        t.table.name == p.name && p.rows.as_ref().is_none_or(|r| r.len() == t.table.rows || (p.cpu && t.table.ggml.is_some()))
                    })
            });
        if !matches {
            return Err(Error::Invalid("the host store was not loaded with GpuLlama::stream_units_for this container and placement".into()));
        }
        // Measured from before the store's device tables, which belong to this mode too.
        let free_before = store.vram_baseline;
        let mut times = LoadTimes::default();
        let resident = (0..placement.resident_blocks)
            .map(|i| BlockNames::of(i).linears().iter().map(|n| Linear::load(gpu, c, n, WeightMode::Int8Resident, &mut times)).collect::<Result<Vec<_>>>())
            .collect::<Result<Vec<_>>>()?;
        let resident_bytes: usize = resident.iter().flatten().map(Linear::bytes).sum();
        let cpu_share = if store.cpu_bytes() > 0 {
            Some(CpuShare::new(gpu, crate::stream::cpu_share_pool()?, cfg.dim.max(cfg.ffn), 2 * cfg.ffn.max(cfg.dim))?)
        } else {
            None
        };
        let mut ws = WeightStream::new(gpu, store, placement.slots, ring_budget, 1)?;
        ws.set_compute_stream(gpu.stream.clone());
        // The ring, the decoder and the store's tables and scales (in the plan's fixed part).
        let bytes = ws.plan.total() + resident_bytes;
        let embed = Embedding::host(c, &mut times)?;
        let mode = if placement.resident_blocks > 0 || placement.lm_head_resident { WeightMode::Hybrid } else { WeightMode::Stream };
        let weights = Weights::Streamed { resident, ws: Box::new(ws), cpu: cpu_share };
        let mut model = Self::assemble(gpu, c, cfg, mode, weights, bytes, embed, max_m, max_context, free_before, &mut times)?;
        if placement.lm_head_resident {
            let head = Linear::load(gpu, c, lm_head_name(c), WeightMode::Int8Resident, &mut times)?;
            model.weight_bytes += head.bytes();
            model.vram_accounted += head.bytes();
            model.lm_head = Some(head);
        }
        model.load_times = times;
        Ok(model)
    }

    /// The units `load_streamed` expects in its store: each block's seven projections,
    /// then the LM head in row bands (see `stream_units_for`).
    pub fn stream_units(c: &Container) -> Result<Vec<Vec<UnitPart>>> {
        Self::stream_units_for(c, &Placement::all_streamed(0))
    }

    /// The units a placement streams: the projections of each block it does not keep
    /// resident, then (unless resident) the LM head in row bands about as large as a block
    /// — whole chunks each — so its pieces fit the blocks' slots.
    pub fn stream_units_for(c: &Container, placement: &Placement) -> Result<Vec<Vec<UnitPart>>> {
        let cfg = ModelConfig::from_metadata(&c.index.metadata)?;
        let mut units: Vec<Vec<UnitPart>> = (placement.resident_blocks..cfg.layers).map(|i| block_parts(c, i, placement.cpu_share)).collect::<Result<_>>()?;
        if placement.lm_head_resident {
            return Ok(units);
        }
        let name = lm_head_name(c);
        let t = c.tensor(name).ok_or_else(|| Error::format(c.path(), format!("no tensor named '{name}'")))?;
        let [rows, cols] = t.shape[..] else { return Err(Error::format(c.path(), format!("'{name}' is not a matrix"))) };
        let (rows, cols, chunk) = (rows as usize, cols.max(1) as usize, t.data.chunk_size as usize);
        let block_bytes = (0..cfg.layers).map(|i| block_int8_bytes(c, i)).max().unwrap_or(0);
        // Bands of a tensor stored as INT8 start on chunk boundaries (a multiple of
        // lcm(cols, chunk) / cols rows); one quantized at load (`HostStore::load`) may
        // start anywhere.
        let stored_int8 = matches!(t.encoding, crate::container::Encoding::Int8 { .. });
        let step = if stored_int8 { chunk / gcd(cols, chunk) } else { 1 };
        let band = (block_bytes / cols / step).max(1) * step;
        units.extend((0..rows).step_by(band).map(|r0| vec![UnitPart { name: name.into(), rows: Some(r0..(r0 + band).min(rows)), cpu: false }]));
        Ok(units)
    }

    /// `--weights auto` (and `hybrid`): everything INT8-resident when it fits `budget`
    /// (default: the free VRAM less a margin), else the placement with the most resident
    /// bytes that fits, the rest streamed. A checkpoint that is not a container can only be
    /// resident.
    ///
    /// `cpu_share`: the fraction of the streamed blocks' MLP rows the CPU computes in
    /// decode steps — `None` balances it from the CPU GEMV's bandwidth, measured here, and
    /// the link's; `Some(0.0)` leaves the CPU out.
    pub fn load_auto(
        gpu: &'g Gpu,
        src: &dyn WeightSource,
        budget: Option<usize>,
        slots: usize,
        max_m: usize,
        max_context: usize,
        cpu_share: Option<f64>,
    ) -> Result<(Self, Placement)> {
        Self::load_planned(gpu, src, budget, slots, max_m, max_context, cpu_share, false)
    }

    /// `--weights stream` with a CPU share (`load_auto`'s `cpu_share`): every block and the
    /// LM head streamed.
    pub fn load_stream_shared(
        gpu: &'g Gpu,
        c: &Container,
        slots: usize,
        max_m: usize,
        max_context: usize,
        cpu_share: Option<f64>,
    ) -> Result<(Self, Placement)> {
        Self::load_planned(gpu, c, None, slots, max_m, max_context, cpu_share, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn load_planned(
        gpu: &'g Gpu,
        src: &dyn WeightSource,
        budget: Option<usize>,
        slots: usize,
        max_m: usize,
        max_context: usize,
        cpu_share: Option<f64>,
        stream_all: bool,
    ) -> Result<(Self, Placement)> {
        let cfg = ModelConfig::from_metadata(src.metadata())?;
        let budget = match budget {
            Some(b) => b,
            None => {
                gpu.release_cached_memory()?;
                // What the driver, cuBLAS and the pool's blocks take besides the model.
                gpu.mem_info()?.0.saturating_sub(AUTO_MARGIN)
            }
        };
        let Some(c) = src.container() else {
            // A checkpoint (GGUF, safetensors) is run resident; streaming reads a container.
            let need = source_resident_bytes(src, &cfg);
            if need > budget {
                return Err(Error::Invalid(format!(
                    "this model's weights take about {:.2} GB resident, more than the {:.2} GB budget; streaming part of them needs a container: `codecllm compress MODEL -o model.clm` (`--keep-quant` keeps GGUF blocks as they are), then run model.clm",
                    need as f64 / 1e9,
                    budget as f64 / 1e9
                )));
            }
            let model = GpuLlama::load(gpu, src, WeightMode::Int8Resident, max_m, max_context)?;
            let p = Placement {
                resident_blocks: cfg.layers,
                lm_head_resident: true,
                slots: 0,
                resident_bytes: model.weight_bytes,
                streamed_bytes: 0,
                predicted_vram: model.vram_accounted,
                predicted_seconds: 0.0,
                cpu_share: 0.0,
                cpu_bytes: 0,
            };
            return Ok((model, p));
        };
        let mut input = placement_input(c, &cfg, slots, max_m, max_context)?;
        input.stream_all = stream_all;
        input.cpu_share = cpu_share;
        if !cpu_decodes_blocks(c) {
            if cpu_share.is_some_and(|f| f > 0.0) {
                eprintln!("codecllm: this container's MLP matrices are neither INT8 the CPU decodes (not ANS chunks) nor GGUF blocks the kernels compute on: the CPU takes no share of them");
            }
            input.cpu_share = Some(0.0);
        }
        let mut placement = plan(&input, budget).map_err(Error::Invalid)?;
        // The CPU's and the link's bandwidths are measured only when something streams for
        // the CPU to share (a fixed share needs them for the prediction).
        if placement.streams() && input.cpu_share != Some(0.0) {
            input.cpu_gbps = cpu_share_gbps(c, &cfg)?;
            input.link_gbps = gpu.pinned_h2d_gbps(64 << 20, 5)?;
            placement = plan(&input, budget).map_err(Error::Invalid)?;
        }
        // The ring's size is predicted from the index; the loaded store says what the
        // streaming engine will really take. Where that is more, plan again with it (at
        // most a block's difference, so a second load settles it).
        let store = loop {
            if !placement.streams() {
                return Ok((GpuLlama::load(gpu, c, WeightMode::Int8Resident, max_m, max_context)?, placement));
            }
            let store = HostStore::load(gpu, c, &Self::stream_units_for(c, &placement)?, true)?;
            let ring = WeightStream::required_bytes(gpu, &store, placement.slots, 1)?;
            let predicted = placement.slots * input.slot_bytes + input.engine_fixed;
            if ring <= predicted {
                break store;
            }
            input.fixed += ring - predicted;
            input.engine_fixed += ring - predicted;
            let again = plan(&input, budget).map_err(Error::Invalid)?;
            let same = (again.resident_blocks, again.lm_head_resident, again.slots) == (placement.resident_blocks, placement.lm_head_resident, placement.slots);
            placement = again;
            if same {
                break store;
            }
        };
        let resident_and_fixed = placement.resident_bytes + input.fixed;
        let model =
            Self::load_placed(gpu, c, Arc::new(store), &placement, Some(budget.saturating_sub(resident_and_fixed - input.engine_fixed)), max_m, max_context)?;
        Ok((model, placement))
    }

    fn baseline(gpu: &Gpu) -> Result<usize> {
        gpu.release_cached_memory()?;
        Ok(gpu.mem_info()?.0)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        gpu: &'g Gpu,
        src: &dyn WeightSource,
        cfg: ModelConfig,
        mode: WeightMode,
        weights: Weights<'g>,
        block_bytes: usize,
        embed: Embedding,
        max_m: usize,
        max_context: usize,
        free_before: usize,
        times: &mut LoadTimes,
    ) -> Result<Self> {
        gpu_supports(&cfg)?;
        let max_context = max_context.min(cfg.context).max(1);
        let st = &gpu.stream;
        let norm = |name: &str| -> Result<CudaSlice<f32>> { Ok(st.clone_htod(&src.f32(name)?)?) };
        let (kv_dim, q_dim) = (cfg.kv_dim(), cfg.q_dim());
        let blocks = (0..cfg.layers)
            .map(|i| {
                let n = BlockNames::of(i);
                Ok(Block {
                    attn_norm: norm(&n.attn_norm)?,
                    ffn_norm: norm(&n.ffn_norm)?,
                    qkv_bias: cfg.qkv_bias.then(|| Ok::<_, Error>([norm(&n.q_bias)?, norm(&n.k_bias)?, norm(&n.v_bias)?])).transpose()?,
                    qk_norm: cfg.qk_norm.then(|| Ok::<_, Error>([norm(&n.q_norm)?, norm(&n.k_norm)?])).transpose()?,
                    post_norms: cfg.post_norms.then(|| Ok::<_, Error>([norm(&n.post_attn_norm)?, norm(&n.post_ffn_norm)?])).transpose()?,
                    k_cache: st.alloc_zeros(max_context * kv_dim)?,
                    v_cache: st.alloc_zeros(max_context * kv_dim)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let lm_head = match mode {
            // Streaming modes: streamed, or (hybrid) loaded by `load_placed`.
            WeightMode::Stream | WeightMode::Hybrid => None,
            WeightMode::Fp16Resident => Some(Linear::load(gpu, src, lm_head_name(src), mode, times)?),
            _ => Some(Linear::load(gpu, src, lm_head_name(src), WeightMode::Int8Resident, times)?),
        };
        // cos/sin of every (position, pair), in f64: angles reach thousands of radians. One
        // table for global layers, one for sliding-window layers (their own base).
        let half = cfg.head_dim / 2;
        let factors = if src.has(ROPE_FREQS) {
            Some(Some(src.f32(ROPE_FREQS)?).filter(|f| f.len() == half).ok_or_else(|| Error::Invalid(format!("{ROPE_FREQS} must hold {half} factors")))?)
        } else {
            None
        };
        let table = |layer: usize| {
            let inv_freq: Vec<f64> = (0..half).map(|i| cfg.rope_inv_freq(layer, i, factors.as_deref())).collect();
            let mut t = Vec::with_capacity(max_context * half * 2);
            for p in 0..max_context {
                for f in &inv_freq {
                    let theta = p as f64 * f;
                    t.push(theta.cos() as f32);
                    t.push(theta.sin() as f32);
                }
            }
            t
        };
        // Layer 0 is local whenever the model has sliding-window layers; the last is global.
        let (global, local) = (table(cfg.layers - 1), table(0));
        let (d, f) = (cfg.dim, cfg.ffn);
        let logit_width = src.shape(lm_head_name(src)).and_then(|s| s.first().copied()).unwrap_or(cfg.vocab);
        let s = Scratch {
            ids: st.alloc_zeros(max_m)?,
            x: st.alloc_zeros(max_m * d)?,
            h: st.alloc_zeros(max_m * f.max(d))?,
            q: st.alloc_zeros(max_m * q_dim)?,
            k: st.alloc_zeros(max_m * kv_dim)?,
            v: st.alloc_zeros(max_m * kv_dim)?,
            att: st.alloc_zeros(max_m * q_dim)?,
            att_part: st.alloc_zeros(ATT_MAX_PARTIALS * ATT_PARTIAL)?,
            o: st.alloc_zeros(max_m * d)?,
            g: st.alloc_zeros(max_m * f)?,
            u: st.alloc_zeros(max_m * f)?,
            logits: st.alloc_zeros(logit_width)?,
            band: st.alloc_zeros(1)?,
        };
        let embed_bytes = match &embed {
            Embedding::Device(e) => 2 * e.len(),
            Embedding::Host(_) => 0,
        };
        let weight_bytes = block_bytes + lm_head.as_ref().map_or(0, Linear::bytes) + embed_bytes;
        let scratch = 4 * (s.x.len() + s.ids.len())
            + 4 * s.att_part.len()
            + 2 * (s.h.len() + s.q.len() + s.k.len() + s.v.len() + s.att.len() + s.o.len() + s.g.len() + s.u.len() + s.logits.len());
        let extras = |b: &Block| -> usize {
            let sum = |v: &[CudaSlice<f32>]| v.iter().map(|t| t.len()).sum::<usize>();
            b.qkv_bias.as_ref().map_or(0, |t| sum(t)) + b.qk_norm.as_ref().map_or(0, |t| sum(t)) + b.post_norms.as_ref().map_or(0, |t| sum(t))
        };
        let per_block: usize = blocks.iter().map(|b| 4 * (b.attn_norm.len() + b.ffn_norm.len() + extras(b)) + 2 * (b.k_cache.len() + b.v_cache.len())).sum();
        let rope_tables = if cfg.sliding_window.is_some() { 2 } else { 1 };
        let vram_accounted = weight_bytes + scratch + per_block + 4 * (rope_tables * global.len() + d + 1);
        let host_rows = if matches!(embed, Embedding::Host(_)) { max_m * d } else { 0 };
        let prefetch_next = matches!(&weights, Weights::Streamed { ws, .. } if ws.can_prefetch_next_pass());
        let lm_band_rows = match &weights {
            Weights::Streamed { ws, resident, .. } => ws.unit_rows().into_iter().skip(cfg.layers - resident.len()).collect(),
            _ => Vec::new(),
        };
        // One row of a streamed head band of GGUF blocks goes through `band` too (the fused
        // one-row product writes the logits in place for INT8 bands only).
        let mut s = s;
        if let Some(&b) = lm_band_rows.iter().max() {
            s.band = st.alloc_zeros(b.max(1))?;
        }
        let mut model = GpuLlama {
            blas: if mode == WeightMode::Fp16Resident { Some(CudaBlas::new(st.clone())?) } else { None },
            gpu,
            embed,
            out_norm: norm("output_norm.weight")?,
            lm_head,
            blocks,
            weights,
            rope: if cfg.sliding_window.is_some() { vec![st.clone_htod(&global)?, st.clone_htod(&local)?] } else { vec![st.clone_htod(&global)?] },
            places: st.alloc_zeros(crate::abi::PLACE_WORDS * max_m)?,
            seq_len: Vec::new(),
            s,
            max_m,
            use_graph: true,
            programmatic_launch: true,
            step_graph: None,
            pending: None,
            io: StepIo {
                places: PinnedBuffer::new(gpu, crate::abi::PLACE_WORDS * max_m)?,
                ids: PinnedBuffer::new(gpu, max_m)?,
                rows: PinnedBuffer::new(gpu, host_rows)?,
                logits: PinnedBuffer::for_host_reads(gpu, logit_width)?,
                decode_status: PinnedBuffer::for_host_reads(gpu, 1)?,
                started: gpu.timed_event()?,
                ready: gpu.timed_event()?,
            },
            prefetch_next,
            max_logit_rows: 1,
            logit_width,
            comm: None,
            lm_band_rows,
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
            load_times: LoadTimes::default(),
        };
        model.sample_vram()?;
        Ok(model)
    }

    /// What the CPU share did so far (`None` without one).
    pub fn cpu_share_stats(&self) -> Option<crate::stream::CpuShareStats> {
        match &self.weights {
            Weights::Streamed { cpu: Some(c), .. } => Some(c.stats()),
            _ => None,
        }
    }

    fn sample_vram(&mut self) -> Result<()> {
        let (free, _) = self.gpu.mem_info()?;
        let in_use = self.free_before.saturating_sub(free);
        self.peak_vram_net = self.peak_vram_net.max(in_use.saturating_sub(self.gpu.pool_slack()?));
        self.peak_vram = self.peak_vram.max(self.free_before.saturating_sub(free));
        Ok(())
    }

    /// Enqueues the blocks, the final norm and the LM head for a batch of `m` rows whose
    /// embeddings are in `sc.x`; logits of rows `rows` land in `sc.logits`. Waits on the
    /// host for nothing, so that it can be captured.
    fn enqueue_layers(&mut self, m: usize, rows: std::ops::Range<usize>) -> Result<()> {
        let (gpu, st) = (self.gpu, &self.gpu.stream);
        let cfg = &self.cfg;
        let d = cfg.dim;
        let GpuLlama { blas, blocks, weights, rope, places, s: sc, out_norm, lm_head, comm, .. } = self;
        let blas = blas.as_ref();
        let ctx = BlockCtx { gpu, blas, cfg, rope, places, m, comm: comm.as_ref() };
        match weights {
            Weights::Resident(layers) => {
                for (i, (b, lin)) in blocks.iter_mut().zip(layers.iter()).enumerate() {
                    let refs: Vec<LinRef> = lin.iter().map(LinRef::Owned).collect();
                    ctx.block(i, b, sc, &refs, i == 0, None)?;
                }
            }
            Weights::Compressed { layers, decoder, buf } => {
                for (i, (b, layer)) in blocks.iter_mut().zip(layers.iter()).enumerate() {
                    // One merged decode a layer into the buffer sized for the largest.
                    layer.decode_into(decoder, buf, st)?;
                    let views = layer.weights(buf);
                    let refs: Vec<LinRef> = views.iter().map(LinRef::View).collect();
                    ctx.block(i, b, sc, &refs, i == 0, None)?;
                }
            }
            Weights::Streamed { resident, ws, cpu } => {
                // The resident blocks first (the ring's first units were prefetched at the
                // end of the previous step), then the streamed units: the other blocks,
                // then — unless resident — the LM head in row bands (`stream_units_for`).
                let k = resident.len();
                for (i, lin) in resident.iter().enumerate() {
                    let refs: Vec<LinRef> = lin.iter().map(LinRef::Owned).collect();
                    ctx.block(i, &mut blocks[i], sc, &refs, i == 0, None)?;
                }
                let (layers, n, mut at) = (blocks.len(), rows.len(), 0);
                // A decode step leaves the CPU its rows of the split units; larger batches
                // stream every row (`WeightStream::for_each_unit_sharing`).
                let sharing = m == 1 && cpu.is_some();
                ws.for_each_unit_sharing(sharing, |u, w, cpu_rows, _stream| {
                    let layer = k + u;
                    if layer < layers {
                        let refs: Vec<LinRef> = w.iter().map(LinRef::View).collect();
                        let call = cpu.as_mut().filter(|_| sharing).map(|share| CpuCall { share, unit: u, rows: cpu_rows });
                        return ctx.block(layer, &mut blocks[layer], sc, &refs, layer == 0, call);
                    }
                    if layer == layers {
                        final_norm(gpu, sc, out_norm, rows.clone(), d, cfg.eps)?;
                    }
                    let b = w[0].rows();
                    match (&w[0], n) {
                        (crate::gpu::WeightsView::Int8(w8), 1) => gpu.linear_m1_fused(&sc.h, &mut [(w8, sc.logits.slice_mut(at..at + b))], st)?,
                        (view, _) => {
                            gpu.linear_view(&sc.h, n, view, &mut sc.band, st)?;
                            st.memcpy_dtod(&sc.band.slice(..n * b), &mut sc.logits.slice_mut(at..at + n * b))?;
                        }
                    }
                    at += n * b;
                    Ok(())
                })?;
                if lm_head.is_none() {
                    return Ok(());
                }
            }
        }
        let n = rows.len();
        final_norm(gpu, sc, out_norm, rows, d, cfg.eps)?;
        lm_head.as_ref().expect("resident modes hold the LM head").apply(gpu, blas, &sc.h, n, &mut sc.logits)
    }
}

/// What the GPU forward does not run, as one clear error naming it.
fn gpu_supports(cfg: &ModelConfig) -> Result<()> {
    let missing: Vec<&str> = [
        (cfg.logit_softcap.is_some(), "logit soft-capping"),
        (
            !cfg.head_dim.is_multiple_of(32) || cfg.head_dim > crate::abi::ATT_MAX_HEAD_DIM,
            "this head dimension (the attention kernel takes multiples of 32 up to 256)",
        ),
    ]
    .into_iter()
    .filter_map(|(needed, what)| needed.then_some(what))
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "{:?} models need {} on the GPU, which this build does not have yet; run them on the CPU (without --weights)",
        cfg.arch,
        missing.join(", ")
    )))
}

/// VRAM `--weights auto` leaves free when it sizes the model from the free memory: the
/// driver pool's growth blocks, cuBLAS and nvCOMP workspaces, graph executables.
const AUTO_MARGIN: usize = 512 << 20;

/// Whether the CPU can compute its share of the blocks' MLP matrices: INT8 it decodes (not
/// ANS, which decodes on the GPU only), or GGUF blocks kept as stored in a layout the GPU
/// computes on too (the CPU reads their planes); not tensors quantized at load.
fn cpu_decodes_blocks(c: &Container) -> bool {
    let block = BlockNames::of(0);
    block.linears()[weights::GATE..=weights::DOWN].iter().all(|n| {
        c.tensor(n).is_some_and(|t| {
            (matches!(t.encoding, crate::container::Encoding::Int8 { .. }) && t.data.codec != crate::container::Codec::Ans) || planes_bytes(t).is_some()
        })
    })
}

/// The CPU share's bandwidth on this container's MLP matrices, GB/s of what it reads: the
/// INT8 GEMV's, or for GGUF blocks each layout's product timed on its own and weighted by
/// the bytes of that layout in the model (Q4_K_M mixes Q4_K and Q6_K).
fn cpu_share_gbps(c: &Container, cfg: &ModelConfig) -> Result<f64> {
    let pool = crate::stream::cpu_share_pool()?;
    let mut by_layout: Vec<(Option<usize>, usize)> = Vec::new();
    for i in 0..cfg.layers {
        for n in &BlockNames::of(i).linears()[weights::GATE..=weights::DOWN] {
            let Some(t) = c.tensor(n) else { continue };
            let layout = planes_layout(t);
            match by_layout.iter_mut().find(|(l, _)| *l == layout) {
                Some((_, bytes)) => *bytes += int8_bytes(t),
                None => by_layout.push((layout, int8_bytes(t))),
            }
        }
    }
    let (mut bytes, mut seconds) = (0.0, 0.0);
    for (layout, b) in by_layout {
        let gbps = match layout {
            Some(l) => crate::stream::cpu_ggml_gbps(&pool, l),
            None => crate::stream::cpu_gemv_gbps(&pool),
        };
        if gbps <= 0.0 {
            return Ok(0.0);
        }
        bytes += b as f64;
        seconds += b as f64 / gbps;
    }
    Ok(if seconds > 0.0 { bytes / seconds } else { 0.0 })
}

/// Block `i`'s projections as one streamed unit: with a CPU `share`, the first rows of
/// gate, up and down (a multiple of their chunks, ending on a slot-aligned byte) stay GPU
/// parts and the rest follow as CPU parts (`UnitPart::cpu`).
fn block_parts(c: &Container, i: usize, share: f64) -> Result<Vec<UnitPart>> {
    let block = BlockNames::of(i);
    let names = block.linears();
    let mut parts: Vec<UnitPart> = names.iter().map(|&n| n.into()).collect();
    if share <= 0.0 {
        return Ok(parts);
    }
    let mut cpu = Vec::new();
    for t in weights::GATE..=weights::DOWN {
        let entry = c.tensor(names[t]).ok_or_else(|| Error::format(c.path(), format!("no tensor named '{}'", names[t])))?;
        let [rows, cols] = entry.shape[..] else { continue };
        let (rows, cols, chunk, align) = (rows as usize, cols.max(1) as usize, entry.data.chunk_size as usize, crate::stream::SLOT_ALIGN);
        let step = match &entry.encoding {
            // INT8 bands end on whole chunks and on a slot-aligned byte (the CPU rows decode
            // right after them in a full pass).
            crate::container::Encoding::Int8 { .. } => lcm(chunk / gcd(cols, chunk), align / gcd(cols, align)),
            // GGUF bands are planes of their own: any row; a tensor-core tile of rows keeps
            // the GPU's blocks whole.
            _ if planes_bytes(entry).is_some() => crate::abi::GGML_MMA_ROWS as usize,
            _ => continue,
        };
        let cpu_rows = ((rows as f64 * share) / step as f64).round() as usize * step;
        // At least one step stays on the GPU (a band is never empty).
        let gpu_rows = rows.saturating_sub(cpu_rows).max(step);
        if gpu_rows >= rows {
            continue;
        }
        parts[t].rows = Some(0..gpu_rows);
        cpu.push(UnitPart { name: names[t].into(), rows: Some(gpu_rows..rows), cpu: true });
    }
    parts.extend(cpu);
    Ok(parts)
}

fn lcm(a: usize, b: usize) -> usize {
    a / gcd(a, b) * b
}

/// Resident bytes of block `i`'s projections as the container holds them: INT8 values and
/// f32 scales (a projection stored losslessly is quantized at load with 32-column groups),
/// or GGUF blocks in the kernels' planes where they have them.
fn block_int8_bytes(c: &Container, i: usize) -> usize {
    BlockNames::of(i).linears().iter().filter_map(|n| c.tensor(n)).map(int8_bytes).sum()
}

fn int8_bytes(t: &crate::container::TensorEntry) -> usize {
    use crate::container::Encoding;
    if let Some(planes) = planes_bytes(t) {
        return planes;
    }
    let cols = t.shape.last().copied().unwrap_or(1).max(1) as usize;
    let group = match &t.encoding {
        Encoding::Int8 { group_size, .. } => *group_size as usize,
        // Quantized at load (`WeightSource::int8`), 32 columns a group.
        Encoding::Lossless | Encoding::Ggml { .. } => crate::import::LOAD_TIME_GROUP,
    };
    int8_matrix_bytes(t.numel() as usize, cols, group)
}

/// INT8 values and f32 scales of `numel` values of a matrix `cols` wide, a scale per
/// `group` columns.
fn int8_matrix_bytes(numel: usize, cols: usize, group: usize) -> usize {
    numel + 4 * (numel / cols) * cols.div_ceil(group)
}

/// Bytes of a GGUF block tensor in the kernels' planes, when the GPU computes on its
/// blocks as stored (resident or streamed); `None` for every other tensor.
fn planes_bytes(t: &crate::container::TensorEntry) -> Option<usize> {
    Some(crate::abi::GGML_LAYOUTS[planes_layout(t)?].values_bytes(t.numel()) as usize)
}

/// The kernels' layout (`abi::GGML_LAYOUTS` index) of a GGUF block tensor they compute on.
fn planes_layout(t: &crate::container::TensorEntry) -> Option<usize> {
    let crate::container::Encoding::Ggml { ggml_type, .. } = t.encoding else { return None };
    crate::abi::ggml_layout(ggml_type)
}

/// Bytes a checkpoint's weights take int8-resident: projections as GGUF blocks in the
/// kernels' planes or as INT8 with 32-column groups (`WeightSource::int8`), the LM head
/// likewise, the FP16 embedding.
fn source_resident_bytes(src: &dyn WeightSource, cfg: &ModelConfig) -> usize {
    let bytes = |name: &str| -> usize {
        let Some(shape) = src.shape(name) else { return 0 };
        let numel: usize = shape.iter().product();
        let cols = shape.last().copied().unwrap_or(1).max(1);
        match crate::gpu::native_blocks(src, name) {
            Some((layout, ..)) => crate::abi::GGML_LAYOUTS[layout].values_bytes(numel as u64) as usize,
            None => int8_matrix_bytes(numel, cols, crate::import::LOAD_TIME_GROUP),
        }
    };
    let blocks: usize = (0..cfg.layers).flat_map(|i| BlockNames::of(i).linears().map(&bytes)).sum();
    blocks + bytes(lm_head_name(src)) + 2 * cfg.vocab * cfg.dim
}

/// What `model::placement::plan` needs, from the container's index and the config: sizes
/// per block and of the LM head, the ring's unit, and what the model allocates whatever
/// the placement (KV cache, activations, norms, RoPE tables, the decoder workspace). The
/// ring's numbers follow `HostStore::load` and `WeightStream::new`, so that a plan that fits
/// also passes the engine's own budget check.
fn placement_input(c: &Container, cfg: &ModelConfig, slots: usize, max_m: usize, max_context: usize) -> Result<PlacementInput> {
    use crate::container::{Codec, Encoding};
    let align = |x: usize| x.div_ceil(256) * 256;
    let entry = |n: &str| c.tensor(n).ok_or_else(|| Error::format(c.path(), format!("no tensor named '{n}'")));
    // What streaming a tensor copies: its stored chunks, its GGUF blocks in the kernels'
    // planes, or its INT8 values when it is quantized at load (`HostStore::load`); and what
    // it takes in a slot's decoded half.
    let stored_of = |t: &crate::container::TensorEntry| match t.encoding {
        Encoding::Int8 { .. } => t.data.stored_extent() as usize,
        _ => planes_bytes(t).unwrap_or(t.numel() as usize),
    };
    let decoded_of = |t: &crate::container::TensorEntry| planes_bytes(t).unwrap_or(t.numel() as usize);
    let block_int8: Vec<usize> = (0..cfg.layers).map(|i| block_int8_bytes(c, i)).collect();
    let mlp = |i: usize, bytes: &dyn Fn(&crate::container::TensorEntry) -> usize| -> Result<usize> {
        let block = BlockNames::of(i);
        block.linears()[weights::GATE..=weights::DOWN].iter().map(|n| Ok(bytes(entry(n)?))).sum()
    };
    let block_mlp_int8 = (0..cfg.layers).map(|i| mlp(i, &int8_bytes)).collect::<Result<Vec<_>>>()?;
    let block_mlp_stored = (0..cfg.layers).map(|i| mlp(i, &stored_of)).collect::<Result<Vec<_>>>()?;
    let (mut block_stored, mut slot_stored, mut slot_decoded) = (Vec::with_capacity(cfg.layers), 0, 0);
    // A unit whose tensors all stream as they compute (not stored INT8 chunks) is copied
    // straight into the decoded half of its slot and needs no stored half (`HostStore::sizes`).
    let raw = |t: &crate::container::TensorEntry| !matches!(t.encoding, Encoding::Int8 { .. });
    for i in 0..cfg.layers {
        let (mut stored, mut aligned, mut decoded, mut all_raw) = (0, 0, 0, true);
        for n in BlockNames::of(i).linears() {
            let t = entry(n)?;
            stored += stored_of(t);
            aligned += align(stored_of(t));
            decoded += align(decoded_of(t));
            all_raw &= raw(t);
        }
        block_stored.push(stored);
        (slot_stored, slot_decoded) = (slot_stored.max(if all_raw { 0 } else { aligned }), slot_decoded.max(decoded));
    }
    let head = entry(lm_head_name(c))?;
    // A streamed LM head's bands (`stream_units_for`): about a block's INT8 bytes of rows,
    // their stored share plus up to a chunk at either end.
    let (head_rows, head_cols) = (head.shape.first().copied().unwrap_or(1).max(1) as usize, head.shape.last().copied().unwrap_or(1).max(1) as usize);
    let band_rows = (block_int8.iter().max().copied().unwrap_or(0) / head_cols).clamp(1, head_rows);
    let band_stored = stored_of(head).div_ceil(head_rows) * band_rows + 2 * head.data.chunk_size as usize;
    if !raw(head) {
        slot_stored = slot_stored.max(align(band_stored.min(stored_of(head))));
    }
    slot_decoded = slot_decoded.max(align(band_rows * head_cols));
    let slot_bytes = slot_stored + slot_decoded;
    let (d, f, kv) = (cfg.dim, cfg.ffn, cfg.kv_dim());
    let kv_cache = 2 * 2 * cfg.layers * max_context.min(cfg.context) * kv;
    let activations = 4 * max_m * d + 2 * max_m * (3 * f.max(d) + 2 * cfg.q_dim() + 2 * kv + d) + 2 * cfg.vocab + 4 * ATT_MAX_PARTIALS * ATT_PARTIAL;
    let norms_and_rope = 4 * cfg.layers * 6 * d + 4 * 2 * max_context * cfg.head_dim;
    // Large batches dequantize bands of a matrix into FP16 scratch for cuBLAS (`Gpu::linear`),
    // whose handle, workspace and kernels take VRAM too.
    // GGUF blocks kept as stored take that path from a smaller batch.
    let largest = c.index.tensors.iter().filter(|t| t.shape.len() == 2).map(|t| t.numel() as usize).max().unwrap_or(0);
    let native_blocks = c
        .index
        .tensors
        .iter()
        .any(|t| matches!(t.encoding, crate::container::Encoding::Ggml { ggml_type, .. } if crate::abi::ggml_layout(ggml_type).is_some()));
    let dequant = if max_m >= crate::gpu::DEQUANT_CUBLAS_MIN_M || (native_blocks && max_m > crate::gpu::GGML_GEMV_MAX_BATCH) {
        2 * largest.min(crate::gpu::DEQUANT_BAND_ELEMS) + CUBLAS_VRAM_ESTIMATE
    } else {
        0
    };
    // The streaming engine's decoder workspace (nvCOMP's Zstd needs one; rANS and raw
    // none), its activation buffers, and the chunk tables, rANS tables and scales of the
    // streamed tensors — each table on the device twice (per tensor and in its unit's
    // merged batch) — bounded by those of all tensors.
    let matrices = || c.index.tensors.iter().filter(|t| t.matrix_dims().is_some());
    let zstd = matrices().any(|t| t.data.codec == Codec::Zstd);
    let widest = matrices().filter_map(|t| t.matrix_dims()).map(|(r, k)| r.max(k) as usize).max().unwrap_or(1);
    let rans_tables = |t: &crate::container::TensorEntry| if t.data.codec == Codec::Rans { 2 * 4 * crate::abi::RANS_LUT_ENTRIES } else { 0 };
    let engine_fixed = if zstd { slot_bytes } else { 0 }
        + 3 * 2 * widest
        + matrices().map(|t| 2 * 32 * t.data.chunks.len() + rans_tables(t) + (int8_bytes(t) - t.numel() as usize)).sum::<usize>();
    Ok(PlacementInput {
        block_int8,
        block_stored,
        lm_head_int8: int8_bytes(head),
        lm_head_stored: stored_of(head),
        slot_bytes,
        slots,
        fixed: kv_cache + activations + norms_and_rope + dequant + engine_fixed,
        engine_fixed,
        // FP16, on the device only when nothing streams (`load`; a streamed model keeps it
        // in host RAM).
        resident_embedding: 2 * cfg.vocab * d,
        link_gbps: LINK_GBPS_ESTIMATE,
        hbm_gbps: HBM_GBPS_ESTIMATE,
        block_mlp_int8,
        block_mlp_stored,
        cpu_gbps: 0.0,
        cpu_share: None,
        stream_all: false,
    })
}

/// VRAM cuBLAS takes once a model multiplies through it (handle, workspace, its kernels):
/// an 8B-shaped hybrid model prefilling 512 tokens on H200 measured 120 MB above what it
/// allocated, 34 MB of it the dequantized band (docs/bench/2026-12-01-peer-h200.json,
/// budget 5.8 GB: net 5.901 GB, allocated 5.781 GB); rounded up.
const CUBLAS_VRAM_ESTIMATE: usize = 96 << 20;

/// Bandwidths the prediction assumes until measured: pinned PCIe 5 ×16 host to device and
/// H200-class HBM, as measured on the machines here (../shared/NOTES-GPU.md §6). The
/// placement maximizes resident bytes whatever they are; a CPU share balances the CPU's
/// bandwidth against the link's, both measured at load.
const LINK_GBPS_ESTIMATE: f64 = 55.0;
const HBM_GBPS_ESTIMATE: f64 = 4_000.0;

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
