//! Synthetic weights with the statistics of real ones. What a codec can do depends on the
//! histogram of the INT8 codes: per-row-absmax INT8 of real linear layers has an order-0
//! entropy of about 0.875 of 8 bits (an FP16 speech model; SmolLM2 and MiniLM 0.84–0.91),
//! and so do Gaussian rows (0.890 at 4096 wide, 0.876 at 14336), while the Student-t data
//! earlier benchmarks used (0.69–0.74) flatters every codec (../shared/NOTES-GPU.md §6).
//! So: Gaussian bulk, plus rare outliers at 4–6σ, as trained layers have. Every report
//! prints the entropy of the data it measured next to its ratios.
use crate::error::{Error, Result};
use half::f16;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

/// Weights per outlier. One outlier per ~18,000 weights puts one in about a fifth of
/// 4096-wide rows, whose codes then spread less: 0.875–0.88 of INT8 over a 4096-wide
/// matrix, the real-weight figure above.
const OUTLIER_EVERY: f64 = 18_000.0;

/// `n` weights (row-major, any row width) with real-weight statistics, reproducibly from
/// `seed`, in parallel. Standard deviation 0.02, like trained layers; per-row-absmax INT8
/// does not depend on the scale.
pub fn realistic_weights(n: usize, seed: u64) -> Vec<f32> {
    let mut v = vec![0f32; n];
    v.par_chunks_mut(1 << 16).enumerate().for_each(|(i, c)| {
        let mut r = rand::rngs::StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        for x in c.iter_mut() {
            let g: f64 = StandardNormal.sample(&mut r);
            let w = if r.gen_bool(1.0 / OUTLIER_EVERY) { g.signum() * r.gen_range(4.0..6.0) } else { g };
            *x = (w * 0.02) as f32;
        }
    });
    v
}

/// A safetensors checkpoint of FP16 matrices `layer{i}.weight` of `shapes` with real-weight
/// statistics, scaled to a gain of about 1 (std 1/√(2k)) so long chains of them stay in
/// FP16 range. The scale does not change the INT8 values.
pub fn write_synthetic_checkpoint(path: &std::path::Path, shapes: &[(usize, usize)], seed: u64) -> Result<()> {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = shapes
        .iter()
        .enumerate()
        .map(|(i, &(n, k))| {
            let gain = 1.0 / (0.02 * (2.0 * k as f32).sqrt());
            let bytes = realistic_weights(n * k, seed.wrapping_add(i as u64)).into_iter().flat_map(|v| f16::from_f32(v * gain).to_le_bytes()).collect();
            (format!("layer{i}.weight"), vec![n, k], bytes)
        })
        .collect();
    let views: Vec<_> =
        data.iter().map(|(name, shape, b)| (name.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F16, shape.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, &None, path).map_err(|e| Error::Invalid(format!("writing {}: {e}", path.display())))
}
