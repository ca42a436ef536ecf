//! Choosing the next token from logits.

/// Picks the next token: greedy at temperature 0, else temperature + top-p sampling.
pub fn sample(logits: &[f32], temperature: f32, top_p: f32, rng: &mut impl rand::Rng) -> u32 {
    let argmax = || logits.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as u32;
    if temperature <= 0.0 {
        return argmax();
    }
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut p: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &v)| (i as u32, ((v - max) / temperature).exp())).collect();
    p.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f32 = p.iter().map(|x| x.1).sum();
    let (mut kept, mut acc) = (0, 0.0);
    for (i, (_, w)) in p.iter().enumerate() {
        acc += w / total;
        kept = i + 1;
        if acc >= top_p {
            break;
        }
    }
    let mass: f32 = p[..kept].iter().map(|x| x.1).sum();
    let mut r = rng.gen::<f32>() * mass;
    for &(id, w) in &p[..kept] {
        r -= w;
        if r <= 0.0 {
            return id;
        }
    }
    p[kept - 1].0
}
