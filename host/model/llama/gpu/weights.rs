//! Where a block's linear weights live in each weight mode, and how a product is computed
//! from them (cuBLAS FP16, or codecllm's fused INT8 kernels).
use crate::container::{Codec, Encoding};
use crate::error::{Error, Result};
use crate::gpu::{
    cublas_fp16_linear, ggml_planes, native_blocks, Decoder, DeviceCompressedGroup, DeviceCompressedTensor, DeviceInt8Buffer, GgmlWeights, Gpu, Int8Weights,
    WeightsView,
};
use crate::import::WeightSource;
use crate::stream::{CpuShare, WeightStream};
use cudarc::cublas::CudaBlas;
use cudarc::driver::CudaSlice;
use half::f16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum WeightMode {
    /// FP16 weights resident: an FP16 GEMV for batches up to 8 rows, cuBLAS beyond (the
    /// baseline).
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
    /// Under a VRAM budget: as many blocks (and the LM head) INT8-resident as fit, the rest
    /// streamed (`model::placement`).
    #[value(name = "hybrid")]
    Hybrid,
}

impl WeightMode {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            WeightMode::Fp16Resident => "fp16-resident",
            WeightMode::Int8Resident => "int8-resident",
            WeightMode::CompressedResident => "compressed-resident",
            WeightMode::Stream => "stream",
            WeightMode::Hybrid => "hybrid",
        }
    }
}

pub(super) enum Linear {
    Fp16 {
        w: CudaSlice<f16>,
        rows: usize,
        cols: usize,
    },
    Int8 {
        q: CudaSlice<u8>,
        s: CudaSlice<f32>,
        rows: usize,
        cols: usize,
        group: usize,
    },
    /// GGUF blocks as the source stores them, in the kernels' planes (`gpu::GgmlWeights`).
    Ggml {
        planes: CudaSlice<u8>,
        layout: usize,
        rows: usize,
        cols: usize,
    },
}

/// Where a resident load's seconds went (the rest: the GPU-side decode of ANS and rANS
/// tensors, norms, tables, allocation).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct LoadTimes {
    /// Reading and decoding weights on the CPU (INT8 values and scales, FP16 values).
    pub decode_s: f64,
    /// Copying them to the device (for chunks the GPU decodes: reading, checking and
    /// copying the stored chunks).
    pub upload_s: f64,
}

impl LoadTimes {
    /// `f`'s result, its seconds added to `decode_s`.
    pub(super) fn decode<T>(&mut self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        timed(&mut self.decode_s, f)
    }

    /// `f`'s result, its seconds added to `upload_s`.
    pub(super) fn upload<T>(&mut self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        timed(&mut self.upload_s, f)
    }
}

fn timed<T>(seconds: &mut f64, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = std::time::Instant::now();
    let r = f();
    *seconds += t.elapsed().as_secs_f64();
    r
}

impl Linear {
    pub(super) fn load(gpu: &Gpu, src: &dyn WeightSource, name: &str, mode: WeightMode, times: &mut LoadTimes) -> Result<Self> {
        let st = &gpu.stream;
        Ok(match mode {
            WeightMode::CompressedResident | WeightMode::Stream | WeightMode::Hybrid => {
                return Err(Error::Invalid(format!("{mode:?} weights come from a container: use load_compressed / load_streamed")))
            }
            _ if decode_on_gpu(src, name) => {
                let c = src.container().expect("decode_on_gpu implies a container");
                let t = times.upload(|| DeviceCompressedTensor::upload(gpu, c, name))?;
                let mut decoder = Decoder::new(gpu, &[&t.table])?;
                let mut q = DeviceInt8Buffer::new(gpu, t.len())?;
                t.decode_into(&mut decoder, &mut q, st)?;
                decoder.check(st)?;
                let (rows, cols, group) = (t.rows, t.cols, t.group_size);
                let s = st.clone_dtod(t.table.scales())?;
                if mode == WeightMode::Fp16Resident {
                    let mut w = st.alloc_zeros::<f16>(rows * cols)?;
                    gpu.dequantize(
                        &Int8Weights { q: q.data.slice(..rows * cols), scales: s.slice(..), rows, cols, group_size: group },
                        &mut w.slice_mut(..),
                        st,
                    )?;
                    Linear::Fp16 { w, rows, cols }
                } else {
                    Linear::Int8 { q: q.data, s, rows, cols, group }
                }
            }
            WeightMode::Fp16Resident => {
                let shape = src.shape(name).ok_or_else(|| Error::Invalid(format!("no tensor named '{name}'")))?;
                let [rows, cols] = shape[..] else { return Err(Error::Invalid(format!("tensor '{name}' is not a matrix"))) };
                let w = times.decode(|| f16_values(src, name))?;
                Linear::Fp16 { w: times.upload(|| Ok(st.clone_htod(&w)?))?, rows, cols }
            }
            WeightMode::Int8Resident => match native_blocks(src, name) {
                Some((layout, rows, cols)) => {
                    let planes = times.decode(|| ggml_planes(layout, &src.ggml_bytes(name)?))?;
                    Linear::Ggml { planes: times.upload(|| Ok(st.clone_htod(&planes)?))?, layout, rows, cols }
                }
                None => {
                    let m = times.decode(|| src.int8(name))?;
                    let (q, s) = times.upload(|| Ok((st.clone_htod(bytemuck::cast_slice::<i8, u8>(&m.q))?, st.clone_htod(&m.scales)?)))?;
                    Linear::Int8 { q, s, rows: m.rows, cols: m.cols, group: m.group_size }
                }
            },
        })
    }

    pub(super) fn bytes(&self) -> usize {
        match self {
            Linear::Fp16 { w, .. } => 2 * w.len(),
            Linear::Int8 { q, s, .. } => q.len() + 4 * s.len(),
            Linear::Ggml { planes, .. } => planes.len(),
        }
    }

    /// `y[m, rows] = x[m, cols] · Wᵀ`.
    pub(super) fn apply(&self, gpu: &Gpu, blas: Option<&CudaBlas>, x: &CudaSlice<f16>, m: usize, y: &mut CudaSlice<f16>) -> Result<()> {
        match self {
            // One row only: on the H200 (bench kernels, 2026-12-02) the FP16 GEMV is 1.28x
            // cuBLAS at 4096x4096 and 0.98x at 14336x4096 for M = 1, but 0.40-0.71x at M = 4-8.
            Linear::Fp16 { w, rows, cols } if m == 1 => gpu.fp16_gemv(x, w, *rows, *cols, y, &gpu.stream),
            Linear::Fp16 { w, rows, cols } => {
                let blas = blas.expect("FP16 weights exist only in the FP16 mode, which creates cuBLAS");
                cublas_fp16_linear(blas, w, x, y, m, *rows, *cols)
            }
            Linear::Int8 { q, s, rows, cols, group } => {
                let w = Int8Weights { q: q.slice(..), scales: s.slice(..), rows: *rows, cols: *cols, group_size: *group };
                gpu.linear(x, m, &w, y, &gpu.stream)
            }
            Linear::Ggml { planes, layout, rows, cols } => {
                let w = GgmlWeights { layout: *layout, planes: planes.slice(..), rows: *rows, cols: *cols };
                gpu.ggml_linear(x, m, &w, y, &gpu.stream)
            }
        }
    }
}

/// Indices of the seven projections in `BlockNames::linears` order.
pub(super) const Q: usize = 0;
pub(super) const K: usize = 1;
pub(super) const V: usize = 2;
pub(super) const O: usize = 3;
pub(super) const GATE: usize = 4;
pub(super) const UP: usize = 5;
pub(super) const DOWN: usize = 6;

/// Whether tensor `name` of `src` is loaded by uploading its stored chunks and decoding
/// them on the GPU, once: ANS chunks have no CPU decoder, and rANS chunks decode at
/// 230–434 GB/s in our kernel on H200 against 0.24 GB/s a core on the CPU (BENCHMARKS.md,
/// `bench compress`), so the CPU would be most of an 8B model's load.
pub(super) fn decode_on_gpu(src: &dyn WeightSource, name: &str) -> bool {
    // INT8 only: GGUF blocks kept as stored decode on the CPU into the kernels' planes.
    src.container()
        .and_then(|c| c.tensor(name))
        .is_some_and(|t| matches!(t.encoding, Encoding::Int8 { .. }) && matches!(t.data.codec, Codec::Ans | Codec::Rans))
}

/// Where the blocks' linear weights live.
pub(super) enum Weights<'g> {
    Resident(Vec<Vec<Linear>>),
    Compressed {
        layers: Vec<DeviceCompressedGroup>,
        decoder: Box<Decoder>,
        buf: CudaSlice<u8>,
    },
    /// Blocks `0..resident.len()` resident (hybrid placement; none when all stream), the
    /// others and, unless it is resident, the LM head streamed.
    Streamed {
        /// The CPU's rows of units the store split (`UnitPart::cpu`). First, so that it is
        /// dropped first: its drop waits for host functions that read the store's rows.
        cpu: Option<CpuShare>,
        resident: Vec<Vec<Linear>>,
        ws: Box<WeightStream<'g>>,
    },
}

/// A linear's weights for one use: owned resident ones, or views of decoded or streamed
/// bytes.
pub(super) enum LinRef<'a> {
    Owned(&'a Linear),
    View(&'a WeightsView<'a>),
}

impl LinRef<'_> {
    /// The INT8 weights, when they are INT8.
    pub(super) fn int8(&self) -> Option<Int8Weights<'_>> {
        match self {
            LinRef::Owned(Linear::Int8 { q, s, rows, cols, group }) => {
                Some(Int8Weights { q: q.slice(..), scales: s.slice(..), rows: *rows, cols: *cols, group_size: *group })
            }
            LinRef::Owned(Linear::Fp16 { .. } | Linear::Ggml { .. }) => None,
            LinRef::View(v) => {
                v.int8().map(|w| Int8Weights { q: w.q.slice(..), scales: w.scales.slice(..), rows: w.rows, cols: w.cols, group_size: w.group_size })
            }
        }
    }

    /// The GGUF blocks, when they are GGUF blocks.
    pub(super) fn ggml(&self) -> Option<GgmlWeights<'_>> {
        match self {
            LinRef::Owned(Linear::Ggml { planes, layout, rows, cols }) => {
                Some(GgmlWeights { layout: *layout, planes: planes.slice(..), rows: *rows, cols: *cols })
            }
            LinRef::Owned(Linear::Fp16 { .. } | Linear::Int8 { .. }) | LinRef::View(WeightsView::Int8(_)) => None,
            LinRef::View(WeightsView::Ggml(w)) => Some(GgmlWeights { layout: w.layout, planes: w.planes.slice(..), rows: w.rows, cols: w.cols }),
        }
    }

    pub(super) fn apply(&self, gpu: &Gpu, blas: Option<&CudaBlas>, x: &CudaSlice<f16>, m: usize, y: &mut CudaSlice<f16>) -> Result<()> {
        match self {
            LinRef::Owned(l) => l.apply(gpu, blas, x, m, y),
            LinRef::View(w) => gpu.linear_view(x, m, w, y, &gpu.stream),
        }
    }
}

/// A tensor's values as FP16: from a container without an f32 round trip where it stores
/// FP16 (`codec::decode_f16`), else widened and rounded once, in parallel.
pub(super) fn f16_values(src: &dyn WeightSource, name: &str) -> Result<Vec<f16>> {
    use rayon::prelude::*;
    match src.container() {
        Some(c) => crate::codec::decode_f16(c, name),
        None => Ok(src.f32(name)?.into_par_iter().map(f16::from_f32).collect()),
    }
}

/// The output projection: `output.weight`, or the token embedding where they are tied.
pub(super) fn lm_head_name(src: &dyn WeightSource) -> &'static str {
    if src.has("output.weight") {
        "output.weight"
    } else {
        EMBEDDING
    }
}

/// The token embedding: on the device, or (streaming) in host RAM, rows gathered per step.
pub(super) enum Embedding {
    Device(CudaSlice<f16>),
    Host(Vec<f32>),
}

const EMBEDDING: &str = "token_embd.weight";

impl Embedding {
    /// The FP16 table in VRAM.
    pub(super) fn device(gpu: &Gpu, src: &dyn WeightSource, times: &mut LoadTimes) -> Result<Self> {
        let table = times.decode(|| f16_values(src, EMBEDDING))?;
        Ok(Embedding::Device(times.upload(|| Ok(gpu.stream.clone_htod(&table)?))?))
    }

    /// In host RAM as f32, FP16-rounded like the device table of the other modes, so all
    /// INT8 modes agree bit for bit.
    pub(super) fn host(src: &dyn WeightSource, times: &mut LoadTimes) -> Result<Self> {
        use rayon::prelude::*;
        Ok(Embedding::Host(times.decode(|| Ok(f16_values(src, EMBEDDING)?.into_par_iter().map(f16::to_f32).collect()))?))
    }
}
