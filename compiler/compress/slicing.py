"""Physically remove channels: rebuild a graph without the channel ids of a removal set.

Uses the labelling of `groups.analyse`: each labelled value keeps the indices of its channel
axis whose id survives; producers lose filter rows (and bias entries), consumers lose the
matching input columns (conv/dense/lstm/matmul weights), per-channel parameters and broadcast
constants are sliced, depthwise convs shrink their group, reshapes get their new shape.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import numpy as np
from ocrc.compiler.compress.groups import Channels
from ocrc.compiler.ir.graph import Builder, Graph, Node, Value

Slicer = Callable[[np.ndarray], np.ndarray]


class _Rebuild:
    def __init__(self, g: Graph, ch: Channels, removed: Collection[int]) -> None:
        self.g, self.ch = g, ch
        self.removed = np.array(sorted(removed), np.int64)
        self.b = Builder(Graph(list(g.inputs), [], [], g.name))
        self.vmap: dict[Value, Value] = {v: v for v in g.inputs}
        self.const_nodes = {n.outputs[0]: n for n in g.nodes if n.op.name == "const"}
        self.emitted: set[Value] = set()

    def keep(self, v: Value | None) -> np.ndarray | None:
        """Surviving indices along v's channel axis, None when nothing of v is removed."""
        ids = None if v is None else self.ch.channel_ids(v)
        if ids is None:
            return None
        alive = ~np.isin(ids, self.removed)
        return None if alive.all() else np.flatnonzero(alive)

    def use(self, v: Value | None, slicer: Slicer | None = None) -> Value | None:
        if v is None:
            return None
        if v in self.const_nodes:
            arr = self.const_nodes[v].attrs["value"]
            if slicer is not None:
                new = slicer(arr)
                if new is not arr:
                    return self.b.const(np.ascontiguousarray(new), name=v.name)
            if v not in self.emitted:
                self.b.graph.nodes.append(self.const_nodes[v])
                self.emitted.add(v)
            return v
        return self.vmap[v]

    def run(self) -> Graph:
        for n in self.g.nodes:
            if n.op.name != "const":
                self.node(n)
        self.b.graph.outputs = [self.use(v) for v in self.g.outputs]  # type: ignore[misc]
        return self.b.graph

    def node(self, n: Node) -> None:
        name, attrs = n.op.name, dict(n.attrs)
        ins = list(n.inputs)
        out = n.outputs[0] if n.outputs else None
        ko = self.keep(out)
        new: list[Value | None]
        if name in ("conv", "dense"):
            new = self.mac(n, ins, ko, attrs)
        elif name == "lstm" or name == "matmul":
            ki = self.keep(ins[0])
            ax = 2 if name == "lstm" else -2
            new = [self.use(ins[0]), self.use(ins[1], _take(ki, ax))] + \
                [self.use(v) for v in ins[2:]]
        elif name in ("batch_norm", "affine"):
            new = [self.use(ins[0])] + [self.use(v, _take(ko, 0)) for v in ins[1:]]
        elif "binary" in n.op.traits and out is not None and out in self.ch.axis:
            ax, rank = self.ch.axis[out], out.type.rank
            new = [self.use(v, _bcast(ko, ax, rank, out.type.shape[ax])) for v in ins]
        else:
            new = [self.use(v) for v in ins]
        if name == "reshape" and ko is not None:
            shape = list(out.type.shape)  # type: ignore[union-attr]
            shape[self.ch.axis[out]] = len(ko)  # type: ignore[index]
            attrs["shape"] = tuple(shape)
        outs = self.b.emit(n.op, new, attrs, n.name, [v.name for v in n.outputs])
        self.vmap.update(zip(n.outputs, outs))

    def mac(self, n: Node, ins: list[Value | None], ko: np.ndarray | None,
            attrs: dict) -> list[Value | None]:
        conv = n.op.name == "conv"
        ki = self.keep(ins[0])
        depthwise = conv and n.attr("group") > 1 and ko is not None and ki is not None
        if depthwise:
            attrs["group"] = len(ko)  # type: ignore[arg-type]
            w_slice = _take(ko, 0)
        else:
            def w_slice(w: np.ndarray) -> np.ndarray:
                if ko is not None:
                    w = w[ko]
                if ki is not None and (not conv or n.attr("group") == 1):
                    w = np.take(w, ki, axis=1)
                return w
        new = [self.use(ins[0]), self.use(ins[1], w_slice)]
        rest = ins[2:] + [None] * (5 - len(ins))
        new.append(self.use(rest[0], _take(ko, 0)))  # bias
        new.append(self.use(rest[1]))  # residual: tied with the output, already sliced
        out = n.outputs[0]
        new.append(self.use(rest[2], _bcast(ko, self.ch.axis.get(out, 1), out.type.rank,
                                            out.type.shape[self.ch.axis.get(out, 1)])))
        while new and new[-1] is None:
            new.pop()
        return new


def _take(keep: np.ndarray | None, axis: int) -> Slicer | None:
    if keep is None:
        return None
    return lambda a: np.take(a, keep, axis=axis)


def _bcast(keep: np.ndarray | None, axis: int, rank: int, dim: int) -> Slicer | None:
    """Slice a constant broadcast against a tensor whose channel axis is `axis`."""
    if keep is None:
        return None

    def f(a: np.ndarray) -> np.ndarray:
        ax = axis - (rank - a.ndim)
        if ax >= 0 and a.shape[ax] == dim:
            return np.take(a, keep, axis=ax)
        return a
    return f


def remove_channels(g: Graph, ch: Channels, removed: Collection[int]) -> Graph:
    """g without the channels `removed` (ids of `ch`, whole groups); types are re-inferred."""
    return _Rebuild(g, ch, removed).run()
