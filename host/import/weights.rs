//! `WeightSource`: where a model's weights come from — a container (INT8 as stored) or
//! the source checkpoint (the original values) — as every model forward reads them.
use super::SourceModel;
use crate::codec::ggml::GgmlType;
use crate::codec::{decode_bytes, decode_f32, decode_int8, ggml_blocks, Int8Matrix};
use crate::container::{Container, Encoding};
use crate::error::{Error, Result};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Where a model's weights come from: a container (INT8 as stored) or the source
/// checkpoint (the original values: the FP16 baseline; INT8 quantized on the fly).
pub trait WeightSource: Sync {
    fn metadata(&self) -> &BTreeMap<String, String>;
    fn has(&self, name: &str) -> bool;
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    fn f32(&self, name: &str) -> Result<Vec<f32>>;
    fn int8(&self, name: &str) -> Result<Int8Matrix>;
    /// The container behind this source, if any (its GPU-only codecs decode on the GPU).
    fn container(&self) -> Option<&Container> {
        None
    }
    /// The GGUF block type of tensor `name` when it is held as quantized blocks (a GGUF
    /// source, or a container made with `--keep-quant`).
    fn ggml_type(&self, _name: &str) -> Option<GgmlType> {
        None
    }
    /// Those blocks as stored (a container's checksums verified).
    fn ggml_bytes(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        Err(Error::Invalid(format!("tensor '{name}' is not held as GGUF blocks")))
    }
}

impl WeightSource for Container {
    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.index.metadata
    }
    fn has(&self, name: &str) -> bool {
        self.tensor(name).is_some()
    }
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensor(name).map(|t| t.shape.iter().map(|&d| d as usize).collect())
    }
    fn f32(&self, name: &str) -> Result<Vec<f32>> {
        decode_f32(self, name)
    }
    fn int8(&self, name: &str) -> Result<Int8Matrix> {
        if let Some(Encoding::Int8 { .. }) = self.tensor(name).map(|t| &t.encoding) {
            return decode_int8(self, name);
        }
        quantize_2d(self, name)
    }
    fn container(&self) -> Option<&Container> {
        Some(self)
    }
    fn ggml_type(&self, name: &str) -> Option<GgmlType> {
        match self.tensor(name)?.encoding {
            Encoding::Ggml { ggml_type, .. } => GgmlType::from_id(ggml_type),
            _ => None,
        }
    }
    fn ggml_bytes(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        let t = self.tensor(name).ok_or_else(|| Error::format(self.path(), format!("no tensor named '{name}'")))?;
        let Encoding::Ggml { ggml_type, block_elems, block_bytes } = t.encoding else {
            return Err(Error::format(self.path(), format!("tensor '{name}' is not stored as GGUF blocks")));
        };
        let ty = ggml_blocks(self, name, ggml_type, block_elems, block_bytes)?;
        let bytes = decode_bytes(self, name)?;
        let (elems, size) = ty.block();
        if bytes.len() as u64 != t.numel() / elems * size || t.numel() % elems != 0 {
            return Err(Error::format(self.path(), format!("tensor '{name}': {} bytes of {ty} blocks for {} values", bytes.len(), t.numel())));
        }
        Ok(Cow::Owned(bytes))
    }
}

impl WeightSource for SourceModel {
    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
    fn has(&self, name: &str) -> bool {
        self.tensor(name).is_some()
    }
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensor(name).map(|t| t.shape.iter().map(|&d| d as usize).collect())
    }
    fn f32(&self, name: &str) -> Result<Vec<f32>> {
        let t = self.tensor(name).ok_or_else(|| Error::input(&self.path, format!("no tensor named '{name}'")))?;
        if !t.dtype.is_float() {
            return Err(Error::input(&self.path, format!("tensor '{name}' is not floating point")));
        }
        Ok(self.to_f32(t))
    }
    fn int8(&self, name: &str) -> Result<Int8Matrix> {
        quantize_2d(self, name)
    }
    fn ggml_type(&self, name: &str) -> Option<GgmlType> {
        self.ggml_blocks(self.tensor(name)?).map(|(ty, _)| ty)
    }
    fn ggml_bytes(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        let t = self.tensor(name).ok_or_else(|| Error::input(&self.path, format!("no tensor named '{name}'")))?;
        let (_, bytes) = self.ggml_blocks(t).ok_or_else(|| Error::input(&self.path, format!("tensor '{name}' is not GGUF blocks")))?;
        Ok(Cow::Borrowed(bytes))
    }
}

/// Columns per scale when a tensor is quantized at load time (not stored as INT8, e.g. a
/// tied embedding used as the LM head, or any weight of a GGUF source): 32, GGUF's block
/// size, so the INT8 grid follows the source's own quantization blocks.
pub const LOAD_TIME_GROUP: usize = 32;

/// INT8 of a 2-D tensor that is not stored as INT8 (per group of `LOAD_TIME_GROUP`, or
/// per row when the row length is not a multiple of it).
fn quantize_2d(src: &dyn WeightSource, name: &str) -> Result<Int8Matrix> {
    let Some([rows, cols]) = src.shape(name).as_deref().and_then(|s| <[usize; 2]>::try_from(s).ok()) else {
        return Err(Error::Invalid(format!("tensor '{name}' is not a matrix")));
    };
    let group = if cols % LOAD_TIME_GROUP == 0 && cols > LOAD_TIME_GROUP { LOAD_TIME_GROUP } else { cols };
    let w = src.f32(name)?;
    Int8Matrix::quantize(&w, rows, cols, group).map(|(m, _)| m).map_err(|e| Error::Invalid(format!("tensor '{name}': {e}")))
}
