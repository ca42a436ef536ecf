//! The tensor-parallel forward over N GPUs of one process (the plan: `model::shard`). Rank
//! `r` is a `GpuLlama` loaded from `ShardView` r — its heads, its FFN columns, its
//! vocabulary rows — whose blocks all-reduce the row-parallel o and down products through
//! its NCCL communicator; the host gathers the ranks' logits in rank order.
//!
//! A forward runs one host thread per rank (`gpu::nccl` says why), each submitting its
//! rank's step as one GPU alone would. Decode steps launch their kernels one by one rather
//! than replaying a CUDA graph: NCCL collectives captured into each rank's graph, and a
//! rank whose capture fails while another's succeeds, are not yet tried on a multi-GPU
//! machine, and a mismatch between ranks would hang rather than fail.
use super::{GpuLlama, WeightMode};
use crate::error::{Error, Result};
use crate::gpu::nccl::{self, Communicator};
use crate::gpu::Gpu;
use crate::import::WeightSource;
use crate::model::config::ModelConfig;
use crate::model::engine::{Engine, GpuReport};
use crate::model::shard::ShardPlan;

pub struct TpLlama<'g> {
    /// Rank `r` runs on `gpus[r]` of `load`.
    pub ranks: Vec<GpuLlama<'g>>,
    /// The whole model's configuration.
    pub cfg: ModelConfig,
}

/// The thread's result, its panic carried on.
fn joined<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

impl<'g> TpLlama<'g> {
    /// `src` sharded over `gpus` (rank `r` on `gpus[r]`), weights INT8- or FP16-resident,
    /// batches up to `max_m` tokens, contexts up to `max_context` positions.
    pub fn load(gpus: &'g [Gpu], src: &dyn WeightSource, mode: WeightMode, max_m: usize, max_context: usize) -> Result<Self> {
        if !matches!(mode, WeightMode::Int8Resident | WeightMode::Fp16Resident) {
            return Err(Error::Invalid(format!(
                "--gpus shards int8-resident and fp16-resident weights; {} shards are not built yet (their chunks hold whole rows, the \
                 row-parallel o and down need columns)",
                mode.name()
            )));
        }
        let cfg = ModelConfig::from_metadata(src.metadata())?;
        let plan = ShardPlan::new(&cfg, gpus.len())?;
        // Before the long part: a missing NCCL is said at once.
        nccl::version()?;
        // Each rank decodes and cuts its shard on its own thread.
        let mut ranks = std::thread::scope(|s| {
            let plan = &plan;
            let handles: Vec<_> =
                gpus.iter().enumerate().map(|(r, gpu)| s.spawn(move || GpuLlama::load(gpu, &plan.view(src, r)?, mode, max_m, max_context))).collect();
            handles.into_iter().map(joined).collect::<Result<Vec<_>>>()
        })?;
        // After loading, so that NCCL's buffers count in each GPU's measured peak.
        let comms = Communicator::for_gpus(&gpus.iter().collect::<Vec<_>>())?;
        for (llm, comm) in ranks.iter_mut().zip(comms) {
            llm.comm = Some(comm);
            llm.use_graph = false;
        }
        Ok(TpLlama { ranks, cfg })
    }

    /// Starts a forward of `ids` on every rank and returns once all have enqueued it.
    pub fn submit(&mut self, ids: &[u32]) -> Result<()> {
        if self.ranks.iter().any(|r| r.comm.is_none()) {
            return Err(Error::Invalid("a rank failed in an earlier forward and the communicators were aborted: load the model again".into()));
        }
        // Every rank is in the same state; checked once here so that no rank enqueues
        // collectives that a refusing rank would never join.
        self.ranks[0].check_submit(ids, &(ids.len().saturating_sub(1)..ids.len()))?;
        let enqueued = std::thread::scope(|s| {
            let handles: Vec<_> = self.ranks.iter_mut().map(|r| s.spawn(move || r.submit(ids))).collect();
            handles.into_iter().map(joined).collect::<Result<Vec<()>>>()
        });
        if enqueued.is_err() {
            // The other ranks' collectives would wait for this one forever: aborting the
            // communicators (on drop) ends them.
            self.ranks.iter_mut().for_each(|r| r.comm = None);
        }
        enqueued.map(drop)
    }

    /// Waits for the submitted forward; the logits of the whole vocabulary, gathered from
    /// the ranks' rows.
    pub fn finish(&mut self) -> Result<Vec<f32>> {
        let mut logits = Vec::with_capacity(self.cfg.vocab);
        for r in &mut self.ranks {
            logits.extend(r.finish()?);
        }
        Ok(logits)
    }

    /// Each GPU's report, in rank order.
    pub fn reports(&self) -> Vec<GpuReport> {
        self.ranks.iter().filter_map(Engine::gpu_report).collect()
    }

    /// Weight bytes on each GPU, in rank order.
    pub fn weight_bytes(&self) -> Vec<usize> {
        self.ranks.iter().map(|r| r.weight_bytes).collect()
    }
}

impl Engine for TpLlama<'_> {
    fn submit(&mut self, ids: &[u32]) -> Result<()> {
        TpLlama::submit(self, ids)
    }
    fn finish(&mut self) -> Result<Vec<f32>> {
        TpLlama::finish(self)
    }
    fn reset(&mut self) {
        // A step in flight runs its collectives on every rank: each waits for its own.
        self.ranks.iter_mut().for_each(GpuLlama::reset);
    }
    /// The busiest GPU's figures: what has to fit on each GPU, and the device time of the
    /// rank the others wait for.
    fn gpu_report(&self) -> Option<GpuReport> {
        self.reports().into_iter().reduce(|a, b| GpuReport {
            peak: a.peak.max(b.peak),
            net: a.net.max(b.net),
            allocated: a.allocated.max(b.allocated),
            device_seconds: a.device_seconds.max(b.device_seconds),
            programmatic_edges: a.programmatic_edges.max(b.programmatic_edges),
        })
    }
}
