"""Node counts of the real OCR models after ocrc's float pipeline, next to onnxsim, onnxslim and
onnxruntime's own graph optimiser (issue 3's table), with the pipeline's time and its error.

Run from the repository root: `python -m benchmarks.node_counts_ours [--write]`; --write puts
the table into the `## Graph optimizer` section of benchmarks/RESULTS.md. ocrc's counts are the
IR's ops without constants; the ONNX counts are top-level nodes (benchmarks.node_counts).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from collections import Counter

import numpy as np
import onnx

from benchmarks.node_counts import SHAPES, _count_with, _input_name, count_nodes, with_onnxsim
from benchmarks.node_counts import with_onnxslim
from benchmarks.ocr.report import markdown_table, write_section
from ocrc.compiler.ir import run
from ocrc.compiler.pipeline import DEFAULT, PIPELINES, optimize
from ocrc.frontend import import_onnx
from ocrc.frontend.zoo import fetch_model

SECTION = "Graph optimizer"
SEED = 0


def ort_count(proto: onnx.ModelProto, shape: tuple[int, ...]) -> str:
    """Top-level nodes of the model onnxruntime saves after ORT_ENABLE_ALL optimisation, with
    the input fixed to `shape` (as for the other tools)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "n/a (onnxruntime not installed)"
    static = onnx.ModelProto()
    static.CopyFrom(proto)
    name = _input_name(static)
    dims = next(i for i in static.graph.input if i.name == name).type.tensor_type.shape.dim
    for d, n in zip(dims, shape):
        d.Clear()
        d.dim_value = n
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "static.onnx")
        onnx.save(static, path)
        out = os.path.join(tmp, "opt.onnx")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = out
        opts.log_severity_level = 3
        ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        return str(count_nodes(onnx.load(out, load_external_data=False)))


def ort_outputs(path: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"]).run(None, feed)


def ours(path: str, shape: tuple[int, ...]) -> tuple[int, int, float, float, str]:
    """(ops imported, ops after the float pipeline, seconds, relative error vs onnxruntime,
    what is left) for one model."""
    name = _input_name(onnx.load(path, load_external_data=False))
    g = import_onnx(path, {name: shape})
    t0 = time.perf_counter()
    out = optimize(g)
    seconds = time.perf_counter() - t0
    feed = {name: np.random.default_rng(SEED).random(shape, dtype=np.float32)}
    got = run(out, {out.inputs[0].name: feed[name]})
    err = max(float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) or 1.0))
              for a, b in zip(got.values(), ort_outputs(path, feed)))
    left = Counter(n.op.name for n in out.nodes if n.op.name != "const")
    return g.count_ops(), out.count_ops(), seconds, err, ", ".join(
        f"{k} {v}" for k, v in left.most_common())


def rows() -> list[list[str]]:
    table = []
    for model, shape in SHAPES.items():
        path = str(fetch_model(model))
        proto = onnx.load(path)
        imported, after, seconds, err, left = ours(path, shape)
        with contextlib.redirect_stderr(io.StringIO()):
            ort = ort_count(proto, shape)
        table.append([model, "x".join(map(str, shape)), str(count_nodes(proto)),
                      _count_with(with_onnxsim, proto, shape),
                      _count_with(with_onnxslim, proto, shape), ort, str(imported),
                      f"**{after}**", f"{seconds:.2f}", f"{err:.1e}", left])
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help=f"write the '{SECTION}' section")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    table = markdown_table(
        ["model", "input", "ONNX nodes", "onnxsim", "onnxslim", "onnxruntime (all)",
         "ocrc imported", "ocrc float", "pipeline s", "rel. error vs ORT", "ocrc ops left"],
        rows())
    body = (f"Command: `python -m benchmarks.node_counts_ours --write` "
            f"({time.perf_counter() - t0:.0f} s). ocrc's float pipeline (`{DEFAULT}`) is "
            f"`{PIPELINES[DEFAULT]}`. ONNX columns count top-level nodes (Constant nodes "
            "included, initializers not); ocrc columns count IR ops without constants. "
            "\"onnxruntime (all)\" is the model ORT saves with ORT_ENABLE_ALL at the same static "
            "input shape. The error is "
            "max |ocrc - onnxruntime| / max |onnxruntime| on a seeded uniform [0, 1) input, "
            "through ocrc's reference interpreter after the pipeline.\n\n" + table)
    print(body)
    if args.write:
        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
