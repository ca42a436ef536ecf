//! `Engine`: what a generation loop drives. A forward is submitted, then finished, so that
//! the host prints the previous token while a GPU computes the next one.
use super::llama::{CpuLlama, GpuLlama, KvCache};
use crate::error::Result;

pub trait Engine {
    fn submit(&mut self, ids: &[u32]) -> Result<()>;
    fn finish(&mut self) -> Result<Vec<f32>>;
    /// Forgets the context (the next submit starts at position 0).
    fn reset(&mut self);
    /// VRAM and device time of a GPU model.
    fn gpu_report(&self) -> Option<GpuReport> {
        None
    }
    /// What the CPU share of streamed layers did so far (a GPU model that has one).
    fn cpu_share_stats(&self) -> Option<crate::stream::CpuShareStats> {
        None
    }
}

/// What a GPU model reports after generating.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct GpuReport {
    /// Peak VRAM measured above the level before loading.
    pub peak: usize,
    /// The same without the driver pool's unallocated reserve.
    pub net: usize,
    /// VRAM the model allocated.
    pub allocated: usize,
    /// Device seconds spent in forwards.
    pub device_seconds: f64,
}

impl Engine for GpuLlama<'_> {
    fn submit(&mut self, ids: &[u32]) -> Result<()> {
        GpuLlama::submit(self, ids)
    }
    fn finish(&mut self) -> Result<Vec<f32>> {
        GpuLlama::finish(self)
    }
    fn reset(&mut self) {
        GpuLlama::reset(self)
    }
    fn gpu_report(&self) -> Option<GpuReport> {
        Some(GpuReport { peak: self.peak_vram, net: self.peak_vram_net, allocated: self.vram_accounted, device_seconds: self.device_seconds })
    }
    fn cpu_share_stats(&self) -> Option<crate::stream::CpuShareStats> {
        GpuLlama::cpu_share_stats(self)
    }
}

/// The f32 CPU reference, one token at a time (its submit does the work).
pub struct CpuEngine {
    pub llm: CpuLlama,
    cache: KvCache,
    logits: Vec<f32>,
}

impl CpuEngine {
    pub fn new(llm: CpuLlama) -> Self {
        CpuEngine { llm, cache: KvCache::default(), logits: Vec::new() }
    }
}

impl Engine for CpuEngine {
    fn submit(&mut self, ids: &[u32]) -> Result<()> {
        for &id in ids {
            self.logits = self.llm.step(id, &mut self.cache)?;
        }
        Ok(())
    }
    fn finish(&mut self) -> Result<Vec<f32>> {
        Ok(std::mem::take(&mut self.logits))
    }
    fn reset(&mut self) {
        self.cache = KvCache::default();
        self.logits.clear();
    }
}
