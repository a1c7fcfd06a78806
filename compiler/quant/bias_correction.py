"""Empirical bias correction: shift each qconv/qdense bias by the mean per-channel error of its
output against the float model (single mode: each layer fed the float model's
inputs, so the corrections are independent; over calibration samples).

Quantising weights and inputs biases a layer's output; the accumulated shift is measured once
and folded into the int32 biases: bias[c] += rint(mean(float - int8)[c] / s_acc[c]), the float
output clipped to the int8 output's real range (the clipping a range method accepts is not a
bias to undo).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ocrc.compiler.ir.graph import Graph, Node, Value
from ocrc.compiler.ir.interp import run
from ocrc.compiler.ir.ops.quant import BIAS_MAX
from ocrc.compiler.quant.quantizer import QuantResult
from ocrc.runtime import qmath


def _channel_mean(a: np.ndarray, axis: int) -> np.ndarray:
    axes = tuple(i for i in range(a.ndim) if i != axis % a.ndim)
    return a.astype(np.float64).mean(axis=axes)


def bias_correct(float_graph: Graph, qres: QuantResult,
                 data: Iterable[Mapping[str, np.ndarray]]) -> QuantResult:
    """qres with its MAC biases absorbing the measured mean errors (updated in place)."""
    return apply_bias_errors(qres, measure_bias_errors(float_graph, qres, data))


def _targets(qres: QuantResult) -> tuple[dict[Value, Node], dict[Value, str], dict[Value, str]]:
    qg = qres.graph
    macs = {n.outputs[0]: n for n in qg.nodes if n.op.name in ("qconv", "qdense")}
    fname = {qres.qvalue[k]: k for k in qres.qvalue}
    targets = {v: fname[v] for v in macs if v in fname and f"{fname[v]}.bias" in qres.weights}
    return macs, fname, targets


def measure_bias_errors(float_graph: Graph, qres: QuantResult,
                        data: Iterable[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per MAC layer (by float output name), the mean per-channel error float - int8 of its
    output in real units, each layer fed the float model's inputs (single mode). The errors do
    not depend on the input shape: measured on one shape, they correct the graphs of others
    (`apply_bias_errors`)."""
    qg = qres.graph
    macs, fname, targets = _targets(qres)
    consts = {n.outputs[0]: n.attrs["value"] for n in qg.nodes if n.op.name == "const"}
    err: dict[str, np.ndarray] = {}
    count = 0
    want = set(targets.values()) | {fname[macs[v].inputs[0]] for v in targets}
    for sample in data:
        count += 1
        fv: dict[str, np.ndarray] = {k: a for k, a in sample.items() if k in want}

        def fhook(n: Node, outs: Sequence[np.ndarray]) -> None:
            for v, a in zip(n.outputs, outs):
                if v.name in want:
                    fv[v.name] = a
        run(float_graph, sample, fhook)
        for v, name in targets.items():
            node = macs[v]
            x = fname[node.inputs[0]]  # type: ignore[index]
            args = [qres.qparams[x].quantize(fv[x])] + [consts[u] for u in node.inputs[1:]]
            out = node.op.ref(args, node.all_attrs)[0]
            qp = qres.qparams[name]
            # Against the float output clipped to the int8 range: the clipping that the range
            # choice accepts (mse, percentile) is not a bias to undo through the bias.
            f = np.clip(fv[name], *qp.real_range())
            e = _channel_mean(f - qp.dequantize(out), 1 if node.op.name == "qconv" else -1)
            err[name] = err.get(name, 0.0) + e
    return {k: e / count for k, e in err.items()}


def apply_bias_errors(qres: QuantResult, errors: Mapping[str, np.ndarray]) -> QuantResult:
    """qres (updated in place) with bias[c] += rint(error[c] / s_acc[c]) on every MAC layer
    that `errors` names, clamped to the bias range."""
    if not errors:
        return qres
    qg = qres.graph
    macs, _, targets = _targets(qres)
    new_bias: dict[Value, np.ndarray] = {}
    for v, name in targets.items():
        if name not in errors:
            continue
        node = macs[v]
        bq, acc_scale, axis = qres.weights[f"{name}.bias"]
        bound = BIAS_MAX if bq.dtype == np.int32 else qmath.WIDE_BIAS_MAX  # int64: wide acc
        fixed = np.clip(bq + np.rint(errors[name] / acc_scale), -bound, bound)
        fixed = fixed.astype(bq.dtype)
        new_bias[node.inputs[2]] = fixed  # type: ignore[index]
        qres.weights[f"{name}.bias"] = (fixed, acc_scale, axis)
    nodes = []
    for n in qg.nodes:
        if n.op.name == "const" and n.outputs[0] in new_bias:
            n = Node(n.op, (), {"value": new_bias[n.outputs[0]]}, n.outputs, n.name)
        nodes.append(n)
    qres.graph = Graph(list(qg.inputs), nodes, list(qg.outputs), qg.name)
    return qres
