"""Per-node multiply-accumulate and parameter counts (`ocrc inspect`, reports, cost models).

MACs count the multiply-accumulates of an op's matrix products only (conv, conv_transpose,
dense, matmul, and the gate matmuls of lstm, a factored R's U (V h) included); elementwise
work, pooling and activations count zero. Parameters are the elements of a node's constant float operands, except operands that
are initial states (lstm initial_h / initial_c) rather than weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ocrc.compiler.ir.graph import Graph, Node
from ocrc.compiler.ir.ops.rnn import LSTM_DIRECTIONS


def _prod(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _conv(n: Node) -> int:
    _, cg, kh, kw = n.inputs[1].type.shape  # type: ignore[union-attr]
    return _prod(n.output.type.shape) * cg * kh * kw


def _conv_transpose(n: Node) -> int:
    _, mg, kh, kw = n.inputs[1].type.shape  # type: ignore[union-attr]
    return _prod(n.inputs[0].type.shape) * mg * kh * kw  # type: ignore[union-attr]


def _dense(n: Node) -> int:
    return _prod(n.output.type.shape) * n.inputs[1].type.shape[1]  # type: ignore[union-attr]


def _matmul(n: Node) -> int:
    a = n.inputs[0].type.shape  # type: ignore[union-attr]
    return _prod(n.output.type.shape) * (a[-1] if a else 1)


def _lstm(n: Node) -> int:
    """Gate matmuls per step: 4H (I + H), or 4H I + k (H + 4H) with a factored R (rv = V)."""
    t, b, i = n.inputs[0].type.shape  # type: ignore[union-attr]
    d, hs = LSTM_DIRECTIONS[n.attr("direction")], n.attr("hidden_size")
    rv = n.inputs[7] if len(n.inputs) > 7 else None
    rec = 4 * hs * hs if rv is None else rv.type.shape[1] * 5 * hs
    return d * t * b * (4 * hs * i + rec)


MACS: Mapping[str, Callable[[Node], int]] = {
    "conv": _conv, "conv_transpose": _conv_transpose, "dense": _dense, "matmul": _matmul,
    "lstm": _lstm,
}
STATE_OPERANDS: Mapping[str, frozenset[str]] = {"lstm": frozenset({"initial_h", "initial_c"})}


def node_macs(n: Node) -> int:
    fn = MACS.get(n.op.name)
    return fn(n) if fn is not None else 0


def node_params(n: Node, consts: Mapping[object, np.ndarray]) -> int:
    skip = STATE_OPERANDS.get(n.op.name, frozenset())
    names = [s.rstrip("?*") for s in n.op.inputs]
    total = 0
    for i, v in enumerate(n.inputs):
        name = names[min(i, len(names) - 1)]
        if v is not None and v in consts and name not in skip and consts[v].dtype.kind == "f":
            total += int(consts[v].size)
    return total


@dataclass(frozen=True)
class Layer:
    """One row of `ocrc inspect`."""

    name: str
    op: str
    shapes: tuple[tuple[int, ...], ...]
    params: int
    macs: int


def layers(g: Graph) -> list[Layer]:
    """Every non-const node with its output shapes, parameters and MACs, in program order."""
    consts = {v: n.attrs["value"] for n in g.nodes if n.op.name == "const" for v in n.outputs}
    return [Layer(n.name, n.op.name, tuple(v.type.shape for v in n.outputs),
                  node_params(n, consts), node_macs(n))
            for n in g.nodes if n.op.name != "const"]
