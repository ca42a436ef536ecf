//! GPU kernels and decode against the CPU reference. Each test prints why it skips on a
//! machine without a GPU; `CODECLLM_REQUIRE_GPU=1` makes that a failure.
mod common;
use codecllm::abi::WGMMA_TILES;
use codecllm::codec::decode_bytes;
use codecllm::codec::Int8Matrix;
use codecllm::container::{Codec, Container};
use codecllm::gpu::{Decoder, DeviceCompressedTensor, DeviceInt8Buffer, Gpu, Int8Weights, LinearPlan, GEMM_TILES};
use codecllm::import::SourceModel;
use codecllm::pipeline::compress::CompressOptions;
use codecllm::pipeline::reference::linear;
use common::*;
use half::f16;
use rand::Rng;
use safetensors::Dtype;

/// FP16 outputs carry 2^-11 relative rounding each; FP32 accumulation adds far less.
const LINEAR_TOL: f64 = 1e-3;
/// FP16 NaN written into outputs before every launch: an unwritten element cannot pass.
const POISON: f16 = f16::from_bits(0x7e00);

fn run_linear(gpu: &Gpu, w: &Int8Matrix, x: &[f16], m: usize, plan: LinearPlan) -> Vec<f16> {
    let s = &gpu.stream;
    let q = s.clone_htod(bytemuck::cast_slice::<i8, u8>(&w.q)).unwrap();
    let sc = s.clone_htod(&w.scales).unwrap();
    let xd = s.clone_htod(x).unwrap();
    let mut y = s.clone_htod(&vec![POISON; m * w.rows]).unwrap();
    let weights = Int8Weights { q: q.slice(..), scales: sc.slice(..), rows: w.rows, cols: w.cols, group_size: w.group_size };
    gpu.linear_planned(&xd, m, &weights, &mut y, s, plan).unwrap();
    s.clone_dtoh(&y).unwrap()
}

fn check_linear(gpu: &Gpu, rng: &mut impl Rng, n: usize, k: usize, m: usize, group: usize) {
    check_plan(gpu, rng, n, k, m, group, Gpu::plan(m, n, k));
}

fn check_plan(gpu: &Gpu, rng: &mut impl Rng, n: usize, k: usize, m: usize, group: usize, plan: LinearPlan) {
    let w = Int8Matrix::quantize(&heavy_tailed(rng, n * k), n, k, group).unwrap().0;
    let x: Vec<f16> = (0..m * k).map(|_| f16::from_f32(rng.gen_range(-1.0..1.0))).collect();
    let y = run_linear(gpu, &w, &x, m, plan);
    // The dequantize-then-cuBLAS plan multiplies by q·s rounded to FP16: compare with those
    // weights' product, so that a short row whose sum cancels is not blamed for the rounding.
    let want = if plan == LinearPlan::DequantCublas {
        let w16: Vec<f32> = w.dequantize().iter().map(|&v| f16::from_f32(v).to_f32()).collect();
        reference_linear(&x, m, &w16, n, k)
    } else {
        linear(&x.iter().map(|v| v.to_f32()).collect::<Vec<_>>(), m, &w)
    };
    assert!(y.iter().all(|v| v.is_finite()), "n={n} k={k} m={m} g={group} {plan:?}: unwritten (poisoned) or non-finite outputs");
    let got: Vec<f64> = y.iter().map(|v| v.to_f64()).collect();
    let e = rel_err(&got, &want);
    assert!(e < LINEAR_TOL, "n={n} k={k} m={m} g={group} {plan:?}: relative error {e}");
}

#[test]
fn every_gemm_variant_and_split_matches_reference() {
    let Some(gpu) = gpu_or_skip("every_gemm_variant_and_split_matches_reference") else { return };
    let mut rng = rng(fresh_seed());
    for tile in 0..GEMM_TILES.len() {
        for splits in [0, 1, 3] {
            // k = 4112: neither 64- nor 128-divisible; k = 80: one partial chunk.
            for (n, k, m, group) in [(333, 4112, 17, 4112), (100, 80, 64, 32), (64, 576, 130, 576), (72, 1536, 5, 128)] {
                check_plan(&gpu, &mut rng, n, k, m, group, LinearPlan::Gemm { tile, splits });
            }
        }
    }
}

/// The Hopper `wgmma` GEMM (not yet picked by `Gpu::plan`): every variant and split
/// against the f64 reference on odd shapes — n and k off the tiles (k only a multiple of
/// 16), batches from 9 to 4096 — with per-channel and per-group scales (groups of 16, 32,
/// 48 — straddling the 64-column k blocks — and 128), every output poisoned first; and the
/// cases the plan refuses. Skips unless the GPU is compute capability 9.0 (sm_90a).
#[test]
fn every_wgmma_variant_and_split_matches_reference() {
    let test = "every_wgmma_variant_and_split_matches_reference";
    let Some(gpu) = gpu_or_skip(test) else { return };
    if let Err(why) = gpu.kernels.wgmma() {
        assert!(gpu.compute_capability != (9, 0), "{test}: the wgmma kernels do not load on this compute capability 9.0 GPU: {why}");
        return skip(test, &why);
    }
    let mut rng = rng(fresh_seed());
    let shapes = [
        (333, 4112, 9, 4112),
        (100, 80, 17, 32),
        (200, 576, 130, 48),
        (72, 1536, 64, 128),
        (129, 1008, 257, 1008),
        (136, 272, 4096, 16),
        (64, 64, 16, 64),
        (1, 16, 300, 16),
    ];
    for (n, k, m, group) in shapes {
        let w = Int8Matrix::quantize(&heavy_tailed(&mut rng, n * k), n, k, group).unwrap().0;
        let x: Vec<f16> = (0..m * k).map(|_| f16::from_f32(rng.gen_range(-1.0..1.0))).collect();
        let want = linear(&x.iter().map(|v| v.to_f32()).collect::<Vec<_>>(), m, &w);
        for tile in 0..WGMMA_TILES.len() {
            for splits in [0, 1, 3] {
                let plan = LinearPlan::Wgmma { tile, splits };
                let y = run_linear(&gpu, &w, &x, m, plan);
                assert!(y.iter().all(|v| v.is_finite()), "n={n} k={k} m={m} g={group} {plan:?}: unwritten (poisoned) or non-finite outputs");
                let e = rel_err(&y.iter().map(|v| v.to_f64()).collect::<Vec<_>>(), &want);
                assert!(e < LINEAR_TOL, "n={n} k={k} m={m} g={group} {plan:?}: relative error {e}");
            }
        }
    }
    // Refused with an error, not computed wrongly: k not a multiple of 16, groups that are
    // not multiples of 16, a variant that does not exist.
    let s = &gpu.stream;
    for (n, k, group, tile) in [(8, 40, 40, 0), (8, 96, 24, 0), (8, 64, 64, WGMMA_TILES.len())] {
        let w = Int8Matrix::quantize(&heavy_tailed(&mut rng, n * k), n, k, group).unwrap().0;
        let q = s.clone_htod(bytemuck::cast_slice::<i8, u8>(&w.q)).unwrap();
        let sc = s.clone_htod(&w.scales).unwrap();
        let xd = s.clone_htod(&vec![f16::ONE; 16 * k]).unwrap();
        let mut y = s.alloc_zeros::<f16>(16 * n).unwrap();
        let weights = Int8Weights { q: q.slice(..), scales: sc.slice(..), rows: n, cols: k, group_size: group };
        let plan = LinearPlan::Wgmma { tile, splits: 0 };
        let r = gpu.linear_planned(&xd, 16, &weights, &mut y, s, plan);
        assert!(matches!(r, Err(codecllm::Error::Invalid(_))), "k={k} g={group} {plan:?}: expected a refusal, got {r:?}");
    }
}

/// The dequantize-then-cuBLAS plan, on the batches `plan` gives it, odd shapes, groups,
/// and a matrix of two bands (4100 × 4112 > the 2^24-element band) whose second band is
/// 20 rows: every column of y written (poisoned first) and within tolerance of the f64
/// product with the FP16 weights it computes with.
#[test]
fn dequant_cublas_plan_matches_reference() {
    let Some(gpu) = gpu_or_skip("dequant_cublas_plan_matches_reference") else { return };
    let mut rng = rng(fresh_seed());
    assert_eq!(Gpu::plan(300, 4096, 4096), LinearPlan::DequantCublas);
    for (n, k, m, group) in [(4100, 4112, 3, 4112), (333, 1000, 300, 128), (7, 33, 257, 33), (576, 1536, 512, 32), (1, 16, 1, 16)] {
        check_plan(&gpu, &mut rng, n, k, m, group, LinearPlan::DequantCublas);
    }
}

#[test]
fn fused_linear_matches_reference_on_odd_shapes_batches_and_groups() {
    let Some(gpu) = gpu_or_skip("fused_linear_matches_reference_on_odd_shapes_batches_and_groups") else { return };
    let mut rng = rng(fresh_seed());
    for (n, k) in [(1, 16), (7, 33), (5, 1), (129, 1000), (64, 4096), (333, 4112), (1536, 576), (576, 1536)] {
        for m in [1, 2, 3, 5, 8, 9, 17] {
            for group in [k, 32, 128] {
                if group != k && group > k {
                    continue;
                }
                check_linear(&gpu, &mut rng, n, k, m, group);
            }
        }
    }
}

/// One launch over two or three matrices (a block's q, k, v or gate, up) gives each the
/// bits of its own `linear`, and writes every row (outputs poisoned first).
#[test]
fn fused_one_row_linear_equals_separate_launches() {
    let Some(gpu) = gpu_or_skip("fused_one_row_linear_equals_separate_launches") else { return };
    let mut rng = rng(fresh_seed());
    let s = &gpu.stream;
    for (rows, k, group) in [(vec![576, 192, 192], 576, 576), (vec![1536, 1536], 576, 32), (vec![7, 1, 13], 33, 33), (vec![100, 60, 8], 1024, 128)] {
        let mats: Vec<Int8Matrix> = rows.iter().map(|&n| Int8Matrix::quantize(&heavy_tailed(&mut rng, n * k), n, k, group).unwrap().0).collect();
        let x: Vec<f16> = (0..k).map(|_| f16::from_f32(rng.gen_range(-1.0..1.0))).collect();
        let dev: Vec<_> = mats.iter().map(|w| (s.clone_htod(bytemuck::cast_slice::<i8, u8>(&w.q)).unwrap(), s.clone_htod(&w.scales).unwrap())).collect();
        let weights: Vec<Int8Weights> =
            dev.iter().zip(&mats).map(|((q, sc), w)| Int8Weights { q: q.slice(..), scales: sc.slice(..), rows: w.rows, cols: k, group_size: group }).collect();
        let mut ys: Vec<_> = rows.iter().map(|&n| s.clone_htod(&vec![POISON; n]).unwrap()).collect();
        let xd = s.clone_htod(&x).unwrap();
        let mut parts: Vec<_> = weights.iter().zip(ys.iter_mut()).map(|(w, y)| (w, y.slice_mut(..))).collect();
        gpu.linear_m1_fused(&xd, &mut parts, s).unwrap();
        drop(parts);
        for ((w, y), m) in weights.iter().zip(&ys).zip(&mats) {
            let got = s.clone_dtoh(y).unwrap();
            let alone = run_linear(&gpu, m, &x, 1, Gpu::plan(1, m.rows, k));
            assert!(
                got.iter().map(|v| v.to_bits()).eq(alone.iter().map(|v| v.to_bits())),
                "rows {rows:?} k={k} g={group}: matrix of {} rows differs from its own launch",
                w.rows
            );
        }
    }
}

#[test]
fn tensor_core_gemm_matches_reference_on_large_batches() {
    let Some(gpu) = gpu_or_skip("tensor_core_gemm_matches_reference_on_large_batches") else { return };
    let mut rng = rng(fresh_seed());
    for (n, k) in [(64, 4096), (333, 4112), (1536, 576), (576, 1536), (100, 80)] {
        for m in [33, 64, 130, 257] {
            for group in [k, 128] {
                if group <= k {
                    check_linear(&gpu, &mut rng, n, k, m, group);
                }
            }
        }
    }
}

#[test]
fn dequantize_is_bit_exact() {
    let Some(gpu) = gpu_or_skip("dequantize_is_bit_exact") else { return };
    let mut rng = rng(fresh_seed());
    // Scalar shapes (k or group not multiples of 16), the 16-wide vector path per group and
    // per channel, rows wider than one pass of the block (14336), and 16 | k with a group
    // of 8 (scalar again).
    for (n, k, group) in [(3, 17, 17), (130, 300, 32), (64, 4096, 128), (1, 1, 1), (37, 4096, 4096), (9, 14336, 32), (5, 4112, 16), (4, 64, 8)] {
        let w = Int8Matrix::quantize(&heavy_tailed(&mut rng, n * k), n, k, group).unwrap().0;
        let s = &gpu.stream;
        let q = s.clone_htod(bytemuck::cast_slice::<i8, u8>(&w.q)).unwrap();
        let sc = s.clone_htod(&w.scales).unwrap();
        let mut out = s.clone_htod(&vec![POISON; n * k]).unwrap();
        let weights = Int8Weights { q: q.slice(..), scales: sc.slice(..), rows: n, cols: k, group_size: group };
        gpu.dequantize(&weights, &mut out.slice_mut(..), s).unwrap();
        let got = s.clone_dtoh(&out).unwrap();
        let want: Vec<f16> = w.dequantize().into_iter().map(f16::from_f32).collect();
        assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{n}x{k} g{group}");
        // An output view one element off 16-byte alignment takes the scalar path.
        let mut shifted = s.clone_htod(&vec![POISON; n * k + 1]).unwrap();
        gpu.dequantize(&weights, &mut shifted.slice_mut(1..), s).unwrap();
        let got = s.clone_dtoh(&shifted).unwrap();
        assert_eq!(got[0].to_bits(), POISON.to_bits());
        assert!(got[1..].iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{n}x{k} g{group}, unaligned output");
    }
}

/// A checkpoint whose INT8 data mixes compressible (heavy-tailed) and incompressible
/// (uniform) rows, so tensors hold both coded and raw chunks.
fn mixed_checkpoint(dir: &std::path::Path, rng: &mut impl Rng) -> std::path::PathBuf {
    let mut tensors = Vec::new();
    for (i, &(n, k)) in [(96, 1000), (64, 4096), (300, 77), (1536, 576)].iter().enumerate() {
        let mut w = heavy_tailed(rng, n * k);
        for v in &mut w[..n * k / 3] {
            *v = rng.gen_range(-1.0..1.0);
        }
        tensors.push(RawTensor::float(&format!("l{i}.weight"), Dtype::F16, &[n, k], &w));
    }
    let src = dir.join("mixed.safetensors");
    write_safetensors(&src, &tensors);
    src
}

/// `mixed_checkpoint` compressed with Zstd into `dir/m.clm`.
fn mixed_container(dir: &std::path::Path, rng: &mut impl Rng, chunk_size: u32) -> std::path::PathBuf {
    let model = SourceModel::open(&mixed_checkpoint(dir, rng)).unwrap();
    let out = dir.join("m.clm");
    compress_model(&model, &out, &CompressOptions { codec: Codec::Zstd, chunk_size, ..Default::default() }).unwrap();
    out
}

#[test]
fn gpu_decode_equals_cpu_decode_for_every_codec() {
    let Some(gpu) = gpu_or_skip("gpu_decode_equals_cpu_decode_for_every_codec") else { return };
    let mut rng = rng(fresh_seed());
    let dir = tempfile::tempdir().unwrap();
    let src = mixed_checkpoint(dir.path(), &mut rng);
    let model = SourceModel::open(&src).unwrap();
    for codec in [Codec::Zstd, Codec::Raw, Codec::Ans, Codec::Rans] {
        for chunk_size in [4096, 16384, 65536] {
            let out = dir.path().join(format!("{codec:?}-{chunk_size}.clm"));
            compress_model(&model, &out, &CompressOptions { codec, chunk_size, ..Default::default() }).unwrap();
            let c = Container::open(&out).unwrap();
            let tensors: Vec<_> = c.index.tensors.iter().map(|t| DeviceCompressedTensor::upload(&gpu, &c, &t.name).unwrap()).collect();
            let mut decoder = Decoder::new(&gpu, &tensors.iter().map(|t| &t.table).collect::<Vec<_>>()).unwrap();
            let (mut raw_chunks, mut wants) = (0, Vec::new());
            for (t, entry) in tensors.iter().zip(&c.index.tensors) {
                raw_chunks += entry.data.chunks.iter().filter(|ch| ch.raw).count();
                let mut buf = DeviceInt8Buffer::new(&gpu, t.len()).unwrap();
                gpu.stream.memcpy_htod(&vec![0xA5u8; t.len()], &mut buf.data).unwrap();
                t.decode_into(&mut decoder, &mut buf, &gpu.stream).unwrap();
                decoder.check(&gpu.stream).unwrap();
                let got = gpu.stream.clone_dtoh(&buf.data).unwrap();
                let want = if codec == Codec::Ans {
                    let s = model.tensor(&t.name).unwrap();
                    let m = Int8Matrix::quantize(&model.to_f32(s), t.rows, t.cols, t.cols).unwrap().0;
                    bytemuck::cast_slice::<i8, u8>(&m.q).to_vec()
                } else {
                    decode_bytes(&c, &t.name).unwrap()
                };
                assert!(got == want, "{codec:?} chunk {chunk_size}: tensor {} differs after GPU decode", t.name);
                wants.push(want);
            }
            assert!(raw_chunks > 0, "the mixed checkpoint should hold raw chunks");
            // All tensors in one batch (one nvCOMP call, slots from per-tensor bases), into
            // one poisoned buffer: the same bytes.
            let tables: Vec<_> = tensors.iter().map(|t| &t.table).collect();
            let mut batch = Decoder::for_batches(&gpu, std::slice::from_ref(&tables)).unwrap();
            let offsets: Vec<usize> = tensors.iter().scan(0, |at, t| Some(std::mem::replace(at, *at + t.len().div_ceil(256) * 256))).collect();
            let total = offsets.last().unwrap() + tensors.last().unwrap().len();
            let mut out = gpu.stream.clone_htod(&vec![0xA5u8; total]).unwrap();
            let base = cudarc::driver::DevicePtrMut::device_ptr_mut(&mut out, &gpu.stream).0;
            let items: Vec<_> = tensors.iter().zip(&offsets).map(|(t, &o)| (&t.table, t.stored_ptr(&gpu.stream), base + o as u64)).collect();
            // SAFETY: every tensor's stored bytes are resident; `out` holds every range.
            unsafe { batch.decode_batch(&items, &gpu.stream).unwrap() };
            batch.check(&gpu.stream).unwrap();
            let got = gpu.stream.clone_dtoh(&out).unwrap();
            for ((t, &o), want) in tensors.iter().zip(&offsets).zip(&wants) {
                assert!(&got[o..o + t.len()] == want.as_slice(), "{codec:?} chunk {chunk_size}: tensor {} differs after a batched decode", t.name);
            }
        }
    }
}

#[test]
fn decode_then_linear_matches_reference() {
    let Some(gpu) = gpu_or_skip("decode_then_linear_matches_reference") else { return };
    let mut rng = rng(fresh_seed());
    let dir = tempfile::tempdir().unwrap();
    let out = mixed_container(dir.path(), &mut rng, 16384);
    let c = Container::open(&out).unwrap();
    for entry in &c.index.tensors {
        let t = DeviceCompressedTensor::upload(&gpu, &c, &entry.name).unwrap();
        let mut decoder = Decoder::new(&gpu, &[&t.table]).unwrap();
        let mut q = DeviceInt8Buffer::new(&gpu, t.len()).unwrap();
        let m = 4;
        let x: Vec<f16> = (0..m * t.cols).map(|_| f16::from_f32(rng.gen_range(-1.0..1.0))).collect();
        let xd = gpu.stream.clone_htod(&x).unwrap();
        let mut y = gpu.stream.clone_htod(&vec![POISON; m * t.rows]).unwrap();
        t.decode_into(&mut decoder, &mut q, &gpu.stream).unwrap();
        gpu.linear(&xd, m, &t.weights(&q), &mut y, &gpu.stream).unwrap();
        decoder.check(&gpu.stream).unwrap();
        let got: Vec<f64> = gpu.stream.clone_dtoh(&y).unwrap().iter().map(|v| v.to_f64()).collect();
        let w = codecllm::codec::decode_int8(&c, &entry.name).unwrap();
        let want = linear(&x.iter().map(|v| v.to_f32()).collect::<Vec<_>>(), m, &w);
        assert!(got.iter().all(|v| v.is_finite()));
        let e = rel_err(&got, &want);
        assert!(e < LINEAR_TOL, "{}: relative error {e}", entry.name);
    }
}

/// Corrupted bytes never reach nvCOMP: the upload verifies every chunk checksum.
#[test]
fn corrupted_chunk_fails_the_upload() {
    let Some(gpu) = gpu_or_skip("corrupted_chunk_fails_the_upload") else { return };
    let mut rng = rng(fresh_seed());
    let dir = tempfile::tempdir().unwrap();
    let out = mixed_container(dir.path(), &mut rng, 4096);
    let span = Container::open(&out).unwrap().tensor("l1.weight").unwrap().data.spans().nth(3).unwrap();
    let mut bytes = std::fs::read(&out).unwrap();
    bytes[span.offset as usize + 7] ^= 0x40;
    std::fs::write(&out, bytes).unwrap();
    let c = Container::open(&out).unwrap();
    let err = DeviceCompressedTensor::upload(&gpu, &c, "l1.weight").map(|_| ()).expect_err("checksum must fail").to_string();
    assert!(err.contains("tensor 'l1.weight', chunk 3") && err.contains("checksum"), "{err}");
}

/// A chunk that is a valid frame of the wrong length (as a faulty encoder would write),
/// with a matching checksum, passes the upload; the GPU size/status check must catch it.
#[test]
fn wrong_size_chunk_is_an_error_not_garbage() {
    let Some(gpu) = gpu_or_skip("wrong_size_chunk_is_an_error_not_garbage") else { return };
    let mut rng = rng(fresh_seed());
    let dir = tempfile::tempdir().unwrap();
    let out = mixed_container(dir.path(), &mut rng, 4096);
    let c = Container::open(&out).unwrap();
    let span = c.tensor("l1.weight").unwrap().data.spans().last().unwrap();
    assert!(!span.record.raw, "the heavy-tailed tail of l1 compresses");
    drop(c);
    let short = zstd::bulk::compress(&vec![7u8; span.decoded_len as usize / 2], 3).unwrap();
    let mut bytes = std::fs::read(&out).unwrap();
    bytes[span.offset as usize..span.offset as usize + short.len()].copy_from_slice(&short);
    std::fs::write(&out, bytes).unwrap();
    rewrite_index(&out, |index| {
        let t = index["tensors"].as_array_mut().unwrap().iter_mut().find(|t| t["name"] == "l1.weight").unwrap();
        t["data"]["chunks"][span.index] = serde_json::json!([short.len(), xxhash_rust::xxh3::xxh3_64(&short), false]);
    });

    let c = Container::open(&out).unwrap();
    let t = DeviceCompressedTensor::upload(&gpu, &c, "l1.weight").unwrap();
    let mut decoder = Decoder::new(&gpu, &[&t.table]).unwrap();
    let mut q = DeviceInt8Buffer::new(&gpu, t.len()).unwrap();
    t.decode_into(&mut decoder, &mut q, &gpu.stream).unwrap();
    let err = decoder.check(&gpu.stream).expect_err("a short frame must fail").to_string();
    assert!(err.contains(&format!("tensor 'l1.weight', chunk {}", span.index)), "{err}");
    // The decoder is usable again after reporting.
    let good = DeviceCompressedTensor::upload(&gpu, &c, "l0.weight").unwrap();
    let mut d2 = Decoder::new(&gpu, &[&good.table]).unwrap();
    let mut q2 = DeviceInt8Buffer::new(&gpu, good.len()).unwrap();
    good.decode_into(&mut d2, &mut q2, &gpu.stream).unwrap();
    d2.check(&gpu.stream).unwrap();
    t.decode_into(&mut decoder, &mut q, &gpu.stream).unwrap();
    assert!(decoder.check(&gpu.stream).is_err(), "the same bad chunk fails again");
}

/// A byte flipped in VRAM after the upload (past the checksums) must make the kernel
/// report the chunk whenever the CPU decoder (the oracle) rejects the same bytes, and
/// intact chunks must still decode. rANS keeps no redundancy beyond its end states and
/// word count, so not every flip is detectable: the flips tested are those the CPU
/// decoder detects.
#[test]
fn rans_chunk_flipped_in_vram_is_reported() {
    let Some(gpu) = gpu_or_skip("rans_chunk_flipped_in_vram_is_reported") else { return };
    let mut rng = rng(fresh_seed());
    let dir = tempfile::tempdir().unwrap();
    let model = SourceModel::open(&mixed_checkpoint(dir.path(), &mut rng)).unwrap();
    let out = dir.path().join("rans.clm");
    compress_model(&model, &out, &CompressOptions { codec: Codec::Rans, chunk_size: 4096, ..Default::default() }).unwrap();
    let c = Container::open(&out).unwrap();
    let entry = c.tensor("l1.weight").unwrap();
    let span = entry.data.spans().find(|s| !s.record.raw).expect("a coded chunk");
    let table = codecllm::gpu::DeviceChunkTable::build(&gpu, &c, "l1.weight").unwrap();
    let stored = c.read_stored_blob("l1.weight", &entry.data).unwrap();
    let at = (span.offset - entry.data.offset) as usize;
    let cpu = codecllm::codec::ChunkDecoder::for_blob(&entry.data).unwrap();
    let detected = |range: std::ops::Range<usize>| {
        range
            .flat_map(|o| (0..8).map(move |b| (o, 1u8 << b)))
            .find(|&(o, bit)| {
                let mut chunk = stored[at..at + span.record.stored_len as usize].to_vec();
                chunk[o - at] ^= bit;
                cpu.decode(false, &chunk, &mut vec![0; span.decoded_len as usize]).is_err()
            })
            .expect("some flip in the range is detectable")
    };
    for (what, (offset, bit)) in [("a lane state", detected(at + 4..at + 8)), ("a word", detected(at + 128..at + span.record.stored_len as usize))] {
        let mut bad = stored.clone();
        bad[offset] ^= bit;
        let src = gpu.stream.clone_htod(&bad).unwrap();
        let mut dst = gpu.stream.alloc_zeros::<u8>(table.len()).unwrap();
        let mut decoder = Decoder::new(&gpu, &[&table]).unwrap();
        let (s, d) = (cudarc::driver::DevicePtr::device_ptr(&src, &gpu.stream).0, cudarc::driver::DevicePtrMut::device_ptr_mut(&mut dst, &gpu.stream).0);
        // SAFETY: `src` holds the tensor's stored bytes, `dst` its decoded length.
        unsafe { table.decode_raw(&mut decoder, s, d, &gpu.stream).unwrap() };
        let err = decoder.check(&gpu.stream).expect_err(what).to_string();
        assert!(err.contains(&format!("tensor 'l1.weight', chunk {}", span.index)), "{what}: {err}");
    }
    let src = gpu.stream.clone_htod(&stored).unwrap();
    let mut dst = gpu.stream.alloc_zeros::<u8>(table.len()).unwrap();
    let mut decoder = Decoder::new(&gpu, &[&table]).unwrap();
    let (s, d) = (cudarc::driver::DevicePtr::device_ptr(&src, &gpu.stream).0, cudarc::driver::DevicePtrMut::device_ptr_mut(&mut dst, &gpu.stream).0);
    // SAFETY: as above.
    unsafe { table.decode_raw(&mut decoder, s, d, &gpu.stream).unwrap() };
    decoder.check(&gpu.stream).unwrap();
    assert!(gpu.stream.clone_dtoh(&dst).unwrap() == decode_bytes(&c, "l1.weight").unwrap(), "the intact chunks decode as on the CPU");
}

#[test]
fn nvcomp_loads_and_reports_version() {
    match codecllm::gpu::nvcomp::Nvcomp::get() {
        Ok(nv) => assert_eq!(nv.version().0, 6, "{}", nv.path().display()),
        Err(e) => skip("nvcomp_loads_and_reports_version", &e.to_string()),
    }
}

/// Without a driver, opening a GPU is `GpuError::NoDriver`; with one, asking for a device
/// that does not exist is `NoSuchDevice` naming both numbers. Either way, never a panic and
/// never an unrelated error.
#[test]
fn no_gpu_is_a_clear_error() {
    use codecllm::{Error, GpuError};
    match Gpu::new(1_000) {
        Err(Error::Gpu(GpuError::NoDriver)) => {
            assert!(Gpu::probe().err().unwrap().starts_with("no CUDA driver found"), "probe says why");
        }
        Err(Error::Gpu(GpuError::NoSuchDevice { requested, present })) => {
            assert_eq!(requested, 1_000);
            let msg = Gpu::new(1_000).err().unwrap().to_string();
            assert_eq!(msg, format!("GPU: GPU 1000 requested, {present} present"));
        }
        Err(other) => panic!("GPU 1000: unexpected error {other:?}"),
        Ok(_) => panic!("GPU 1000 cannot exist"),
    }
}

/// x · Wᵀ in f64 for f32 weights `[n, k]`.
fn reference_linear(x: &[f16], m: usize, w: &[f32], n: usize, k: usize) -> Vec<f64> {
    let mut y = vec![0f64; m * n];
    for i in 0..m {
        for r in 0..n {
            y[i * n + r] = (0..k).map(|c| x[i * k + c].to_f64() * w[r * k + c] as f64).sum();
        }
    }
    y
}

/// Every GGUF block type the GPU computes on as stored: the GEMV at every batch up to
/// `GGML_GEMV_MAX_BATCH`, several launches of it, and dequantize-then-cuBLAS beyond it,
/// against the f64 product with the CPU's dequantized weights (above
/// `abi::GGML_GEMV_BATCH` rounded to FP16, the weights those paths multiply by), on one block per row, row
/// counts that leave a warp's second row or a 16-row tile partly past the end, rows wider
/// than a pass of the warp, and mins from centred to extreme.
#[test]
fn ggml_linear_matches_reference_for_every_native_type() {
    use codecllm::abi::{GGML_GEMV_BATCH, GGML_LAYOUTS};
    use codecllm::codec::ggml::{dequantize, GgmlType};
    use codecllm::gpu::{ggml_planes, GgmlWeights, GGML_GEMV_MAX_BATCH};
    let Some(gpu) = gpu_or_skip("ggml_linear_matches_reference_for_every_native_type") else { return };
    let mut rng = rng(fresh_seed());
    let s = &gpu.stream;
    for (layout, l) in GGML_LAYOUTS.iter().enumerate() {
        let e = l.block_elems as usize;
        for (n, k, spread_mins) in [(1, e, false), (37, 3 * e, true), (130, 4096, false), (9, 14336, false)] {
            let blocks = codecllm::app::bench::data::random_ggml_blocks(&mut rng, layout, n, k, spread_mins).unwrap();
            let mut w = Vec::new();
            dequantize(GgmlType::from_id(l.id).unwrap(), &blocks, &mut w);
            // M ≤ 2 multiplies by the exact weights (integer quants, f32 scales); larger
            // batches by the weights rounded to FP16 (tensor cores, or the dequantization
            // for cuBLAS).
            let w16: Vec<f32> = w.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
            let planes = s.clone_htod(&ggml_planes(layout, &blocks).unwrap()).unwrap();
            let weights = GgmlWeights { layout, planes: planes.slice(..), rows: n, cols: k };
            for m in [1, 2, 3, 4, 5, 6, 7, 8, 9, 15, GGML_GEMV_MAX_BATCH, GGML_GEMV_MAX_BATCH + 1, 33] {
                let x: Vec<f16> = (0..m * k).map(|_| f16::from_f32(rng.gen_range(-1.0..1.0))).collect();
                let xd = s.clone_htod(&x).unwrap();
                let mut y = s.clone_htod(&vec![POISON; m * n]).unwrap();
                gpu.ggml_linear(&xd, m, &weights, &mut y, s).unwrap();
                let got: Vec<f64> = s.clone_dtoh(&y).unwrap().iter().map(|v| v.to_f64()).collect();
                assert!(got.iter().all(|v| v.is_finite()), "{} {n}x{k} m={m}: unwritten (poisoned) or non-finite outputs", l.name);
                let e = rel_err(&got, &reference_linear(&x, m, if m <= GGML_GEMV_BATCH as usize { &w } else { &w16 }, n, k));
                assert!(e < LINEAR_TOL, "{} {n}x{k} m={m}: relative error {e}", l.name);
            }
        }
        // Rows too wide for the batch-≤ 2 GEMV's activation sums: refused before the launch.
        if l.gemv_sum_values > 0 {
            let k = ((48 << 10) / (4 * GGML_GEMV_BATCH as usize) + 1) * l.gemv_sum_values as usize;
            let k = k.next_multiple_of(e);
            let blocks = codecllm::app::bench::data::random_ggml_blocks(&mut rng, layout, 1, k, false).unwrap();
            let planes = s.clone_htod(&ggml_planes(layout, &blocks).unwrap()).unwrap();
            let weights = GgmlWeights { layout, planes: planes.slice(..), rows: 1, cols: k };
            let xd = s.clone_htod(&vec![f16::ONE; k]).unwrap();
            let mut y = s.clone_htod(&[POISON]).unwrap();
            let err = gpu.ggml_linear(&xd, 1, &weights, &mut y, s).unwrap_err().to_string();
            assert!(err.contains("rows wider"), "{} 1x{k}: {err}", l.name);
        }
    }
}

/// One GEMV call over several GGUF block matrices of one width (a block's q, k, v or gate,
/// up; Q4_K_M files mix Q4_K and Q6_K there): each output is the bits of its own
/// `ggml_linear` and near the f64 product, every row written (outputs poisoned first), for
/// one layout in one launch, a run of two layouts, and four matrices (two launches of one
/// layout); mismatched widths and batches past `abi::GGML_GEMV_BATCH` are refused.
#[test]
fn ggml_gemv_over_several_matrices_equals_separate_launches() {
    use codecllm::abi::{GGML_GEMV_BATCH, GGML_LAYOUTS};
    use codecllm::codec::ggml::{dequantize, GgmlType};
    use codecllm::gpu::{ggml_planes, GgmlWeights};
    let Some(gpu) = gpu_or_skip("ggml_gemv_over_several_matrices_equals_separate_launches") else { return };
    let mut rng = rng(fresh_seed());
    let s = &gpu.stream;
    let k = 512;
    let q6_k = GGML_LAYOUTS.iter().position(|l| l.name == "Q6_K").unwrap();
    for layout in 0..GGML_LAYOUTS.len() {
        let other = if layout == q6_k { 0 } else { q6_k };
        for spec in [vec![(layout, 48), (layout, 17), (layout, 5)], vec![(layout, 33), (other, 16), (layout, 1)], vec![(layout, 9); 4]] {
            let mats: Vec<_> = spec
                .iter()
                .map(|&(l, n)| {
                    let blocks = codecllm::app::bench::data::random_ggml_blocks(&mut rng, l, n, k, true).unwrap();
                    let mut w = Vec::new();
                    dequantize(GgmlType::from_id(GGML_LAYOUTS[l].id).unwrap(), &blocks, &mut w);
                    (s.clone_htod(&ggml_planes(l, &blocks).unwrap()).unwrap(), w)
                })
                .collect();
            let weights: Vec<_> = spec.iter().zip(&mats).map(|(&(layout, rows), (p, _))| GgmlWeights { layout, planes: p.slice(..), rows, cols: k }).collect();
            for m in 1..=GGML_GEMV_BATCH as usize {
                let x: Vec<f16> = (0..m * k).map(|_| f16::from_f32(rng.gen_range(-1.0..1.0))).collect();
                let xd = s.clone_htod(&x).unwrap();
                let mut ys: Vec<_> = spec.iter().map(|&(_, n)| s.clone_htod(&vec![POISON; m * n]).unwrap()).collect();
                let mut parts: Vec<_> = weights.iter().zip(ys.iter_mut()).map(|(w, y)| (w, y.slice_mut(..))).collect();
                gpu.ggml_gemv(&xd, m, &mut parts, s).unwrap();
                drop(parts);
                for ((w, y), (_, wf)) in weights.iter().zip(&ys).zip(&mats) {
                    let name = GGML_LAYOUTS[w.layout].name;
                    let got = s.clone_dtoh(y).unwrap();
                    let mut alone = s.clone_htod(&vec![POISON; m * w.rows]).unwrap();
                    gpu.ggml_linear(&xd, m, w, &mut alone, s).unwrap();
                    let alone = s.clone_dtoh(&alone).unwrap();
                    let bits = |v: &[f16]| v.iter().map(|h| h.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&alone), "{name} {}x{k} m={m} in {spec:?}", w.rows);
                    let got: Vec<f64> = got.iter().map(|v| v.to_f64()).collect();
                    assert!(got.iter().all(|v| v.is_finite()), "{name} {}x{k} m={m}: unwritten (poisoned) or non-finite outputs", w.rows);
                    let e = rel_err(&got, &reference_linear(&x, m, wf, w.rows, k));
                    assert!(e < LINEAR_TOL, "{name} {}x{k} m={m}: relative error {e}", w.rows);
                }
            }
        }
    }
    // Refused before any launch: two widths, or a batch the exact GEMV does not take.
    let blocks: Vec<_> = [k, 2 * k].iter().map(|&c| codecllm::app::bench::data::random_ggml_blocks(&mut rng, q6_k, 1, c, false).unwrap()).collect();
    let planes: Vec<_> = blocks.iter().map(|b| s.clone_htod(&ggml_planes(q6_k, b).unwrap()).unwrap()).collect();
    let w: Vec<_> = planes.iter().zip([k, 2 * k]).map(|(p, cols)| GgmlWeights { layout: q6_k, planes: p.slice(..), rows: 1, cols }).collect();
    let xd = s.clone_htod(&vec![f16::ONE; 3 * 2 * k]).unwrap();
    let (mut y0, mut y1) = (s.clone_htod(&[POISON; 3]).unwrap(), s.clone_htod(&[POISON; 3]).unwrap());
    let err = gpu.ggml_gemv(&xd, 1, &mut [(&w[0], y0.slice_mut(..)), (&w[1], y1.slice_mut(..))], s).unwrap_err().to_string();
    assert!(err.contains("columns"), "{err}");
    let err = gpu.ggml_gemv(&xd, GGML_GEMV_BATCH as usize + 1, &mut [(&w[0], y0.slice_mut(..))], s).unwrap_err().to_string();
    assert!(err.contains("batch"), "{err}");
}

/// The GPU's dequantization of GGUF blocks is the CPU's (gguf-py's) bit for bit, rounded to
/// FP16 — signed zeros included — for a whole matrix and for a band of its rows.
#[test]
fn ggml_dequantize_is_bit_exact() {
    use codecllm::abi::GGML_LAYOUTS;
    use codecllm::codec::ggml::{dequantize, GgmlType};
    use codecllm::gpu::{ggml_planes, GgmlWeights};
    let Some(gpu) = gpu_or_skip("ggml_dequantize_is_bit_exact") else { return };
    let mut rng = rng(fresh_seed());
    let s = &gpu.stream;
    for (layout, l) in GGML_LAYOUTS.iter().enumerate() {
        let (n, k) = (19, 2 * 256);
        let blocks = codecllm::app::bench::data::random_ggml_blocks(&mut rng, layout, n, k, true).unwrap();
        let mut w = Vec::new();
        dequantize(GgmlType::from_id(l.id).unwrap(), &blocks, &mut w);
        let want: Vec<u16> = w.iter().map(|&v| f16::from_f32(v).to_bits()).collect();
        let planes = s.clone_htod(&ggml_planes(layout, &blocks).unwrap()).unwrap();
        let weights = GgmlWeights { layout, planes: planes.slice(..), rows: n, cols: k };
        for (row0, rows) in [(0, n), (5, 7), (n - 1, 1)] {
            let mut out = s.clone_htod(&vec![POISON; rows * k]).unwrap();
            gpu.ggml_dequantize(&weights, row0, rows, &mut out.slice_mut(..), s).unwrap();
            let got: Vec<u16> = s.clone_dtoh(&out).unwrap().iter().map(|v| v.to_bits()).collect();
            let first_bad = got.iter().zip(&want[row0 * k..(row0 + rows) * k]).position(|(a, b)| a != b);
            assert!(first_bad.is_none(), "{} rows {row0}..{}: element {first_bad:?} differs", l.name, row0 + rows);
        }
        // Rows past the matrix, or an output too short, are errors before any launch.
        let mut out = s.clone_htod(&vec![POISON; 2 * k]).unwrap();
        assert!(gpu.ggml_dequantize(&weights, n - 1, 2, &mut out.slice_mut(..), s).is_err());
        assert!(gpu.ggml_dequantize(&weights, 0, 3, &mut out.slice_mut(..), s).is_err());
    }
}

/// The FP16-weight GEMV (the FP16 mode's decode products, M = 1) on rows that take the
/// 16-byte path and rows that do not (k % 8 != 0), against the f64 product.
#[test]
fn fp16_gemv_matches_reference() {
    let Some(gpu) = gpu_or_skip("fp16_gemv_matches_reference") else { return };
    let mut rng = rng(fresh_seed());
    let s = &gpu.stream;
    for (n, k) in [(1, 8), (37, 200), (130, 4096), (9, 14336), (5, 77)] {
        let w: Vec<f16> = (0..n * k).map(|_| f16::from_f32(rng.gen_range(-1.0f32..1.0) / (k as f32).sqrt())).collect();
        let wf: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
        let wd = s.clone_htod(&w).unwrap();
        let x: Vec<f16> = (0..k).map(|_| f16::from_f32(rng.gen_range(-1.0..1.0))).collect();
        let xd = s.clone_htod(&x).unwrap();
        let mut y = s.clone_htod(&vec![POISON; n]).unwrap();
        gpu.fp16_gemv(&xd, &wd, n, k, &mut y, s).unwrap();
        let got: Vec<f64> = s.clone_dtoh(&y).unwrap().iter().map(|v| v.to_f64()).collect();
        assert!(got.iter().all(|v| v.is_finite()), "{n}x{k}: unwritten (poisoned) or non-finite outputs");
        let e = rel_err(&got, &reference_linear(&x, 1, &wf, n, k));
        assert!(e < LINEAR_TOL, "{n}x{k}: relative error {e}");
    }
    // Too few elements of x for the weights' columns is an error, not a launch.
    let (xd, wd) = (s.clone_htod(&vec![f16::ONE; 4]).unwrap(), s.clone_htod(&vec![f16::ONE; 8]).unwrap());
    let mut y = s.clone_htod(&vec![POISON; 1]).unwrap();
    assert!(gpu.fp16_gemv(&xd, &wd, 1, 8, &mut y, s).is_err());
}
