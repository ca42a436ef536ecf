//! The GPU LLaMA forward against the f32 CPU reference: a tiny random model in every weight
//! mode, and — where the file is at hand — the real SmolLM2 (FP16 logits vs CPU, INT8
//! teacher-forced top-1 agreement with FP16). Skips, saying why, without a GPU.
mod common;
use codecllm::container::Container;
use codecllm::import::SourceModel;
use codecllm::import::WeightSource;
use codecllm::model::llama::{CpuLlama, KvCache};
use codecllm::model::llama::{GpuLlama, WeightMode};
use codecllm::pipeline::compress::CompressOptions;
use common::gguf::*;
use common::*;
use rand::Rng;

/// A 2-layer LLaMA (d = 128, 4 query / 2 KV heads of 32, FFN 256, vocab 64) with random
/// F32 weights and a context of `context` positions, as GGUF and as a compressed container.
fn tiny_model(dir: &std::path::Path, rng: &mut impl Rng, context: u32) -> (SourceModel, Container) {
    let (d, f, v, kv) = (128usize, 256usize, 64usize, 64usize);
    let mut tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)> = Vec::new();
    let mut mat = |name: String, rows: usize, cols: usize, scale: f32, rng: &mut dyn rand::RngCore| {
        let vals: Vec<f32> = (0..rows * cols).map(|_| rng.gen_range(-1.0f32..1.0) * scale).collect();
        let dims = if rows == 1 { vec![cols as u64] } else { vec![cols as u64, rows as u64] };
        tensors.push((name, dims, 0, vals.iter().flat_map(|x| x.to_le_bytes()).collect()));
    };
    mat("token_embd.weight".into(), v, d, 1.0, rng);
    mat("output_norm.weight".into(), 1, d, 1.0, rng);
    for i in 0..2 {
        let s = 1.0 / (d as f32).sqrt();
        mat(format!("blk.{i}.attn_norm.weight"), 1, d, 1.0, rng);
        mat(format!("blk.{i}.attn_q.weight"), d, d, s, rng);
        mat(format!("blk.{i}.attn_k.weight"), kv, d, s, rng);
        mat(format!("blk.{i}.attn_v.weight"), kv, d, s, rng);
        mat(format!("blk.{i}.attn_output.weight"), d, d, s, rng);
        mat(format!("blk.{i}.ffn_norm.weight"), 1, d, 1.0, rng);
        mat(format!("blk.{i}.ffn_gate.weight"), f, d, s, rng);
        mat(format!("blk.{i}.ffn_up.weight"), f, d, s, rng);
        mat(format!("blk.{i}.ffn_down.weight"), d, f, 1.0 / (f as f32).sqrt(), rng);
    }
    let kvs = [
        ("general.architecture", Kv::Str("llama")),
        ("llama.block_count", Kv::U32(2)),
        ("llama.embedding_length", Kv::U32(d as u32)),
        ("llama.feed_forward_length", Kv::U32(f as u32)),
        ("llama.attention.head_count", Kv::U32(4)),
        ("llama.attention.head_count_kv", Kv::U32(2)),
        ("llama.vocab_size", Kv::U32(v as u32)),
        ("llama.context_length", Kv::U32(context)),
        ("llama.rope.freq_base", Kv::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Kv::F32(1e-5)),
    ];
    let refs: Vec<(&str, Vec<u64>, u32, Vec<u8>)> = tensors.iter().map(|(n, d, t, b)| (n.as_str(), d.clone(), *t, b.clone())).collect();
    let src = dir.join("tiny.gguf");
    write_gguf(&src, &kvs, &refs);
    let model = SourceModel::open(&src).unwrap();
    let out = dir.join("tiny.clm");
    compress_model(&model, &out, &CompressOptions { chunk_size: 4096, ..Default::default() }).unwrap();
    (model, Container::open(&out).unwrap())
}

fn cpu_logits(src: &dyn WeightSource, prompt: &[u32], decode: &[u32]) -> Vec<Vec<f32>> {
    let llm = CpuLlama::load(src).unwrap();
    let mut cache = KvCache::default();
    let mut out = Vec::new();
    let mut last = Vec::new();
    for &t in prompt {
        last = llm.step(t, &mut cache).unwrap();
    }
    out.push(last);
    for &t in decode {
        out.push(llm.step(t, &mut cache).unwrap());
    }
    out
}

fn gpu_logits(llm: &mut GpuLlama, prompt: &[u32], decode: &[u32]) -> Vec<Vec<f32>> {
    llm.reset();
    let mut out = vec![llm.forward(prompt).unwrap()];
    for &t in decode {
        out.push(llm.forward(&[t]).unwrap());
    }
    out
}

#[test]
fn tiny_llama_gpu_forward_matches_cpu_reference() {
    let Some(gpu) = gpu_or_skip("tiny_llama_gpu_forward_matches_cpu_reference") else { return };
    let mut rng = rng(fresh_seed());
    let dir = tempfile::tempdir().unwrap();
    let (source, container) = tiny_model(dir.path(), &mut rng, 64);
    let prompt: Vec<u32> = (0..9).map(|_| rng.gen_range(0..64)).collect();
    let decode: Vec<u32> = (0..5).map(|_| rng.gen_range(0..64)).collect();
    let mut int8_runs = Vec::new();
    let bits = |v: &Vec<Vec<f32>>| v.iter().flatten().map(|x| x.to_bits()).collect::<Vec<_>>();
    let store = std::sync::Arc::new(codecllm::stream::HostStore::load(&gpu, &container, &GpuLlama::stream_units(&container).unwrap(), true).unwrap());
    for (name, src) in [("container", &container as &dyn WeightSource), ("gguf", &source as &dyn WeightSource)] {
        let want = cpu_logits(src, &prompt, &decode);
        let modes: &[WeightMode] = if name == "container" {
            &[WeightMode::Fp16Resident, WeightMode::Int8Resident, WeightMode::CompressedResident, WeightMode::Stream]
        } else {
            &[WeightMode::Fp16Resident, WeightMode::Int8Resident]
        };
        for &mode in modes {
            let mut llm = match mode {
                WeightMode::CompressedResident => GpuLlama::load_compressed(&gpu, &container, 16, 64).unwrap(),
                WeightMode::Stream => GpuLlama::load_streamed(&gpu, &container, store.clone(), 2, 16, 64).unwrap(),
                _ => GpuLlama::load(&gpu, src, mode, 16, 64).unwrap(),
            };
            let got = gpu_logits(&mut llm, &prompt, &decode);
            // Decode steps replay a captured CUDA graph; launched one by one they must give
            // the same bits.
            assert!(llm.use_graph, "{name} {mode:?}: the decode step could not be captured");
            // On Hopper the graph's kernels launch as programmatic dependents: that must
            // happen, and change no bit.
            let hopper = gpu.compute_capability.0 >= 9;
            assert!(!hopper || llm.programmatic_edges() > 0, "{name} {mode:?}: no programmatic edge in the step graph");
            llm.use_graph = false;
            assert!(bits(&gpu_logits(&mut llm, &prompt, &decode)) == bits(&got), "{name} {mode:?}: graph replay differs from plain launches");
            if name == "container" && mode != WeightMode::Fp16Resident {
                int8_runs.push((mode, got.clone()));
            }
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(g.iter().all(|x| x.is_finite()), "{name} {mode:?} step {i}: non-finite logits");
                let e = logits_rel_err(g, w);
                // INT8 from the GGUF source quantizes here while the CPU reads the source:
                // compare that case loosely, every like-for-like case tightly.
                let tol = if name == "gguf" && mode == WeightMode::Int8Resident { 5e-2 } else { 1e-2 };
                assert!(e < tol, "{name} {mode:?} step {i}: logits relative error {e}");
            }
        }
    }
    // The same INT8 weights through the same kernels: resident, decoded per layer from
    // VRAM, or streamed from host RAM must agree bit for bit.
    for (mode, logits) in &int8_runs[1..] {
        assert!(bits(logits) == bits(&int8_runs[0].1), "{mode:?} differs from {:?}", int8_runs[0].0);
    }
    // 1 and 3 slots divide the 3 units (2 blocks and the LM head), so every step also
    // prefetches the next step's first units; 2 slots (above) do not.
    for slots in [1, 3] {
        let mut llm = GpuLlama::load_streamed(&gpu, &container, store.clone(), slots, 16, 64).unwrap();
        assert!(bits(&gpu_logits(&mut llm, &prompt, &decode)) == bits(&int8_runs[0].1), "stream over {slots} slot(s) differs");
    }
    // An ANS container (GPU-only codec, decoded at load) holds the same INT8 values.
    let ans = dir.path().join("tiny-ans.clm");
    compress_model(&source, &ans, &CompressOptions { codec: codecllm::container::Codec::Ans, chunk_size: 4096, ..Default::default() }).unwrap();
    let ans = Container::open(&ans).unwrap();
    let mut llm = GpuLlama::load(&gpu, &ans, WeightMode::Int8Resident, 16, 64).unwrap();
    assert!(bits(&gpu_logits(&mut llm, &prompt, &decode)) == bits(&int8_runs[0].1), "ANS container differs");
    // Streaming and per-layer decode from VRAM capture nvCOMP's ANS decoder into the graph.
    let ans_store = std::sync::Arc::new(codecllm::stream::HostStore::load(&gpu, &ans, &GpuLlama::stream_units(&ans).unwrap(), true).unwrap());
    for mut llm in [GpuLlama::load_streamed(&gpu, &ans, ans_store.clone(), 2, 16, 64).unwrap(), GpuLlama::load_compressed(&gpu, &ans, 16, 64).unwrap()] {
        assert!(bits(&gpu_logits(&mut llm, &prompt, &decode)) == bits(&int8_runs[0].1), "{:?} from the ANS container differs", llm.mode);
        assert!(llm.use_graph, "{:?}: the decode step could not be captured", llm.mode);
    }
    // A rANS container (our own GPU decode kernel) holds the same INT8 values too, streamed
    // and decoded per layer from VRAM inside the captured graph.
    let rans = dir.path().join("tiny-rans.clm");
    compress_model(&source, &rans, &CompressOptions { codec: codecllm::container::Codec::Rans, chunk_size: 4096, ..Default::default() }).unwrap();
    let rans = Container::open(&rans).unwrap();
    let rans_store = std::sync::Arc::new(codecllm::stream::HostStore::load(&gpu, &rans, &GpuLlama::stream_units(&rans).unwrap(), true).unwrap());
    for mut llm in [GpuLlama::load_streamed(&gpu, &rans, rans_store.clone(), 2, 16, 64).unwrap(), GpuLlama::load_compressed(&gpu, &rans, 16, 64).unwrap()] {
        assert!(bits(&gpu_logits(&mut llm, &prompt, &decode)) == bits(&int8_runs[0].1), "{:?} from the rANS container differs", llm.mode);
        assert!(llm.use_graph, "{:?}: the rANS decode step could not be captured", llm.mode);
    }
    // The CPU computing half of every block's MLP rows in decode steps (from INT8 rows in
    // host RAM) while the GPU streams the rest: the prompt (a full pass, every row on the
    // GPU) gives the same bits as int8-resident; decode steps differ from it only by the
    // CPU's f32 rounding, replay the same bits as plain launches, and repeat exactly.
    let want_cpu = cpu_logits(&rans, &prompt, &decode);
    for slots in [1, 2, 3] {
        let (mut llm, p) = GpuLlama::load_stream_shared(&gpu, &rans, slots, 16, 64, Some(0.5)).unwrap();
        assert!(p.cpu_share == 0.5 && p.cpu_bytes > 0, "{p:?}");
        let got = gpu_logits(&mut llm, &prompt, &decode);
        assert!(llm.use_graph, "the CPU share's host functions could not be captured");
        assert!(bits(&got[..1].to_vec()) == bits(&int8_runs[0].1[..1].to_vec()), "{slots} slot(s): the prompt's full pass differs from int8-resident");
        for (i, (g, w)) in got.iter().zip(&int8_runs[0].1).enumerate().skip(1) {
            let e = logits_rel_err(g, w);
            assert!(e < 5e-3, "{slots} slot(s), step {i}: CPU-shared decode differs from int8-resident by {e}");
            assert!(logits_rel_err(g, &want_cpu[i]) < 1e-2, "{slots} slot(s), step {i}: far from the CPU reference");
        }
        assert!(bits(&gpu_logits(&mut llm, &prompt, &decode)) == bits(&got), "{slots} slot(s): a second run differs");
        llm.use_graph = false;
        assert!(bits(&gpu_logits(&mut llm, &prompt, &decode)) == bits(&got), "{slots} slot(s): plain launches differ from the graph");
    }
    // Malformed CPU parts are refused before anything is loaded: one that continues no GPU
    // band, a GPU part after a CPU part.
    let part = |rows: std::ops::Range<usize>, cpu: bool| codecllm::stream::UnitPart { name: "blk.0.ffn_gate.weight".into(), rows: Some(rows), cpu };
    for (units, why) in [
        (vec![part(32..256, true), part(0..32, false)], "continue no GPU band"),
        (vec![part(0..32, false), part(32..256, true), codecllm::stream::UnitPart::from("blk.0.ffn_up.weight")], "GPU parts come first"),
    ] {
        let err = codecllm::stream::HostStore::load(&gpu, &rans, &[units], true).err().expect("malformed CPU parts are refused").to_string();
        assert!(err.contains(why), "{err}");
    }
    // ANS decodes on the GPU only: a CPU share asked of an ANS container is dropped.
    let (_, p) = GpuLlama::load_stream_shared(&gpu, &ans, 2, 16, 64, Some(0.5)).unwrap();
    assert_eq!(p.cpu_share, 0.0, "{p:?}");
    let mut llm = GpuLlama::load(&gpu, &ans, WeightMode::Fp16Resident, 16, 64).unwrap();
    let want = cpu_logits(&container, &prompt, &decode);
    assert!(gpu_logits(&mut llm, &prompt, &decode).iter().zip(&want).all(|(g, w)| logits_rel_err(g, w) < 1e-2), "FP16 from ANS");
}

#[test]
fn smollm2_gpu_matches_cpu_and_int8_agrees_with_fp16() {
    let Some(gpu) = gpu_or_skip("smollm2_gpu_matches_cpu_and_int8_agrees_with_fp16") else { return };
    let Some(path) = fetch_model("fetch-smollm2.sh", "smollm2_gpu_matches_cpu_and_int8_agrees_with_fp16") else { return };
    let source = SourceModel::open(path.as_ref()).unwrap();
    let tok = codecllm::model::tokenizer::ModelTokenizer::from_metadata(&source.metadata).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clm = dir.path().join("smollm2.clm");
    compress_model(&source, &clm, &CompressOptions::default()).unwrap();
    let container = Container::open(&clm).unwrap();

    // FP16 GPU logits vs the f32 CPU reference, both on the original weights.
    let prompt = tok.encode(&tok.chat_prompt("Name three colors.").unwrap()).unwrap();
    let want = cpu_logits(&source, &prompt, &[]);
    let mut fp16 = GpuLlama::load(&gpu, &source, WeightMode::Fp16Resident, 256, 512).unwrap();
    let got = gpu_logits(&mut fp16, &prompt, &[]);
    let e = logits_rel_err(&got[0], &want[0]);
    assert!(e < 1e-2, "FP16 GPU vs CPU f32 logits: relative error {e}");

    // Teacher forcing: FP16 generates 64 tokens greedily on 3 prompts; INT8 is fed the same
    // tokens and must pick the same top-1 at ≥ 98 % of the steps. Measured for the default
    // container (one scale per output channel) and for groups of 32 (GGUF's block size).
    let grouped = dir.path().join("smollm2-g32.clm");
    compress_model(&source, &grouped, &CompressOptions { group_size: Some(32), ..Default::default() }).unwrap();
    let grouped = Container::open(&grouped).unwrap();
    let argmax = |v: &[f32]| v.iter().enumerate().fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0 as u32;
    let mut rates = Vec::new();
    // `stream` (blocks and LM-head bands through the slot ring, each step a graph replay
    // that prefetches the next step's first units) on the same INT8 values: every step's
    // logits equal int8-resident's bit for bit.
    let store = std::sync::Arc::new(codecllm::stream::HostStore::load(&gpu, &container, &GpuLlama::stream_units(&container).unwrap(), true).unwrap());
    let mut stream = GpuLlama::load_streamed(&gpu, &container, store.clone(), 2, 256, 512).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (label, c) in [("per-channel", &container), ("group 32", &grouped)] {
        let mut int8 = GpuLlama::load(&gpu, c, WeightMode::Int8Resident, 256, 512).unwrap();
        let (mut agree, mut total) = (0, 0);
        for question in ["What is the capital of France?", "Write a haiku about the sea.", "Explain what a GPU is in one sentence."] {
            let ids = tok.encode(&tok.chat_prompt(question).unwrap()).unwrap();
            fp16.reset();
            int8.reset();
            stream.reset();
            let (mut lf, mut li) = (fp16.forward(&ids).unwrap(), int8.forward(&ids).unwrap());
            let mut ls = (label == "per-channel").then(|| stream.forward(&ids).unwrap());
            for step in 0..64 {
                let next = argmax(&lf);
                agree += (argmax(&li) == next) as usize;
                total += 1;
                if let Some(ls) = &ls {
                    assert!(bits(ls) == bits(&li), "{question}: stream differs from int8-resident at step {step}");
                }
                lf = fp16.forward(&[next]).unwrap();
                li = int8.forward(&[next]).unwrap();
                ls = ls.map(|_| stream.forward(&[next]).unwrap());
            }
        }
        note(&format!(
            "smollm2: FP16 vs CPU logits rel. error {e:.2e}; INT8 ({label}) teacher-forced top-1 agreement {agree}/{total} = {:.1} %",
            100.0 * agree as f64 / total as f64
        ));
        rates.push(agree as f64 / total as f64);
    }
    // Both containers, not the better of the two: each is a product users run.
    assert!(rates.iter().all(|&r| r >= 0.98), "INT8 top-1 agreement (per-channel, group 32): {rates:?}");
}

/// Long contexts: a 1500-token prompt fed in batches of 16, then decode steps, where the
/// attention splits each head's positions over many blocks (decode: 4 heads, 32 splits of
/// ~47 positions; batches of 16 rows: 64 items, 5 splits) and merges them — against the
/// CPU reference, which attends in one pass. The tiny tests above stay below one split's
/// reach; this one crosses every split boundary.
#[test]
fn long_context_split_attention_matches_cpu_reference() {
    let Some(gpu) = gpu_or_skip("long_context_split_attention_matches_cpu_reference") else { return };
    let mut rng = rng(fresh_seed());
    let dir = tempfile::tempdir().unwrap();
    let (source, _) = tiny_model(dir.path(), &mut rng, 2048);
    let prompt: Vec<u32> = (0..1500).map(|_| rng.gen_range(0..64)).collect();
    let decode: Vec<u32> = (0..6).map(|_| rng.gen_range(0..64)).collect();
    let want = cpu_logits(&source, &prompt, &decode);
    let mut llm = GpuLlama::load(&gpu, &source, WeightMode::Fp16Resident, 16, 2048).unwrap();
    for graph in [true, false] {
        llm.use_graph = graph;
        llm.reset();
        let mut last = Vec::new();
        for batch in prompt.chunks(16) {
            last = llm.forward(batch).unwrap();
        }
        let mut got = vec![last];
        for &t in &decode {
            got.push(llm.forward(&[t]).unwrap());
        }
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let e = logits_rel_err(g, w);
            assert!(g.iter().all(|x| x.is_finite()) && e < 1e-2, "graph {graph}, step {i} after 1500 positions: logits relative error {e}");
        }
    }
}

/// Hybrid placement on SmolLM2 under shrinking VRAM budgets: each plan keeps the most
/// blocks resident that fit, its logits equal int8-resident's bit for bit (the same INT8
/// values through the same kernels), and the measured peak VRAM stays within the budget.
#[test]
fn hybrid_placements_equal_int8_resident_and_stay_within_budget() {
    let Some(gpu) = gpu_or_skip("hybrid_placements_equal_int8_resident_and_stay_within_budget") else { return };
    let Some(path) = fetch_model("fetch-smollm2.sh", "hybrid_placements_equal_int8_resident_and_stay_within_budget") else { return };
    let dir = tempfile::tempdir().unwrap();
    let source = SourceModel::open(path.as_ref()).unwrap();
    let clm = dir.path().join("smollm2.clm");
    compress_model(&source, &clm, &CompressOptions { codec: codecllm::container::Codec::Rans, ..Default::default() }).unwrap();
    let c = Container::open(&clm).unwrap();
    let prompt: Vec<u32> = (0..12).map(|i| 100 + 7 * i).collect();
    let steps: Vec<u32> = (0..6).map(|i| 300 + 11 * i).collect();
    let bits = |v: &Vec<Vec<f32>>| v.iter().flatten().map(|x| x.to_bits()).collect::<Vec<_>>();
    let mut int8 = GpuLlama::load(&gpu, &c, WeightMode::Int8Resident, 16, 64).unwrap();
    let want = bits(&gpu_logits(&mut int8, &prompt, &steps));
    let all = int8.vram_accounted;
    drop(int8);
    let mut last_resident = usize::MAX;
    for budget in [all * 3 / 4, all / 2, all / 4, all / 8] {
        let (mut llm, p) = GpuLlama::load_auto(&gpu, &c, Some(budget), 2, 16, 64, Some(0.0)).unwrap();
        assert!(p.streams() && p.predicted_vram <= budget, "{budget}: {p:?}");
        assert!(p.resident_blocks <= last_resident, "a smaller budget keeps fewer blocks resident: {p:?}");
        last_resident = p.resident_blocks;
        assert!(
            bits(&gpu_logits(&mut llm, &prompt, &steps)) == want,
            "budget {budget}: hybrid ({} blocks resident) differs from int8-resident",
            p.resident_blocks
        );
        assert!(llm.peak_vram_net <= budget, "budget {budget}: measured peak {} (without the pool's reserve) exceeds it; plan {p:?}", llm.peak_vram_net);
        // The measured peak nets out the pool's unallocated reserve, which can exceed a small
        // model's whole use (it then reads 0): what the model allocated must fit too.
        assert!(llm.vram_accounted <= budget, "budget {budget}: the model allocated {} bytes; plan {p:?}", llm.vram_accounted);
        note(&format!(
            "hybrid at {:.1} MB: {} of 30 blocks resident, LM head {}, {} slot(s), peak {:.1} MB, allocated {:.1} MB",
            budget as f64 / 1e6,
            p.resident_blocks,
            p.lm_head_resident,
            p.slots,
            llm.peak_vram_net as f64 / 1e6,
            llm.vram_accounted as f64 / 1e6
        ));
    }
    // With the CPU share balanced from this machine's measured bandwidths: within the
    // budget, and the same greedy tokens as int8-resident.
    let budget = all / 4;
    let (mut llm, p) = GpuLlama::load_auto(&gpu, &c, Some(budget), 2, 16, 64, None).unwrap();
    assert!(llm.vram_accounted <= budget && p.predicted_vram <= budget, "{p:?}");
    let got = gpu_logits(&mut llm, &prompt, &steps);
    let mut int8 = GpuLlama::load(&gpu, &c, WeightMode::Int8Resident, 16, 64).unwrap();
    let want = gpu_logits(&mut int8, &prompt, &steps);
    let argmax = |v: &[f32]| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(logits_rel_err(g, w) < 1e-2 && argmax(g) == argmax(w), "step {i} with the CPU share ({p:?}): relative error {}", logits_rel_err(g, w));
    }
    note(&format!(
        "hybrid at {:.1} MB with the CPU share: {:.0} % of the streamed MLP rows ({:.1} MB) on the CPU",
        budget as f64 / 1e6,
        100.0 * p.cpu_share,
        p.cpu_bytes as f64 / 1e6
    ));
}

/// Several sequences in one KV cache (`set_sequences`): prompts prefilled together in one
/// batch (mixed sequences, each prompt's last token among the last rows), then decode steps
/// of all of them in one forward, give each sequence the logits it gets alone — in the
/// resident, compressed-resident and streamed modes — and a sequence that was reset starts
/// over in its own run of the cache without disturbing the others.
#[test]
fn batched_sequences_equal_each_sequence_alone() {
    let Some(gpu) = gpu_or_skip("batched_sequences_equal_each_sequence_alone") else { return };
    let mut rng = rng(fresh_seed());
    let dir = tempfile::tempdir().unwrap();
    let (_, container) = tiny_model(dir.path(), &mut rng, 96);
    let prompts: Vec<Vec<u32>> = [5, 1, 9].iter().map(|&n| (0..n).map(|_| rng.gen_range(0..64)).collect()).collect();
    let decode: Vec<Vec<u32>> = (0..3).map(|_| (0..4).map(|_| rng.gen_range(0..64)).collect()).collect();
    for mode in [WeightMode::Int8Resident, WeightMode::CompressedResident, WeightMode::Stream] {
        let mut llm = GpuLlama::load_mode(&gpu, &container, mode, 2, 16, 96).unwrap();
        let alone: Vec<Vec<Vec<f32>>> = (0..3).map(|s| gpu_logits(&mut llm, &prompts[s], &decode[s])).collect();
        let per = llm.set_sequences(3).unwrap();
        assert_eq!(per, 32);
        // The prompts' leading tokens first, then each prompt's last token.
        let mut rows: Vec<(usize, u32)> = (0..3).flat_map(|s| prompts[s][..prompts[s].len() - 1].iter().map(move |&t| (s, t))).collect();
        rows.extend((0..3).map(|s| (s, *prompts[s].last().unwrap())));
        let first = llm.forward_batch(&rows, 3).unwrap();
        let mut got: Vec<Vec<Vec<f32>>> = first.into_iter().map(|l| vec![l]).collect();
        for step in 0..4 {
            let rows: Vec<(usize, u32)> = decode.iter().enumerate().map(|(s, d)| (s, d[step])).collect();
            for (s, l) in llm.forward_batch(&rows, 3).unwrap().into_iter().enumerate() {
                got[s].push(l);
            }
        }
        for s in 0..3 {
            for (i, (g, w)) in got[s].iter().zip(&alone[s]).enumerate() {
                let e = logits_rel_err(g, w);
                assert!(e < 1e-2, "{mode:?} sequence {s} step {i}: relative error {e} against the sequence alone");
            }
        }
        // Sequence 1 over again, alone in a step, while the others keep their caches.
        llm.reset_sequence(1).unwrap();
        let again = llm.forward_batch(&[(1, prompts[1][0])], 1).unwrap();
        assert!(logits_rel_err(&again[0], &alone[1][0]) < 1e-2, "{mode:?}: a reset sequence starts over");
        let next = llm.forward_batch(&[(0, 7), (2, 7)], 2).unwrap();
        assert!(next.iter().all(|l| l.iter().all(|x| x.is_finite())));
        // A full sequence and an unknown one are errors, not writes past its run.
        assert!(llm.forward_batch(&[(3, 1)], 1).is_err());
        assert!(llm.forward_batch(&vec![(0, 1); 32], 1).is_err(), "{mode:?}: 32 more positions overflow sequence 0's run");
        assert!(llm.forward(&[1]).is_err(), "several sequences are fed with forward_batch");
        llm.set_sequences(1).unwrap();
        assert!(logits_rel_err(&llm.forward(&prompts[0]).unwrap(), &alone[0][0]) < 1e-2, "{mode:?}: back to one sequence");
    }
}

/// `auto` on a checkpoint (not a container) runs it resident when it fits the budget and
/// otherwise says that streaming needs a container, before allocating anything.
#[test]
fn auto_on_a_checkpoint_over_budget_asks_for_a_container() {
    let Some(gpu) = gpu_or_skip("auto_on_a_checkpoint_over_budget_asks_for_a_container") else { return };
    let mut rng = rng(fresh_seed());
    let dir = tempfile::tempdir().unwrap();
    let (source, _) = tiny_model(dir.path(), &mut rng, 64);
    let err = GpuLlama::load_auto(&gpu, &source, Some(100_000), 2, 4, 64, None).err().expect("a 0.1 MB budget is too small");
    assert!(err.to_string().contains("needs a container"), "{err}");
    let (llm, p) = GpuLlama::load_auto(&gpu, &source, Some(1 << 30), 2, 4, 64, None).unwrap();
    assert!(p.resident_blocks == llm.cfg.layers && p.lm_head_resident);
}
