//! One transformer block on the default stream (norms, RoPE, attention with the KV cache,
//! the gated MLP) around the linears, and the final norm — with each family's extras where
//! `ModelConfig` asks for them: q/k/v biases, per-head q/k norms, post-norms of both
//! branches, split-half RoPE, sliding-window layers with their own RoPE table, tanh-GELU.
use super::weights::{LinRef, DOWN, GATE, K, O, Q, UP, V};
use crate::abi::{attention_splits, ATT_WARPS, NORM_THREADS};
use crate::error::Result;
use crate::gpu::nccl::Communicator;
use crate::gpu::Gpu;
use crate::model::config::{Activation, ModelConfig, RopeStyle};
use crate::stream::CpuCall;
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};
use half::f16;

pub(super) struct Block {
    pub(super) attn_norm: CudaSlice<f32>,
    pub(super) ffn_norm: CudaSlice<f32>,
    /// q, k, v biases (Qwen2).
    pub(super) qkv_bias: Option<[CudaSlice<f32>; 3]>,
    /// Per-head norms of q and k (Qwen3, Gemma 3).
    pub(super) qk_norm: Option<[CudaSlice<f32>; 2]>,
    /// Norms of the attention and MLP outputs (Gemma 3).
    pub(super) post_norms: Option<[CudaSlice<f32>; 2]>,
    pub(super) k_cache: CudaSlice<f16>,
    pub(super) v_cache: CudaSlice<f16>,
}

/// Scratch activations for batches up to `max_m` rows.
pub(super) struct Scratch {
    pub(super) ids: CudaSlice<u32>,
    pub(super) x: CudaSlice<f32>,
    pub(super) h: CudaSlice<f16>,
    pub(super) q: CudaSlice<f16>,
    pub(super) k: CudaSlice<f16>,
    pub(super) v: CudaSlice<f16>,
    pub(super) att: CudaSlice<f16>,
    /// Split attention's partial results (`abi::ATT_MAX_PARTIALS` of `abi::ATT_PARTIAL`).
    pub(super) att_part: CudaSlice<f32>,
    pub(super) o: CudaSlice<f16>,
    pub(super) g: CudaSlice<f16>,
    pub(super) u: CudaSlice<f16>,
    /// `[logit rows, vocab]`; a streamed LM head writes it band by band: each band's
    /// `[rows, band rows]` block after the previous one (row-major only for one row).
    pub(super) logits: CudaSlice<f16>,
    /// One streamed LM-head band's output for several rows, before it joins `logits`.
    pub(super) band: CudaSlice<f16>,
}

pub(super) fn launch_1d(n: usize) -> LaunchConfig {
    LaunchConfig::for_num_elems(n as u32)
}

/// The last block's MLP output added in and the final norm, on the rows whose logits are
/// computed (`rows` of the batch): into `sc.h[0..rows.len() · d]`.
pub(super) fn final_norm(gpu: &Gpu, sc: &mut Scratch, w: &CudaSlice<f32>, rows: std::ops::Range<usize>, d: usize, eps: f32) -> Result<()> {
    let span = rows.start * d..rows.end * d;
    norm(gpu, &mut sc.x.slice_mut(span.clone()), Some(&sc.o.slice(span)), w, &mut sc.h, rows.len(), d, eps)
}

/// What a block's computation needs besides its weights.
pub(super) struct BlockCtx<'a> {
    pub(super) gpu: &'a Gpu,
    pub(super) blas: Option<&'a CudaBlas>,
    pub(super) cfg: &'a ModelConfig,
    /// cos/sin tables: `[0]` for global layers, `[1]` (when there are any) for
    /// sliding-window ones.
    pub(super) rope: &'a [CudaSlice<f32>],
    /// Each row's position and its sequence's first cache row, on the device.
    pub(super) places: &'a CudaSlice<u32>,
    pub(super) m: usize,
    /// A tensor-parallel rank's communicator: the o and down products are partial sums
    /// over its shard, completed by an all-reduce over the ranks.
    pub(super) comm: Option<&'a Communicator>,
}

impl BlockCtx<'_> {
    /// One transformer block on the default stream: attention with RoPE and the KV cache,
    /// then SwiGLU; both branches go into the FP32 residual `sc.x`, each folded into the
    /// next norm (the MLP's output is left in `sc.o` for the next block or the final
    /// norm; `first` says there is none yet).
    ///
    /// With `cpu` (a decode step of a unit split with the CPU), `lin`'s gate, up and down
    /// are the GPU's bands and the CPU computes the rows after them (`CpuCall`).
    pub(super) fn block(&self, layer: usize, b: &mut Block, sc: &mut Scratch, lin: &[LinRef], first: bool, mut cpu: Option<CpuCall>) -> Result<()> {
        let (gpu, cfg, m) = (self.gpu, self.cfg, self.m);
        let st = &gpu.stream;
        let k = &gpu.kernels;
        let (d, hd, local) = (cfg.dim, cfg.head_dim, cfg.is_local(layer));
        let mu = m as u32;
        let pending = (!first).then(|| sc.o.slice(..m * d));
        norm(gpu, &mut sc.x.slice_mut(..m * d), pending.as_ref(), &b.attn_norm, &mut sc.h, m, d, cfg.eps)?;
        self.products(lin, &sc.h, &mut [(Q, &mut sc.q), (K, &mut sc.k), (V, &mut sc.v)])?;
        let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
        if let Some([bq, bk, bv]) = &b.qkv_bias {
            for (y, bias, n) in [(&mut sc.q, bq, qd), (&mut sc.k, bk, kvd), (&mut sc.v, bv, kvd)] {
                add_bias(gpu, y, bias, m, n)?;
            }
        }
        if let Some([nq, nk]) = &b.qk_norm {
            head_norm(gpu, &mut sc.q, nq, m * cfg.heads, hd, cfg.eps)?;
            head_norm(gpu, &mut sc.k, nk, m * cfg.kv_heads, hd, cfg.eps)?;
        }
        // Kernel safety below: `submit` / `forward_batch` checked that every row's cache row
        // (its sequence's first plus its position) lies within max_context, which the RoPE
        // tables and the caches cover.
        let (h, kvh, hdu) = (cfg.heads as u32, cfg.kv_heads as u32, hd as u32);
        let split_half = (cfg.rope_style == RopeStyle::HalfSplit) as u32;
        let rope = &self.rope[local as usize];
        let mut l = st.launch_builder(&k.rope_qk_store);
        l.arg(&mut sc.q)
            .arg(&mut sc.k)
            .arg(&sc.v)
            .arg(&mut b.k_cache)
            .arg(&mut b.v_cache)
            .arg(rope)
            .arg(&mu)
            .arg(&h)
            .arg(&kvh)
            .arg(&hdu)
            .arg(self.places)
            .arg(&split_half);
        // SAFETY: q holds m·heads·hd, k and v m·kv_heads·hd; one thread per rotated pair.
        unsafe { l.launch(launch_1d(m * (cfg.heads + cfg.kv_heads) * hd / 2)) }?;
        let window = if local { cfg.sliding_window.unwrap_or(0) as u32 } else { 0 };
        // Few (row, head) items (a decode step): their positions split over several blocks
        // each, merged after. The split count depends on the shape only, so a captured
        // step replays at every position (the kernel divides the positions it reads).
        let items = m * cfg.heads;
        let splits = attention_splits(items);
        let mut l = st.launch_builder(&k.attention);
        l.arg(&sc.q).arg(&b.k_cache).arg(&b.v_cache).arg(&mut sc.att).arg(&mu).arg(&h).arg(&kvh).arg(&hdu).arg(self.places).arg(&cfg.attn_scale).arg(&window);
        l.arg(&mut sc.att_part);
        let cfg_att = LaunchConfig { grid_dim: (items as u32, splits as u32, 1), block_dim: (ATT_THREADS, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: one block per (row, head, split); each row's cache rows were written above;
        // a split launch writes items · splits ≤ ATT_MAX_PARTIALS partials of att_part.
        unsafe { l.launch(cfg_att) }?;
        if splits > 1 {
            let (iu, su) = (items as u32, splits as u32);
            let mut l = st.launch_builder(&k.attention_merge);
            l.arg(&sc.att_part).arg(&mut sc.att).arg(&iu).arg(&su).arg(&hdu);
            // SAFETY: att holds items · hd; the partials were written just above.
            unsafe { l.launch(LaunchConfig { grid_dim: (iu, 1, 1), block_dim: (32, 1, 1), shared_mem_bytes: 0 }) }?;
        }
        lin[O].apply(gpu, self.blas, &sc.att, m, &mut sc.o)?;
        self.all_reduce(&mut sc.o, m * d)?;
        if let Some([post_attn, _]) = &b.post_norms {
            norm_in_place(gpu, &mut sc.o, post_attn, m, d, cfg.eps)?;
        }
        norm(gpu, &mut sc.x.slice_mut(..m * d), Some(&sc.o.slice(..m * d)), &b.ffn_norm, &mut sc.h, m, d, cfg.eps)?;
        self.products(lin, &sc.h, &mut [(GATE, &mut sc.g), (UP, &mut sc.u)])?;
        if let Some(c) = cpu.as_mut() {
            c.enqueue(st, 0, &sc.h.slice(..d), &mut [(GATE, &mut sc.g), (UP, &mut sc.u)])?;
        }
        let n = (m * cfg.ffn) as u32;
        let mut l = st.launch_builder(match cfg.activation {
            Activation::Silu => &k.silu_mul,
            Activation::GeluTanh => &k.gelu_mul,
        });
        l.arg(&sc.g).arg(&sc.u).arg(&mut sc.h).arg(&n);
        // SAFETY: g, u, h hold m·ffn.
        unsafe { l.launch(launch_1d(m * cfg.ffn)) }?;
        lin[DOWN].apply(gpu, self.blas, &sc.h, m, &mut sc.o)?;
        if let Some(c) = cpu.as_mut() {
            c.enqueue(st, 1, &sc.h.slice(..cfg.ffn), &mut [(DOWN, &mut sc.o)])?;
        }
        self.all_reduce(&mut sc.o, m * d)?;
        if let Some([_, post_ffn]) = &b.post_norms {
            norm_in_place(gpu, &mut sc.o, post_ffn, m, d, cfg.eps)?;
        }
        Ok(())
    }

    /// `y = x · lin[i]ᵀ` for each `(i, y)` of `outs` (q, k and v, or gate and up, all of
    /// one width): in fused launches where the weights have them — a decode step on INT8
    /// weights, up to `abi::GGML_GEMV_BATCH` rows on GGUF blocks — else one product each.
    fn products(&self, lin: &[LinRef], x: &CudaSlice<f16>, outs: &mut [(usize, &mut CudaSlice<f16>)]) -> Result<()> {
        let (gpu, m, st) = (self.gpu, self.m, &self.gpu.stream);
        if m == 1 {
            if let Some(w) = outs.iter().map(|(i, _)| lin[*i].int8()).collect::<Option<Vec<_>>>() {
                return gpu.linear_m1_fused(x, &mut w.iter().zip(outs.iter_mut()).map(|(w, (_, y))| (w, y.slice_mut(..))).collect::<Vec<_>>(), st);
            }
        }
        if m <= crate::abi::GGML_GEMV_BATCH as usize {
            if let Some(w) = outs.iter().map(|(i, _)| lin[*i].ggml()).collect::<Option<Vec<_>>>() {
                return gpu.ggml_gemv(x, m, &mut w.iter().zip(outs.iter_mut()).map(|(w, (_, y))| (w, y.slice_mut(..))).collect::<Vec<_>>(), st);
            }
        }
        for (i, y) in outs.iter_mut() {
            lin[*i].apply(gpu, self.blas, x, m, y)?;
        }
        Ok(())
    }

    /// Sums the first `n` values of `y` over the tensor-parallel ranks (before any norm:
    /// the sum of the partial products is the whole product).
    fn all_reduce(&self, y: &mut CudaSlice<f16>, n: usize) -> Result<()> {
        match self.comm {
            Some(c) => c.all_reduce_sum(&mut y.slice_mut(..n)),
            None => Ok(()),
        }
    }
}

/// Threads of an attention block (the kernel returns without writing on any other size).
const ATT_THREADS: u32 = ATT_WARPS * 32;

/// `y[r, :] += bias` for `rows` rows of `n`.
fn add_bias(gpu: &Gpu, y: &mut CudaSlice<f16>, bias: &CudaSlice<f32>, rows: usize, n: usize) -> Result<()> {
    let (r, nu) = (rows as u32, n as u32);
    let mut l = gpu.stream.launch_builder(&gpu.kernels.add_bias);
    l.arg(y).arg(bias).arg(&r).arg(&nu);
    // SAFETY: y holds rows·n, bias n.
    unsafe { l.launch(launch_1d(rows * n)) }?;
    Ok(())
}

/// RMSNorm of `vectors` head vectors of `hd` in `x`, in place, one warp each.
fn head_norm(gpu: &Gpu, x: &mut CudaSlice<f16>, w: &CudaSlice<f32>, vectors: usize, hd: usize, eps: f32) -> Result<()> {
    let (v, hdu) = (vectors as u32, hd as u32);
    let cfg = LaunchConfig { grid_dim: (v.div_ceil(HEAD_NORM_WARPS), 1, 1), block_dim: (32 * HEAD_NORM_WARPS, 1, 1), shared_mem_bytes: 0 };
    let mut l = gpu.stream.launch_builder(&gpu.kernels.head_rmsnorm);
    l.arg(x).arg(w).arg(&v).arg(&hdu).arg(&eps);
    // SAFETY: x holds vectors·hd, w hd; whole warps per vector.
    unsafe { l.launch(cfg) }?;
    Ok(())
}

/// Head vectors per block of `head_rmsnorm_f16`: a warp each.
const HEAD_NORM_WARPS: u32 = 8;

/// `x = x / rms(x) · w` on FP16 rows in place, one block per row.
fn norm_in_place(gpu: &Gpu, x: &mut CudaSlice<f16>, w: &CudaSlice<f32>, rows: usize, d: usize, eps: f32) -> Result<()> {
    let (r, du) = (rows as u32, d as u32);
    let cfg = LaunchConfig { grid_dim: (r, 1, 1), block_dim: (NORM_THREADS, 1, 1), shared_mem_bytes: 0 };
    let mut l = gpu.stream.launch_builder(&gpu.kernels.rmsnorm_inplace);
    l.arg(x).arg(w).arg(&r).arg(&du).arg(&eps);
    // SAFETY: x holds rows·d, w d.
    unsafe { l.launch(cfg) }?;
    Ok(())
}

/// `x += add` when given, then `h = x / rms(x) · w`, for `rows` rows of `d` (one block per row).
#[allow(clippy::too_many_arguments)]
pub(super) fn norm(
    gpu: &Gpu,
    x: &mut CudaViewMut<f32>,
    add: Option<&CudaView<f16>>,
    w: &CudaSlice<f32>,
    h: &mut CudaSlice<f16>,
    rows: usize,
    d: usize,
    eps: f32,
) -> Result<()> {
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
