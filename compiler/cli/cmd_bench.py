"""`ocrc bench PROG.npu [--input NAME=FILE.npy] [--json] [--csv FILE] [--plot FILE.png]
[--repeat N] [--trace FILE.json]`: run a program on the VM and report the per-layer table and
totals (runtime.stats), the compiler's cycle estimate next to the VM's count, and the VM's own
wall time per inference (first run, then warm runs). Without --input the inputs are seeded
uniform samples over each input's quantised range."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ocrc.compiler.cli.common import load_inputs
from ocrc.runtime.errors import OcrcError
from ocrc.runtime.fileio import atomic_write_text
from ocrc.runtime.program import Program, load_program
from ocrc.runtime.stats import Stats, report_csv, report_text, write_trace
from ocrc.runtime.vm import VM


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("bench", help="per-layer cycles, utilisation and VM wall time of a .npu")
    p.add_argument("program", type=Path, help="a .npu file")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy",
                   help="an input tensor (default: seeded random inputs)")
    p.add_argument("--repeat", type=int, default=5, metavar="N", help="warm runs (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--csv", type=Path, metavar="FILE.csv", help="write the per-layer table")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="plot cycles per layer")
    p.add_argument("--trace", type=Path, metavar="FILE.json",
                   help="write a Chrome trace of the three queues (opens in Perfetto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    return p


def random_inputs(prog: Program, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for d in prog.inputs:
        info = np.iinfo(np.dtype(d.dtype))
        lo, hi = (info.min - d.zero_point) * d.scale, (info.max - d.zero_point) * d.scale
        out[d.name] = rng.uniform(lo, hi, d.shape).astype(np.float32)
    return out


def bench(prog: Program, inputs: dict[str, np.ndarray], repeat: int) -> tuple[Stats, dict[str,
                                                                                    Any]]:
    """One first run and `repeat` warm runs; (the last Stats, wall-time summary)."""
    t0 = time.perf_counter()
    vm = VM(prog)
    stats = vm.run(inputs)[1]
    first = time.perf_counter() - t0
    warm = []
    for _ in range(max(repeat, 0)):
        t0 = time.perf_counter()
        stats = vm.run(inputs)[1]
        warm.append(time.perf_counter() - t0)
    est = prog.meta.get("estimate_cycles")
    wall = {"first_s": first, "warm_median_s": statistics.median(warm) if warm else None,
            "warm_min_s": min(warm) if warm else None, "repeat": len(warm),
            "estimate_cycles": est,
            "estimate_ratio": est / stats.total_cycles if est and stats.total_cycles else None}
    return stats, wall


def plot(stats: Stats, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s.name.split(" [")[0] for s in stats.layers]
    colors = {"compute": "tab:blue", "memory": "tab:orange", "vector": "tab:green", "-": "grey"}
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(names)), 4))
    ax.bar(range(len(names)), [s.cycles for s in stats.layers],
           color=[colors[s.bound] for s in stats.layers])
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_ylabel("cycles (busiest unit)")
    ax.set_title(f"{stats.target}: {stats.total_cycles:,} cycles (blue compute, orange memory, "
                 "green vector)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    if args.program.suffix != ".npu":
        raise OcrcError(f"{args.program}: ocrc bench runs .npu programs")
    prog = load_program(args.program)
    inputs = load_inputs(args.input) if args.input else random_inputs(prog, args.seed)
    stats, wall = bench(prog, inputs, args.repeat)
    if args.json:
        sys.stdout.write(json.dumps({"stats": stats.to_json(), "wall": wall}, indent=2,
                                    sort_keys=True) + "\n")
    else:
        warm = (f"warm median {wall['warm_median_s'] * 1e3:.2f} ms over {wall['repeat']} runs"
                if wall["repeat"] else "no warm runs")
        est = (f"; compiler estimate {wall['estimate_cycles']:,} cycles "
               f"({wall['estimate_ratio']:.3f} x the VM)" if wall["estimate_ratio"] else "")
        sys.stdout.write(report_text(stats) + f"\nVM wall time: first run "
                         f"{wall['first_s'] * 1e3:.1f} ms, {warm}{est}.\n")
    if args.csv:
        atomic_write_text(args.csv, report_csv(stats))
    if args.plot:
        plot(stats, args.plot)
    if args.trace:
        write_trace(stats, args.trace)
    return 0
