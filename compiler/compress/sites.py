"""Weight sites: the constant weight operands of a graph's MAC ops that compression may touch.

A site names one weight matrix family: a conv/dense/matmul weight, or an LSTM's input (W) or
recurrent (R) weights. `layer` is how options and reports name it (the node's name, with
".W"/".R" for the LSTM). `matrices` views a weight as 2-D [rows, K] matrices with K in the
order the NPU reduces over (conv: kh, kw, then the input channel innermost).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from ocrc.compiler.errors import PassError
from ocrc.compiler.ir.graph import Graph, Node, Value

KINDS = ("conv", "dense", "matmul", "lstm")


@dataclass(frozen=True)
class Site:
    """One prunable/factorable weight: node index, node, operand position and the const."""

    index: int
    node: Node
    operand: int
    value: Value
    kind: str  # conv | dense | matmul | lstm.w | lstm.r

    @property
    def layer(self) -> str:
        base = self.node.name or self.node.outputs[0].name
        return base + {"lstm.w": ".W", "lstm.r": ".R"}.get(self.kind, "")

    @property
    def tensor(self) -> str:
        """The weight's value name (the ONNX initializer name when imported)."""
        return self.value.name


def node_layer(n: Node) -> str:
    return n.name or n.outputs[0].name


def weight_sites(g: Graph, ops: Iterable[str] = KINDS) -> list[Site]:
    """Sites of the MAC ops of `ops` whose weight is a float constant, in program order."""
    ops = set(ops)
    bad = ops - set(KINDS)
    if bad:
        raise PassError(f"unknown op kind {min(bad)!r}; expected some of {'+'.join(KINDS)}")
    consts = {n.outputs[0]: n for n in g.nodes if n.op.name == "const"}
    out = []
    for i, n in enumerate(g.nodes):
        name = n.op.name
        if name not in ops:
            continue
        slots = {"conv": [(1, "conv")], "dense": [(1, "dense")], "matmul": [(1, "matmul")],
                 "lstm": [(1, "lstm.w"), (2, "lstm.r")]}[name]
        for k, kind in slots:
            v = n.inputs[k] if k < len(n.inputs) else None
            if v is not None and v in consts and v.type.dtype.np.kind == "f" and v.type.rank >= 2:
                out.append(Site(i, n, k, v, kind))
    return out


def const_arrays(g: Graph) -> dict[Value, np.ndarray]:
    return {n.outputs[0]: n.attrs["value"] for n in g.nodes if n.op.name == "const"}


def to_rows(w: np.ndarray, kind: str, group: int = 1) -> np.ndarray:
    """[P, rows, K] stack of 2-D matrices (P = LSTM directions or conv groups, else 1), K in
    the NPU's reduction order."""
    if kind == "conv":
        o = w.shape[0]
        m = w.transpose(0, 2, 3, 1).reshape(group, o // group, -1)  # [cout][kh][kw][cin/g]
        return m
    if kind == "matmul":
        return w.reshape(-1, *w.shape[-2:]).transpose(0, 2, 1)  # y = a @ B: rows = columns
    if kind == "dense":
        return w[None]
    return w  # lstm [D, 4H, K]


def from_rows(m: np.ndarray, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of `to_rows`."""
    if kind == "conv":
        o, cg, kh, kw = shape
        return m.reshape(o, kh, kw, cg).transpose(0, 3, 1, 2).copy()
    if kind == "matmul":
        return m.transpose(0, 2, 1).reshape(shape).copy()
    if kind == "dense":
        return m[0].copy()
    return m.copy()


def group_of(site: Site) -> int:
    return int(site.node.attr("group")) if site.kind == "conv" else 1


def parse_layer_values(text: str, what: str, cast: type = float) -> dict[str, float]:
    """`name:value;name:value` (pass option syntax) -> {name: value}; PassError if malformed."""
    out: dict[str, float] = {}
    for item in filter(None, text.split(";")):
        name, sep, val = item.rpartition(":")
        try:
            if not sep or not name:
                raise ValueError(item)
            out[name] = cast(val)
        except ValueError:
            raise PassError(f"{what}: expected 'layer:value;...', got {item!r}") from None
    return out


def parse_ops(text: str, what: str) -> tuple[str, ...]:
    ops = tuple(o for o in text.split("+") if o)
    bad = [o for o in ops if o not in KINDS]
    if bad:
        raise PassError(f"{what}: unknown op kind {bad[0]!r}; expected some of "
                        f"{'+'.join(KINDS)} joined by '+'")
    return ops


def check_layers(names: Iterable[str], sites: list[Site], what: str) -> None:
    """PassError if a name is not the layer of some site."""
    known = [s.layer for s in sites]
    for name in names:
        if name not in known:
            raise PassError(f"{what}: no layer {name!r} among the selected weights; known "
                            f"layers: {', '.join(known[:12])}{' ...' if len(known) > 12 else ''}")
