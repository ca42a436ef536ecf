//! Where a model's weights go under a VRAM budget: as many blocks (and the LM head) as fit
//! resident as INT8, the rest streamed through the slot ring from pinned host RAM. Every
//! resident byte is a byte the link does not carry each token, so the planner maximizes
//! resident bytes; the time per token it predicts is max(resident compute, streamed
//! bytes / link), the two overlapping (the ring prefetches the streamed units while the
//! resident ones compute). The streamed blocks' MLP rows are shared with the CPU, which
//! computes its rows from INT8 copies in host RAM while the link carries the GPU's
//! (issue 18): the share balances the two, from their bandwidths. Plain arithmetic on
//! sizes, so it is tested without a GPU.

/// What the planner needs to know about the model and the machine.
#[derive(Clone, Debug)]
pub struct PlacementInput {
    /// INT8 bytes (values + scales) of each block's seven projections, resident.
    pub block_int8: Vec<usize>,
    /// Bytes of each block as stored (what streaming it copies per token).
    pub block_stored: Vec<usize>,
    pub lm_head_int8: usize,
    pub lm_head_stored: usize,
    /// Bytes of a streamed unit's largest slot (stored + decoded halves) — the ring's unit.
    pub slot_bytes: usize,
    pub slots: usize,
    /// Everything else the model allocates whatever the placement: KV cache, activations,
    /// norms, the RoPE tables, the streaming engine's decoder workspace and chunk tables.
    pub fixed: usize,
    /// The part of `fixed` the streaming engine itself allocates (decoder workspace,
    /// tables), which its own budget check counts.
    pub engine_fixed: usize,
    /// The token embedding's device table, allocated only when nothing streams (a model
    /// that streams keeps it in host RAM).
    pub resident_embedding: usize,
    pub link_gbps: f64,
    pub hbm_gbps: f64,
    /// INT8 and stored bytes of each block's gate, up and down projections (the rows a
    /// CPU may share).
    pub block_mlp_int8: Vec<usize>,
    pub block_mlp_stored: Vec<usize>,
    /// The CPU INT8 GEMV's measured bandwidth (0: no CPU share).
    pub cpu_gbps: f64,
    /// A fixed CPU share (`--cpu-share`) instead of the balanced one.
    pub cpu_share: Option<f64>,
    /// Only plans that stream every block (`--weights stream`).
    pub stream_all: bool,
}

/// Host-side cost of one CPU product in a decode step (input row to the host, a host
/// function, outputs back; two per block): an estimate, so that tiny shares that save
/// less than they cost are not taken.
pub const CPU_SHARE_OVERHEAD_S: f64 = 40e-6;

/// Shares below this are not worth the per-block overhead and stay on the GPU.
const MIN_CPU_SHARE: f64 = 0.05;

/// The plan: blocks `0..resident_blocks` resident, the others streamed, the LM head
/// resident or streamed in bands.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Placement {
    pub resident_blocks: usize,
    pub lm_head_resident: bool,
    /// Slots of the ring (0 when nothing streams).
    pub slots: usize,
    pub resident_bytes: usize,
    /// Bytes copied over the link per token.
    pub streamed_bytes: usize,
    /// Predicted device memory: resident weights + ring + fixed.
    pub predicted_vram: usize,
    /// Predicted seconds per decode step: max(resident bytes / HBM + the CPU's rows / its
    /// bandwidth, streamed / link).
    pub predicted_seconds: f64,
    /// Fraction of each streamed block's gate, up and down rows the CPU computes in
    /// decode steps (0: none).
    pub cpu_share: f64,
    /// INT8 bytes of those rows (what the CPU reads per token).
    pub cpu_bytes: usize,
}

impl Placement {
    /// Every block and the LM head streamed through `slots` slots (sizes not predicted).
    pub fn all_streamed(slots: usize) -> Self {
        Placement {
            resident_blocks: 0,
            lm_head_resident: false,
            slots,
            resident_bytes: 0,
            streamed_bytes: 0,
            predicted_vram: 0,
            predicted_seconds: 0.0,
            cpu_share: 0.0,
            cpu_bytes: 0,
        }
    }

    pub fn streams(&self) -> bool {
        self.streamed_bytes > 0
    }
}

/// The placement with the most resident bytes that fits `budget`, or the reason none does.
pub fn plan(input: &PlacementInput, budget: usize) -> Result<Placement, String> {
    let layers = input.block_int8.len();
    let predict = |resident_blocks: usize, lm_head_resident: bool, ring: usize| {
        let resident = input.block_int8[..resident_blocks].iter().sum::<usize>() + if lm_head_resident { input.lm_head_int8 } else { 0 };
        let streamed = input.block_stored[resident_blocks..].iter().sum::<usize>() + if lm_head_resident { 0 } else { input.lm_head_stored };
        let slots = if streamed > 0 { ring } else { 0 };
        let vram = resident + slots * input.slot_bytes + input.fixed + if streamed > 0 { 0 } else { input.resident_embedding };
        let (link, hbm) = (input.link_gbps * 1e9, input.hbm_gbps * 1e9);
        let resident_s = resident as f64 / hbm;
        let (mlp_stored, mlp_int8) =
            (input.block_mlp_stored[resident_blocks..].iter().sum::<usize>(), input.block_mlp_int8[resident_blocks..].iter().sum::<usize>());
        let overhead = 2.0 * CPU_SHARE_OVERHEAD_S * (layers - resident_blocks) as f64;
        // Time per token with share f: the link carries the rest while the resident blocks
        // and then the CPU compute; they balance where (streamed − f·Ms)/L = R + f·Mi/C.
        let time = |f: f64| {
            let cpu = if f > 0.0 { overhead + f * mlp_int8 as f64 / (input.cpu_gbps * 1e9) } else { 0.0 };
            ((streamed as f64 - f * mlp_stored as f64) / link).max(resident_s + cpu)
        };
        let balanced = if input.cpu_gbps > 0.0 && mlp_int8 > 0 {
            let f = (streamed as f64 / link - resident_s - overhead) / (mlp_stored as f64 / link + mlp_int8 as f64 / (input.cpu_gbps * 1e9));
            if f < MIN_CPU_SHARE {
                0.0
            } else {
                f.min(1.0)
            }
        } else {
            0.0
        };
        let share = if mlp_int8 == 0 { 0.0 } else { input.cpu_share.unwrap_or(balanced).clamp(0.0, 1.0) };
        Placement {
            resident_blocks,
            lm_head_resident,
            slots,
            resident_bytes: resident,
            streamed_bytes: streamed - (share * mlp_stored as f64) as usize,
            predicted_vram: vram,
            predicted_seconds: time(share),
            cpu_share: share,
            cpu_bytes: (share * mlp_int8 as f64) as usize,
        }
    };
    // (resident blocks, LM head resident) to choose from: only (0, false) to stream all.
    let choices: Vec<(usize, bool)> = if input.stream_all { vec![(0, false)] } else { (0..=layers).flat_map(|k| [(k, true), (k, false)]).collect() };
    let best = |ring: usize| {
        let fitting = choices.iter().map(|&(k, lm)| predict(k, lm, ring)).filter(|p| p.predicted_vram <= budget);
        fitting.max_by_key(|p| p.resident_bytes)
    };
    // The ring asked for, else one slot (each unit's copy then waits for the previous
    // unit's compute) when that is all the budget holds.
    best(input.slots).or_else(|| (input.slots > 1).then(|| best(1)).flatten()).ok_or_else(|| {
        let least = predict(0, false, 1);
        format!(
            "a VRAM budget of {} cannot hold even the streaming ring: it needs {} ({} for 1 slot, {} for the KV cache, activations, tables and the rest)",
            size(budget),
            size(least.predicted_vram),
            size(input.slot_bytes),
            size(input.fixed)
        )
    })
}

/// `n` bytes as people read them: MB below a gigabyte, GB above (decimal, as `parse_size`).
fn size(n: usize) -> String {
    if n < 1_000_000_000 {
        format!("{:.1} MB", n as f64 / 1e6)
    } else {
        format!("{:.2} GB", n as f64 / 1e9)
    }
}

/// Parses a size as users write it: `1.5GB`, `1500MB`, `800M`, `2G`, `123456` (bytes).
/// Units are decimal (GB = 10⁹ bytes), `GiB`/`MiB` binary.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.trim().parse().map_err(|_| format!("'{s}' is not a size (e.g. 1.5GB, 800MB)"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("'{s}': unknown size unit '{other}' (B, KB, MB, GB, KiB, MiB, GiB)")),
    };
    if !(value.is_finite() && value >= 0.0) {
        return Err(format!("'{s}' is not a size"));
    }
    Ok((value * scale) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An 8B-shaped model: 32 blocks of 218 MB INT8 (0.9 of it stored), a 525 MB LM head.
    fn eight_b() -> PlacementInput {
        PlacementInput {
            block_int8: vec![218_000_000; 32],
            block_stored: vec![196_000_000; 32],
            lm_head_int8: 525_000_000,
            lm_head_stored: 472_000_000,
            slot_bytes: 218_000_000 + 196_000_000,
            slots: 2,
            fixed: 300_000_000,
            engine_fixed: 20_000_000,
            resident_embedding: 1_000_000_000,
            link_gbps: 55.0,
            hbm_gbps: 4_000.0,
            block_mlp_int8: vec![176_000_000; 32],
            block_mlp_stored: vec![158_000_000; 32],
            cpu_gbps: 0.0,
            cpu_share: None,
            stream_all: false,
        }
    }

    #[test]
    fn everything_resident_when_it_fits_and_no_ring() {
        let p = plan(&eight_b(), 20_000_000_000).unwrap();
        assert_eq!((p.resident_blocks, p.lm_head_resident, p.slots, p.streamed_bytes), (32, true, 0, 0));
        assert_eq!(p.predicted_vram, 32 * 218_000_000 + 525_000_000 + 300_000_000 + 1_000_000_000);
    }

    #[test]
    fn the_plan_fits_the_budget_and_keeps_the_most_bytes_resident() {
        let input = eight_b();
        for budget in [1_200_000_000usize, 1_500_000_000, 3_000_000_000, 4_500_000_000, 8_000_000_000] {
            let p = plan(&input, budget).unwrap();
            assert!(p.predicted_vram <= budget, "{budget}: {p:?}");
            // No other split fits with more resident bytes (exhaustive check).
            for k in 0..=32 {
                for lm in [true, false] {
                    let resident = k * 218_000_000 + if lm { 525_000_000 } else { 0 };
                    let streams = k < 32 || !lm;
                    let vram = resident + if streams { 2 * input.slot_bytes } else { input.resident_embedding } + input.fixed;
                    assert!(vram > budget || resident <= p.resident_bytes, "{budget}: {k} blocks, LM head {lm} fits with more resident bytes than {p:?}");
                }
            }
            let streamed = (32 - p.resident_blocks) * 196_000_000 + if p.lm_head_resident { 0 } else { 472_000_000 };
            assert_eq!(p.streamed_bytes, streamed);
            let want = if streamed > 0 { streamed as f64 / 55e9 } else { p.resident_bytes as f64 / 4_000e9 };
            assert!((p.predicted_seconds - want).abs() < 1e-12, "the slower of HBM and link: {p:?}");
        }
    }

    #[test]
    fn a_budget_below_two_slots_streams_through_one() {
        let p = plan(&eight_b(), 900_000_000).unwrap();
        assert_eq!((p.resident_blocks, p.lm_head_resident, p.slots), (0, false, 1));
        assert_eq!(p.predicted_vram, 218_000_000 + 196_000_000 + 300_000_000);
    }

    #[test]
    fn a_budget_below_the_ring_is_a_clear_error() {
        let err = plan(&eight_b(), 700_000_000).unwrap_err();
        assert!(err.contains("cannot hold even the streaming ring") && err.contains("700.0 MB") && err.contains("714.0 MB"), "{err}");
    }

    #[test]
    fn the_cpu_share_balances_the_link_and_the_cpu() {
        let mut input = eight_b();
        input.cpu_gbps = 70.0;
        for budget in [1_500_000_000usize, 4_000_000_000, 6_000_000_000] {
            let p = plan(&input, budget).unwrap();
            let streamed_blocks = 32 - p.resident_blocks;
            let (ms, mi) = (158e6 * streamed_blocks as f64, 176e6 * streamed_blocks as f64);
            let all = (streamed_blocks * 196_000_000 + if p.lm_head_resident { 0 } else { 472_000_000 }) as f64;
            assert!(p.cpu_share > MIN_CPU_SHARE && p.cpu_share <= 1.0, "{p:?}");
            // Balanced: the link's time equals the resident compute plus the CPU's.
            let link = (all - p.cpu_share * ms) / 55e9;
            let cpu = p.resident_bytes as f64 / 4_000e9 + 2.0 * CPU_SHARE_OVERHEAD_S * streamed_blocks as f64 + p.cpu_share * mi / 70e9;
            assert!((link - cpu).abs() < 1e-9 || p.cpu_share == 1.0, "{budget}: link {link} cpu {cpu}");
            assert!((p.predicted_seconds - link.max(cpu)).abs() < 1e-12);
            // Faster than the link alone, and the same resident set as without a CPU.
            let alone = plan(&eight_b(), budget).unwrap();
            assert_eq!((p.resident_blocks, p.lm_head_resident), (alone.resident_blocks, alone.lm_head_resident));
            assert!(p.predicted_seconds < alone.predicted_seconds, "{p:?} vs {alone:?}");
            assert!((p.streamed_bytes as f64 - (all - p.cpu_share * ms)).abs() <= 1.0, "{p:?}");
        }
        // A weak CPU gets nothing; a fixed share is taken as given; all resident shares nothing.
        input.cpu_gbps = 0.5;
        assert_eq!(plan(&input, 1_500_000_000).unwrap().cpu_share, 0.0);
        input.cpu_share = Some(0.3);
        assert_eq!(plan(&input, 1_500_000_000).unwrap().cpu_share, 0.3);
        input.cpu_gbps = 70.0;
        input.cpu_share = None;
        assert_eq!(plan(&input, 20_000_000_000).unwrap().cpu_share, 0.0);
    }

    #[test]
    fn stream_all_keeps_every_block_streamed() {
        let mut input = eight_b();
        input.stream_all = true;
        let p = plan(&input, 20_000_000_000).unwrap();
        assert_eq!((p.resident_blocks, p.lm_head_resident), (0, false));
    }

    #[test]
    fn sizes_parse_as_written() {
        assert_eq!(parse_size("1.5GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("800M").unwrap(), 800_000_000);
        assert_eq!(parse_size("2 GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").is_err() && parse_size("1.5 parsecs").is_err() && parse_size("-1GB").is_err());
    }
}
