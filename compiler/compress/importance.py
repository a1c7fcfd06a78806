"""Filter importance criteria for structured pruning (higher = more important, keep).

l1: mean |w| of the filter. gm: the filter's summed Euclidean distance to the layer's other
filters (FPGM: filters near the geometric median are the most replaceable). entropy: the mean
entropy of the filter's feature map over the calibration samples (a 32-bin histogram per
sample; a near-constant map carries little information). std: the standard deviation of the
filter's feature map over the calibration samples (or from precomputed channel moments),
what mean replacement (`prune-structured{compensate=mean}`) cannot restore. Scores are
normalised per layer to mean 1 so that layers compare.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from ocrc.compiler.compress.stats import channel_sums, observe
from ocrc.compiler.ir.graph import Graph, Node

CRITERIA = ("l1", "gm", "entropy", "std")
ENTROPY_BINS = 32


def _filters(n: Node, g: Graph) -> np.ndarray:
    w = g.const_value(n.inputs[1])
    assert w is not None
    return w.reshape(w.shape[0], -1).astype(np.float64)


def l1(n: Node, g: Graph) -> np.ndarray:
    return np.abs(_filters(n, g)).mean(axis=1)


def geometric_median_distance(n: Node, g: Graph) -> np.ndarray:
    f = _filters(n, g)
    sq = (f * f).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * f @ f.T, 0.0)
    return np.sqrt(d2).sum(1)


def feature_entropy(nodes: Sequence[Node], g: Graph,
                    samples: Sequence[Mapping[str, np.ndarray]]) -> dict[Node, np.ndarray]:
    acc: dict[Node, np.ndarray] = {n: np.zeros(n.outputs[0].type.shape[1]) for n in nodes}
    by_value = {n.outputs[0]: n for n in nodes}

    def add(v: object, a: np.ndarray) -> None:
        n = by_value[v]  # type: ignore[index]
        maps = np.moveaxis(a, 1, 0).reshape(a.shape[1], -1)
        for c, m in enumerate(maps):
            lo, hi = float(m.min()), float(m.max())
            if hi <= lo:
                continue
            p = np.histogram(m, ENTROPY_BINS, (lo, hi))[0] / m.size
            p = p[p > 0]
            acc[n][c] += float(-(p * np.log2(p)).sum())

    observe(g, samples, list(by_value), add)
    return {n: a / len(samples) for n, a in acc.items()}


def feature_std(nodes: Sequence[Node], g: Graph,
                samples: Sequence[Mapping[str, np.ndarray]]) -> dict[Node, np.ndarray]:
    """The standard deviation of each output channel over the samples (all positions): what
    mean replacement cannot restore."""
    by_value = {n.outputs[0]: n for n in nodes}
    sums = channel_sums(g, samples, {v: 1 for v in by_value}, squares=True)
    out = {}
    for v, (s, k) in sums.items():
        mean, sq = s[0] / k, s[1] / k
        out[by_value[v]] = np.sqrt(np.maximum(sq - mean * mean, 0.0))
    return out


def std_from_moments(nodes: Sequence[Node], given: object) -> dict[Node, np.ndarray] | None:
    """feature_std from moments by value name (mean, covariance: stats.moments) of every
    node's output, or None when `given` does not cover them all."""
    if not (isinstance(given, Mapping) and all(n.outputs[0].name in given for n in nodes)):
        return None
    out = {}
    for n in nodes:
        cov = np.asarray(given[n.outputs[0].name][1])
        if cov.shape != (n.outputs[0].type.shape[1],) * 2:
            return None
        out[n] = np.sqrt(np.maximum(np.diag(cov), 0.0))
    return out


def scores(criterion: str, nodes: Sequence[Node], g: Graph,
           samples: Sequence[Mapping[str, np.ndarray]] | None = None,
           stds: Mapping[Node, np.ndarray] | None = None) -> dict[Node, np.ndarray]:
    """Per source node, one normalised score per output channel (std: `stds` when given)."""
    if criterion == "std" and stds is not None:
        raw = dict(stds)
    elif criterion in ("entropy", "std"):
        assert samples is not None
        raw = (feature_entropy if criterion == "entropy" else feature_std)(nodes, g, samples)
    else:
        fn = l1 if criterion == "l1" else geometric_median_distance
        raw = {n: fn(n, g) for n in nodes}
    return {n: s / max(float(s.mean()), 1e-12) for n, s in raw.items()}
