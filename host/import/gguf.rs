//! GGUF v3 reader (llama.cpp's model format): metadata and the tensor directory; the
//! tensors' block types are dequantized by `ggml`.
//!
//! Hand-written: the crates that read GGUF come inside whole inference frameworks
//! (candle-core, llama-cpp bindings), far more than this file's parsing needs, and none
//! bounds-checks every count against the file the way a fuzzed parser must. Every
//! length, count and offset below is checked before it is used.
use crate::codec::ggml::GgmlType;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"GGUF";
/// Directory sizes beyond these are not LLaMA checkpoints: refuse before allocating.
const MAX_TENSORS: u64 = 1 << 20;
const MAX_KV: u64 = 1 << 20;
const MAX_DIMS: u32 = 4;

/// A metadata value.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Value {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U64(v) => Some(v),
            Value::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F64(v) => Some(v),
            Value::U64(v) => Some(v as f64),
            Value::I64(v) => Some(v as f64),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct GgufTensor {
    pub name: String,
    /// Shape in row-major order (ggml's dims reversed): `[rows, cols]` for a matrix.
    pub shape: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Byte range in the file.
    pub start: usize,
    pub end: usize,
}

impl GgufTensor {
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
}

pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<GgufTensor>,
}

/// A bounds-checked reader over the file's bytes.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn bad(&self, msg: impl Into<String>) -> Error {
        Error::input(self.path, format!("not a valid GGUF file: {} (at byte {})", msg.into(), self.pos))
    }
    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let end = (self.pos as u64)
            .checked_add(n)
            .filter(|&e| e <= self.data.len() as u64)
            .ok_or_else(|| self.bad(format!("{n} bytes past the end (truncated?)")))?;
        let s = &self.data[self.pos..end as usize];
        self.pos = end as usize;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn string(&mut self) -> Result<String> {
        let n = self.u64()?;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.bad("a string is not UTF-8"))
    }
    fn value(&mut self, ty: u32, depth: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::U64(self.take(1)?[0] as u64),
            1 => Value::I64(self.take(1)?[0] as i8 as i64),
            2 => Value::U64(u16::from_le_bytes(self.take(2)?.try_into().unwrap()) as u64),
            3 => Value::I64(i16::from_le_bytes(self.take(2)?.try_into().unwrap()) as i64),
            4 => Value::U64(self.u32()? as u64),
            5 => Value::I64(self.u32()? as i32 as i64),
            6 => Value::F64(f32::from_le_bytes(self.take(4)?.try_into().unwrap()) as f64),
            7 => Value::Bool(self.take(1)?[0] != 0),
            8 => Value::String(self.string()?),
            9 => {
                if depth > 2 {
                    return Err(self.bad("arrays nested too deeply"));
                }
                let elem = self.u32()?;
                let n = self.u64()?;
                // Every element takes at least one byte: a count beyond the rest of the
                // file is a lie, and is refused before anything is allocated.
                if n > (self.data.len() - self.pos) as u64 {
                    return Err(self.bad(format!("array of {n} elements in a {}-byte file", self.data.len())));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(elem, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(self.u64()? as i64),
            12 => Value::F64(f64::from_le_bytes(self.take(8)?.try_into().unwrap())),
            other => return Err(self.bad(format!("unknown metadata type {other}"))),
        })
    }
}

impl GgufFile {
    /// Parses the header and tensor directory of `data` (the whole file).
    pub fn parse(path: &Path, data: &[u8]) -> Result<Self> {
        let mut c = Cursor { data, pos: 0, path };
        if c.take(4).ok() != Some(&MAGIC[..]) {
            return Err(Error::input(path, "not a GGUF file (wrong magic)"));
        }
        let version = c.u32()?;
        if version != 3 {
            return Err(Error::input(path, format!("GGUF version {version} is not supported (this build reads version 3)")));
        }
        let (n_tensors, n_kv) = (c.u64()?, c.u64()?);
        if n_tensors > MAX_TENSORS || n_kv > MAX_KV {
            return Err(c.bad(format!("{n_tensors} tensors and {n_kv} metadata entries is beyond any LLaMA checkpoint")));
        }
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string()?;
            let ty = c.u32()?;
            let v = c.value(ty, 0)?;
            metadata.insert(key, v);
        }
        let alignment = metadata.get("general.alignment").and_then(Value::as_u64).unwrap_or(32);
        if alignment == 0 || alignment > 1 << 20 || !alignment.is_power_of_two() {
            return Err(c.bad(format!("alignment {alignment} is not a power of two up to 1 MiB")));
        }
        let mut infos = Vec::with_capacity(n_tensors.min(4096) as usize);
        for _ in 0..n_tensors {
            let name = c.string()?;
            let n_dims = c.u32()?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(c.bad(format!("tensor '{name}' has {n_dims} dimensions")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64()?);
            }
            let type_id = c.u32()?;
            let offset = c.u64()?;
            let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
                let supported: Vec<&str> = GgmlType::ALL.iter().map(|t| t.name()).collect();
                Error::input(path, format!("tensor '{name}' has ggml type {type_id}, which this build does not dequantize ({})", supported.join(", ")))
            })?;
            infos.push((name, dims, ggml_type, offset));
        }
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(infos.len());
        let mut names = std::collections::HashSet::new();
        for (name, dims, ggml_type, offset) in infos {
            if !names.insert(name.clone()) {
                return Err(Error::input(path, format!("tensor '{name}' appears twice")));
            }
            let numel = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).filter(|&n| n > 0 && n < 1 << 40);
            let (per_block, block_bytes) = ggml_type.block();
            // Blocks never straddle rows: ggml requires the row length (dims[0]) to be a
            // multiple of the block.
            let bytes = numel.filter(|_| dims[0] % per_block == 0).map(|n| n / per_block * block_bytes);
            let start = data_start.checked_add(offset);
            let range = bytes.zip(start).and_then(|(b, s)| Some((s, s.checked_add(b)?))).filter(|&(_, e)| e <= data.len() as u64);
            let Some((start, end)) = range else {
                return Err(Error::input(path, format!("tensor '{name}' ({dims:?}, {ggml_type:?}) does not fit in the file (truncated?)")));
            };
            tensors.push(GgufTensor { name, shape: dims.iter().rev().copied().collect(), ggml_type, start: start as usize, end: end as usize });
        }
        Ok(GgufFile { path: path.to_owned(), version, metadata, tensors })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }
}
