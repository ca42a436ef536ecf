//! Order-0 entropy: the size a static per-tensor byte model reaches, the yardstick every
//! compression ratio is printed next to (and what `rans` tables are built from).
use rayon::prelude::*;

/// Counts of each byte value; parallel over 1 MiB blocks for large inputs.
pub fn histogram(bytes: &[u8]) -> [u64; 256] {
    const BLOCK: usize = 1 << 20;
    if bytes.len() <= BLOCK {
        return histogram_seq(bytes);
    }
    bytes.par_chunks(BLOCK).map(histogram_seq).reduce(
        || [0u64; 256],
        |mut a, b| {
            a.iter_mut().zip(b.iter()).for_each(|(x, y)| *x += y);
            a
        },
    )
}

fn histogram_seq(bytes: &[u8]) -> [u64; 256] {
    // Four sub-histograms: runs of equal bytes would otherwise serialize on one counter.
    let mut h = [[0u32; 256]; 4];
    let mut quads = bytes.chunks_exact(4);
    for q in &mut quads {
        h[0][q[0] as usize] += 1;
        h[1][q[1] as usize] += 1;
        h[2][q[2] as usize] += 1;
        h[3][q[3] as usize] += 1;
    }
    for &b in quads.remainder() {
        h[0][b as usize] += 1;
    }
    let mut out = [0u64; 256];
    for (s, o) in out.iter_mut().enumerate() {
        *o = h.iter().map(|x| x[s] as u64).sum();
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_histogram_equals_sequential_and_entropy_is_exact_on_known_cases() {
        let data: Vec<u8> = (0..3_000_017u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        assert_eq!(histogram(&data), histogram_seq(&data));
        assert_eq!(order0_bits(&histogram(&[])), 0.0);
        assert_eq!(order0_bits(&histogram(&[7; 1000])), 0.0);
        let uniform: Vec<u8> = (0..=255).collect();
        assert!((order0_bits(&histogram(&uniform)) - 8.0).abs() < 1e-12);
        assert!((order0_bits(&histogram(&[1, 2])) - 1.0).abs() < 1e-12);
    }
}
