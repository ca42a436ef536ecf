//! Perplexity over a text, computed exactly as llama.cpp's `llama-perplexity` does so the
//! two can be compared number for number: the whole text tokenized once (BOS first when
//! the model adds one), cut into non-overlapping windows of `ctx` tokens (the remainder
//! dropped), each window's first token replaced by BOS (when the model adds one) and run
//! from an empty cache, and only the second half scored: the logits at positions
//! `ctx/2 … ctx−2` against the tokens that follow. PPL = exp(mean NLL), its error
//! PPL·√(var(NLL) / (N − 1)). Against a reference run of the same windows (another file or
//! weight mode) it also reports what `--kl-divergence` does: mean KL(reference ‖ model),
//! its percentiles, the worst token, and how often both pick the same top-1.
use super::llama::{CpuLlama, GpuLlama, KvCache};
use crate::error::{Error, Result};

/// Runs one window from an empty cache and returns the logits of rows `rows` of it.
pub trait WindowScorer {
    fn window_logits(&mut self, window: &[u32], rows: std::ops::Range<usize>) -> Result<Vec<Vec<f32>>>;
}

impl WindowScorer for CpuLlama {
    fn window_logits(&mut self, window: &[u32], rows: std::ops::Range<usize>) -> Result<Vec<Vec<f32>>> {
        self.forward(window, &mut KvCache::default(), rows)
    }
}

/// On the GPU a window is one batched prefill (`M = ctx` through the GEMM plans), its
/// scored rows' logits computed together. Load the model with `max_m` and `max_context`
/// of at least the window.
impl WindowScorer for GpuLlama<'_> {
    fn window_logits(&mut self, window: &[u32], rows: std::ops::Range<usize>) -> Result<Vec<Vec<f32>>> {
        self.reset();
        self.reserve_logit_rows(rows.len())?;
        self.forward_rows(window, rows)
    }
}

/// The windows llama.cpp's perplexity scores: `tokens.len() / ctx` of them (at most
/// `max_chunks`), each `ctx` tokens with its first one replaced by `bos` when given.
pub fn windows(tokens: &[u32], ctx: usize, max_chunks: Option<usize>, bos: Option<u32>) -> Result<Vec<Vec<u32>>> {
    if ctx < 4 || !ctx.is_multiple_of(2) {
        return Err(Error::Invalid(format!("--ctx {ctx}: an even context of at least 4 tokens")));
    }
    let n = (tokens.len() / ctx).min(max_chunks.unwrap_or(usize::MAX));
    if n == 0 {
        return Err(Error::Invalid(format!("the text has {} tokens, fewer than one window of {ctx}", tokens.len())));
    }
    Ok((0..n)
        .map(|c| {
            let mut w = tokens[c * ctx..(c + 1) * ctx].to_vec();
            if let Some(b) = bos {
                w[0] = b;
            }
            w
        })
        .collect())
}

/// `log_softmax(logits)[i]` for every `i`, in f64 (llama.cpp sums the exponentials in
/// double too).
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    let lse = max + sum.ln();
    logits.iter().map(|&l| l as f64 - lse).collect()
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0
}

/// `(mean, standard error of the mean)` of values given by their sum, sum of squares and count.
fn mean_and_error(sum: f64, sum2: f64, n: usize) -> (f64, f64) {
    let mean = sum / n as f64;
    let var = (sum2 / n as f64 - mean * mean).max(0.0);
    (mean, if n > 1 { (var / (n - 1) as f64).sqrt() } else { 0.0 })
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct PerplexityReport {
    pub ppl: f64,
    /// Standard error of the PPL (llama.cpp's "±").
    pub ppl_err: f64,
    pub ctx: usize,
    pub chunks: usize,
    /// Targets scored: `chunks · (ctx − 1 − ctx/2)`.
    pub tokens_scored: usize,
    /// Running PPL after each chunk, as llama.cpp prints `[k]ppl`.
    pub running_ppl: Vec<f64>,
    pub seconds: f64,
    /// Tokens run through the model per second (`chunks · ctx / seconds`).
    pub tokens_per_s: f64,
    pub kl: Option<KlReport>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct KlReport {
    /// PPL of the reference on the same windows.
    pub reference_ppl: f64,
    pub mean_kl: f64,
    pub mean_kl_err: f64,
    pub median_kl: f64,
    pub p99_kl: f64,
    pub p999_kl: f64,
    pub max_kl: f64,
    /// (chunk, position in the window) of the largest KL.
    pub worst_token: (usize, usize),
    /// Share of scored positions where model and reference agree on the top-1 token.
    pub top1_agreement: f64,
}

/// llama.cpp's percentile: linear interpolation at `fraction · (n − 1)` of sorted values.
fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    let at = fraction * (sorted.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo as f64)
}

/// Scores `windows` with `model` (and `reference`, for KL), reporting progress after each
/// window through `progress(done, running_ppl)`.
pub fn perplexity<'a, 'b>(
    model: &mut (dyn WindowScorer + 'a),
    mut reference: Option<&mut (dyn WindowScorer + 'b)>,
    windows: &[Vec<u32>],
    progress: &mut dyn FnMut(usize, f64),
) -> Result<PerplexityReport> {
    let ctx = windows.first().map_or(0, Vec::len);
    let first = ctx / 2;
    let rows = first..ctx - 1;
    let started = std::time::Instant::now();
    let (mut nll, mut nll2, mut count, mut running) = (0f64, 0f64, 0usize, Vec::with_capacity(windows.len()));
    let (mut ref_nll, mut kls, mut same_top1) = (0f64, Vec::new(), 0usize);
    let (mut kl_sum, mut kl_sum2, mut worst) = (0f64, 0f64, (0f64, (0, 0)));
    for (c, w) in windows.iter().enumerate() {
        let logits = model.window_logits(w, rows.clone())?;
        let ref_logits = reference.as_deref_mut().map(|r| r.window_logits(w, rows.clone())).transpose()?;
        for (i, l) in logits.iter().enumerate() {
            let target = w[first + i + 1] as usize;
            let lp = log_softmax(l);
            let v = -lp[target];
            nll += v;
            nll2 += v * v;
            count += 1;
            if let Some(r) = &ref_logits {
                let rl = &r[i];
                let rlp = log_softmax(rl);
                ref_nll -= rlp[target];
                // KL(reference ‖ model) over the tokens the reference gives any weight
                // (llama.cpp drops log-probabilities below −16).
                let kl: f64 = rlp.iter().zip(&lp).filter(|(&a, _)| a > -16.0).map(|(&a, &b)| a.exp() * (a - b)).sum();
                kl_sum += kl;
                kl_sum2 += kl * kl;
                if kl > worst.0 {
                    worst = (kl, (c, first + i));
                }
                kls.push(kl);
                same_top1 += (argmax(l) == argmax(rl)) as usize;
            }
        }
        running.push((nll / count as f64).exp());
        progress(c + 1, *running.last().unwrap());
    }
    let seconds = started.elapsed().as_secs_f64();
    let (mean, err) = mean_and_error(nll, nll2, count);
    let ppl = mean.exp();
    let kl = reference.is_some().then(|| {
        kls.sort_by(f64::total_cmp);
        let (mean_kl, mean_kl_err) = mean_and_error(kl_sum, kl_sum2, count);
        KlReport {
            reference_ppl: (ref_nll / count as f64).exp(),
            mean_kl,
            mean_kl_err,
            median_kl: percentile(&kls, 0.5),
            p99_kl: percentile(&kls, 0.99),
            p999_kl: percentile(&kls, 0.999),
            max_kl: worst.0,
            worst_token: worst.1,
            top1_agreement: same_top1 as f64 / count as f64,
        }
    });
    Ok(PerplexityReport {
        ppl,
        ppl_err: ppl * err,
        ctx,
        chunks: windows.len(),
        tokens_scored: count,
        running_ppl: running,
        seconds,
        tokens_per_s: (windows.len() * ctx) as f64 / seconds.max(1e-9),
        kl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model that puts probability `p` on the true next token of a known sequence and
    /// spreads the rest evenly: its perplexity and KL have closed forms.
    struct Fixed {
        vocab: usize,
        confidence: f32,
    }

    impl WindowScorer for Fixed {
        fn window_logits(&mut self, window: &[u32], rows: std::ops::Range<usize>) -> Result<Vec<Vec<f32>>> {
            Ok(rows
                .map(|r| {
                    let mut l = vec![0f32; self.vocab];
                    l[window[r + 1] as usize] = self.confidence;
                    l
                })
                .collect())
        }
    }

    #[test]
    fn windows_follow_llama_cpp() {
        let tokens: Vec<u32> = (0..21).collect();
        let w = windows(&tokens, 8, None, Some(99)).unwrap();
        assert_eq!(w, vec![vec![99, 1, 2, 3, 4, 5, 6, 7], vec![99, 9, 10, 11, 12, 13, 14, 15]], "the remainder is dropped, BOS replaces");
        assert_eq!(windows(&tokens, 8, Some(1), None).unwrap(), vec![(0..8).collect::<Vec<u32>>()]);
        assert!(windows(&tokens, 32, None, None).is_err() && windows(&tokens, 7, None, None).is_err());
    }

    #[test]
    fn perplexity_and_kl_have_their_closed_forms() {
        let tokens: Vec<u32> = (0..64).map(|i| (i * 7 % 16) as u32).collect();
        let w = windows(&tokens, 16, None, None).unwrap();
        let (vocab, c) = (16usize, 2.0f32);
        let p = (c as f64).exp() / ((c as f64).exp() + (vocab - 1) as f64);
        let mut model = Fixed { vocab, confidence: c };
        let r = perplexity(&mut model, None, &w, &mut |_, _| {}).unwrap();
        assert_eq!(r.tokens_scored, 4 * (16 - 1 - 8));
        assert!((r.ppl - 1.0 / p).abs() < 1e-9, "{} vs {}", r.ppl, 1.0 / p);
        assert!(r.ppl_err.abs() < 1e-9, "every token costs the same");
        // Against itself: KL 0, full agreement; against a less confident copy, the KL of
        // two known distributions.
        let mut same = Fixed { vocab, confidence: c };
        let k = perplexity(&mut model, Some(&mut same), &w, &mut |_, _| {}).unwrap().kl.unwrap();
        assert!(k.mean_kl.abs() < 1e-12 && k.top1_agreement == 1.0);
        let mut flatter = Fixed { vocab, confidence: 1.0 };
        let k = perplexity(&mut flatter, Some(&mut model), &w, &mut |_, _| {}).unwrap().kl.unwrap();
        let q = 1f64.exp() / (1f64.exp() + (vocab - 1) as f64);
        let want = p * (p / q).ln() + (1.0 - p) * ((1.0 - p) / (1.0 - q)).ln();
        assert!((k.mean_kl - want).abs() < 1e-9, "{} vs {want}", k.mean_kl);
        assert!((k.reference_ppl - 1.0 / p).abs() < 1e-9);
    }
}
