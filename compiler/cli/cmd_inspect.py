"""`ocrc inspect MODEL.onnx [--input-shape NAME=D0,...] [--json]`: import a model and list
every layer (name, op, output shape, parameters, MACs) with totals, as a table or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ocrc.compiler.cli.cmd_compile import add_input_shape_option, input_shapes
from ocrc.compiler.ir.graph import Graph
from ocrc.compiler.ir.ops.counts import Layer, layers
from ocrc.frontend.onnx_import import import_onnx


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("inspect", help="per-layer shapes, parameters and MACs of a model")
    p.add_argument("model", type=Path, help="an .onnx file")
    add_input_shape_option(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def summary(model: str, g: Graph, rows: list[Layer]) -> dict[str, Any]:
    """The report as plain data (what --json prints)."""
    by_op: dict[str, int] = {}
    for r in rows:
        if r.macs:
            by_op[r.op] = by_op.get(r.op, 0) + r.macs
    return {
        "model": model,
        "inputs": [{"name": v.name, "type": str(v.type)} for v in g.inputs],
        "outputs": [{"name": v.name, "type": str(v.type)} for v in g.outputs],
        "layers": [{"name": r.name, "op": r.op, "shapes": [list(s) for s in r.shapes],
                    "params": r.params, "macs": r.macs} for r in rows],
        "totals": {"layers": len(rows), "params": sum(r.params for r in rows),
                   "macs": sum(r.macs for r in rows), "macs_by_op": dict(sorted(by_op.items()))},
    }


def table(s: dict[str, Any]) -> str:
    shapes = ["; ".join("x".join(map(str, sh)) for sh in r["shapes"]) for r in s["layers"]]
    wn = max([len("name")] + [len(r["name"]) for r in s["layers"]])
    wo = max([len("op")] + [len(r["op"]) for r in s["layers"]])
    ws = max([len("output")] + [len(x) for x in shapes])
    lines = [f"model {s['model']}",
             "inputs  " + ", ".join(f"{v['name']}: {v['type']}" for v in s["inputs"]),
             "outputs " + ", ".join(f"{v['name']}: {v['type']}" for v in s["outputs"]), "",
             f"{'name':<{wn}}  {'op':<{wo}}  {'output':<{ws}}  {'params':>12}  {'MACs':>15}"]
    for r, sh in zip(s["layers"], shapes):
        lines.append(f"{r['name']:<{wn}}  {r['op']:<{wo}}  {sh:<{ws}}  {r['params']:>12,}  "
                     f"{r['macs']:>15,}")
    t = s["totals"]
    lines += ["", f"total: {t['layers']} layers, {t['params']:,} params, {t['macs']:,} MACs",
              "MACs by op: " + "; ".join(f"{k} {v:,}" for k, v in t["macs_by_op"].items())]
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    g = import_onnx(args.model, input_shapes(args.input_shape))
    s = summary(str(args.model), g, layers(g))
    sys.stdout.write(json.dumps(s, indent=1) + "\n" if args.json else table(s))
    return 0
