"""Activation statistics on calibration data for the data-aware compression methods: the Gram
matrix X^T X of a weight site's inputs (in the reduction order of `sites.to_rows`) and feature
maps of chosen values, collected by running the reference interpreter."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from ocrc.compiler.compress.sites import Site
from ocrc.compiler.errors import PassError
from ocrc.compiler.ir import interp
from ocrc.compiler.ir.graph import Graph, Node, Value

Samples = Iterable[Mapping[str, np.ndarray]]


def matching(g: Graph, samples: Samples | None, what: str) -> list[Mapping[str, np.ndarray]]:
    """The samples whose input shapes fit `g` (others are skipped: a static-shape graph only
    runs its own width); PassError if none do."""
    if samples is None:
        raise PassError(f"{what} needs calibration data (PassContext.options['calibration'] or "
                        "--calib)")
    want = {v.name: v.type.shape for v in g.inputs}
    out = [s for s in samples if all(np.shape(s.get(k)) == shp for k, shp in want.items())]
    if not out:
        shapes = ", ".join(f"{k} {list(s)}" for k, s in want.items())
        raise PassError(f"{what}: no calibration sample has the graph's input shape ({shapes})")
    return out


def observe(g: Graph, samples: Sequence[Mapping[str, np.ndarray]], values: Sequence[Value],
            fn: Callable[[Value, np.ndarray], None]) -> None:
    """Call fn(value, array) for each wanted value on each sample."""
    wanted = set(values)
    for s in samples:
        for v in g.inputs:
            if v in wanted:
                fn(v, np.asarray(s[v.name]))

        def hook(n: Node, outs: list[np.ndarray]) -> None:
            for v, a in zip(n.outputs, outs):
                if v in wanted:
                    fn(v, a)

        interp.run(g, s, hook)


def patches(x: np.ndarray, node: Node) -> np.ndarray:
    """im2col rows [positions, kh*kw*cin] of a group-1 conv's input, NPU order (cin inner)."""
    kh, kw = node.inputs[1].type.shape[2:]  # type: ignore[union-attr]
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = (node.attr("strides"), node.attr("pads"),
                                            node.attr("dilations"))
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    win = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    win = win[:, :, ::sh, ::sw, ::dh, ::dw]  # [N, C, OH, OW, KH, KW]
    return win.transpose(0, 2, 3, 4, 5, 1).reshape(-1, kh * kw * x.shape[1])


def input_rows(site: Site, x: np.ndarray) -> np.ndarray:
    """The site's input activations as rows of its reduction axis."""
    if site.kind == "conv":
        return patches(x, site.node)
    return x.reshape(-1, x.shape[-1])


def input_grams(g: Graph, sites: Sequence[Site],
                samples: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """X^T X of every site's inputs, by layer, in the reduction order of `sites.to_rows`:
    [K, K], or [D, H, H] for an LSTM's R (per direction, from its hidden states Y; [D, k, k]
    of V h for a factored R, whose site is U). Grouped
    convs are left out."""
    usable = [s for s in sites if not (s.kind == "conv" and s.node.attr("group") != 1)]
    by_value: dict[Value, list[Site]] = {}
    for s in usable:
        v = s.node.outputs[0] if s.kind == "lstm.r" else s.node.inputs[0]
        assert v is not None
        by_value.setdefault(v, []).append(s)
    grams: dict[str, np.ndarray] = {}

    def add(v: Value, a: np.ndarray) -> None:
        for s in by_value[v]:
            if s.kind == "lstm.r":  # Y [T, D, B, H]: h of each direction
                h = np.moveaxis(a.astype(np.float64), 1, 0).reshape(a.shape[1], -1, a.shape[3])
                gram = np.einsum("dnk,dnl->dkl", h, h)
                rv = s.node.inputs[7] if len(s.node.inputs) > 7 else None
                if rv is not None:  # a factored R: U's inputs are t = V h
                    v = np.asarray(g.const_value(rv), np.float64)
                    gram = np.einsum("djk,dkl,dml->djm", v, gram, v)
            else:
                rows = input_rows(s, a.astype(np.float64))
                gram = rows.T @ rows
            grams[s.layer] = grams.get(s.layer, 0) + gram

    observe(g, samples, list(by_value), add)
    return grams


def site_grams(g: Graph, sites: Sequence[Site], options: Mapping[str, object],
               what: str) -> dict[str, np.ndarray]:
    """Input Gram matrices by layer: ctx.options['input_grams'] when it has them (statistics
    gathered once over inputs of several shapes), else measured on the matching samples of
    ctx.options['calibration']."""
    given = options.get("input_grams")
    if isinstance(given, Mapping) and all(s.layer in given for s in sites):
        return {s.layer: np.asarray(given[s.layer]) for s in sites}
    samples = matching(g, options.get("calibration"), what)  # type: ignore[arg-type]
    return input_grams(g, sites, samples)


def channel_sums(g: Graph, samples: Sequence[Mapping[str, np.ndarray]],
                 axes: Mapping[Value, int],
                 squares: bool = False) -> dict[Value, tuple[np.ndarray, int]]:
    """Per value, the float64 sum over the samples of every index along its axis (`axes`)
    (with `squares`: [sum, sum of squares]), and how many elements each index summed: means
    that merge across input shapes."""
    acc: dict[Value, tuple[np.ndarray, int]] = {}

    def add(v: Value, a: np.ndarray) -> None:
        m = np.moveaxis(a.astype(np.float64), axes[v], 0).reshape(a.shape[axes[v]], -1)
        s, k = acc.get(v, (0.0, 0))
        total = np.stack([m.sum(1), (m * m).sum(1)]) if squares else m.sum(1)
        acc[v] = (s + total, k + m.shape[1])

    observe(g, samples, list(axes), add)
    return acc


def mac_input_axes(g: Graph) -> dict[Value, int]:
    """The input-channel axis of every conv/dense/matmul/lstm data input: what a consumer
    reduces over, and so what `prune-structured{compensate=mean}` needs the means of."""
    out: dict[Value, int] = {}
    for n in g.nodes:
        if n.op.name in ("conv", "dense", "matmul", "lstm") and n.inputs[0] is not None:
            v = n.inputs[0]
            out[v] = 1 if n.op.name == "conv" else v.type.rank - 1
    return out


def channel_means(g: Graph, samples: Sequence[Mapping[str, np.ndarray]],
                  axes: Mapping[Value, int] | None = None) -> dict[Value, np.ndarray]:
    """Mean of every index along each value's channel axis over the samples (default: the
    inputs of every MAC op, `mac_input_axes`). Keyed by value name, they are what
    ctx.options['channel_means'] gives `prune-structured`."""
    sums = channel_sums(g, samples, mac_input_axes(g) if axes is None else axes)
    return {v: s / k for v, (s, k) in sums.items()}


MomentSums = dict[str, tuple[np.ndarray, np.ndarray, int]]


def _moment_sums(g: Graph, samples: Sequence[Mapping[str, np.ndarray]],
                 axes: Mapping[Value, int], acc: dict, key: Callable[[Value], object]) -> None:
    def add(v: Value, a: np.ndarray) -> None:
        m = np.moveaxis(a.astype(np.float64), axes[v], 0).reshape(a.shape[axes[v]], -1)
        s, ss, k = acc.get(key(v), (0.0, 0.0, 0))
        acc[key(v)] = (s + m.sum(1), ss + m @ m.T, k + m.shape[1])

    observe(g, samples, list(axes), add)


def moment_sums(g: Graph, samples: Sequence[Mapping[str, np.ndarray]],
                axes: Mapping[Value, int], acc: MomentSums | None = None) -> MomentSums:
    """By value name (unnamed values are left out), the float64 sum [C], sum of outer products
    [C, C] and count of each value's channels (along its axis in `axes`) over all positions of
    the samples, added to `acc`: sums that merge across graphs of several input shapes."""
    acc = {} if acc is None else acc
    _moment_sums(g, samples, {v: a for v, a in axes.items() if v.name}, acc, lambda v: v.name)
    return acc


def moments(acc: Mapping) -> dict:
    """Mean [C] and covariance [C, C] per key of `moment_sums` (by value name: what
    ctx.options['channel_moments'] gives `prune-structured`)."""
    out = {}
    for name, (s, ss, k) in acc.items():
        mean = s / k
        out[name] = (mean, ss / k - np.outer(mean, mean))
    return out


def channel_moments(g: Graph, samples: Sequence[Mapping[str, np.ndarray]],
                    axes: Mapping[Value, int]) -> dict[Value, tuple[np.ndarray, np.ndarray]]:
    """Per value, the mean [C] and covariance [C, C] of its channels (along its axis in
    `axes`) over all positions of the samples."""
    acc: dict = {}
    _moment_sums(g, samples, axes, acc, lambda v: v)
    return moments(acc)
