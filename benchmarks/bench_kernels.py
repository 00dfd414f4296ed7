"""One packed linear on every kernel path the host has, side by side (W1A8, 1 thread).

For each shape (tokens x in -> out) the paths take turns (AMX, AVX-512 VNNI, AVX2, ...) over several
rounds, so that a change of clock or load weighs on all alike; the median per path is reported with its
integer multiply-accumulates per second. Activations are quantized beforehand (the timed call is the
linear alone, its epilogue included). Writes benchmarks/results/kernels.json.

    python benchmarks/bench_kernels.py
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SHAPES = [(128, 768, 3072), (128, 3072, 768), (128, 768, 768), (128, 384, 1536), (128, 1536, 384), (4096, 768, 768)]
PATHS = ["amx", "avx512_vnni", "avx2"]  # the scalar path is a correctness reference, not timed


def main() -> int:
    from bench_inference import _cpu_name, _isa

    from xtc.packed import kernels as K

    torch.set_num_threads(1)
    ext = K.extension()
    if ext is None:
        print(f"packed kernels unavailable: {K.kernel_info()['error']}", file=sys.stderr)
        return 1
    host = ext.host_isa()
    paths = [p for p in PATHS if ext.set_isa(p) == p]
    skipped = [p for p in PATHS if p not in paths]
    rows = []
    for m, k, n in SHAPES:
        codes = (torch.randint(0, 2, (n, k), generator=torch.Generator().manual_seed(0)) * 2 - 1).to(torch.int8)
        prep = K.prepare_weights(codes, torch.rand(n), torch.randn(n), False)
        x = torch.randn(m, k)
        packed = {}
        for p in paths:
            ext.set_isa(p)
            packed[p] = ext.pack_activations(x)  # the activation layout is the path's own
        reps = 20 if m <= 128 else 2
        times = {p: [] for p in paths}
        for _ in range(7):
            for p in paths:
                ext.set_isa(p)
                ap, s = packed[p]
                ext.linear_packed(ap, s, prep["wp"], prep["colsum128"], prep["alpha"], prep["bias_p"], n, 0)
                t = time.perf_counter()
                for _ in range(reps):
                    ext.linear_packed(ap, s, prep["wp"], prep["colsum128"], prep["alpha"], prep["bias_p"], n, 0)
                times[p].append((time.perf_counter() - t) / reps)
        med = {p: statistics.median(v) for p, v in times.items()}
        rows.append({"tokens": m, "in": k, "out": n, "ms": {p: v * 1e3 for p, v in med.items()},
                     "gmacs_per_s": {p: m * k * n / v / 1e9 for p, v in med.items()}})
    ext.set_isa(host)
    result = {"command": "python benchmarks/bench_kernels.py", "cpu": _cpu_name(), "isa": _isa(), "host_path": host,
              "paths": paths, "paths_not_on_this_host": skipped, "clock_ghz": ext.measure_clock_ghz(), "rows": rows}
    (HERE / "results" / "kernels.json").write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    return 0


def table(r: dict) -> str:
    paths = r["paths"]
    head = ["tokens x in -> out"] + [f"{p}: ms (G MAC/s)" for p in paths]
    if len(paths) > 1:
        head.append(f"{paths[0]} speed-up over {paths[1]}")
    lines = [f"`{r['command']}`: {r['cpu']}, {' '.join(r['isa'])}, clock {r['clock_ghz']:.2f} GHz at the end; "
             f"W1A8, 1 thread, medians of 7 interleaved rounds"
             + (f"; not on this host: {', '.join(r['paths_not_on_this_host'])}" if r["paths_not_on_this_host"] else ""),
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in r["rows"]:
        cells = [f"{row['tokens']} x {row['in']} -> {row['out']}"]
        cells += [f"{row['ms'][p]:.3f} ({row['gmacs_per_s'][p]:.0f})" for p in paths]
        if len(paths) > 1:
            cells.append(f"{row['ms'][paths[1]] / row['ms'][paths[0]]:.1f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
