"""ONNX's node conformance cases for every op the frontend claims: each case either matches
its expected outputs (rtol 1e-4) or is rejected with UnsupportedOpError; never a wrong answer.

Every case runs twice: with its inputs as graph inputs (the ops' reference semantics) and with
its inputs baked in as initializers (the importer's constant folding). Run this file as a
script for the passed/rejected table per op:  python tests/numerics/test_onnx_conformance.py
"""

from __future__ import annotations

import collections
import functools
import sys
import warnings
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from ocrc.compiler.errors import UnsupportedOpError
from ocrc.compiler.ir import DType, run
from ocrc.frontend import import_onnx, supported_ops

RTOL = 1e-4
ATOL = 1e-6
MODES = ("inputs", "folded")
# Cases whose expected outputs were written rounded; onnxruntime agrees with ocrc to 1e-7 on
# them. They are checked at the tolerance onnx's own runner uses (rtol 1e-3).
ROUNDED_EXPECTATIONS = {"test_averagepool_2d_ceil_last_window_starts_on_pad": 1e-3}


@functools.cache
def claimed_cases() -> dict[str, Any]:
    """Node cases whose nodes are all ops the frontend claims, by name."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from onnx.backend.test.case.node import collect_testcases
        cases = collect_testcases()
    claimed = set(supported_ops())
    out = {}
    for case in cases:
        ops = {n.op_type for n in case.model.graph.node}
        if ops <= claimed and all(n.domain in ("", "ai.onnx") for n in case.model.graph.node):
            out[case.name] = case
    return dict(sorted(out.items()))


def case_op(case: Any) -> str:
    nodes = case.model.graph.node
    return nodes[0].op_type if len(nodes) == 1 else "(multi-node)"


def _arrays(values: list[Any]) -> list[np.ndarray]:
    """Case data as arrays (some cases store TensorProtos, e.g. the Cast ones)."""
    return [numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else np.asarray(v)
            for v in values]


def _bake(model: onnx.ModelProto, inputs: list[np.ndarray]) -> onnx.ModelProto:
    """The model with its runtime inputs turned into initializers."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {t.name for t in m.graph.initializer}
    runtime = [vi for vi in m.graph.input if vi.name not in inits]
    for vi, arr in zip(runtime, inputs):
        m.graph.initializer.append(numpy_helper.from_array(np.asarray(arr), vi.name))
    return m


def run_case(case: Any, mode: str) -> tuple[str, str]:
    """("pass" | "rejected" | "fail", detail) for one case in one mode."""
    model = case.model
    inits = {t.name for t in model.graph.initializer}
    runtime = [vi.name for vi in model.graph.input if vi.name not in inits]
    for inputs, expected in case.data_sets:
        inputs, expected = _arrays(inputs), _arrays(expected)
        try:
            for a in inputs:
                DType.from_np(a.dtype)
        except TypeError:
            return "rejected", f"input dtype {a.dtype} (no IR dtype)"
        try:
            if mode == "folded":
                g = import_onnx(_bake(model, inputs))
                feeds: dict[str, np.ndarray] = {}
            else:
                g = import_onnx(model, {n: list(a.shape) for n, a in zip(runtime, inputs)})
                feeds = dict(zip(runtime, inputs))
            ours = [run(g, feeds)[v.name] for v in g.outputs]
        except UnsupportedOpError as e:
            return "rejected", str(e)
        except Exception as e:  # noqa: BLE001  (any other failure is a wrong answer)
            return "fail", f"{type(e).__name__}: {e}"
        for i, (a, e) in enumerate(zip(ours, expected)):
            if a.shape != e.shape or a.dtype != e.dtype:
                return "fail", f"output {i}: {a.dtype}{list(a.shape)} != {e.dtype}{list(e.shape)}"
            if e.dtype.kind in "fc":
                rtol = ROUNDED_EXPECTATIONS.get(case.name, RTOL)
                ok = np.allclose(a, e, rtol=rtol, atol=ATOL, equal_nan=True)
            else:
                ok = np.array_equal(a, e)
            if not ok:
                err = np.max(np.abs(a.astype(np.float64) - e.astype(np.float64)))
                return "fail", f"output {i}: max abs error {err:.3g}"
    return "pass", ""


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(claimed_cases()))
def test_node_case(name: str, mode: str) -> None:
    outcome, detail = run_case(claimed_cases()[name], mode)
    assert outcome != "fail", detail


def report() -> str:
    """Markdown table: passed / rejected / failed per op and mode."""
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for case in claimed_cases().values():
        for mode in MODES:
            counts[case_op(case)][f"{mode}:{run_case(case, mode)[0]}"] += 1
    lines = ["| op | cases | passed | rejected | failed | folded: passed | rejected | failed |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    total: collections.Counter[str] = collections.Counter()
    for op in sorted(counts):
        c = counts[op]
        total.update(c)
        n = sum(v for k, v in c.items() if k.startswith("inputs:"))
        lines.append(f"| {op} | {n} | " + " | ".join(
            str(c[f"{m}:{o}"]) for m in MODES for o in ("pass", "rejected", "fail")) + " |")
    n = sum(v for k, v in total.items() if k.startswith("inputs:"))
    lines.append(f"| **all** | {n} | " + " | ".join(
        str(total[f"{m}:{o}"]) for m in MODES for o in ("pass", "rejected", "fail")) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if "-v" in sys.argv:
        for name, case in claimed_cases().items():
            for mode in MODES:
                outcome, detail = run_case(case, mode)
                if outcome != "pass":
                    print(f"{outcome:8} {mode:6} {name}: {detail[:200]}")
    print(report())
