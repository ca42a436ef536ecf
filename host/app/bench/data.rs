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

/// `rows × cols` values of GGUF block type `abi::GGML_LAYOUTS[layout]` as random valid
/// blocks, row-major: random quants and sub-block scales, and FP16 scales drawn so that the
/// values are about 1/√cols in size and roughly centred (a random FP16 bit pattern would
/// now and then be inf or NaN). `spread_mins` draws the second FP16 scale (`m` / `dmin`)
/// over a wide range instead, as extreme as a finite model gets. The kernels' speed does
/// not depend on the values (no data-dependent branches), only their correctness does.
pub fn random_ggml_blocks(rng: &mut impl Rng, layout: usize, rows: usize, cols: usize, spread_mins: bool) -> Result<Vec<u8>> {
    let l = crate::abi::GGML_LAYOUTS.get(layout).ok_or_else(|| Error::Invalid(format!("no GGUF block layout {layout}")))?;
    let (elems, size) = (l.block_elems as usize, l.block_bytes() as usize);
    if !cols.is_multiple_of(elems) {
        return Err(Error::Invalid(format!("{}: {cols} columns are not whole blocks of {elems}", l.name)));
    }
    // Per type (GGML_LAYOUTS order): the typical |quant × sub-block scale|; where the second
    // FP16 scale centres the values (`m = c·d` for Q4_1 / Q5_1, `dmin = c·d` for the
    // K-quants, whose mins are subtracted; 0: no second scale); and the largest sub-block
    // min the second scale is multiplied by (the K-quants' 6-bit, Q2_K's 4-bit ones), which
    // divides the spread of `spread_mins` so that a row's sum stays finite in FP16.
    let (typical, centre, widest) = [
        (8.0, 0.0, 1.0),
        (8.0, -7.5, 1.0),
        (16.0, 0.0, 1.0),
        (16.0, -15.5, 1.0),
        (128.0, 0.0, 1.0),
        (256.0, 7.5, 63.0),
        (512.0, 15.5, 63.0),
        (1024.0, 0.0, 1.0),
        (16.0, 1.5, 15.0),
        (64.0, 0.0, 1.0),
    ][layout];
    // Byte offsets of the FP16 fields: the 2-byte ones, d first, then m / dmin.
    let mut offsets = Vec::new();
    let mut at = 0;
    for &f in l.fields {
        if f == 2 {
            offsets.push(at);
        }
        at += f as usize;
    }
    let mut out = vec![0u8; rows * cols / elems * size];
    rng.fill_bytes(&mut out);
    for block in out.chunks_exact_mut(size) {
        let sign = if rng.gen_bool(0.5) { 1.0 } else { -1.0 };
        let d = sign * rng.gen_range(0.5f32..1.5) * 4.0 / ((cols as f32).sqrt() * typical);
        block[offsets[0]..offsets[0] + 2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        if let Some(&o) = offsets.get(1) {
            let m = if spread_mins { rng.gen_range(-1.0f32..1.0) * 10f32.powi(rng.gen_range(-6..3)) / widest } else { centre * d * rng.gen_range(0.8..1.2) };
            block[o..o + 2].copy_from_slice(&f16::from_f32(m).to_le_bytes());
        }
    }
    Ok(out)
}
