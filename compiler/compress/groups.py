"""Coupled channel groups for structured pruning, computed by labelling channels.

Every conv/dense output channel (a "filter") gets an integer id; the ids are pushed through the
graph as label arrays of each value's shape (data-movement ops run their own reference
semantics on the labels, so transposes, reshapes and concats map channels exactly, including
the CNN-to-RNN reshape). Residual adds (also fused as a conv's `res`), depthwise convs and
elementwise ops tie ids; networkx's connected components are then the coupled groups that must
be removed together. Ids that reach an op we cannot slice, or a graph output, are pinned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np
from ocrc.compiler.ir.graph import Graph, Node, Value

MOVES = ("reshape", "transpose", "concat", "identity")  # ref runs on int64 label arrays
PER_CHANNEL = ("batch_norm", "affine")
POOLS = ("max_pool", "avg_pool", "global_avg_pool", "global_max_pool")


@dataclass
class Channels:
    """The result of the analysis (see the module doc)."""

    labels: dict[Value, np.ndarray] = field(default_factory=dict)  # absent: no channels
    sources: dict[int, tuple[Node, int]] = field(default_factory=dict)  # id -> (node, row)
    ties: nx.Graph = field(default_factory=nx.Graph)
    pinned: set[int] = field(default_factory=set)
    axis: dict[Value, int] = field(default_factory=dict)  # the axis the labels vary along

    def groups(self) -> list[tuple[int, ...]]:
        """Removable groups: components without a pinned id, each sorted, in id order."""
        out = []
        for comp in nx.connected_components(self.ties):
            if not comp & self.pinned:
                out.append(tuple(sorted(comp)))
        return sorted(out)

    def channel_ids(self, v: Value) -> np.ndarray | None:
        """The id of each index along v's channel axis (-1: not a filter's channel)."""
        lab = self.labels.get(v)
        if lab is None:
            return None
        return np.moveaxis(lab, self.axis[v], 0).reshape(lab.shape[self.axis[v]], -1)[:, 0]


def _uniform_axis(lab: np.ndarray) -> int | None:
    """The axis along which `lab` varies while constant along all others; None if it varies
    along several. A single-id array (one channel) counts as varying along axis 1 (or 0)."""
    mats = [np.moveaxis(lab, a, 0).reshape(lab.shape[a], -1) for a in range(lab.ndim)]
    flat = [a for a, m in enumerate(mats) if (m == m[:, :1]).all()]
    varying = [a for a in flat if lab.shape[a] > 1 and len(np.unique(mats[a][:, 0])) > 1]
    if len(varying) == 1:
        return varying[0]
    if not varying and flat:
        return min(1, lab.ndim - 1)
    return None


class _Analysis:
    def __init__(self, g: Graph, source_ops: tuple[str, ...]) -> None:
        self.g = g
        self.ch = Channels()
        self.source_ops = source_ops
        self.consts = {n.outputs[0] for n in g.nodes if n.op.name == "const"}
        self.next_id = 0

    def lab(self, v: Value | None) -> np.ndarray | None:
        return None if v is None else self.ch.labels.get(v)

    def pin(self, *labs: np.ndarray | None) -> None:
        for lab in labs:
            if lab is not None:
                self.ch.pinned.update(int(i) for i in np.unique(lab) if i >= 0)

    def fresh(self, n: Node, shape: tuple[int, ...], axis: int) -> np.ndarray:
        k = shape[axis]
        ids = np.arange(self.next_id, self.next_id + k)
        self.next_id += k
        for j, i in enumerate(ids):
            self.ch.sources[int(i)] = (n, j)
            self.ch.ties.add_node(int(i))
        view = [1] * len(shape)
        view[axis] = k
        return np.broadcast_to(ids.reshape(view), shape).copy()

    def tie(self, a: np.ndarray, b: np.ndarray) -> None:
        """Elementwise: equal positions hold the same channel; a labelled position meeting an
        unlabelled one is pinned (the other tensor has data there)."""
        a, b = np.broadcast_arrays(a, b)
        both = (a >= 0) & (b >= 0)
        pairs = np.unique(np.stack([a[both], b[both]], 1), axis=0)
        self.ch.ties.add_edges_from((int(x), int(y)) for x, y in pairs if x != y)
        self.pin(a[(a >= 0) & (b < 0)], b[(b >= 0) & (a < 0)])

    def per_channel_ok(self, lab: np.ndarray, axis: int) -> bool:
        m = np.moveaxis(lab, axis, 0).reshape(lab.shape[axis], -1)
        return bool((m == m[:, :1]).all())

    def run(self) -> Channels:
        for n in self.g.nodes:
            self.visit(n)
        for v in self.g.outputs:
            self.pin(self.lab(v))
        for v, lab in list(self.ch.labels.items()):
            ax = _uniform_axis(lab)
            if ax is None:
                self.pin(lab)
                del self.ch.labels[v]
            else:
                self.ch.axis[v] = ax
        return self.ch

    def visit(self, n: Node) -> None:
        name = n.op.name
        ins = [self.lab(v) for v in n.inputs]
        out = n.outputs[0] if n.outputs else None
        if name == "const":
            return
        if name in ("conv", "dense"):
            self.mac(n, ins)
        elif name in ("lstm", "matmul") and n.inputs[1] in self.consts:
            x = ins[0]
            if x is not None and not self.per_channel_ok(x, x.ndim - 1):
                self.pin(x)
            self.pin(*ins[1:])
        elif "activation" in n.op.traits and name != "prelu":
            if ins[0] is not None:
                self.ch.labels[out] = ins[0]
        elif "binary" in n.op.traits:
            self.binary(n, ins)
        elif name in PER_CHANNEL or name in POOLS:
            x = ins[0]
            if x is not None and self.per_channel_ok(x, 1):
                ids = x.reshape(x.shape[0], x.shape[1], -1)[:, :, :1]
                shp = out.type.shape  # type: ignore[union-attr]
                self.ch.labels[out] = np.broadcast_to(
                    ids.reshape(ids.shape[:2] + (1,) * (len(shp) - 2)), shp).copy()
            else:
                self.pin(x)
        elif name in MOVES and any(x is not None for x in ins):
            filled = [x if x is not None else np.full(v.type.shape, -1, np.int64)
                      for x, v in zip(ins, n.inputs)]
            self.ch.labels[out] = np.asarray(n.op.ref(filled, n.all_attrs)[0], np.int64)
        else:
            self.pin(*ins)

    def mac(self, n: Node, ins: list[np.ndarray | None]) -> None:
        out = n.outputs[0]
        x = ins[0]
        w = n.inputs[1]
        axis = 1 if n.op.name == "conv" else out.type.rank - 1
        depthwise = (n.op.name == "conv" and x is not None and w is not None and
                     n.attr("group") > 1 and n.attr("group") == w.type.shape[0] == x.shape[1])
        if n.op.name == "conv" and n.attr("group") > 1 and not depthwise:
            self.pin(x)
        if depthwise and x is not None and self.per_channel_ok(x, 1):
            lab = np.broadcast_to(x[:, :, :1, :1], out.type.shape).copy()
        else:
            if x is not None and not self.per_channel_ok(x, 1 if n.op.name == "conv"
                                                         else x.ndim - 1):
                self.pin(x)
            lab = self.fresh(n, out.type.shape, axis) if n.op.name in self.source_ops \
                and w in self.consts else None
            if lab is None:
                lab = np.full(out.type.shape, -1, np.int64)
        self.pin(*ins[1:3], *ins[4:])  # weights, bias (consts), slope: never labelled
        res = ins[3] if len(ins) > 3 else None
        if len(n.inputs) > 3 and n.inputs[3] is not None:
            self.tie(lab, res if res is not None else np.full(out.type.shape, -1, np.int64))
        if (lab >= 0).any():
            self.ch.labels[out] = lab

    def binary(self, n: Node, ins: list[np.ndarray | None]) -> None:
        a, b = ins
        out = n.outputs[0]
        va, vb = n.inputs
        if a is None and b is None:
            return
        if a is not None and b is not None and a.shape == b.shape:
            self.tie(a, b)
            self.ch.labels[out] = a
            return
        lab, other_v = (a, vb) if a is not None else (b, va)
        if other_v in self.consts and lab is not None and lab.shape == out.type.shape:
            self.ch.labels[out] = lab  # a broadcast constant: sliced with the channels
            return
        self.pin(a, b)


def analyse(g: Graph, source_ops: tuple[str, ...] = ("conv",)) -> Channels:
    """The channel labelling of g with filters of `source_ops` (conv, dense) as sources."""
    return _Analysis(g, source_ops).run()
