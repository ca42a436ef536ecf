//! The streaming engine: schedule and budget logic on the CPU; on a GPU, streamed forward
//! passes equal resident ones bit for bit, whatever the codec, slot count or batch.
mod common;
use codecllm::container::{Codec, Container};
use codecllm::import::SourceModel;
use codecllm::pipeline::compress::CompressOptions;
use codecllm::stream::{forward_resident, schedule, HostStore, SlotPlan, Step, UnitSize, WeightStream};
use common::*;
use half::f16;
use rand::Rng;
use safetensors::Dtype;

#[test]
fn schedule_reuses_a_slot_only_after_its_unit_was_computed() {
    for (units, slots, warm) in (1..12).flat_map(|u| (1..5).flat_map(move |s| [(u, s, false), (u, s, true)])) {
        {
            let steps = schedule(units, slots, warm);
            // Warm: the previous pass prefetched the first `slots` units.
            let mut prefetched: Vec<Option<usize>> = (0..units).map(|u| (warm && u < slots).then_some(0)).collect();
            let mut computed = vec![None; units];
            for (i, s) in steps.iter().enumerate() {
                match *s {
                    Step::Prefetch { unit, slot } => {
                        assert_eq!(slot, unit % slots);
                        assert!(prefetched[unit].replace(i).is_none(), "unit {unit} prefetched twice");
                        if unit >= slots {
                            assert!(computed[unit - slots].is_some(), "slot {slot} reused before unit {} was computed", unit - slots);
                        }
                    }
                    Step::Compute { unit, slot } => {
                        assert_eq!(slot, unit % slots);
                        assert!(prefetched[unit].is_some(), "unit {unit} computed before its prefetch");
                        assert!(unit == 0 || computed[unit - 1].is_some(), "units computed out of order");
                        computed[unit] = Some(i);
                    }
                }
                let live = (0..units).filter(|&u| prefetched[u].is_some() && computed[u].is_none()).count();
                assert!(live <= slots, "{live} units live with {slots} slots");
            }
            assert!(computed.iter().all(Option::is_some) && prefetched.iter().all(Option::is_some));
        }
    }
}

#[test]
fn slot_plan_sizes_for_the_largest_unit_and_enforces_the_budget() {
    let units = [UnitSize { stored: 1000, decoded: 3000 }, UnitSize { stored: 5000, decoded: 2000 }];
    let p = SlotPlan::new(&units, 2, 100, None).unwrap();
    assert_eq!((p.slot_stored, p.slot_decoded), (5120, 3072), "256-byte aligned maxima");
    assert_eq!(p.total(), 2 * (5120 + 3072) + 100);
    assert_eq!(SlotPlan::new(&units, 2, 100, Some(p.total())).unwrap(), p);
    let err = SlotPlan::new(&units, 2, 100, Some(p.total() - 1)).unwrap_err().to_string();
    assert!(err.contains("holds 1 slot(s), 2 requested"), "{err}");
    let err = SlotPlan::new(&units, 1, 100, Some(5000)).unwrap_err().to_string();
    assert!(err.contains("too small: even one unit needs"), "{err}");
    assert!(SlotPlan::new(&units, 0, 0, None).is_err());
    assert!(SlotPlan::new(&[], 2, 0, None).is_err());
}

/// A small stack: d-wide blocks [q, o, up, down] with k = d not a multiple of 16 in one
/// unit (GEMV fallback) and mixed compressible/incompressible rows (raw chunks).
fn stack(dir: &std::path::Path, rng: &mut impl Rng, codec: Codec) -> (Container, Vec<Vec<String>>) {
    let (d, f) = (192, 448);
    let mut tensors = Vec::new();
    let mut units = Vec::new();
    for u in 0..4 {
        let shapes = [("q", d, d), ("o", d, d), ("up", f, d), ("down", d, f)];
        let mut names = Vec::new();
        for (name, n, k) in shapes {
            let mut w = heavy_tailed(rng, n * k);
            w.iter_mut().for_each(|v| *v /= (k as f32).sqrt() * 0.03);
            for v in &mut w[..n * k / 4] {
                *v = rng.gen_range(-1.0..1.0) / (k as f32).sqrt();
            }
            let full = format!("u{u}.{name}.weight");
            tensors.push(RawTensor::float(&full, Dtype::F16, &[n, k], &w));
            names.push(full);
        }
        units.push(names);
    }
    let src = dir.join(format!("stack-{codec:?}.safetensors"));
    write_safetensors(&src, &tensors);
    let out = dir.join(format!("stack-{codec:?}.clm"));
    let model = SourceModel::open(&src).unwrap();
    compress_model(&model, &out, &CompressOptions { codec, chunk_size: 4096, ..Default::default() }).unwrap();
    (Container::open(&out).unwrap(), units)
}

/// What one pass must copy, from the container's index alone: every tensor's stored chunk
/// bytes (padding included), each rounded up to the 256-byte alignment of a slot.
fn expected_h2d_bytes(c: &Container, units: &[Vec<String>]) -> usize {
    units.iter().flatten().map(|name| (c.tensor(name).unwrap().data.stored_extent() as usize).div_ceil(256) * 256).sum()
}

#[test]
fn streamed_forward_equals_resident_forward_bit_for_bit() {
    let Some(gpu) = gpu_or_skip("streamed_forward_equals_resident_forward_bit_for_bit") else { return };
    let mut rng = rng(fresh_seed());
    let dir = tempfile::tempdir().unwrap();
    for codec in [Codec::Zstd, Codec::Ans, Codec::Raw, Codec::Rans] {
        let (c, units) = stack(dir.path(), &mut rng, codec);
        // Units repeat (as layers of one model would not, but the engine must not care).
        let units: Vec<Vec<String>> = units.iter().chain(units.iter().take(2)).cloned().collect();
        for pin in [true, false] {
            let store = std::sync::Arc::new(HostStore::load(&gpu, &c, &units, pin).unwrap());
            assert_eq!(store.is_pinned(), pin);
            for slots in [1, 2, 3] {
                let mut ws = WeightStream::new(&gpu, store.clone(), slots, None, 20).unwrap();
                for m in [1, 5, 20] {
                    let x: Vec<f16> = (0..m * ws.input_width()).map(|_| f16::from_f32(rng.gen_range(-1.0..1.0))).collect();
                    let xd = gpu.stream.clone_htod(&x).unwrap();
                    let poison = vec![f16::from_bits(0x7e00); m * ws.output_width()];
                    let mut streamed = gpu.stream.clone_htod(&poison).unwrap();
                    let mut resident = gpu.stream.clone_htod(&poison).unwrap();
                    let run = ws.forward_linear_chain(&xd, m, &mut streamed).unwrap();
                    forward_resident(&gpu, &store, &xd, m, &mut resident).unwrap();
                    let a = gpu.stream.clone_dtoh(&streamed).unwrap();
                    let b = gpu.stream.clone_dtoh(&resident).unwrap();
                    assert!(a.iter().all(|v| v.is_finite()), "{codec:?} slots={slots} m={m}: unwritten outputs");
                    assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()), "{codec:?} pin={pin} slots={slots} m={m}: streamed != resident");
                    assert_eq!(run.h2d_bytes, expected_h2d_bytes(&c, &units), "{codec:?}: bytes copied per pass");
                    assert!(run.peak_vram_measured.is_none(), "VRAM is sampled only when asked");
                }
            }
        }
    }
}

#[test]
fn peak_vram_does_not_grow_with_depth_and_budget_errors_are_clear() {
    let Some(gpu) = gpu_or_skip("peak_vram_does_not_grow_with_depth_and_budget_errors_are_clear") else { return };
    let mut rng = rng(fresh_seed());
    let dir = tempfile::tempdir().unwrap();
    let (c, units) = stack(dir.path(), &mut rng, Codec::Ans);
    let mut slot_bytes = Vec::new();
    let mut peaks = Vec::new();
    for depth in [2, 16] {
        let units: Vec<Vec<String>> = units.iter().cycle().take(depth).cloned().collect();
        let store = std::sync::Arc::new(HostStore::load(&gpu, &c, &units, true).unwrap());
        let mut ws = WeightStream::new(&gpu, store.clone(), 2, None, 4).unwrap();
        ws.sample_vram = true;
        slot_bytes.push(ws.plan.slots * (ws.plan.slot_stored + ws.plan.slot_decoded));
        let x = gpu.stream.clone_htod(&vec![f16::ONE; 4 * ws.input_width()]).unwrap();
        let mut y = gpu.stream.alloc_zeros::<f16>(4 * ws.output_width()).unwrap();
        let run = ws.forward_linear_chain(&x, 4, &mut y).unwrap();
        peaks.push((run.peak_vram_measured.expect("sampled"), store.table_bytes()));
        let err = WeightStream::new(&gpu, store.clone(), 2, Some(ws.plan.slot_stored), 4).err().expect("budget below one unit").to_string();
        assert!(err.contains("VRAM budget") && err.contains("even one unit"), "{err}");
    }
    assert_eq!(slot_bytes[0], slot_bytes[1], "slots are sized per unit, not per model");
    // Measured: only the per-tensor tables and scales grow with depth (plus the driver's
    // 2 MiB allocation granularity).
    let ((p2, t2), (p16, t16)) = (peaks[0], peaks[1]);
    assert!(p16 <= p2 + (t16 - t2) + (4 << 20), "peak VRAM grew from {p2} to {p16} bytes (tables {t2} -> {t16})");
}

/// Unit steps the soak runs: a short run by default, `CODECLLM_SOAK_UNITS` for the real
/// soak (scripts/device-check.sh sets 10000).
fn soak_units() -> usize {
    std::env::var("CODECLLM_SOAK_UNITS").ok().and_then(|v| v.parse().ok()).unwrap_or(300)
}

/// Random stacks, codecs, slot counts and batches, streamed again and again, each result
/// checked against the resident one; device memory must return to its starting level.
#[test]
fn soak_streams_random_stacks_without_leaking() {
    let Some(gpu) = gpu_or_skip("soak_streams_random_stacks_without_leaking") else { return };
    let seed = fresh_seed();
    let mut rng = rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let stacks: Vec<(Container, Vec<Vec<String>>)> =
        [Codec::Zstd, Codec::Ans, Codec::Raw, Codec::Rans].into_iter().map(|c| stack(dir.path(), &mut rng, c)).collect();
    // Warm-up: one-time allocations (the split-K workspace at its largest batch, cuBLAS and
    // nvCOMP internals, allocator caches) happen here, before the baseline.
    for (c, units) in &stacks {
        let store = std::sync::Arc::new(HostStore::load(&gpu, c, units, true).unwrap());
        let mut ws = WeightStream::new(&gpu, store.clone(), 2, None, 24).unwrap();
        let x = gpu.stream.clone_htod(&vec![f16::ONE; 24 * ws.input_width()]).unwrap();
        let mut y = gpu.stream.alloc_zeros::<f16>(24 * ws.output_width()).unwrap();
        ws.forward_linear_chain(&x, 24, &mut y).unwrap();
        forward_resident(&gpu, &store, &x, 24, &mut y).unwrap();
    }
    gpu.release_cached_memory().unwrap();
    let (free_start, _) = gpu.mem_info().unwrap();
    let rss_start = rss_bytes();
    let target = soak_units();
    let (mut steps, mut forwards) = (0, 0);
    while steps < target {
        let (c, units) = &stacks[rng.gen_range(0..stacks.len())];
        let depth = rng.gen_range(1..=8);
        let chosen: Vec<Vec<String>> = (0..depth).map(|_| units[rng.gen_range(0..units.len())].clone()).collect();
        let store = std::sync::Arc::new(HostStore::load(&gpu, c, &chosen, rng.gen_bool(0.8)).unwrap());
        let mut ws = WeightStream::new(&gpu, store.clone(), rng.gen_range(1..=3), None, 24).unwrap();
        let m = rng.gen_range(1..=24);
        let x: Vec<f16> = (0..m * ws.input_width()).map(|_| f16::from_f32(rng.gen_range(-1.0..1.0))).collect();
        let xd = gpu.stream.clone_htod(&x).unwrap();
        let mut resident = gpu.stream.alloc_zeros::<f16>(m * ws.output_width()).unwrap();
        forward_resident(&gpu, &store, &xd, m, &mut resident).unwrap();
        let want = gpu.stream.clone_dtoh(&resident).unwrap();
        for _ in 0..rng.gen_range(1..=4) {
            let mut y = gpu.stream.clone_htod(&vec![f16::from_bits(0x7e00); m * ws.output_width()]).unwrap();
            ws.forward_linear_chain(&xd, m, &mut y).unwrap();
            let got = gpu.stream.clone_dtoh(&y).unwrap();
            assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "seed {seed}: forward {forwards} differs from resident");
            steps += depth;
            forwards += 1;
        }
    }
    gpu.release_cached_memory().unwrap();
    let (free_end, _) = gpu.mem_info().unwrap();
    let rss_end = rss_bytes();
    note(&format!("soak: {steps} unit steps in {forwards} forwards; device free {free_start} -> {free_end}; RSS {rss_start} -> {rss_end}"));
    assert!(free_end + (4 << 20) >= free_start, "device memory leaked: {} bytes", free_start - free_end);
    assert!(rss_end < rss_start + (64 << 20), "host memory grew by {} bytes", rss_end - rss_start);
}

/// Resident set size of this process (pinned host memory counts in it).
fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: usize = status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap();
    kb * 1024
}

/// The units a CPU share streams (`GpuLlama::stream_units_for`), on SmolLM2's real shapes
/// (widths 576 and 1536, rANS chunks): every block lists its seven projections first, gate,
/// up and down as bands from row 0, then the CPU's rows of those three, each continuing
/// its band to the matrix's end; every band ends on a chunk and on a slot-aligned byte,
/// and the CPU's rows are close to the share asked for.
#[test]
fn cpu_share_units_split_on_chunk_and_slot_boundaries() {
    use codecllm::model::llama::GpuLlama;
    use codecllm::model::placement::Placement;
    let Some(gguf) = fetch_model("fetch-smollm2.sh", "cpu_share_units_split_on_chunk_and_slot_boundaries") else { return };
    let dir = tempfile::tempdir().unwrap();
    let clm = dir.path().join("smollm2.clm");
    compress_model(&SourceModel::open(gguf.as_ref()).unwrap(), &clm, &CompressOptions::default()).unwrap();
    let c = Container::open(&clm).unwrap();
    for share in [0.25, 0.5, 0.9] {
        let placement = Placement { cpu_share: share, resident_blocks: 3, ..Placement::all_streamed(2) };
        let units = GpuLlama::stream_units_for(&c, &placement).unwrap();
        let blocks: Vec<_> = units.iter().filter(|u| u.iter().any(|p| p.cpu)).collect();
        assert_eq!(blocks.len(), 30 - 3, "share {share}: every streamed block is split");
        let (mut cpu_rows, mut all_rows) = (0, 0);
        for u in blocks {
            let gpu: Vec<_> = u.iter().take_while(|p| !p.cpu).collect();
            assert_eq!(gpu.len(), 7);
            for p in u.iter().skip(7) {
                assert!(p.cpu, "GPU parts come first");
                let t = c.tensor(&p.name).unwrap();
                let (rows, cols) = t.matrix_dims().unwrap();
                let band = gpu.iter().find(|b| b.name == p.name).and_then(|b| b.rows.clone()).expect("a band of the same matrix");
                let cpu = p.rows.clone().unwrap();
                assert!(band.start == 0 && band.end == cpu.start && cpu.end == rows as usize && !band.is_empty(), "{}: {band:?} then {cpu:?}", p.name);
                let end = band.end * cols as usize;
                assert!(
                    end.is_multiple_of(t.data.chunk_size as usize) && end.is_multiple_of(codecllm::stream::SLOT_ALIGN),
                    "{}: band ends at byte {end}",
                    p.name
                );
                cpu_rows += cpu.len();
                all_rows += rows as usize;
            }
        }
        let got = cpu_rows as f64 / all_rows as f64;
        assert!((got - share).abs() < 0.2, "share {share}: the CPU got {got:.3} of the MLP rows");
    }
    // No share: the units are the seven projections, whole.
    let units = GpuLlama::stream_units_for(&c, &Placement::all_streamed(2)).unwrap();
    assert!(units.iter().flatten().all(|p| !p.cpu));
}
