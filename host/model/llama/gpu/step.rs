//! Submitting a forward and collecting it: pinned step I/O, the captured CUDA graph of a
//! single-token step, and the decode status of the weights a step decoded.
use super::block::launch_1d;
use super::weights::{Embedding, Weights};
use super::GpuLlama;
use crate::error::{Error, Result};
use crate::gpu::{record_external, DecodeLog, PinnedBuffer};
use cudarc::driver::PushKernelArg;
use half::f16;

/// Page-locked staging of one forward's inputs and outputs: the host fills and reads
/// these, the step (captured or not) copies from and to them, and `ready` tells the host
/// that the outputs are in — while a streamed step goes on prefetching the next one's
/// weights.
pub(super) struct StepIo {
    /// Each row's position and first cache row (`abi::PLACE_WORDS` words a row).
    pub(super) places: PinnedBuffer<u32>,
    /// Token ids (device embedding) or their embedding rows (host embedding).
    pub(super) ids: PinnedBuffer<u32>,
    pub(super) rows: PinnedBuffer<f32>,
    pub(super) logits: PinnedBuffer<f16>,
    /// The decoder's failure flag, copied after the last decode the logits depend on.
    pub(super) decode_status: PinnedBuffer<u32>,
    pub(super) started: cudarc::driver::CudaEvent,
    pub(super) ready: cudarc::driver::CudaEvent,
}

/// A forward submitted and not yet finished.
pub(super) struct Pending {
    pub(super) m: usize,
    /// Batch rows whose logits it computes.
    pub(super) rows: std::ops::Range<usize>,
    /// The decodes it enqueued (`None`: a graph replay, whose log the graph keeps).
    pub(super) decodes: Option<DecodeLog>,
    pub(super) sample_vram: bool,
    /// Whether finishing it advances `len` (a `submit`; `forward_batch` keeps its own).
    pub(super) advance: bool,
}

/// A captured single-token step (everything `enqueue_step` enqueues).
pub(super) struct StepGraph {
    pub(super) graph: crate::gpu::CapturedGraph,
    /// The decodes inside it, to trace a failed chunk after each replay.
    pub(super) decodes: DecodeLog,
    pub(super) launched: bool,
}

// SAFETY: the graph is not `Send` because CUDA graph objects must not be used from two
// threads at once; this one belongs to one model, which one thread at a time drives (a
// tensor-parallel rank, on a thread of its own), and cudarc makes the context current
// before each call.
unsafe impl Send for StepGraph {}

impl GpuLlama<'_> {
    /// Forgets the KV cache. A forward still in flight is waited for and its logits dropped
    /// (a device error it hit shows at the next call).
    pub fn reset(&mut self) {
        if self.pending.take().is_some() {
            let _ = self.io.ready.synchronize();
        }
        self.len = 0;
        self.seq_len.iter_mut().for_each(|l| *l = 0);
    }

    /// Makes room for `n` sequences at once (`forward_batch`): the KV cache is cut into `n`
    /// runs of `max_context / n` positions, all empty, and forwards may return the logits of
    /// up to `n` rows. Returns the positions each sequence may fill. `n = 1` goes back to the
    /// one sequence `submit` / `forward` feed.
    pub fn set_sequences(&mut self, n: usize) -> Result<usize> {
        if n == 0 || n > self.max_context {
            return Err(Error::Invalid(format!("{n} sequences in a KV cache of {} positions", self.max_context)));
        }
        self.reset();
        self.reserve_logit_rows(n.min(self.max_m))?;
        self.seq_len = if n > 1 { vec![0; n] } else { Vec::new() };
        Ok(self.max_context / n)
    }

    /// Forgets sequence `s`'s positions (its run of the cache is free for the next prompt).
    pub fn reset_sequence(&mut self, s: usize) -> Result<()> {
        match self.seq_len.get_mut(s) {
            Some(l) => *l = 0,
            None if s == 0 => self.len = 0,
            None => return Err(Error::Invalid(format!("sequence {s} of {}", self.seq_len.len().max(1)))),
        }
        Ok(())
    }

    /// One forward of `rows`, each a (sequence, token) fed at that sequence's next position
    /// (rows of one sequence in order; prompts and decode steps of several sequences may
    /// share a batch), returning the logits of the last `logit_rows` rows.
    pub fn forward_batch(&mut self, rows: &[(usize, u32)], logit_rows: usize) -> Result<Vec<Vec<f32>>> {
        let seqs = self.seq_len.len().max(1);
        let per = self.max_context / seqs;
        let mut next = if self.seq_len.is_empty() { vec![self.len] } else { self.seq_len.clone() };
        let mut places = Vec::with_capacity(crate::abi::PLACE_WORDS * rows.len());
        for &(s, _) in rows {
            let Some(p) = next.get_mut(s) else { return Err(Error::Invalid(format!("sequence {s} of {seqs}"))) };
            if *p >= per {
                return Err(Error::Invalid(format!("sequence {s} is full: {per} positions each for {seqs} sequences")));
            }
            places.extend([*p as u32, (s * per) as u32]);
            *p += 1;
        }
        let ids: Vec<u32> = rows.iter().map(|r| r.1).collect();
        let m = ids.len();
        self.launch(&ids, &places, m.saturating_sub(logit_rows)..m, false)?;
        let out = self.finish_rows()?;
        match self.seq_len.is_empty() {
            true => self.len = next[0],
            false => self.seq_len = next,
        }
        Ok(out)
    }

    /// Feeds `ids` at the next positions (one batch; prefill or a single decode step) and
    /// returns the logits after the last of them: `submit` then `finish`.
    pub fn forward(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        self.submit(ids)?;
        self.finish()
    }

    /// Feeds `ids` as one batch and returns the logits of batch rows `rows` (e.g. the
    /// scored half of a perplexity window): `reserve_logit_rows` first.
    pub fn forward_rows(&mut self, ids: &[u32], rows: std::ops::Range<usize>) -> Result<Vec<Vec<f32>>> {
        self.submit_rows(ids, rows)?;
        self.finish_rows()
    }

    /// Lets forwards return the logits of up to `n` rows (buffers grow; a captured step
    /// graph, which holds their old addresses, is dropped and captured again).
    pub fn reserve_logit_rows(&mut self, n: usize) -> Result<()> {
        if n <= self.max_logit_rows {
            return Ok(());
        }
        if self.pending.is_some() {
            return Err(Error::Invalid("a forward is in flight: finish it first".into()));
        }
        let (st, v) = (&self.gpu.stream, self.logit_width);
        self.s.logits = st.alloc_zeros(n * v)?;
        self.s.band = st.alloc_zeros(n * self.lm_band_rows.iter().max().copied().unwrap_or(0).max(1))?;
        self.io.logits = PinnedBuffer::for_host_reads(self.gpu, n * v)?;
        self.step_graph = None;
        self.max_logit_rows = n;
        Ok(())
    }

    /// Starts a forward of `ids` at the next positions and returns without waiting; the
    /// host can work (print the previous token) while the device runs it. `finish`
    /// collects the logits; nothing else may be submitted before.
    pub fn submit(&mut self, ids: &[u32]) -> Result<()> {
        self.submit_rows(ids, ids.len().saturating_sub(1)..ids.len())
    }

    /// Whether a forward of `ids` returning the logits of `rows` can be submitted now.
    pub(super) fn check_submit(&self, ids: &[u32], rows: &std::ops::Range<usize>) -> Result<()> {
        let m = ids.len();
        if rows.is_empty() || rows.end > m || rows.len() > self.max_logit_rows {
            return Err(Error::Invalid(format!("logits of rows {rows:?} of a batch of {m}; this model returns up to {} rows", self.max_logit_rows)));
        }
        if self.pending.is_some() {
            return Err(Error::Invalid("a forward is in flight: finish it before submitting another".into()));
        }
        if m == 0 || m > self.max_m {
            return Err(Error::Invalid(format!("batch of {m} tokens; this model was loaded for 1..={}", self.max_m)));
        }
        // One sequence fills positions from `len` (several: `forward_batch` checks each).
        if self.seq_len.is_empty() && self.len + m > self.max_context {
            return Err(Error::Invalid(format!("{} positions exceed the context of {}", self.len + m, self.max_context)));
        }
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= self.cfg.vocab) {
            return Err(Error::Invalid(format!("token {bad} is outside the vocabulary of {}", self.cfg.vocab)));
        }
        Ok(())
    }

    /// `submit`, computing the logits of batch rows `rows`.
    fn submit_rows(&mut self, ids: &[u32], rows: std::ops::Range<usize>) -> Result<()> {
        if !self.seq_len.is_empty() {
            return Err(Error::Invalid("this model holds several sequences (set_sequences): feed them with forward_batch".into()));
        }
        let m = ids.len();
        let places: Vec<u32> = (0..m).flat_map(|r| [(self.len + r) as u32, 0]).collect();
        self.launch(ids, &places, rows, true)
    }

    /// Submits a forward of `ids` at `places` (`abi::PLACE_WORDS` words a row, checked by
    /// the caller against the cache), computing the logits of batch rows `rows`; `advance`:
    /// finishing it moves `len` on by the batch.
    fn launch(&mut self, ids: &[u32], places: &[u32], rows: std::ops::Range<usize>, advance: bool) -> Result<()> {
        self.check_submit(ids, &rows)?;
        let m = ids.len();
        // The previous step's copies from these buffers were done before its `ready`.
        self.io.places.as_mut_slice()[..places.len()].copy_from_slice(places);
        match &self.embed {
            Embedding::Device(_) => self.io.ids.as_mut_slice()[..m].copy_from_slice(ids),
            Embedding::Host(table) => {
                let (d, scale) = (self.cfg.dim, self.cfg.embed_scale);
                for (row, &t) in self.io.rows.as_mut_slice().chunks_exact_mut(d).zip(ids) {
                    // The device path scales in f32 after widening the FP16 row: the same.
                    row.iter_mut().zip(&table[t as usize * d..(t as usize + 1) * d]).for_each(|(r, &v)| *r = v * scale);
                }
            }
        }
        // A replay allocates nothing, so device memory in use is sampled on the first
        // launch of a graph and after every other forward (cuMemGetInfo costs microseconds).
        let step = if m == 1 && self.use_graph && self.capture_step()? {
            let graph = self.step_graph.as_mut().expect("captured above");
            graph.graph.launch()?;
            Pending { m, rows, decodes: None, sample_vram: !std::mem::replace(&mut graph.launched, true), advance }
        } else {
            self.enqueue_step(m, rows.clone())?;
            Pending { m, rows, decodes: Some(self.take_decode_log()), sample_vram: true, advance }
        };
        self.pending = Some(step);
        Ok(())
    }

    /// Waits for the submitted forward and returns its logits (those of its last row).
    pub fn finish(&mut self) -> Result<Vec<f32>> {
        Ok(self.finish_rows()?.pop().expect("one row at least"))
    }

    /// Waits for the submitted forward and returns the logits of its rows.
    fn finish_rows(&mut self) -> Result<Vec<Vec<f32>>> {
        let step = self.pending.take().ok_or_else(|| Error::Invalid("no forward was submitted".into()))?;
        self.io.ready.synchronize()?;
        self.device_seconds += self.io.started.elapsed_ms(&self.io.ready)? as f64 / 1e3;
        let flag = self.io.decode_status.as_slice()[0];
        let log = step.decodes.as_ref().or(self.step_graph.as_ref().map(|g| &g.decodes)).expect("a graph when no log");
        match &mut self.weights {
            Weights::Compressed { decoder, .. } => decoder.staged_result(flag, log, &self.gpu.stream)?,
            Weights::Streamed { ws, cpu, .. } => {
                ws.decode_result(flag, log)?;
                if let Some(c) = cpu {
                    c.take_failure()?;
                }
            }
            Weights::Resident(_) => {}
        }
        if step.advance {
            self.len += step.m;
        }
        if step.sample_vram {
            self.sample_vram()?;
        }
        let (n, v) = (step.rows.len(), self.logit_width);
        let mut flat = vec![0f32; n * v];
        // In bulk (F16C where the CPU has it): per element, 49,152 logits cost ~0.1 ms a step.
        half::slice::HalfFloatSliceExt::convert_to_f32_slice(&self.io.logits.as_slice()[..n * v], &mut flat);
        if n == 1 || self.lm_head.is_some() {
            return Ok(flat.chunks(v).map(<[f32]>::to_vec).collect());
        }
        // A streamed LM head wrote band after band, each `[n, band rows]`.
        let mut rows = vec![vec![0f32; v]; n];
        let (mut at, mut col) = (0, 0);
        for &b in &self.lm_band_rows {
            for (r, row) in rows.iter_mut().enumerate() {
                row[col..col + b].copy_from_slice(&flat[at + r * b..at + (r + 1) * b]);
            }
            (at, col) = (at + n * b, col + b);
        }
        Ok(rows)
    }

    /// The decodes enqueued since the last take (empty for resident weights).
    fn take_decode_log(&mut self) -> DecodeLog {
        match &mut self.weights {
            Weights::Compressed { decoder, .. } => decoder.take_log(),
            Weights::Streamed { ws, .. } => ws.take_decode_log(),
            Weights::Resident(_) => Default::default(),
        }
    }

    /// Edges of the captured step graph made programmatic (0 before a capture).
    pub fn programmatic_edges(&self) -> usize {
        self.step_graph.as_ref().map_or(0, |g| g.graph.programmatic_edges)
    }

    /// Captures the single-token step into a graph unless one exists; false (and graphs
    /// off, said once) when this mode's work cannot be captured.
    fn capture_step(&mut self) -> Result<bool> {
        if self.step_graph.is_some() {
            return Ok(true);
        }
        let st = self.gpu.stream.clone();
        // Relaxed: cuBLAS and nvCOMP may query or set up state while being captured.
        st.begin_capture(cudarc::driver::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)?;
        let enqueued = self.enqueue_step(1, 0..1);
        let captured = crate::gpu::CapturedGraph::end_capture(&st, &self.gpu.kernels, self.programmatic_launch);
        let decodes = self.take_decode_log();
        match (enqueued, captured) {
            (Ok(()), Ok(Some(graph))) => {
                graph.upload()?;
                self.step_graph = Some(StepGraph { graph, decodes, launched: false });
                Ok(true)
            }
            (enqueued, captured) => {
                let why = enqueued.err().map(|e| e.to_string()).or(captured.err().map(|e| e.to_string())).unwrap_or_else(|| "the capture was empty".into());
                eprintln!("codecllm: capturing the decode step into a CUDA graph failed ({why}); launching its kernels one by one");
                self.use_graph = false;
                Ok(false)
            }
        }
    }

    /// Enqueues one forward of `m` rows whose inputs are in `io`: uploads, embedding,
    /// layers, logits and decode status back into `io`, `io.ready`; then (streaming) the
    /// next step's first weights. Waits on the host for nothing, so that it can be
    /// captured.
    fn enqueue_step(&mut self, m: usize, rows: std::ops::Range<usize>) -> Result<()> {
        let (gpu, st, d) = (self.gpu, &self.gpu.stream, self.cfg.dim);
        record_external(&self.io.started, st)?;
        let pw = crate::abi::PLACE_WORDS * m;
        st.memcpy_htod(&self.io.places.as_slice()[..pw], &mut self.places.slice_mut(..pw))?;
        let sc = &mut self.s;
        match &self.embed {
            Embedding::Device(table) => {
                st.memcpy_htod(&self.io.ids.as_slice()[..m], &mut sc.ids.slice_mut(..m))?;
                let (mu, du) = (m as u32, d as u32);
                let mut l = st.launch_builder(&gpu.kernels.embed);
                l.arg(table).arg(&sc.ids).arg(&mut sc.x).arg(&mu).arg(&du).arg(&self.cfg.embed_scale);
                // SAFETY: ids < vocab (checked by submit), x holds m·d.
                unsafe { l.launch(launch_1d(m * d)) }?;
            }
            Embedding::Host(_) => st.memcpy_htod(&self.io.rows.as_slice()[..m * d], &mut sc.x.slice_mut(..m * d))?,
        }
        let n = rows.len() * self.logit_width;
        self.enqueue_layers(m, rows)?;
        st.memcpy_dtoh(&self.s.logits.slice(..n), &mut self.io.logits.as_mut_slice()[..n])?;
        match &self.weights {
            Weights::Compressed { decoder, .. } => decoder.stage_status(&mut self.io.decode_status, st)?,
            Weights::Streamed { ws, .. } => ws.stage_decode_status(&mut self.io.decode_status)?,
            Weights::Resident(_) => {}
        }
        record_external(&self.io.ready, st)?;
        if let (true, Weights::Streamed { ws, cpu, .. }) = (self.prefetch_next, &mut self.weights) {
            // For a pass like this one (a decode step is followed by another).
            ws.prefetch_next_pass(m == 1 && cpu.is_some())?;
        }
        Ok(())
    }
}
