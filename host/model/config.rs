//! One description of a model, whatever its family: the architecture and its numbers, read
//! from the GGUF metadata a container (or GGUF, or HF checkpoint adopted by `import::hf`)
//! carries, and the tensor names. The differences between the families live here, in
//! `Family` — one place to compare them side by side — and the forwards read flags
//! (`qkv_bias`, `qk_norm`, …), never the family name.
use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// The architectures codecllm runs, as GGUF's `general.architecture` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Arch {
    /// LLaMA 1–3 and look-alikes (SmolLM2, TinyLlama).
    Llama,
    Qwen2,
    Qwen3,
    Gemma3,
}

/// Which dimensions RoPE rotates together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum RopeStyle {
    /// `(x[2i], x[2i+1])`: llama.cpp's "NORM", what LLaMA GGUFs are laid out for (the
    /// converter permutes q and k; `import::hf` does the same for HF LLaMA checkpoints).
    Adjacent,
    /// `(x[i], x[i + d/2])`: "NEOX", HF's `rotate_half`, used by Qwen and Gemma as stored.
    HalfSplit,
}

/// The gated MLP's activation: `act(gate) · up`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Activation {
    Silu,
    /// GELU, tanh approximation (HF `gelu_pytorch_tanh`, ggml's GELU).
    GeluTanh,
}

/// What makes a family what it is, side by side (llama.cpp's src/models/*.cpp).
struct Family {
    arch: Arch,
    name: &'static str,
    rope: RopeStyle,
    qkv_bias: bool,
    /// Per-head RMSNorm of q and k before RoPE (`attn_q_norm`, `attn_k_norm`).
    qk_norm: bool,
    /// RMSNorm of the attention and MLP outputs before the residual add
    /// (`post_attention_norm`, `post_ffw_norm`).
    post_norms: bool,
    activation: Activation,
    /// Embeddings multiplied by √dim.
    scale_embeddings: bool,
    /// RoPE base of sliding-window layers when the metadata names none.
    default_local_rope_base: f32,
}

const FAMILIES: [Family; 4] = [
    Family {
        arch: Arch::Llama,
        name: "llama",
        rope: RopeStyle::Adjacent,
        qkv_bias: false,
        qk_norm: false,
        post_norms: false,
        activation: Activation::Silu,
        scale_embeddings: false,
        default_local_rope_base: 0.0,
    },
    Family {
        arch: Arch::Qwen2,
        name: "qwen2",
        rope: RopeStyle::HalfSplit,
        qkv_bias: true,
        qk_norm: false,
        post_norms: false,
        activation: Activation::Silu,
        scale_embeddings: false,
        default_local_rope_base: 0.0,
    },
    Family {
        arch: Arch::Qwen3,
        name: "qwen3",
        rope: RopeStyle::HalfSplit,
        qkv_bias: false,
        qk_norm: true,
        post_norms: false,
        activation: Activation::Silu,
        scale_embeddings: false,
        default_local_rope_base: 0.0,
    },
    Family {
        arch: Arch::Gemma3,
        name: "gemma3",
        rope: RopeStyle::HalfSplit,
        qkv_bias: false,
        qk_norm: true,
        post_norms: true,
        activation: Activation::GeluTanh,
        scale_embeddings: true,
        default_local_rope_base: 10_000.0,
    },
];

/// The `general.architecture` values this build runs, for error messages.
pub fn supported_architectures() -> String {
    FAMILIES.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
}

// The checkpoint readers accept exactly the families described here.
const _: () = {
    assert!(FAMILIES.len() == crate::import::ARCHITECTURES.len());
    let mut i = 0;
    while i < FAMILIES.len() {
        assert!(crate::abi::same_name(FAMILIES[i].name, crate::import::ARCHITECTURES[i]));
        i += 1;
    }
};

/// Gemma 3's sliding-window pattern when the metadata gives none: every sixth layer
/// (5, 11, 17, …) attends globally, the others to the window (llama.cpp's default).
const DEFAULT_SWA_PERIOD: usize = 6;

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ModelConfig {
    pub arch: Arch,
    pub layers: usize,
    pub dim: usize,
    pub ffn: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// Per-head width of q, k and v (`heads · head_dim` may differ from `dim`).
    pub head_dim: usize,
    pub vocab: usize,
    pub context: usize,
    pub eps: f32,
    pub rope_style: RopeStyle,
    /// RoPE base of global-attention layers.
    pub rope_base: f32,
    /// RoPE base of sliding-window layers.
    pub rope_base_local: f32,
    /// Linear RoPE scaling of global layers (positions divided by it; 1 = none).
    pub rope_scale: f32,
    /// Keys a sliding-window layer sees: the current position and `window - 1` before it.
    pub sliding_window: Option<usize>,
    /// With a window, layer `l` is global when `l % swa_period == swa_period - 1`.
    pub swa_period: usize,
    pub qkv_bias: bool,
    pub qk_norm: bool,
    pub post_norms: bool,
    pub activation: Activation,
    /// Embedding rows are multiplied by this (Gemma: √dim).
    pub embed_scale: f32,
    /// Scale of q·k before the softmax.
    pub attn_scale: f32,
    /// `tanh(logit / c) · c` on the final logits, when set.
    pub logit_softcap: Option<f32>,
}

/// A metadata value the container or GGUF carries (`gguf.<key>`, JSON).
fn meta_value(m: &BTreeMap<String, String>, key: &str) -> Option<serde_json::Value> {
    m.get(&format!("gguf.{key}")).and_then(|v| serde_json::from_str(v).ok())
}

impl ModelConfig {
    pub fn from_metadata(m: &BTreeMap<String, String>) -> Result<Self> {
        let arch_name = meta_value(m, "general.architecture").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let family = FAMILIES
            .iter()
            .find(|f| f.name == arch_name)
            .ok_or_else(|| Error::Invalid(format!("architecture '{arch_name}' is not supported (supported: {})", supported_architectures())))?;
        let num = |k: &str| meta_value(m, &format!("{arch_name}.{k}")).and_then(|v| v.as_f64());
        let need = |k: &str| num(k).ok_or_else(|| Error::Invalid(format!("the model's metadata lacks a numeric gguf.{arch_name}.{k}")));
        let (dim, heads, layers) = (need("embedding_length")? as usize, need("attention.head_count")? as usize, need("block_count")? as usize);
        let head_dim = num("attention.key_length").map_or(dim.checked_div(heads).unwrap_or(0), |v| v as usize);
        let vocab = match num("vocab_size") {
            Some(v) => v as usize,
            None => meta_value(m, "tokenizer.ggml.tokens").and_then(|t| t.as_array().map(Vec::len)).unwrap_or(0),
        };
        let sliding_window = num("attention.sliding_window").map(|w| w as usize).filter(|&w| w > 0);
        let swa_period = num("attention.sliding_window_pattern").map_or(DEFAULT_SWA_PERIOD, |p| p as usize);
        let rope_base = num("rope.freq_base").unwrap_or(10_000.0) as f32;
        let scaling = meta_value(m, &format!("{arch_name}.rope.scaling.type")).and_then(|v| v.as_str().map(str::to_owned));
        let rope_scale = match scaling.as_deref() {
            None | Some("none") => 1.0,
            Some("linear") => num("rope.scaling.factor").unwrap_or(1.0) as f32,
            Some(other) => return Err(Error::Invalid(format!("RoPE scaling '{other}' is not supported (linear; llama3 factors come as rope_freqs.weight)"))),
        };
        let attn_scale = match num("attention.scale") {
            Some(s) => s as f32,
            // Gemma 3 27B scales by dim / heads (HF query_pre_attn_scalar = 168), the
            // others by the head width; llama.cpp tells them apart by the layer count.
            None if family.arch == Arch::Gemma3 && layers == 62 => 1.0 / ((dim / heads) as f32).sqrt(),
            None => 1.0 / (head_dim as f32).sqrt(),
        };
        let cfg = ModelConfig {
            arch: family.arch,
            layers,
            dim,
            ffn: need("feed_forward_length")? as usize,
            heads,
            kv_heads: num("attention.head_count_kv").map_or(heads, |v| v as usize),
            head_dim,
            vocab,
            context: num("context_length").unwrap_or(2048.0) as usize,
            eps: num("attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f32,
            rope_style: family.rope,
            rope_base,
            rope_base_local: num("rope.freq_base_swa")
                .map_or(if family.default_local_rope_base > 0.0 { family.default_local_rope_base } else { rope_base }, |v| v as f32),
            rope_scale,
            sliding_window,
            swa_period,
            qkv_bias: family.qkv_bias,
            qk_norm: family.qk_norm,
            post_norms: family.post_norms,
            activation: family.activation,
            embed_scale: if family.scale_embeddings { (dim as f32).sqrt() } else { 1.0 },
            attn_scale,
            logit_softcap: num("final_logit_softcapping").map(|c| c as f32).filter(|&c| c > 0.0),
        };
        if cfg.heads == 0
            || cfg.kv_heads == 0
            || !cfg.heads.is_multiple_of(cfg.kv_heads)
            || cfg.head_dim == 0
            || !cfg.head_dim.is_multiple_of(2)
            || cfg.layers == 0
            || cfg.vocab == 0
            || cfg.swa_period == 0
            || cfg.rope_scale.is_nan()
            || cfg.rope_scale <= 0.0
        {
            return Err(Error::Invalid(format!("inconsistent {arch_name} configuration: {cfg:?}")));
        }
        Ok(cfg)
    }

    /// Width of q (and of the attention output): `heads · head_dim`.
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Width of k and v.
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Whether layer `l` attends to a sliding window (and uses the local RoPE base).
    pub fn is_local(&self, l: usize) -> bool {
        self.sliding_window.is_some() && l % self.swa_period != self.swa_period - 1
    }

    /// Inverse RoPE frequency of pair `i` in layer `l`: `base^(-2i / head_dim)`, divided by
    /// the linear scale on global layers and by `factors[i]` (llama3 scaling,
    /// `rope_freqs.weight`) when given.
    pub fn rope_inv_freq(&self, l: usize, i: usize, factors: Option<&[f32]>) -> f64 {
        let (base, scale) = if self.is_local(l) { (self.rope_base_local, 1.0) } else { (self.rope_base, self.rope_scale) };
        let f = (base as f64).powf(-2.0 * i as f64 / self.head_dim as f64) / scale as f64;
        f / factors.and_then(|v| v.get(i)).map_or(1.0, |&x| x as f64)
    }
}

/// Tensor names of block `i` in llama.cpp's GGUF naming (HF checkpoints are renamed to
/// these by `import::hf`). Optional tensors are named whether or not a family has them.
pub struct BlockNames {
    pub attn_norm: String,
    pub q: String,
    pub k: String,
    pub v: String,
    pub o: String,
    pub q_bias: String,
    pub k_bias: String,
    pub v_bias: String,
    pub q_norm: String,
    pub k_norm: String,
    pub post_attn_norm: String,
    pub ffn_norm: String,
    pub gate: String,
    pub up: String,
    pub down: String,
    pub post_ffn_norm: String,
}

impl BlockNames {
    pub fn of(i: usize) -> Self {
        let w = |n: &str| format!("blk.{i}.{n}.weight");
        BlockNames {
            attn_norm: w("attn_norm"),
            q: w("attn_q"),
            k: w("attn_k"),
            v: w("attn_v"),
            o: w("attn_output"),
            q_bias: format!("blk.{i}.attn_q.bias"),
            k_bias: format!("blk.{i}.attn_k.bias"),
            v_bias: format!("blk.{i}.attn_v.bias"),
            q_norm: w("attn_q_norm"),
            k_norm: w("attn_k_norm"),
            post_attn_norm: w("post_attention_norm"),
            ffn_norm: w("ffn_norm"),
            gate: w("ffn_gate"),
            up: w("ffn_up"),
            down: w("ffn_down"),
            post_ffn_norm: w("post_ffw_norm"),
        }
    }

    /// The seven projections, in the order the forwards and the streaming units use.
    pub fn linears(&self) -> [&str; 7] {
        [&self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down]
    }
}

pub use crate::import::ROPE_FREQS;
