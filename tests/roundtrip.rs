//! Compress → container → CPU decode round trips on random checkpoints.
mod common;
use codecllm::codec::Int8Matrix;
use codecllm::codec::{decode_bytes, decode_f16, decode_f32, decode_int8};
use codecllm::container::{Codec, Container, Encoding};
use codecllm::import::SourceModel;
use codecllm::pipeline::compress::CompressOptions;
use codecllm::pipeline::reference::linear;
use codecllm::pipeline::verify::{verify, INT8_MAX_REL_ERR};
use common::*;
use rand::Rng;
use safetensors::Dtype;

fn run(src: &std::path::Path, out: &std::path::Path, opts: &CompressOptions) -> codecllm::Result<codecllm::pipeline::compress::Summary> {
    let model = SourceModel::open(src)?;
    compress_model(&model, out, opts)
}

/// Random checkpoint: matrices of awkward shapes in `dtype`, a bias, an embedding.
fn checkpoint(rng: &mut impl Rng, dtype: Dtype) -> Vec<RawTensor> {
    let shapes = [(1, 1), (3, 17), (7, 4097), (130, 300), (64, 4096), (2500, 3), (33, 160)];
    let mut ts: Vec<RawTensor> =
        shapes.iter().enumerate().map(|(i, &(r, c))| RawTensor::float(&format!("layers.{i}.proj.weight"), dtype, &[r, c], &heavy_tailed(rng, r * c))).collect();
    ts.push(RawTensor::float("layers.0.proj.bias", dtype, &[333], &heavy_tailed(rng, 333)));
    ts.push(RawTensor::float("model.embed_tokens.weight", dtype, &[50, 64], &heavy_tailed(rng, 50 * 64)));
    ts
}

#[test]
fn round_trips_every_dtype_shape_and_chunk_size() {
    let mut rng = rng(fresh_seed());
    let dir = tempfile::tempdir().unwrap();
    for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
        let tensors = checkpoint(&mut rng, dtype);
        let src = dir.path().join(format!("{dtype:?}.safetensors"));
        write_safetensors(&src, &tensors);
        for chunk_size in [4096, 16384, 65536 + 16] {
            let out = dir.path().join(format!("{dtype:?}-{chunk_size}.clm"));
            let opts = CompressOptions { chunk_size, ..Default::default() };
            let summary = run(&src, &out, &opts).unwrap();
            assert_eq!(summary.tensors.len(), tensors.len());
            let c = Container::open(&out).unwrap();
            for t in &tensors {
                let entry = c.tensor(&t.name).unwrap();
                let values = decode(t.dtype, &t.bytes);
                match &entry.encoding {
                    Encoding::Int8 { .. } => {
                        assert_eq!(t.shape.len(), 2, "{}", t.name);
                        assert!(!t.name.contains("embed"), "embeddings stay lossless by default");
                        let expect = Int8Matrix::quantize(&values, t.shape[0], t.shape[1], t.shape[1]).unwrap().0;
                        assert_eq!(decode_int8(&c, &t.name).unwrap(), expect, "{}", t.name);
                        assert_eq!(decode_f32(&c, &t.name).unwrap(), expect.dequantize());
                    }
                    Encoding::Lossless => {
                        assert!(t.shape.len() == 1 || t.name.contains("embed"), "{} should be INT8", t.name);
                        assert_eq!(decode_bytes(&c, &t.name).unwrap(), t.bytes, "{}", t.name);
                        assert_eq!(decode_f32(&c, &t.name).unwrap(), values);
                    }
                    Encoding::Ggml { .. } => panic!("{}: a safetensors source has no GGUF blocks", t.name),
                }
                // FP16 (read straight from F16 storage, rounded once from any other) is the
                // f32 values rounded.
                let want: Vec<u16> = decode_f32(&c, &t.name).unwrap().into_iter().map(|v| half::f16::from_f32(v).to_bits()).collect();
                assert!(decode_f16(&c, &t.name).unwrap().iter().map(|h| h.to_bits()).eq(want), "{} as FP16", t.name);
            }
            let model = SourceModel::open(&src).unwrap();
            let report = verify(&c, Some(&model), &|_| {}).unwrap();
            assert!(report.ok(), "{:?}", report.problems);
            assert_eq!(report.compared, tensors.len());
        }
    }
}

#[test]
fn quantizer_error_is_bounded_for_every_group_size() {
    let mut rng = rng(fresh_seed());
    for (rows, cols) in [(2, 16), (9, 100), (40, 1000), (3, 4096)] {
        let mut w = heavy_tailed(&mut rng, rows * cols);
        w[..cols].iter_mut().for_each(|v| *v = 0.0); // an all-zero row
        for group in [cols, 16, 32, 128] {
            let group = group.min(cols);
            let m = Int8Matrix::quantize(&w, rows, cols, group).unwrap().0;
            assert_eq!(m.scales.len(), rows * cols.div_ceil(group));
            assert!(m.q.iter().all(|&q| q != i8::MIN), "q stays within ±127");
            for r in 0..rows {
                for c in 0..cols {
                    let s = m.scale(r, c);
                    let err = (w[r * cols + c] - m.q[r * cols + c] as f32 * s).abs();
                    assert!(err <= s * 0.5 * (1.0 + 1e-5) + 1e-12, "row {r} col {c}: error {err} > half step {s}");
                }
            }
            assert!(m.q[..cols].iter().all(|&q| q == 0));
            let stats = m.stats_against(&w);
            assert_eq!(Int8Matrix::quantize(&w, rows, cols, group).unwrap().1, stats, "one-pass stats agree");
            assert!(stats.max_rel_err <= INT8_MAX_REL_ERR, "{stats:?}");
            if cols >= 100 {
                // Chance that ≥ 99 errors all stay under a quarter step: 2^-99.
                assert!(stats.max_rel_err > 0.5 / 127.0 * 0.5, "random data uses most of the half step: {stats:?}");
            }
            // Each error is at most half a step, max|w_g| / 254, and every group holds its max:
            // ‖err‖² ≤ Σ_g n_g (max_g / 254)² ≤ group · ‖w‖² / 254².
            let bound = (group as f64).sqrt() / 254.0 * (1.0 + 1e-5);
            assert!(stats.rms_rel_err > 0.0 && stats.rms_rel_err <= bound, "{stats:?} > {bound}");
        }
    }
}

#[test]
fn group_sizes_round_trip_including_partial_last_group() {
    let mut rng = rng(fresh_seed());
    let dir = tempfile::tempdir().unwrap();
    let (rows, cols) = (37, 200);
    let w = heavy_tailed(&mut rng, rows * cols);
    let src = dir.path().join("m.safetensors");
    write_safetensors(&src, &[RawTensor::float("w", Dtype::F16, &[rows, cols], &w)]);
    for (group, stored) in [(32, 32), (64, 64), (256, cols as u32)] {
        let out = dir.path().join(format!("g{group}.clm"));
        run(&src, &out, &CompressOptions { group_size: Some(group), ..Default::default() }).unwrap();
        let c = Container::open(&out).unwrap();
        let Encoding::Int8 { group_size, .. } = c.tensor("w").unwrap().encoding else { panic!("not INT8") };
        assert_eq!(group_size, stored);
        let values = decode(Dtype::F16, &encode(Dtype::F16, &w));
        assert_eq!(decode_int8(&c, "w").unwrap(), Int8Matrix::quantize(&values, rows, cols, stored as usize).unwrap().0);
    }
}

#[test]
fn incompressible_chunks_are_stored_raw() {
    let mut rng = rng(fresh_seed());
    let dir = tempfile::tempdir().unwrap();
    let noise: Vec<u8> = (0..100_000).map(|_| rng.gen()).collect();
    let src = dir.path().join("m.safetensors");
    write_safetensors(
        &src,
        &[
            RawTensor { name: "noise".into(), dtype: Dtype::U8, shape: vec![noise.len()], bytes: noise.clone() },
            RawTensor { name: "ramp".into(), dtype: Dtype::U8, shape: vec![50_000], bytes: (0..50_000).map(|i| (i / 1000) as u8).collect() },
        ],
    );
    for codec in [Codec::Zstd, Codec::Raw] {
        let out = dir.path().join(format!("{codec:?}.clm"));
        run(&src, &out, &CompressOptions { codec, chunk_size: 4096, ..Default::default() }).unwrap();
        let c = Container::open(&out).unwrap();
        let noise_blob = &c.tensor("noise").unwrap().data;
        assert!(noise_blob.chunks.iter().all(|ch| ch.raw), "random bytes do not shrink");
        let ramp_blob = &c.tensor("ramp").unwrap().data;
        assert_eq!(ramp_blob.chunks.iter().all(|ch| ch.raw), codec == Codec::Raw);
        assert_eq!(decode_bytes(&c, "noise").unwrap(), noise);
        assert!(verify(&c, Some(&SourceModel::open(&src).unwrap()), &|_| {}).unwrap().ok());
    }
}

/// The rANS codec holds exactly the INT8 codes Zstd holds, decodes them on any CPU, and
/// stores them within 1.5 % of their order-0 entropy (the issue's bound for a static
/// per-tensor model) on Gaussian rows, which look like real weights to an entropy coder.
#[test]
fn rans_holds_the_same_int8_as_zstd_near_its_entropy() {
    let seed = fresh_seed();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.safetensors");
    let w = codecllm::app::bench::data::realistic_weights(1024 * 1024, seed);
    write_safetensors(&src, &[RawTensor::float("w.weight", Dtype::F16, &[1024, 1024], &w), RawTensor::float("small.weight", Dtype::F16, &[3, 40], &w[..120])]);
    let model = SourceModel::open(&src).unwrap();
    let mut int8 = Vec::new();
    for codec in [Codec::Zstd, Codec::Rans] {
        let out = dir.path().join(format!("{codec:?}.clm"));
        run(&src, &out, &CompressOptions { codec, ..Default::default() }).unwrap();
        let c = Container::open(&out).unwrap();
        assert!(verify(&c, Some(&model), &|_| {}).unwrap().ok(), "{codec:?}");
        let t = c.tensor("w.weight").unwrap();
        assert_eq!(t.data.codec, codec);
        if codec == Codec::Rans {
            let Encoding::Int8 { entropy_bits: Some(h), .. } = t.encoding else { panic!("entropy recorded") };
            let ratio = t.data.stored_bytes() as f64 / t.data.len as f64;
            println!("rans stored/INT8 {ratio:.4}, entropy {:.4}", h / 8.0);
            assert!(ratio <= 1.015 * h / 8.0, "rans {ratio} vs entropy bound {}", h / 8.0);
        }
        int8.push((decode_int8(&c, "w.weight").unwrap(), decode_int8(&c, "small.weight").unwrap()));
    }
    assert_eq!(int8[0], int8[1], "both codecs hold the same codes and scales");
}

#[test]
fn embeddings_quantized_on_request() {
    let mut rng = rng(fresh_seed());
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.safetensors");
    write_safetensors(&src, &[RawTensor::float("tok_embeddings.weight", Dtype::BF16, &[40, 48], &heavy_tailed(&mut rng, 40 * 48))]);
    let out = dir.path().join("e.clm");
    run(&src, &out, &CompressOptions { quantize_embeddings: true, ..Default::default() }).unwrap();
    assert!(matches!(Container::open(&out).unwrap().tensor("tok_embeddings.weight").unwrap().encoding, Encoding::Int8 { .. }));
}

#[test]
fn sharded_checkpoints_are_read_through_their_index() {
    let mut rng = rng(fresh_seed());
    let dir = tempfile::tempdir().unwrap();
    let a = RawTensor::float("a.weight", Dtype::F16, &[8, 32], &heavy_tailed(&mut rng, 256));
    let b = RawTensor::float("b.weight", Dtype::F16, &[16, 32], &heavy_tailed(&mut rng, 512));
    write_safetensors(&dir.path().join("model-00001-of-00002.safetensors"), &[a]);
    write_safetensors(&dir.path().join("model-00002-of-00002.safetensors"), &[b]);
    let index = dir.path().join("model.safetensors.index.json");
    std::fs::write(&index, r#"{"metadata":{},"weight_map":{"a.weight":"model-00001-of-00002.safetensors","b.weight":"model-00002-of-00002.safetensors"}}"#)
        .unwrap();
    let out = dir.path().join("s.clm");
    run(&index, &out, &CompressOptions::default()).unwrap();
    let c = Container::open(&out).unwrap();
    assert_eq!(c.index.tensors.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["a.weight", "b.weight"]);
    assert!(verify(&c, Some(&SourceModel::open(&index).unwrap()), &|_| {}).unwrap().ok());

    std::fs::write(&index, r#"{"weight_map":{"a.weight":"model-00002-of-00002.safetensors","b.weight":"model-00002-of-00002.safetensors"}}"#).unwrap();
    let err = SourceModel::open(&index).err().unwrap().to_string();
    assert!(err.contains("'a.weight'") && err.contains("lacks it"), "{err}");
}

#[test]
fn reference_linear_matches_dequantized_product() {
    let mut rng = rng(fresh_seed());
    let (m, n, k) = (3, 29, 70);
    let w = heavy_tailed(&mut rng, n * k);
    let q = Int8Matrix::quantize(&w, n, k, 16).unwrap().0;
    let x: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let y = linear(&x, m, &q);
    let deq = q.dequantize();
    for mi in 0..m {
        for ni in 0..n {
            let terms = (0..k).map(|ki| x[mi * k + ki] as f64 * deq[ni * k + ki] as f64);
            let (expect, magnitude) = terms.fold((0.0, 0.0), |(s, a), t| (s + t, a + t.abs()));
            let got = y[mi * n + ni];
            // `deq` rounds q·s to f32; the oracle does not: allow that rounding, scaled by Σ|terms|.
            assert!((got - expect).abs() <= 1e-6 * magnitude, "y[{mi},{ni}] = {got}, expected {expect}");
        }
    }
}
