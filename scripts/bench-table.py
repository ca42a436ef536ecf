#!/usr/bin/env python3
"""Turns `codecllm bench ... --json` output into the Markdown table BENCHMARKS.md uses."""
import json, sys

d = json.load(open(sys.argv[1]))
rows = d["rows"] if "rows" in d else [d]
p = d.get("provenance", {})
dev = p.get("device")
if dev:
    clocks = f", SM {dev.get('sm_clock_mhz')}/{dev.get('sm_clock_max_mhz')} MHz" if dev.get("sm_clock_mhz") else ""
    print(f"Device: {dev['name']} (sm {dev['compute_capability']}, driver {dev.get('driver_version') or dev['driver_api_version']}{clocks}); "
          f"D2D copy {d['d2d_gbps']:.0f} GB/s (read+write), pinned H2D {d['pinned_h2d_gbps']:.1f} GB/s, same run; "
          f"commit {p['commit']}, seed {p['seed']}, `{' '.join(p['command'][1:])}`.\n")
print("| section | case | ours µs | baseline | baseline µs | speedup | GB/s | % D2D | note |")
print("|---|---|---:|---|---:|---:|---:|---:|---|")
for r in rows:
    print(f"| {r['section']} | {r['case']} | {r['ours_us']:.2f} | {r['baseline']} | {r['baseline_us']:.2f} "
          f"| {r['speedup']:.3f} | {r['gbps']:.1f} | {r['pct_of_d2d']:.1f} | {r['note']} |")
