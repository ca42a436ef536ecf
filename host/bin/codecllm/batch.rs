//! `codecllm run --prompts-file F [--batch N]`: N sequences generated together, one
//! forward a step for all of them. Finished sequences make room for the next prompts, whose
//! prompts are prefilled together in one batch (their last tokens last, so that the
//! logits wanted are the batch's last rows).
use codecllm::model::engine::Engine;
use codecllm::model::sampling::sample;
use codecllm::model::tokenizer::ModelTokenizer;
use codecllm::{Error, Result};
use rand::SeedableRng;
use std::path::Path;
use std::time::Instant;

/// The prompts of a file: one per line, or JSON lines `{"prompt": "…"}`; blank lines skipped.
pub fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::input(path, format!("cannot read the prompts: {e}")))?;
    let mut prompts = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        if line.trim_start().starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| Error::input(path, format!("line {}: not JSON: {e}", i + 1)))?;
            let p = v.get("prompt").and_then(|p| p.as_str()).ok_or_else(|| Error::input(path, format!("line {}: no \"prompt\" string", i + 1)))?;
            prompts.push(p.to_string());
        } else {
            prompts.push(line.to_string());
        }
    }
    if prompts.is_empty() {
        return Err(Error::input(path, "no prompts in the file"));
    }
    Ok(prompts)
}

/// How a batched generation is sampled.
pub struct Sampling {
    pub max_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
}

/// One prompt's generation: its new tokens, and the seconds from its prefill to its last.
pub struct Output {
    pub tokens: Vec<u32>,
    pub seconds: f64,
}

/// What a batched generation did.
pub struct BatchRun {
    pub outputs: Vec<Output>,
    pub seconds: f64,
    pub prefill_s: f64,
    pub decode_s: f64,
    pub decode_steps: usize,
    /// Tokens the decode steps produced (each prompt's first new token comes from its prefill).
    pub decode_tokens: usize,
}

struct Active {
    prompt: usize,
    tokens: Vec<u32>,
    started: Instant,
    rng: rand::rngs::StdRng,
}

/// Generates for every prompt (`ids`, tokenized), `batch` sequences at a time, batches of at
/// most `max_rows` rows (the engine's largest forward).
pub fn generate(engine: &mut dyn Engine, tok: &ModelTokenizer, ids: &[Vec<u32>], batch: usize, max_rows: usize, s: &Sampling) -> Result<BatchRun> {
    let per = engine.set_sequences(batch)?;
    if let Some((i, p)) = ids.iter().enumerate().find(|(_, p)| p.is_empty() || p.len() + s.max_tokens > per || p.len() > max_rows) {
        return Err(Error::Invalid(format!(
            "prompt {} has {} tokens: with {} new ones it does not fit a sequence's {per} positions ({batch} sequences) or a batch of {max_rows} rows",
            i + 1,
            p.len(),
            s.max_tokens
        )));
    }
    let started = Instant::now();
    if s.max_tokens == 0 {
        let outputs = ids.iter().map(|_| Output { tokens: Vec::new(), seconds: 0.0 }).collect();
        return Ok(BatchRun { outputs, seconds: 0.0, prefill_s: 0.0, decode_s: 0.0, decode_steps: 0, decode_tokens: 0 });
    }
    let mut outputs: Vec<Option<Output>> = (0..ids.len()).map(|_| None).collect();
    let mut slots: Vec<Option<Active>> = (0..batch).map(|_| None).collect();
    let (mut next, mut prefill_s, mut decode_s, mut decode_steps, mut decode_tokens) = (0, 0.0, 0.0, 0, 0);
    let done = |a: Active, outputs: &mut Vec<Option<Output>>| outputs[a.prompt] = Some(Output { seconds: a.started.elapsed().as_secs_f64(), tokens: a.tokens });
    // Takes a sampled token: the sequence goes on, or is done (end of generation, or its
    // last new token), its slot free again.
    let take = |slot: &mut Option<Active>, token: u32, outputs: &mut Vec<Option<Output>>| {
        let Some(a) = slot.as_mut() else { return };
        let end = tok.is_end_of_generation(token);
        if !end {
            a.tokens.push(token);
        }
        if end || a.tokens.len() >= s.max_tokens {
            done(slot.take().expect("active"), outputs);
        }
    };
    loop {
        // Admit queued prompts into free slots, as many as one batch of rows holds.
        let (mut admitted, mut rows) = (Vec::new(), 0);
        for (slot, a) in slots.iter().enumerate() {
            if a.is_none() && next < ids.len() && rows + ids[next].len() <= max_rows {
                rows += ids[next].len();
                admitted.push((slot, next));
                next += 1;
            }
        }
        if !admitted.is_empty() {
            let t = Instant::now();
            let mut batch_rows = Vec::with_capacity(rows);
            for &(slot, p) in &admitted {
                engine.reset_sequence(slot)?;
                batch_rows.extend(ids[p][..ids[p].len() - 1].iter().map(|&id| (slot, id)));
            }
            batch_rows.extend(admitted.iter().map(|&(slot, p)| (slot, *ids[p].last().expect("checked non-empty"))));
            let logits = engine.forward_batch(&batch_rows, admitted.len())?;
            prefill_s += t.elapsed().as_secs_f64();
            for (&(slot, p), l) in admitted.iter().zip(&logits) {
                let mut a = Active { prompt: p, tokens: Vec::new(), started: t, rng: rand::rngs::StdRng::seed_from_u64(s.seed.wrapping_add(p as u64)) };
                let first = sample(l, s.temperature, s.top_p, &mut a.rng);
                slots[slot] = Some(a);
                take(&mut slots[slot], first, &mut outputs);
            }
        }
        let step: Vec<(usize, u32)> =
            slots.iter().enumerate().filter_map(|(i, a)| a.as_ref().map(|a| (i, *a.tokens.last().expect("a live sequence has a token")))).collect();
        if step.is_empty() {
            if next >= ids.len() {
                break;
            }
            continue;
        }
        let t = Instant::now();
        let logits = engine.forward_batch(&step, step.len())?;
        decode_s += t.elapsed().as_secs_f64();
        decode_steps += 1;
        for (&(slot, _), l) in step.iter().zip(&logits) {
            let token = {
                let a = slots[slot].as_mut().expect("in the step");
                sample(l, s.temperature, s.top_p, &mut a.rng)
            };
            decode_tokens += !tok.is_end_of_generation(token) as usize;
            take(&mut slots[slot], token, &mut outputs);
        }
    }
    let outputs = outputs.into_iter().map(|o| o.expect("every prompt generated")).collect();
    Ok(BatchRun { outputs, seconds: started.elapsed().as_secs_f64(), prefill_s, decode_s, decode_steps, decode_tokens })
}
