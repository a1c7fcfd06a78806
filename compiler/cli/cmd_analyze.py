"""`ocrc analyze MODEL.onnx --calib DIR|FILE.npz [--metric sqnr|cosine|agreement]`: the
per-layer sensitivity analysis of compression.

Imports the model, runs the float pipeline, then for every weight layer measures the metric of
the outputs against the uncompressed model on the calibration samples with one setting applied
to that layer alone: magnitude sparsities, 2:4, low-rank energies and int8/int16 weights.
Prints a table (stdout), and writes JSON (--json) and a matplotlib plot (--plot).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ocrc.compiler.cli.cmd_compile import add_input_shape_option, input_shapes
from ocrc.compiler.compress import sensitivity
from ocrc.compiler.compress.metrics import METRICS, get_metric
from ocrc.compiler.compress.sites import parse_ops, weight_sites
from ocrc.compiler.passes import PassContext
from ocrc.compiler.passes.lowrank import mac_multiple
from ocrc.compiler.pipeline import optimize
from ocrc.compiler.quant.calibrate import load_calibration_set
from ocrc.frontend.onnx_import import import_onnx
from ocrc.runtime.errors import OcrcError
from ocrc.runtime.fileio import atomic_write_text


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("analyze", help="per-layer compression sensitivity of an ONNX model")
    p.add_argument("model", type=Path, help="an .onnx file")
    p.add_argument("--calib", type=Path, required=True, metavar="DIR|FILE.npz",
                   help="calibration inputs (a directory of .npy files or an .npz)")
    p.add_argument("--metric", choices=METRICS, default="sqnr",
                   help="output metric against the uncompressed model (default: sqnr)")
    p.add_argument("--layout", choices=("TNC", "NTC"), default="TNC",
                   help="logits layout for --metric agreement (greedy CTC; default TNC)")
    p.add_argument("--samples", type=int, default=8, help="calibration samples used (default 8)")
    p.add_argument("--ops", default="conv+dense+matmul+lstm",
                   help="layer kinds to analyse, '+'-joined (default: all)")
    p.add_argument("--sparsities", default="0.5+0.7+0.8+0.9", help="'+'-joined sparsities")
    p.add_argument("--energies", default="0.95+0.9+0.8", help="'+'-joined low-rank energies")
    p.add_argument("--json", type=Path, metavar="FILE.json", help="write the results as JSON")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="plot loss per setting")
    p.add_argument("--passes", default="float", help="float pipeline run first (default: float)")
    add_input_shape_option(p)
    return p


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split("+") if t)
    except ValueError:
        raise OcrcError(f"{option} {text!r}: expected numbers joined by '+'") from None


def table(sw: sensitivity.Sweep) -> str:
    unit = "dB" if sw.metric == "sqnr" else "%"
    loss_unit = "noise % of signal" if sw.metric == "sqnr" else "points"
    lines = [f"metric: {sw.metric} (reference {sw.reference:.3g}); loss in {loss_unit}",
             f"{'layer':<24} {'setting':<16} {'bytes':>10} {sw.metric + ' ' + unit:>12} "
             + f"{'loss':>9}"]
    for r in sw.results:
        st = r.setting
        label = st.kind + (f" {st.value}" if st.value else "")
        lines.append(f"{st.layer:<24} {label:<16} {st.nbytes:>10} {r.score:>12.4g} "
                     f"{r.loss:>9.4g}")
    return "\n".join(lines) + "\n"


def plot(sw: sensitivity.Sweep, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for layer, rs in sw.by_layer().items():
        pts = sorted((1 - r.setting.nbytes / max(rs[0].setting.nbytes, 1), max(r.loss, 1e-6))
                     for r in rs if r.setting.kind in ("prune", "nm", "lowrank"))
        if pts:
            ax.plot(*zip(*pts), marker="o", label=layer)
    ax.set_xlabel("weight bytes saved (fraction of the layer's int8 bytes)")
    ax.set_ylabel(f"loss ({sw.metric})")
    ax.set_yscale("log")
    ax.set_title("per-layer compression sensitivity")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    if args.samples < 1:
        raise OcrcError("--samples must be >= 1")
    g = optimize(import_onnx(args.model, input_shapes(args.input_shape)), args.passes)
    samples = load_calibration_set(args.calib, g)[:args.samples]
    sites = weight_sites(g, parse_ops(args.ops, "--ops"))
    cands = sensitivity.candidates(g, sites, _floats(args.sparsities, "--sparsities"),
                                   _floats(args.energies, "--energies"), int16=True,
                                   multiple=mac_multiple(PassContext(), 0))
    metric = get_metric(args.metric, args.layout)
    sw = sensitivity.sweep([(g, samples)], cands, metric, progress=sys.stderr.isatty())
    sys.stdout.write(table(sw))
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(sw.as_json(), indent=1) + "\n")
    if args.plot is not None:
        plot(sw, args.plot)
    return 0
