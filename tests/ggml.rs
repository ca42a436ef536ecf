//! Replays the vectors that scripts/ggml-vectors.py made with gguf-py 0.19.0's `gguf.quants.dequantize`.

use codecllm::codec::ggml::{dequantize, GgmlType};
use std::path::PathBuf;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/ggml");

/// The vector folder: `VECTORS`, or `$GGML_VECTORS` for a one-off wider set
/// (`gen-vectors.py --out DIR --extra-random N`).
fn dir() -> PathBuf {
    std::env::var_os("GGML_VECTORS").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(VECTORS))
}

struct Vector {
    ty: GgmlType,
    raw: Vec<u8>,
    expected: Vec<f32>,
}

fn load(path: PathBuf) -> Vector {
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let id = u32::from_le_bytes(data[0..4].try_into().unwrap());
    let n = u32::from_le_bytes(data[4..8].try_into().unwrap()) as usize;
    let ty = GgmlType::from_id(id).unwrap_or_else(|| panic!("{}: type id {id}", path.display()));
    let (epb, bpb) = ty.block();
    let (epb, bpb) = (epb as usize, bpb as usize);
    // The file's size ties our block geometry to gguf-py's GGML_QUANT_SIZES.
    assert_eq!(data.len(), 8 + n * bpb + n * epb * 4, "{}: size vs {ty} geometry", path.display());
    let raw = data[8..8 + n * bpb].to_vec();
    let expected = data[8 + n * bpb..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    Vector { ty, raw, expected }
}

/// Compares bit patterns; with `nan_as_one`, any NaN matches any NaN.
fn check(v: &Vector, what: &str, nan_as_one: bool) -> usize {
    let mut out = vec![1.0f32; 7]; // must be cleared
    dequantize(v.ty, &v.raw, &mut out);
    assert_eq!(out.len(), v.expected.len(), "{what}: length");
    let (epb, _) = v.ty.block();
    let mut bad = 0;
    for (i, (&got, &want)) in out.iter().zip(&v.expected).enumerate() {
        let same = got.to_bits() == want.to_bits() || (nan_as_one && got.is_nan() && want.is_nan());
        if !same {
            if bad < 10 {
                eprintln!(
                    "{what}: element {i} (block {}, +{}): got {got:e} ({:#010x}), gguf-py {want:e} ({:#010x})",
                    i as u64 / epb,
                    i as u64 % epb,
                    got.to_bits(),
                    want.to_bits()
                );
            }
            bad += 1;
        }
    }
    bad
}

#[test]
fn every_type_bit_exact_with_gguf_py() {
    let mut failed = Vec::new();
    for ty in GgmlType::ALL {
        let v = load(dir().join(format!("{}.bin", ty.name())));
        assert_eq!(v.ty, ty, "{}: header id", ty.name());
        let bad = check(&v, ty.name(), false);
        eprintln!("{:7} {:5} values, {bad} mismatches", ty.name(), v.expected.len());
        if bad > 0 {
            failed.push(ty.name());
        }
    }
    assert!(failed.is_empty(), "mismatches in {failed:?}");
}

/// Blocks whose scale fields are inf, quiet NaN or signalling NaN (and inf * 0): outputs must be
/// bit-exact except that NaN payloads may differ (NumPy's and our compiler's choice of operand
/// when both are NaN is not a defined part of either); we also report whether they are exact.
#[test]
fn nonfinite_scales() {
    let mut failed = Vec::new();
    for ty in GgmlType::ALL {
        let path = dir().join("nonfinite").join(format!("{}.bin", ty.name()));
        if !path.exists() {
            continue;
        }
        let v = load(path);
        let bad = check(&v, &format!("{} (nonfinite)", ty.name()), true);
        let strict = check(&v, &format!("{} (nonfinite, strict)", ty.name()), false);
        eprintln!("{:7} nonfinite: {} values, {bad} mismatches, {strict} NaN payload differences", ty.name(), v.expected.len());
        if bad > 0 {
            failed.push(ty.name());
        }
    }
    assert!(failed.is_empty(), "mismatches in {failed:?}");
}

fn fnv1a64(data: impl IntoIterator<Item = u8>) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// All 65536 F16 and BF16 bit patterns against the hash of gguf-py's output.
#[test]
fn f16_bf16_exhaustive() {
    let text = std::fs::read_to_string(dir().join("exhaustive.txt")).unwrap();
    let raw: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
    let mut n = 0;
    for line in text.lines() {
        let (name, hash) = line.split_once(' ').unwrap();
        let ty = GgmlType::ALL.into_iter().find(|t| t.name() == name).unwrap();
        let mut out = Vec::new();
        dequantize(ty, &raw, &mut out);
        assert_eq!(out.len(), 65536);
        let got = fnv1a64(out.iter().flat_map(|f| f.to_le_bytes()));
        assert_eq!(format!("{got:016x}"), hash, "{name}");
        n += 1;
    }
    assert_eq!(n, 2);
}

#[test]
fn ids_names_geometry() {
    for ty in GgmlType::ALL {
        assert_eq!(GgmlType::from_id(ty.id()), Some(ty));
        assert_eq!(ty.to_string(), ty.name());
        let (e, b) = ty.block();
        assert!(e >= 1 && b >= 2);
    }
    let ids: Vec<u32> = (0..64).filter(|&i| GgmlType::from_id(i).is_some()).collect();
    assert_eq!(ids, [0, 1, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 15, 20, 23, 30]);
    assert_eq!(GgmlType::Q4_K.block(), (256, 144));
    assert_eq!(GgmlType::Q6_K.block(), (256, 210));
    assert_eq!(GgmlType::from_id(9), None); // Q8_1: not supported
    assert_eq!(GgmlType::from_id(u32::MAX), None);
}

/// xorshift64*, so the test needs no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn short_tails_are_ignored_and_arbitrary_bytes_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let data: Vec<u8> = (0..3 * 292 + 17).map(|_| rng.next() as u8).collect();
    for ty in GgmlType::ALL {
        let (e, b) = ty.block();
        let (e, b) = (e as usize, b as usize);
        let mut whole = Vec::new();
        let mut out = vec![0.5f32; 3];
        for len in 0..data.len() {
            dequantize(ty, &data[..len], &mut out);
            assert_eq!(out.len(), len / b * e, "{ty} len {len}");
            if len % b == 0 {
                whole = out.clone();
            } else {
                // a partial block adds nothing and changes nothing
                assert!(out.iter().zip(&whole).all(|(a, b)| a.to_bits() == b.to_bits()), "{ty} len {len}");
            }
        }
        // unaligned start
        dequantize(ty, &data[1..], &mut out);
        assert_eq!(out.len(), (data.len() - 1) / b * e);
    }
}

/// The GPU's block layouts (`abi::GGML_LAYOUTS`) describe the same blocks as the CPU's
/// dequantizer: same id, name and geometry, and fields that add up to the block.
#[test]
fn gpu_layouts_match_the_cpu_block_types() {
    use codecllm::abi::{ggml_layout, GGML_LAYOUTS};
    for (i, l) in GGML_LAYOUTS.iter().enumerate() {
        let ty = GgmlType::from_id(l.id).unwrap_or_else(|| panic!("{}: unknown id {}", l.name, l.id));
        assert_eq!(ty.name(), l.name);
        assert_eq!(ty.block(), (l.block_elems as u64, l.block_bytes() as u64), "{}", l.name);
        assert_eq!(ggml_layout(l.id), Some(i));
        assert_eq!(codecllm::gpu::gpu_layout(ty), Some(i));
        // Every plane starts 16-byte aligned, whatever the block count.
        for blocks in [1u64, 3, 7, 4096] {
            assert!((0..=l.fields.len()).all(|f| l.plane(f, blocks) % 16 == 0), "{} with {blocks} blocks", l.name);
            assert!(l.bytes(blocks) >= blocks * l.block_bytes() as u64 && l.bytes(blocks) < blocks * l.block_bytes() as u64 + 16 * l.fields.len() as u64);
        }
    }
    for ty in [GgmlType::IQ4_NL, GgmlType::IQ4_XS, GgmlType::Q8_K, GgmlType::F16] {
        assert_eq!(codecllm::gpu::gpu_layout(ty), None, "{ty} has no GPU layout: converted to INT8 at load");
    }
}

/// `ggml_planes` puts field f of block b at `plane(f) + b · len(f)`, and nothing else
/// anywhere (the padding is zero), also across the runs of blocks it fills in parallel
/// (16384 a run: 40001 blocks end in a partial third run); a run that is not whole blocks
/// is an error.
#[test]
fn planes_hold_every_field_of_every_block() {
    use codecllm::abi::GGML_LAYOUTS;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for (i, l) in GGML_LAYOUTS.iter().enumerate() {
        let size = l.block_bytes() as usize;
        for blocks in [1usize, 5, 33, 40_001] {
            let data: Vec<u8> = (0..blocks * size).map(|_| (rng.next() >> 56) as u8 | 1).collect();
            let planes = codecllm::gpu::ggml_planes(i, &data).unwrap();
            assert_eq!(planes.len() as u64, l.bytes(blocks as u64));
            let mut covered = vec![false; planes.len()];
            let mut offset = 0;
            for (f, &len) in l.fields.iter().enumerate() {
                let (len, base) = (len as usize, l.plane(f, blocks as u64) as usize);
                for (b, block) in data.chunks_exact(size).enumerate() {
                    let at = base + b * len;
                    assert_eq!(planes[at..at + len], block[offset..offset + len], "{} field {f} block {b}", l.name);
                    covered[at..at + len].iter_mut().for_each(|c| *c = true);
                }
                offset += len;
            }
            // The data bytes are never 0 (`| 1`), so a zero byte is padding.
            assert!(planes.iter().zip(&covered).all(|(&p, &c)| c || p == 0), "{}: padding must be zero", l.name);
        }
        assert!(codecllm::gpu::ggml_planes(i, &vec![0u8; size + 1]).is_err(), "{}: a partial block", l.name);
    }
}

/// The kernels' reading of every GPU block type (`ggml_blocks`: the planes' addressing,
/// each task's loads, quants, sub-block scales and offsets, and where each group of 8
/// values goes) replayed on the CPU over random valid blocks: every value it gives is the
/// CPU dequantizer's, bit for bit, through the same formula the GPU's dequantization uses.
#[test]
fn kernel_block_logic_reproduces_the_cpu_dequantizer() {
    use codecllm::abi::GGML_LAYOUTS;
    use codecllm::gpu::ggml_blocks::{self, Blocks, Mem, Planes, Task, Q2_K, Q3_K, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0};
    use rand::SeedableRng;

    struct Host;
    impl Mem for Host {
        unsafe fn v4(p: *const u8) -> [u32; 4] {
            assert_eq!(p as usize % 16, 0, "a 16-byte load off alignment");
            let w = |i: usize| u32::from_le_bytes(std::ptr::read(p.add(4 * i) as *const [u8; 4]));
            [w(0), w(1), w(2), w(3)]
        }
        unsafe fn word(p: *const u8) -> u32 {
            assert_eq!(p as usize % 4, 0, "a 4-byte load off alignment");
            u32::from_le_bytes(std::ptr::read(p as *const [u8; 4]))
        }
        unsafe fn half(p: *const u8) -> f32 {
            assert_eq!(p as usize % 2, 0, "a 2-byte load off alignment");
            half::f16::from_le_bytes(std::ptr::read(p as *const [u8; 2])).to_f32()
        }
    }

    /// Value `i` of group `G` of the task, as the GPU's dequantization computes it.
    fn value<F: Blocks, const G: usize>(t: &Task, part: u32, i: usize) -> f32 {
        let (scale, off) = (t.scale[G / F::SUB], t.off[G / F::SUB]);
        ggml_blocks::value::<F>(ggml_blocks::quant::<F>(F::quants::<G>(t, part), i), scale, off)
    }

    fn replay<F: Blocks>(rng: &mut rand::rngs::StdRng) {
        let l = &GGML_LAYOUTS[F::LAYOUT];
        let ty = GgmlType::from_id(l.id).unwrap();
        let (rows, cols) = (5, 3 * 256);
        for spread in [false, true] {
            let blocks = codecllm::app::bench::data::random_ggml_blocks(rng, F::LAYOUT, rows, cols, spread).unwrap();
            let mut want = Vec::new();
            dequantize(ty, &blocks, &mut want);
            let planes = codecllm::gpu::ggml_planes(F::LAYOUT, &blocks).unwrap();
            // 16-byte aligned, as a device allocation is.
            let mut aligned = vec![0u128; planes.len().div_ceil(16)];
            bytemuck::cast_slice_mut::<u128, u8>(&mut aligned)[..planes.len()].copy_from_slice(&planes);
            let p = Planes { base: aligned.as_ptr() as *const u8, blocks: (rows * cols / l.block_elems as usize) as u64 };
            let bpr = cols / l.block_elems as usize;
            let mut got = vec![f32::NAN; rows * cols];
            let mut seen = vec![0u8; rows * cols];
            for r in 0..rows {
                for t in 0..bpr * F::TASKS as usize {
                    let (blk, part) = (t / F::TASKS as usize, (t % F::TASKS as usize) as u32);
                    // SAFETY: the planes of rows · bpr blocks, blk < bpr, part < TASKS.
                    let task = unsafe { F::load::<Host>(&p, (r * bpr + blk) as u64, part) };
                    let base = r * cols + blk * l.block_elems as usize;
                    macro_rules! group {
                        ($($g:literal),*) => {$(
                            if $g < F::GROUPS {
                                let at = base + F::x_index(part, $g as u32) as usize;
                                for i in 0..8 {
                                    got[at + i] = value::<F, $g>(&task, part, i);
                                    seen[at + i] += 1;
                                }
                            }
                        )*};
                    }
                    group!(0, 1, 2, 3, 4, 5, 6, 7);
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "{}: the tasks' groups cover every value exactly once", l.name);
            let bad = got.iter().zip(&want).position(|(a, b)| a.to_bits() != b.to_bits());
            assert!(bad.is_none(), "{} (spread mins {spread}): value {bad:?} is {:?}, the CPU gives {:?}", l.name, bad.map(|i| got[i]), bad.map(|i| want[i]));
        }
    }

    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_ba5e);
    replay::<Q4_0>(&mut rng);
    replay::<Q4_1>(&mut rng);
    replay::<Q5_0>(&mut rng);
    replay::<Q5_1>(&mut rng);
    replay::<Q8_0>(&mut rng);
    replay::<Q4_K>(&mut rng);
    replay::<Q5_K>(&mut rng);
    replay::<Q6_K>(&mut rng);
    replay::<Q2_K>(&mut rng);
    replay::<Q3_K>(&mut rng);
}
