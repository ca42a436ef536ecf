//! Order-0 entropy: the size a static per-tensor byte model reaches, the yardstick every
//! compression ratio is printed next to.
use rayon::prelude::*;

/// Counts of each byte value.
pub fn histogram(bytes: &[u8]) -> [u64; 256] {
    bytes
        .par_chunks(1 << 20)
        .map(|c| {
            let mut h = [0u64; 256];
            c.iter().for_each(|&b| h[b as usize] += 1);
            h
        })
        .reduce(
            || [0; 256],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            },
        )
}

/// Shannon entropy of the byte histogram, in bits per byte (0..=8); 0 for no bytes.
pub fn order0_bits(hist: &[u64; 256]) -> f64 {
    let n: u64 = hist.iter().sum();
    if n == 0 {
        return 0.0;
    }
    hist.iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n as f64;
            -p * p.log2()
        })
        .sum()
}
