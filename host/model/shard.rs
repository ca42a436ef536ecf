//! Tensor parallelism over N ranks, as Megatron-LM splits a transformer: the sharding plan,
//! the view of a model's weights that one rank holds (`ShardView`, a `WeightSource`), and
//! the f32 CPU reference of the sharded forward (`ShardedCpuLlama`).
//!
//! - Column-parallel: q, k, v, gate and up split by output rows — whole heads, so
//!   attention runs on each rank's own heads — with their biases and INT8 scales.
//! - Row-parallel: o and down split by input columns; each rank's product is a partial sum
//!   of the whole output, which an all-reduce completes: two all-reduces per layer, before
//!   anything nonlinear (Gemma's post-norms) touches the output.
//! - The LM head split by vocabulary rows (a tied embedding too), the logits gathered.
//! - Replicated: norms, the per-head q/k norms (one vector shared by every head), RoPE
//!   factors and the embedding table (split by rows it would need a third all-reduce per
//!   step).
//!
//! INT8 scales follow the split exactly: per-output-channel scales split with the rows of
//! a column-parallel weight, and a row-parallel shard keeps each row's whole scale (it
//! applies to every column of the row). Scales per group of columns need group boundaries
//! at the column split, else the plan refuses the model rather than requantize.
use crate::codec::Int8Matrix;
use crate::error::{Error, Result};
use crate::import::WeightSource;
use crate::model::config::{BlockNames, ModelConfig, ROPE_FREQS};
use crate::model::llama::cpu::{act, attention, matmul, qkv_epilogue, rmsnorm_rows, tensor};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

/// The LM head every shard presents: `output.weight`'s rows, or the tied embedding's.
pub const LM_HEAD: &str = "output.weight";

/// How a tensor is cut across ranks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Split {
    /// Every rank holds all of it.
    Whole,
    /// Rank `r` holds these rows (elements of a vector).
    Rows(Range<usize>),
    /// Rank `r` holds these columns of every row.
    Cols(Range<usize>),
}

#[derive(Clone, Copy, Debug)]
enum Axis {
    Rows,
    Cols,
}

/// Which tensors split, along which axis, and into how many equal parts.
pub struct ShardPlan {
    pub ranks: usize,
    /// The whole model's configuration.
    pub cfg: ModelConfig,
    /// Split tensors: axis and the extent that axis has in the whole model.
    splits: HashMap<String, (Axis, usize)>,
}

impl ShardPlan {
    /// The plan for `ranks` ranks; an error naming the counts that work when `ranks` does
    /// not divide the heads and the FFN width evenly.
    pub fn new(cfg: &ModelConfig, ranks: usize) -> Result<Self> {
        let fits = |n: usize| n > 0 && cfg.heads.is_multiple_of(n) && cfg.kv_heads.is_multiple_of(n) && cfg.ffn.is_multiple_of(n);
        if !fits(ranks) {
            let ok: Vec<String> = (1..=cfg.kv_heads).filter(|&n| fits(n)).map(|n| n.to_string()).collect();
            return Err(Error::Invalid(format!(
                "tensor parallelism over {ranks} GPUs splits the heads and the FFN evenly, but this {:?} model has {} query heads, {} key/value \
                 heads and an FFN of {}: the GPU counts that divide them are {}",
                cfg.arch,
                cfg.heads,
                cfg.kv_heads,
                cfg.ffn,
                ok.join(" or ")
            )));
        }
        let (qd, kvd, f) = (cfg.q_dim(), cfg.kv_dim(), cfg.ffn);
        let mut splits = HashMap::new();
        for l in 0..cfg.layers {
            let n = BlockNames::of(l);
            for (name, extent) in [(&n.q, qd), (&n.q_bias, qd), (&n.k, kvd), (&n.k_bias, kvd), (&n.v, kvd), (&n.v_bias, kvd), (&n.gate, f), (&n.up, f)] {
                splits.insert(name.clone(), (Axis::Rows, extent));
            }
            splits.insert(n.o, (Axis::Cols, qd));
            splits.insert(n.down, (Axis::Cols, f));
        }
        splits.insert(LM_HEAD.into(), (Axis::Rows, cfg.vocab));
        Ok(ShardPlan { ranks, cfg: cfg.clone(), splits })
    }

    /// What rank `rank` holds of tensor `name` (named as in the shards: the LM head is
    /// always `LM_HEAD`).
    pub fn split(&self, name: &str, rank: usize) -> Split {
        match self.splits.get(name) {
            None => Split::Whole,
            Some(&(axis, extent)) => {
                let part = extent * rank / self.ranks..extent * (rank + 1) / self.ranks;
                match axis {
                    Axis::Rows => Split::Rows(part),
                    Axis::Cols => Split::Cols(part),
                }
            }
        }
    }

    /// The vocabulary rows whose logits rank `rank` computes (uneven when the vocabulary
    /// does not divide: the gather concatenates them in rank order).
    pub fn vocab_rows(&self, rank: usize) -> Range<usize> {
        self.cfg.vocab * rank / self.ranks..self.cfg.vocab * (rank + 1) / self.ranks
    }

    /// The configuration a rank's forward runs: its share of the heads and of the FFN,
    /// everything else as the whole model's.
    pub fn rank_config(&self) -> ModelConfig {
        let n = self.ranks;
        ModelConfig { heads: self.cfg.heads / n, kv_heads: self.cfg.kv_heads / n, ffn: self.cfg.ffn / n, ..self.cfg.clone() }
    }

    /// Rank `rank`'s view of `src`.
    pub fn view<'a>(&'a self, src: &'a dyn WeightSource, rank: usize) -> Result<ShardView<'a>> {
        if rank >= self.ranks {
            return Err(Error::Invalid(format!("rank {rank} of {}", self.ranks)));
        }
        let head = if src.has(LM_HEAD) { LM_HEAD } else { "token_embd.weight" };
        let metadata = self.rank_metadata(src.metadata())?;
        Ok(ShardView { src, plan: self, rank, metadata, head })
    }

    /// `m` with the head counts and FFN width of a rank, and the head width and attention
    /// scale stated explicitly: their defaults derive from the head count.
    fn rank_metadata(&self, m: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
        let arch = m.get("gguf.general.architecture").and_then(|v| serde_json::from_str::<String>(v).ok()).unwrap_or_default();
        let rc = self.rank_config();
        let mut out = m.clone();
        for (key, value) in [
            ("attention.head_count", serde_json::json!(rc.heads)),
            ("attention.head_count_kv", serde_json::json!(rc.kv_heads)),
            ("feed_forward_length", serde_json::json!(rc.ffn)),
            ("attention.key_length", serde_json::json!(rc.head_dim)),
            ("attention.scale", serde_json::json!(rc.attn_scale as f64)),
        ] {
            out.insert(format!("gguf.{arch}.{key}"), value.to_string());
        }
        let got = ModelConfig::from_metadata(&out)?;
        if got != rc {
            return Err(Error::Invalid(format!("a shard's metadata describes {got:?}, not the rank's {rc:?}")));
        }
        Ok(out)
    }
}

/// One rank's weights: each split tensor cut to the rank's part, the LM head (tied or not)
/// as `LM_HEAD` rows, everything else as the source has it. Whole tensors are read from the
/// source and cut, so every rank's INT8 values and scales are exactly the whole model's.
pub struct ShardView<'a> {
    src: &'a dyn WeightSource,
    plan: &'a ShardPlan,
    rank: usize,
    metadata: BTreeMap<String, String>,
    /// The source's tensor behind `LM_HEAD`.
    head: &'static str,
}

impl ShardView<'_> {
    fn source_name<'n>(&self, name: &'n str) -> &'n str {
        if name == LM_HEAD {
            self.head
        } else {
            name
        }
    }

    fn source_shape(&self, name: &str) -> Result<Vec<usize>> {
        self.src.shape(self.source_name(name)).ok_or_else(|| Error::Invalid(format!("no tensor named '{}'", self.source_name(name))))
    }

    /// The split of `name`, checked against the tensor's shape.
    fn checked_split(&self, name: &str) -> Result<(Split, Vec<usize>)> {
        let shape = self.source_shape(name)?;
        let split = self.plan.split(name, self.rank);
        let axis_len = match (&split, shape.as_slice()) {
            (Split::Whole, _) => return Ok((split, shape)),
            (Split::Rows(_), [n, ..]) | (Split::Cols(_), [_, n]) => *n,
            _ => 0,
        };
        let extent = self.plan.splits[name].1;
        if axis_len != extent {
            return Err(Error::Invalid(format!("tensor '{}' has shape {shape:?}; the plan splits an axis of {extent}", self.source_name(name))));
        }
        Ok((split, shape))
    }
}

impl WeightSource for ShardView<'_> {
    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    fn has(&self, name: &str) -> bool {
        name == LM_HEAD || self.src.has(name)
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let (split, mut shape) = self.checked_split(name).ok()?;
        match split {
            Split::Whole => {}
            Split::Rows(r) => shape[0] = r.len(),
            Split::Cols(c) => shape[1] = c.len(),
        }
        Some(shape)
    }

    fn f32(&self, name: &str) -> Result<Vec<f32>> {
        let (split, shape) = self.checked_split(name)?;
        let v = self.src.f32(self.source_name(name))?;
        let cols = shape.iter().skip(1).product::<usize>().max(1);
        Ok(match split {
            Split::Whole => v,
            Split::Rows(r) => v[r.start * cols..r.end * cols].to_vec(),
            Split::Cols(c) => v.chunks_exact(cols).flat_map(|row| &row[c.clone()]).copied().collect(),
        })
    }

    fn int8(&self, name: &str) -> Result<Int8Matrix> {
        let (split, _) = self.checked_split(name)?;
        let m = self.src.int8(self.source_name(name))?;
        let groups = m.groups();
        Ok(match split {
            Split::Whole => m,
            Split::Rows(r) => Int8Matrix {
                rows: r.len(),
                cols: m.cols,
                group_size: m.group_size,
                q: m.q[r.start * m.cols..r.end * m.cols].to_vec(),
                scales: m.scales[r.start * groups..r.end * groups].to_vec(),
            },
            Split::Cols(c) => {
                let q = m.q.chunks_exact(m.cols).flat_map(|row| &row[c.clone()]).copied().collect();
                if m.group_size >= m.cols {
                    // One scale per row: it applies to the shard's columns as to all others.
                    Int8Matrix { rows: m.rows, cols: c.len(), group_size: c.len(), q, scales: m.scales }
                } else if c.start.is_multiple_of(m.group_size) && (c.end.is_multiple_of(m.group_size) || c.end == m.cols) {
                    let g = c.start / m.group_size..c.end.div_ceil(m.group_size);
                    let scales = m.scales.chunks_exact(groups).flat_map(|row| &row[g.clone()]).copied().collect();
                    Int8Matrix { rows: m.rows, cols: c.len(), group_size: m.group_size, q, scales }
                } else {
                    return Err(Error::Invalid(format!(
                        "tensor '{name}': its INT8 scales cover groups of {} columns, which the split of its {} columns over {} GPUs ({} each) \
                         cuts; compress with a --group-size dividing {} (or per-channel scales)",
                        m.group_size,
                        m.cols,
                        self.plan.ranks,
                        c.len(),
                        c.len()
                    )));
                }
            }
        })
    }
}

/// One rank's share of a block (f32, as the CPU reference holds weights).
struct RankBlock {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    o: Vec<f32>,
    qkv_bias: Option<[Vec<f32>; 3]>,
    gate: Vec<f32>,
    up: Vec<f32>,
    down: Vec<f32>,
}

/// What every rank holds of a block.
struct SharedBlock {
    attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    qk_norm: Option<[Vec<f32>; 2]>,
    post_norms: Option<[Vec<f32>; 2]>,
}

/// Keys and values of past positions, per rank and layer (the rank's KV heads only).
#[derive(Default)]
pub struct ShardedKvCache {
    /// `[rank][layer]`: `[pos][rank kv_dim]` flattened.
    k: Vec<Vec<Vec<f32>>>,
    v: Vec<Vec<Vec<f32>>>,
    pub len: usize,
}

/// The f32 CPU reference of the tensor-parallel forward: each rank's products computed from
/// its own shard alone, the all-reduces as sums of the ranks' partial outputs, the logits
/// gathered from the ranks' vocabulary rows. It must match `CpuLlama` on the same weights
/// up to f32 summation order.
pub struct ShardedCpuLlama {
    pub plan: ShardPlan,
    embed: Vec<f32>,
    out_norm: Vec<f32>,
    shared: Vec<SharedBlock>,
    /// `[rank][layer]`.
    ranks: Vec<Vec<RankBlock>>,
    /// `[rank]`: the LM head's vocabulary rows.
    lm_head: Vec<Vec<f32>>,
    inv_freq: Vec<Vec<f64>>,
}

impl ShardedCpuLlama {
    pub fn load(src: &dyn WeightSource, ranks: usize) -> Result<Self> {
        let cfg = ModelConfig::from_metadata(src.metadata())?;
        let plan = ShardPlan::new(&cfg, ranks)?;
        let rc = plan.rank_config();
        let (d, hd) = (cfg.dim, cfg.head_dim);
        let shared = (0..cfg.layers)
            .map(|l| {
                let n = BlockNames::of(l);
                Ok(SharedBlock {
                    attn_norm: tensor(src, &n.attn_norm, d)?,
                    ffn_norm: tensor(src, &n.ffn_norm, d)?,
                    qk_norm: cfg.qk_norm.then(|| Ok::<_, Error>([tensor(src, &n.q_norm, hd)?, tensor(src, &n.k_norm, hd)?])).transpose()?,
                    post_norms: cfg.post_norms.then(|| Ok::<_, Error>([tensor(src, &n.post_attn_norm, d)?, tensor(src, &n.post_ffn_norm, d)?])).transpose()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let (qd, kvd, f) = (rc.q_dim(), rc.kv_dim(), rc.ffn);
        let mut rank_blocks = Vec::new();
        let mut lm_head = Vec::new();
        for r in 0..ranks {
            let view = plan.view(src, r)?;
            let blocks = (0..cfg.layers)
                .map(|l| {
                    let n = BlockNames::of(l);
                    Ok(RankBlock {
                        q: tensor(&view, &n.q, qd * d)?,
                        k: tensor(&view, &n.k, kvd * d)?,
                        v: tensor(&view, &n.v, kvd * d)?,
                        o: tensor(&view, &n.o, d * qd)?,
                        qkv_bias: cfg
                            .qkv_bias
                            .then(|| Ok::<_, Error>([tensor(&view, &n.q_bias, qd)?, tensor(&view, &n.k_bias, kvd)?, tensor(&view, &n.v_bias, kvd)?]))
                            .transpose()?,
                        gate: tensor(&view, &n.gate, f * d)?,
                        up: tensor(&view, &n.up, f * d)?,
                        down: tensor(&view, &n.down, d * f)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            rank_blocks.push(blocks);
            lm_head.push(tensor(&view, LM_HEAD, plan.vocab_rows(r).len() * d)?);
        }
        let factors = if src.has(ROPE_FREQS) { Some(tensor(src, ROPE_FREQS, hd / 2)?) } else { None };
        let inv_freq = (0..cfg.layers).map(|l| (0..hd / 2).map(|i| cfg.rope_inv_freq(l, i, factors.as_deref())).collect()).collect();
        Ok(ShardedCpuLlama {
            embed: tensor(src, "token_embd.weight", cfg.vocab * d)?,
            out_norm: tensor(src, "output_norm.weight", d)?,
            shared,
            ranks: rank_blocks,
            lm_head,
            inv_freq,
            plan,
        })
    }

    /// Feeds `tokens` at the next positions of `cache` as one batch; returns the logits of
    /// every batch row.
    pub fn forward(&self, tokens: &[u32], cache: &mut ShardedKvCache) -> Result<Vec<Vec<f32>>> {
        let cfg = &self.plan.cfg;
        let (d, m, n) = (cfg.dim, tokens.len(), self.plan.ranks);
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= cfg.vocab) {
            return Err(Error::Invalid(format!("token {bad} is outside the vocabulary of {}", cfg.vocab)));
        }
        if cache.k.is_empty() {
            cache.k = vec![vec![Vec::new(); cfg.layers]; n];
            cache.v = vec![vec![Vec::new(); cfg.layers]; n];
        }
        let mut x: Vec<f32> = tokens.iter().flat_map(|&t| self.embed[t as usize * d..(t as usize + 1) * d].iter().map(|v| v * cfg.embed_scale)).collect();
        // The all-reduce: rank partial sums added in rank order.
        let all_reduce = |parts: Vec<Vec<f32>>| {
            parts.into_iter().reduce(|mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            })
        };
        for (l, sb) in self.shared.iter().enumerate() {
            let mut h = x.clone();
            rmsnorm_rows(&mut h, &sb.attn_norm, cfg.eps);
            let parts = (0..n).map(|r| self.rank_attention(r, l, &h, m, cache)).collect();
            let mut o = all_reduce(parts).expect("one rank at least");
            if let Some([post_attn, _]) = &sb.post_norms {
                rmsnorm_rows(&mut o, post_attn, cfg.eps);
            }
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let mut h = x.clone();
            rmsnorm_rows(&mut h, &sb.ffn_norm, cfg.eps);
            let parts = self.ranks.iter().map(|blocks| {
                let b = &blocks[l];
                let (g, u) = (matmul(&h, m, &b.gate), matmul(&h, m, &b.up));
                let a: Vec<f32> = g.iter().zip(&u).map(|(&g, &u)| act(cfg.activation, g) * u).collect();
                matmul(&a, m, &b.down)
            });
            let mut down = all_reduce(parts.collect()).expect("one rank at least");
            if let Some([_, post_ffn]) = &sb.post_norms {
                rmsnorm_rows(&mut down, post_ffn, cfg.eps);
            }
            x.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
        }
        cache.len += m;
        rmsnorm_rows(&mut x, &self.out_norm, cfg.eps);
        // The gather: each row's logits are the ranks' vocabulary rows in rank order.
        let parts: Vec<Vec<f32>> = self.lm_head.iter().map(|w| matmul(&x, m, w)).collect();
        let rows = (0..m)
            .map(|i| {
                let mut row: Vec<f32> = parts
                    .iter()
                    .enumerate()
                    .flat_map(|(r, p)| {
                        let len = self.plan.vocab_rows(r).len();
                        p[i * len..(i + 1) * len].iter().copied()
                    })
                    .collect();
                if let Some(c) = cfg.logit_softcap {
                    row.iter_mut().for_each(|v| *v = (*v / c).tanh() * c);
                }
                row
            })
            .collect();
        Ok(rows)
    }

    /// Rank `r`'s attention over its heads for layer `l`: its partial sum of the o
    /// projection, `[m, dim]`.
    fn rank_attention(&self, r: usize, l: usize, h: &[f32], m: usize, cache: &mut ShardedKvCache) -> Vec<f32> {
        let (cfg, rc) = (&self.plan.cfg, self.plan.rank_config());
        let hd = cfg.head_dim;
        let (b, sb, pos0) = (&self.ranks[r][l], &self.shared[l], cache.len);
        let (mut q, mut k, mut v) = (matmul(h, m, &b.q), matmul(h, m, &b.k), matmul(h, m, &b.v));
        qkv_epilogue(&mut q, &mut k, &mut v, b.qkv_bias.as_ref(), sb.qk_norm.as_ref(), m, pos0, &self.inv_freq[l], cfg);
        cache.k[r][l].extend_from_slice(&k);
        cache.v[r][l].extend_from_slice(&v);
        let (kc, vc) = (&cache.k[r][l], &cache.v[r][l]);
        let window = if cfg.is_local(l) { cfg.sliding_window } else { None };
        // Local query head j reads local KV head j / group: the rank holds whole groups.
        let att = attention(&q, pos0, kc, vc, rc.heads, rc.kv_heads, hd, window, cfg.attn_scale);
        matmul(&att, m, &b.o)
    }
}
