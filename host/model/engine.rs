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
    /// Makes room for `n` sequences generated together (each its own KV cache, all
    /// empty) and returns the positions each may fill.
    fn set_sequences(&mut self, _n: usize) -> Result<usize> {
        Err(one_at_a_time())
    }
    /// Forgets sequence `s` (its cache is free for the next prompt).
    fn reset_sequence(&mut self, _s: usize) -> Result<()> {
        Err(one_at_a_time())
    }
    /// One batch of (sequence, token) rows, each at its sequence's next position (rows of
    /// one sequence in order); the logits of the last `logit_rows` rows.
    fn forward_batch(&mut self, _rows: &[(usize, u32)], _logit_rows: usize) -> Result<Vec<Vec<f32>>> {
        Err(one_at_a_time())
    }
}

fn one_at_a_time() -> crate::error::Error {
    crate::error::Error::Invalid("this engine generates one sequence at a time (tensor parallel): batches of prompts need one GPU or the CPU".into())
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
    /// Edges of the captured decode-step graph that launch a kernel as a programmatic
    /// dependent of the one before (0: no graph, or serial launches).
    pub programmatic_edges: usize,
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
        Some(GpuReport {
            peak: self.peak_vram,
            net: self.peak_vram_net,
            allocated: self.vram_accounted,
            device_seconds: self.device_seconds,
            programmatic_edges: self.programmatic_edges(),
        })
    }
    fn cpu_share_stats(&self) -> Option<crate::stream::CpuShareStats> {
        GpuLlama::cpu_share_stats(self)
    }
    fn set_sequences(&mut self, n: usize) -> Result<usize> {
        GpuLlama::set_sequences(self, n)
    }
    fn reset_sequence(&mut self, s: usize) -> Result<()> {
        GpuLlama::reset_sequence(self, s)
    }
    fn forward_batch(&mut self, rows: &[(usize, u32)], logit_rows: usize) -> Result<Vec<Vec<f32>>> {
        GpuLlama::forward_batch(self, rows, logit_rows)
    }
}

/// The f32 CPU reference, one token at a time (its submit does the work).
pub struct CpuEngine {
    pub llm: CpuLlama,
    cache: KvCache,
    logits: Vec<f32>,
    /// The caches of `set_sequences`'s sequences.
    seqs: Vec<KvCache>,
}

impl CpuEngine {
    pub fn new(llm: CpuLlama) -> Self {
        CpuEngine { llm, cache: KvCache::default(), logits: Vec::new(), seqs: Vec::new() }
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
        self.seqs.iter_mut().for_each(|c| *c = KvCache::default());
    }
    fn set_sequences(&mut self, n: usize) -> Result<usize> {
        if n == 0 {
            return Err(crate::error::Error::Invalid("0 sequences".into()));
        }
        self.seqs = (0..n).map(|_| KvCache::default()).collect();
        Ok(self.llm.cfg.context)
    }
    fn reset_sequence(&mut self, s: usize) -> Result<()> {
        let n = self.seqs.len();
        *self.seqs.get_mut(s).ok_or_else(|| crate::error::Error::Invalid(format!("sequence {s} of {n}")))? = KvCache::default();
        Ok(())
    }
    /// Row by row, each through its sequence's cache: what a batch must equal.
    fn forward_batch(&mut self, rows: &[(usize, u32)], logit_rows: usize) -> Result<Vec<Vec<f32>>> {
        let (n, first_kept) = (self.seqs.len(), rows.len().saturating_sub(logit_rows));
        let mut out = Vec::with_capacity(logit_rows);
        for (i, &(s, id)) in rows.iter().enumerate() {
            let cache = self.seqs.get_mut(s).ok_or_else(|| crate::error::Error::Invalid(format!("sequence {s} of {n}")))?;
            let logits = self.llm.step(id, cache)?;
            if i >= first_kept {
                out.push(logits);
            }
        }
        Ok(out)
    }
}
