//! GGUF import: dequantization of every supported block format against values computed
//! here from the format's definition, compress + verify, the real SmolLM2 checkpoint, and
//! bad files.
mod common;
use codecllm::container::Container;
use codecllm::import::SourceModel;
use common::gguf::*;
use common::*;
use half::f16;
use rand::Rng;

/// Random blocks of `ty` for `n` elements, and the values they encode.
fn blocks(rng: &mut impl Rng, ty: u32, n: usize) -> (Vec<u8>, Vec<f32>) {
    let (mut bytes, mut vals) = (Vec::new(), Vec::new());
    match ty {
        0 => (0..n).for_each(|_| {
            let v: f32 = rng.gen_range(-1.0..1.0);
            bytes.extend_from_slice(&v.to_le_bytes());
            vals.push(v);
        }),
        1 => (0..n).for_each(|_| {
            let v = f16::from_f32(rng.gen_range(-1.0..1.0));
            bytes.extend_from_slice(&v.to_le_bytes());
            vals.push(v.to_f32());
        }),
        8 => (0..n / 32).for_each(|_| {
            let d = f16::from_f32(rng.gen_range(0.001..0.01));
            bytes.extend_from_slice(&d.to_le_bytes());
            for _ in 0..32 {
                let q: i8 = rng.gen();
                bytes.push(q as u8);
                vals.push(q as f32 * d.to_f32());
            }
        }),
        2 | 3 => (0..n / 32).for_each(|_| {
            let d = f16::from_f32(rng.gen_range(0.001..0.01));
            let m = f16::from_f32(rng.gen_range(-0.05..0.05));
            bytes.extend_from_slice(&d.to_le_bytes());
            if ty == 3 {
                bytes.extend_from_slice(&m.to_le_bytes());
            }
            let nib: Vec<u8> = (0..32).map(|_| rng.gen_range(0..16)).collect();
            // Element j < 16 is the low nibble of byte j, element j + 16 its high nibble.
            bytes.extend((0..16).map(|j| nib[j] | (nib[j + 16] << 4)));
            for &q in &nib {
                vals.push(if ty == 2 { (q as f32 - 8.0) * d.to_f32() } else { q as f32 * d.to_f32() + m.to_f32() });
            }
        }),
        _ => unreachable!(),
    }
    (bytes, vals)
}

const LLAMA: [(&str, Kv); 2] = [("general.architecture", Kv::Str("llama")), ("llama.block_count", Kv::U32(1))];

#[test]
fn every_block_format_dequantizes_to_its_definition() {
    let mut rng = rng(fresh_seed());
    let dir = tempfile::tempdir().unwrap();
    let (rows, cols) = (6, 64);
    let mut tensors = Vec::new();
    let mut expect = Vec::new();
    for (name, ty) in [("f32.weight", 0), ("f16.weight", 1), ("q4_0.weight", 2), ("q4_1.weight", 3), ("q8_0.weight", 8)] {
        let (b, v) = blocks(&mut rng, ty, rows * cols);
        tensors.push((name, vec![cols as u64, rows as u64], ty, b));
        expect.push((name, ty, v));
    }
    let (b, v) = blocks(&mut rng, 0, cols);
    tensors.push(("norm.weight", vec![cols as u64], 0, b));
    expect.push(("norm.weight", 0, v));
    let mut kvs = LLAMA.to_vec();
    kvs.push(("tokenizer.ggml.tokens", Kv::Strs(&["<s>", "a", "b"])));
    kvs.push(("llama.rope.freq_base", Kv::F32(10000.0)));
    let src = dir.path().join("m.gguf");
    write_gguf(&src, &kvs, &tensors);

    let model = SourceModel::open(&src).unwrap();
    for (name, ty, vals) in &expect {
        let t = model.tensor(name).unwrap();
        assert_eq!(t.shape, if *name == "norm.weight" { vec![cols as u64] } else { vec![rows as u64, cols as u64] }, "{name}: ggml dims are reversed");
        let got = model.to_f32(t);
        // Quantized formats are presented as F16; F32 tensors stay exact.
        let want: Vec<f32> = vals.iter().map(|&x| if *ty == 0 { x } else { f16::from_f32(x).to_f32() }).collect();
        assert_eq!(got, want, "{name}");
    }
    assert_eq!(model.metadata["gguf.tokenizer.ggml.tokens"], r#"["<s>","a","b"]"#);

    let out = dir.path().join("m.clm");
    cli_ok(&["compress", src.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    cli_ok(&["verify", out.to_str().unwrap(), "--against", src.to_str().unwrap()]);
    let c = Container::open(&out).unwrap();
    assert_eq!(c.index.metadata["gguf.llama.rope.freq_base"], "10000.0", "the config travels with the container");
}

#[test]
fn bad_gguf_files_are_clear_errors() {
    let mut rng = rng(fresh_seed());
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = blocks(&mut rng, 3, 64 * 4);
    let good = dir.path().join("good.gguf");
    write_gguf(&good, &LLAMA, &[("w.weight", vec![64, 4], 3, b.clone())]);
    let bytes = std::fs::read(&good).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("magic", [b"GGUX".as_slice(), &bytes[4..]].concat(), "wrong magic"),
        ("version", [&bytes[..4], &2u32.to_le_bytes(), &bytes[8..]].concat(), "version 2"),
        ("count", [&bytes[..8], &(1u64 << 40).to_le_bytes(), &bytes[16..]].concat(), "beyond any LLaMA checkpoint"),
        ("truncated-header", bytes[..30].to_vec(), "past the end"),
        ("truncated-data", bytes[..bytes.len() - 40].to_vec(), "does not fit in the file"),
    ];
    for (name, data, needle) in cases {
        let p = dir.path().join(format!("{name}.gguf"));
        std::fs::write(&p, data).unwrap();
        let out = dir.path().join(format!("{name}.clm"));
        let r = cli(&["compress", p.to_str().unwrap(), "-o", out.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success() && err.contains(needle) && err.contains(&format!("{name}.gguf")) && !err.contains("panicked"), "{name}: {err}");
        assert!(!out.exists());
    }
    let other = dir.path().join("other.gguf");
    write_gguf(&other, &[("general.architecture", Kv::Str("mamba"))], &[("w.weight", vec![64, 4], 3, b.clone())]);
    assert!(SourceModel::open(&other).err().unwrap().to_string().contains("architecture 'mamba' is not supported"));
    // IQ2_XXS (16) is not dequantized: named, with the list of types that are.
    let iq2 = dir.path().join("iq2.gguf");
    write_gguf(&iq2, &LLAMA, &[("w.weight", vec![256], 16, vec![0u8; 66])]);
    let err = SourceModel::open(&iq2).err().unwrap().to_string();
    assert!(err.contains("ggml type 16") && err.contains("Q4_K") && err.contains("Q6_K") && err.contains("BF16"), "{err}");
    // A K-quant row shorter than its 256-element block does not fit the format.
    let short = dir.path().join("short-row.gguf");
    write_gguf(&short, &LLAMA, &[("w.weight", vec![128, 2], 12, vec![0u8; 144])]);
    assert!(SourceModel::open(&short).err().unwrap().to_string().contains("does not fit"));
}

#[test]
fn smollm2_gguf_compresses_and_verifies() {
    let Some(model) = fetch_model("fetch-smollm2.sh", "smollm2_gguf_compresses_and_verifies") else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("smollm2.clm");
    cli_ok(&["compress", &model, "-o", out.to_str().unwrap()]);
    cli_ok(&["verify", out.to_str().unwrap(), "--against", &model]);
    let c = Container::open(&out).unwrap();
    assert_eq!(c.index.tensors.len(), 272);
    assert_eq!(c.index.metadata["gguf.llama.block_count"], "30");
    let tokens: Vec<String> = serde_json::from_str(&c.index.metadata["gguf.tokenizer.ggml.tokens"]).unwrap();
    assert_eq!(tokens.len(), 49152);
    let q = c.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(q.shape, [576, 576]);
    assert!(matches!(q.encoding, codecllm::container::Encoding::Int8 { .. }));
    assert_eq!(c.tensor("blk.0.attn_k.weight").unwrap().shape, [192, 576], "[out, in]: 3 KV heads × 64");
    assert!(matches!(c.tensor("token_embd.weight").unwrap().encoding, codecllm::container::Encoding::Lossless));
}

/// `compress --keep-quant` stores GGUF blocks verbatim (one encoding per block type, chunks
/// of whole blocks), decodes them to exactly the values ggml's dequantizers give, verifies
/// against the source byte for byte, and without the flag requantizes to INT8 as before.
#[test]
fn keep_quant_stores_gguf_blocks_verbatim() {
    use codecllm::codec::ggml::{dequantize, GgmlType};
    use codecllm::container::Encoding;
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = Vec::new();
    for name in ["Q4_K", "Q6_K", "Q5_K", "Q5_0", "Q8_0", "Q4_1", "IQ4_NL"] {
        let data = std::fs::read(format!("{}/tests/data/ggml/{name}.bin", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let (id, n) = (u32::from_le_bytes(data[0..4].try_into().unwrap()), u32::from_le_bytes(data[4..8].try_into().unwrap()) as usize);
        let (elems, bytes) = GgmlType::from_id(id).unwrap().block();
        // One block per row: rows hold whole blocks.
        tensors.push((format!("blk.0.{name}.weight"), vec![elems, n as u64], id, data[8..8 + n * bytes as usize].to_vec()));
    }
    let gguf = dir.path().join("q.gguf");
    let refs: Vec<(&str, Vec<u64>, u32, Vec<u8>)> = tensors.iter().map(|(n, d, t, b)| (n.as_str(), d.clone(), *t, b.clone())).collect();
    write_gguf(&gguf, &LLAMA, &refs);
    let kept = dir.path().join("kept.clm");
    cli_ok(&["compress", gguf.to_str().unwrap(), "-o", kept.to_str().unwrap(), "--keep-quant"]);
    let verified = cli_ok(&["verify", kept.to_str().unwrap(), "--against", gguf.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&verified.stdout).ends_with("OK\n"));
    let info = String::from_utf8_lossy(&cli_ok(&["info", kept.to_str().unwrap()]).stdout).into_owned();
    let c = Container::open(&kept).unwrap();
    for (name, _, id, raw) in &tensors {
        let t = c.tensor(name).unwrap();
        let ty = GgmlType::from_id(*id).unwrap();
        assert!(matches!(t.encoding, Encoding::Ggml { ggml_type, .. } if ggml_type == *id), "{name}: {:?}", t.encoding);
        assert_eq!(t.data.chunk_size % ty.block().1 as u32, 0, "{name}: chunks of whole blocks");
        assert_eq!(&codecllm::codec::decode_bytes(&c, name).unwrap(), raw, "{name}: the blocks as stored");
        let mut want = Vec::new();
        dequantize(ty, raw, &mut want);
        let got = codecllm::codec::decode_f32(&c, name).unwrap();
        assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()) && got.len() == want.len(), "{name}: dequantized values");
        assert!(info.contains(ty.name()), "info names {}", ty.name());
    }
    // Without the flag, blocks are requantized to INT8 as before (moderate values here: the
    // vectors above include scales at f16's limits, whose values F16 cannot hold).
    let (raw, _) = blocks(&mut rng(fresh_seed()), 8, 64 * 32);
    let mild = dir.path().join("mild.gguf");
    write_gguf(&mild, &LLAMA, &[("w.weight", vec![64, 32], 8, raw)]);
    let requantized = dir.path().join("int8.clm");
    cli_ok(&["compress", mild.to_str().unwrap(), "-o", requantized.to_str().unwrap()]);
    assert!(matches!(Container::open(&requantized).unwrap().tensor("w.weight").unwrap().encoding, Encoding::Int8 { .. }), "INT8 without --keep-quant");
    // A lie about the block geometry in the index is refused, not decoded to a wrong length.
    rewrite_index(&kept, |i| i["tensors"][0]["encoding"]["block_elems"] = serde_json::json!(32));
    let err = String::from_utf8_lossy(&cli(&["verify", kept.to_str().unwrap()]).stderr).into_owned();
    assert!(err.contains("blocks are") || err.contains("do not hold whole blocks") || err.contains("its shape needs"), "{err}");
}
