"""Compare the VM's MAC-array cycle formula with SCALE-Sim on every MAC layer of ddddocr.

Reads the layer GEMM shapes (M, N, K) from the shared SCALE-Sim reference folder (layers.csv),
computes our cycles with `ocrc.runtime.cycles.gemm_cycles` (the very function the VM calls) for
8x8, 16x16 and 32x32 arrays in os/ws/is, writes them as a CSV and runs the reference folder's
check_cycles.py on it (compute cycles of the stall-free runs, tolerance 5%).

    python benchmarks/scalesim_compare.py [--shared PATH/TO/scalesim] [--out ours.csv]

The folder defaults to ../shared/scalesim next to the repository.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

from ocrc.runtime.cycles import DF_IS, DF_OS, DF_WS, gemm_cycles

ARRAYS = (8, 16, 32)
DATAFLOWS = {"os": DF_OS, "ws": DF_WS, "is": DF_IS}


def our_cycles(shared: Path) -> list[dict[str, object]]:
    rows = []
    with open(shared / "layers.csv", newline="") as f:
        layers = list(csv.DictReader(f))
    for arr in ARRAYS:
        for df_name, df in DATAFLOWS.items():
            for lay in layers:
                m, n, k = int(lay["M"]), int(lay["N"]), int(lay["K"])
                cyc = gemm_cycles(m, n, k, arr, arr, df, 0)
                rows.append({"layer": lay["layer"], "array": f"{arr}x{arr}", "dataflow": df_name,
                             "cycles": int(cyc), "M": m, "N": n, "K": k})
    return rows


def main() -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=here.parent.parent / "shared" / "scalesim",
                    help="the SCALE-Sim reference folder (layers.csv, summary.csv, "
                         "check_cycles.py)")
    ap.add_argument("--out", type=Path, default=here / "out" / "scalesim_ours.csv")
    ap.add_argument("--tol", type=float, default=0.05)
    a = ap.parse_args()
    if not (a.shared / "layers.csv").is_file():
        print(f"error: {a.shared} has no layers.csv (pass --shared)", file=sys.stderr)
        return 2
    rows = our_cycles(a.shared)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cmd = [sys.executable, str(a.shared / "check_cycles.py"), str(a.out), "--metric",
           "compute_cycles", "--tol", str(a.tol)]
    return subprocess.run(cmd, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
