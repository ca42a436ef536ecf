//! Source checkpoints: safetensors files, single or sharded (`*.safetensors.index.json`),
//! memory-mapped and parsed by the `safetensors` crate; and GGUF files (`gguf`), whose
//! quantized tensors are presented dequantized (F16; F32 and BF16 tensors as they are).
//! A tensor is presented through a `View`: its bytes as stored, or transformed on access
//! (dequantized, rows regrouped, norms shifted, or made by the importer).
use super::gguf::GgufFile;
use crate::codec::ggml::{dequantize, GgmlType};
use crate::container::DType;
use crate::error::{Error, Result};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

pub struct SourceTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
    file: usize,
    /// Byte range in the mapped file.
    start: usize,
    end: usize,
    view: View,
}

/// How a tensor's stored bytes become the values it presents.
#[derive(Clone, Debug)]
pub(crate) enum View {
    /// As stored, in `dtype`.
    Stored,
    /// GGUF blocks of this type, dequantized (and presented as `dtype`).
    Ggml(GgmlType),
    /// Rows regrouped per head (`hf::permute_rows`), for HF LLaMA q/k weights.
    RopeRows(usize),
    /// Every value (stored as this type) plus one, presented as F32: Gemma's RMSNorm
    /// weights (HF stores `w` for `x · (1 + w)`, GGUF stores `1 + w`).
    PlusOne(DType),
    /// Values the importer computed (llama3 RoPE factors), as F32 bytes.
    Made(Vec<u8>),
}

impl SourceTensor {
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
    /// Bytes of the tensor as presented (`dtype`), i.e. after any transformation.
    pub fn byte_len(&self) -> u64 {
        match &self.view {
            View::Stored | View::RopeRows(_) => (self.end - self.start) as u64,
            View::Made(b) => b.len() as u64,
            View::Ggml(_) | View::PlusOne(_) => self.numel() * self.dtype.size(),
        }
    }
}

/// An opened checkpoint. Tensors keep their on-disk order within each shard.
pub struct SourceModel {
    pub path: PathBuf,
    files: Vec<(PathBuf, Mmap)>,
    pub tensors: Vec<SourceTensor>,
    /// Model metadata to carry into the container (GGUF: config, tokenizer, chat template),
    /// each value as JSON.
    pub metadata: BTreeMap<String, String>,
}

fn dtype_of(path: &Path, name: &str, d: Dtype) -> Result<DType> {
    Ok(match d {
        Dtype::F64 => DType::F64,
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::I64 => DType::I64,
        Dtype::I32 => DType::I32,
        Dtype::I16 => DType::I16,
        Dtype::I8 => DType::I8,
        Dtype::U8 => DType::U8,
        Dtype::BOOL => DType::BOOL,
        other => return Err(Error::input(path, format!("tensor '{name}' has unsupported dtype {other:?}"))),
    })
}

impl SourceModel {
    /// Opens `path`: a `.safetensors` file or a sharded checkpoint's `.index.json`.
    pub fn open(path: &Path) -> Result<Self> {
        let mut model = SourceModel { path: path.to_owned(), files: Vec::new(), tensors: Vec::new(), metadata: BTreeMap::new() };
        if path.to_string_lossy().ends_with(".gguf") {
            model.add_gguf(path)?;
        } else if path.to_string_lossy().ends_with(".json") {
            let shards = shard_files(path)?;
            let mut seen = HashSet::new();
            for (shard, names) in shards {
                let first = model.tensors.len();
                model.add_file(&shard)?;
                for t in &model.tensors[first..] {
                    if !seen.insert(t.name.clone()) {
                        return Err(Error::input(&shard, format!("tensor '{}' appears in more than one shard", t.name)));
                    }
                }
                if let Some(missing) = names.iter().find(|n| !model.tensors[first..].iter().any(|t| &&t.name == n)) {
                    return Err(Error::input(path, format!("the index puts tensor '{missing}' in {}, which lacks it", shard.display())));
                }
            }
        } else {
            model.add_file(path)?;
        }
        super::hf::adopt(&mut model)?;
        Ok(model)
    }

    fn map(path: &Path) -> Result<Mmap> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: read-only map of a checkpoint we do not modify; a concurrent writer
        // truncating it is outside what we defend against.
        unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))
    }

    fn add_gguf(&mut self, path: &Path) -> Result<()> {
        let map = Self::map(path)?;
        let g = GgufFile::parse(path, &map)?;
        let arch = g.get("general.architecture").and_then(|v| v.as_str()).unwrap_or("");
        if !super::ARCHITECTURES.contains(&arch) {
            return Err(Error::input(path, format!("architecture '{arch}' is not supported (supported: {})", super::ARCHITECTURES.join(", "))));
        }
        for (k, v) in &g.metadata {
            self.metadata.insert(format!("gguf.{k}"), serde_json::to_string(v).expect("metadata serializes"));
        }
        for t in g.tensors {
            // F32 and BF16 as they are (F16 would lose BF16's range); every other block type
            // dequantized and presented as F16, the precision its values were stored at.
            let dtype = match t.ggml_type {
                GgmlType::F32 => DType::F32,
                GgmlType::BF16 => DType::BF16,
                _ => DType::F16,
            };
            self.tensors.push(SourceTensor { name: t.name, dtype, shape: t.shape, file: 0, start: t.start, end: t.end, view: View::Ggml(t.ggml_type) });
        }
        self.files.push((path.to_owned(), map));
        Ok(())
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
        let map = Self::map(path)?;
        let (header_len, meta) = SafeTensors::read_metadata(&map).map_err(|e| Error::input(path, format!("not a valid safetensors file: {e:?}")))?;
        let data_start = 8 + header_len;
        let mut entries: Vec<_> = meta.tensors().into_iter().collect();
        entries.sort_by_key(|(_, info)| info.data_offsets.0);
        let file_idx = self.files.len();
        for (name, info) in entries {
            self.tensors.push(SourceTensor {
                dtype: dtype_of(path, &name, info.dtype)?,
                shape: info.shape.iter().map(|&d| d as u64).collect(),
                file: file_idx,
                start: data_start + info.data_offsets.0,
                end: data_start + info.data_offsets.1,
                view: View::Stored,
                name,
            });
        }
        self.files.push((path.to_owned(), map));
        Ok(())
    }

    /// A GGUF tensor's quantized blocks as stored (not F32/F16/BF16 ones, which are plain
    /// values): what `compress --keep-quant` stores verbatim.
    pub fn ggml_blocks<'a>(&'a self, t: &'a SourceTensor) -> Option<(GgmlType, &'a [u8])> {
        match t.view {
            View::Ggml(ty) if !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) => Some((ty, &self.files[t.file].1[t.start..t.end])),
            _ => None,
        }
    }

    pub fn tensor(&self, name: &str) -> Option<&SourceTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    pub fn total_bytes(&self) -> u64 {
        self.tensors.iter().map(SourceTensor::byte_len).sum()
    }

    /// The tensor's bytes in its `dtype` (little-endian), as presented.
    pub fn bytes<'a>(&'a self, t: &'a SourceTensor) -> Cow<'a, [u8]> {
        let raw = &self.files[t.file].1[t.start..t.end];
        match &t.view {
            View::Stored => Cow::Borrowed(raw),
            View::RopeRows(_) => Cow::Owned(self.permuted(t, raw)),
            View::Made(b) => Cow::Borrowed(b),
            View::Ggml(_) | View::PlusOne(_) => {
                let v = self.to_f32(t);
                Cow::Owned(match t.dtype {
                    DType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    // Exact: BF16 values widened to f32 and back.
                    DType::BF16 => v.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect(),
                    _ => v.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect(),
                })
            }
        }
    }

    /// A floating-point tensor widened to f32.
    pub fn to_f32(&self, t: &SourceTensor) -> Vec<f32> {
        let raw = &self.files[t.file].1[t.start..t.end];
        let widen = |dtype: DType, b: &[u8]| dtype.widen(b).unwrap_or_else(|| panic!("to_f32 on a {dtype:?} tensor: callers check is_float first"));
        match &t.view {
            View::Ggml(ty) => {
                let mut v = Vec::new();
                dequantize(*ty, raw, &mut v);
                if t.dtype == DType::F16 {
                    // Presented as F16: round here too, so to_f32 agrees with bytes().
                    v.iter_mut().for_each(|x| *x = half::f16::from_f32(*x).to_f32());
                }
                v
            }
            View::Stored => widen(t.dtype, raw),
            View::RopeRows(_) => widen(t.dtype, &self.permuted(t, raw)),
            View::Made(b) => widen(t.dtype, b),
            View::PlusOne(stored) => {
                let mut v = widen(*stored, raw);
                v.iter_mut().for_each(|x| *x += 1.0);
                v
            }
        }
    }
}

impl SourceModel {
    /// Renames a tensor and sets how it is presented (HF import).
    pub(crate) fn adopt(&mut self, index: usize, name: String, view: View) {
        let t = &mut self.tensors[index];
        if matches!(view, View::PlusOne(_)) {
            t.dtype = DType::F32;
        }
        t.name = name;
        t.view = view;
    }

    /// Adds a tensor the importer computed, as F32.
    pub(crate) fn add_made(&mut self, name: &str, shape: Vec<u64>, values: &[f32]) {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensors.push(SourceTensor { name: name.to_owned(), dtype: DType::F32, shape, file: 0, start: 0, end: 0, view: View::Made(bytes) });
    }

    fn permuted(&self, t: &SourceTensor, raw: &[u8]) -> Vec<u8> {
        let row_bytes = (t.shape.get(1).copied().unwrap_or(1) * t.dtype.size()) as usize;
        let heads = if let View::RopeRows(h) = t.view { h } else { 1 };
        super::hf::permute_rows(raw, row_bytes, heads)
    }
}

/// Shard files named by a `*.safetensors.index.json`, each with the tensors it should hold.
fn shard_files(index: &Path) -> Result<BTreeMap<PathBuf, Vec<String>>> {
    #[derive(serde::Deserialize)]
    struct ShardIndex {
        weight_map: BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let parsed: ShardIndex = serde_json::from_str(&text).map_err(|e| Error::input(index, format!("not a safetensors shard index: {e}")))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut shards: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    for (name, file) in parsed.weight_map {
        if file.contains('/') || file.contains('\\') || file.starts_with('.') {
            return Err(Error::input(index, format!("shard name '{file}' must be a plain file name")));
        }
        shards.entry(dir.join(file)).or_default().push(name);
    }
    if shards.is_empty() {
        return Err(Error::input(index, "the shard index lists no tensors"));
    }
    Ok(shards)
}
