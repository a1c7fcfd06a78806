"""Physically remove channels: rebuild a graph without the channel ids of a removal set.

Uses the labelling of `groups.analyse`: each labelled value keeps the indices of its channel
axis whose id survives; producers lose filter rows (and bias entries), consumers lose the
matching input columns (conv/dense/lstm/matmul weights), per-channel parameters and broadcast
constants are sliced, depthwise convs shrink their group, reshapes get their new shape.

With `means` (per value, the mean of each index along its channel axis) a consumer that loses
input channels is compensated ("mean replacement"): the removed channels' constant
contribution W[:, removed] . mean[removed] (a conv sums it over the kernel taps) is added to
its bias (conv, dense; the LSTM's input bias Wb), or after it (matmul), a missing bias
created. That equals replacing the removed channels by their mean, exactly for dense, matmul
and LSTM inputs and for convs away from zero-padded borders (there the taps that read padding
are added too). Depthwise convs and residual adds inside a coupled group are not consumers:
the channel is removed on both sides. With `mix` (per value a [C, C] matrix A) a removed
channel r is replaced by sum_k A[r, k] x_k + means[r] over the kept channels k instead (a
least-squares fit, `prune-structured{compensate=lsq}`): the consumer's kept weights also get
W[:, r] A[r, k], per tap for a conv.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

import numpy as np
from ocrc.compiler.compress.groups import Channels
from ocrc.compiler.ir.graph import Builder, Graph, Node, Value

Slicer = Callable[[np.ndarray], np.ndarray]


class _Rebuild:
    def __init__(self, g: Graph, ch: Channels, removed: Collection[int],
                 means: Mapping[Value, np.ndarray] | None = None,
                 mix: Mapping[Value, np.ndarray] | None = None) -> None:
        self.g, self.ch, self.means, self.mix = g, ch, means or {}, mix or {}
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

    def lost_term(self, n: Node) -> np.ndarray | None:
        """The removed input channels' mean contribution to n's pre-activation (per output:
        conv/dense [O], lstm [D, 4H], matmul b's [..., N]); None without means or losses."""
        x = n.inputs[0]
        if x not in self.means or (n.op.name == "conv" and n.attr("group") != 1):
            return None
        keep = self.keep(x)
        if keep is None:
            return None
        m = np.asarray(self.means[x], np.float64)
        lost = np.setdiff1d(np.arange(len(m)), keep)
        w = np.asarray(self.g.const_value(n.inputs[1]), np.float64)
        if n.op.name == "conv":
            return w[:, lost].sum((2, 3)) @ m[lost]
        if n.op.name == "matmul":
            return np.einsum("k,...kn->...n", m[lost], np.take(w, lost, axis=-2))
        return np.take(w, lost, axis=-1) @ m[lost]  # dense [N, K], lstm W [D, 4H, F]

    def refit(self, n: Node, w: np.ndarray) -> np.ndarray:
        """n's weights with the removed input channels' share of `mix` moved onto the kept
        ones: W[:, kept] += W[:, removed] A[removed, kept] (per tap for a conv)."""
        x = n.inputs[0]
        keep = self.keep(x)
        if x not in self.mix or keep is None or (n.op.name == "conv" and n.attr("group") != 1):
            return w
        a = np.asarray(self.mix[x], np.float64)
        lost = np.setdiff1d(np.arange(len(a)), keep)
        part = a[np.ix_(lost, keep)]
        w64 = np.asarray(w, np.float64).copy()
        if n.op.name == "conv":
            w64[:, keep] += np.einsum("orhw,rk->okhw", w64[:, lost], part)
        elif n.op.name == "matmul":
            w64[..., keep, :] += np.einsum("rk,...rn->...kn", part, w64[..., lost, :])
        else:  # dense [N, K], lstm W [D, 4H, F]
            w64[..., keep] += np.take(w64, lost, axis=-1) @ part
        return w64.astype(w.dtype)

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
            term = self.lost_term(n)
            lstm_term = term is not None and name == "lstm"  # into Wb, the first half of b
            if lstm_term:
                ins = (ins + [None] * 4)[:max(4, len(ins))]
            take = _take(ki, ax)
            new = [self.use(ins[0]), self.use(ins[1], None if take is None else
                                              lambda w: take(self.refit(n, w)))] + [
                self.biased(n, v, np.concatenate([term, 0 * term], -1), None)  # type: ignore
                if lstm_term and k == 3 else self.use(v) for k, v in enumerate(ins[2:], 2)]
            if term is not None and not lstm_term:  # matmul: an add after it
                y = self.b.emit(n.op, new, attrs, n.name)[0]
                c = self.b.const(term[..., None, :].astype(y.type.dtype.np),
                                 name=f"{n.name}.mean_term")
                outs = self.b.emit("add", [y, c], {}, f"{n.name}.mean",
                                   [v.name for v in n.outputs])
                self.vmap.update(zip(n.outputs, outs))
                return
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
                w = self.refit(n, w)
                if ko is not None:
                    w = w[ko]
                if ki is not None and (not conv or n.attr("group") == 1):
                    w = np.take(w, ki, axis=1)
                return w
        new = [self.use(ins[0]), self.use(ins[1], w_slice)]
        rest = ins[2:] + [None] * (5 - len(ins))
        term = None if depthwise else self.lost_term(n)
        new.append(self.biased(n, rest[0], term, ko))
        new.append(self.use(rest[1]))  # residual: tied with the output, already sliced
        out = n.outputs[0]
        new.append(self.use(rest[2], _bcast(ko, self.ch.axis.get(out, 1), out.type.rank,
                                            out.type.shape[self.ch.axis.get(out, 1)])))
        while new and new[-1] is None:
            new.pop()
        return new

    def biased(self, n: Node, bias: Value | None, term: np.ndarray | None,
               ko: np.ndarray | None) -> Value | None:
        """n's bias plus `term` (created when n has none), its outputs sliced to `ko`."""
        if term is None:
            return self.use(bias, _take(ko, 0))
        w = self.g.const_value(n.inputs[1])
        assert w is not None
        old = self.g.const_value(bias) if bias is not None else np.zeros(term.shape, w.dtype)
        new = (np.asarray(old, np.float64) + term).astype(w.dtype)
        if ko is not None:
            new = np.take(new, ko, axis=0)
        return self.b.const(np.ascontiguousarray(new),
                            name=bias.name if bias is not None else f"{n.name}.bias")


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


def remove_channels(g: Graph, ch: Channels, removed: Collection[int],
                    means: Mapping[Value, np.ndarray] | None = None,
                    mix: Mapping[Value, np.ndarray] | None = None) -> Graph:
    """g without the channels `removed` (ids of `ch`, whole groups); types are re-inferred.
    `means`, `mix`: compensate the consumers (see the module doc)."""
    return _Rebuild(g, ch, removed, means, mix).run()
