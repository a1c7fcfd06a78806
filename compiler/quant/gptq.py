"""Error-feedback int8 weight rounding (GPTQ, Frantar et al. 2023) as a float pre-pass.

With int16 activations the int8 weights' rounding error dominates what is left (each conv ~45
dB single, accumulating to ~28 dB at ddddocr's LSTM input). For a conv or dense layer with
input columns X (im2col rows over calibration data) and H = X^T X, GPTQ rounds the weight
columns one at a time on the quantiser's own per-channel grid (s_c = max|W_c| / 127) and moves
each column's rounding error onto the columns not yet rounded, weighted by H^-1, so that
||X W^T - X Q^T|| rather than ||W - Q|| is small. `gptq` returns the float graph with every such
weight replaced by Q * s: its values lie on the grid the quantiser computes (each channel keeps
one +-127 code), so `quantize_weights` recovers Q exactly. Weights stay int8, symmetric, per
channel (docs/quantization.md §2). A weight that is exactly zero (pruned) keeps code 0, its
error fed forward like any other, so a pruned layer stays as sparse.

Centred, with the mean error in the bias. A layer with a constant bias is rounded against the
covariance C = H - n mu mu^T of its input columns (mu their mean) instead of H, and its bias
absorbs the mean error: b_c += mu . (W_c - Q_c s_c). This is GPTQ with the bias as one more,
unrounded, weight on a constant-1 input, taken last (C is H's Schur complement after that
column). It matters where a kernel is a small difference of large weights over a smooth input:
PP-OCRv2's second conv (3x3 depthwise; three of its 16 kernels sum to < 0.03 of their largest
weight; inputs up to 44) keeps 5% of fp32's strings with nearest rounding, 42% with plain GPTQ
and 95% centred (that layer alone in int8, 100 clean images). ddddocr, whose kernels do not
cancel so, does better plain (`center=False`): 97.3% vs 96.0% all-int8, 99.3% vs 97.0% with
int16 auto < 36 dB (300 clean images).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np

from ocrc.compiler.ir.graph import Graph, Node, Value
from ocrc.compiler.ir.interp import run

log = logging.getLogger(__name__)
ROWS_PER_SAMPLE = 2048  # im2col rows drawn per sample and layer (H's statistics)
DAMP = 0.01  # H += DAMP * mean(diag H) * I (GPTQ's dampening)
BLOCK = 128  # lazy-batch width of the column loop


def targets(g: Graph) -> list[Node]:
    """conv and dense nodes with constant weights."""
    consts = {n.outputs[0] for n in g.nodes if n.op.name == "const"}
    return [n for n in g.nodes if n.op.name in ("conv", "dense") and n.operand("w") in consts
            and n.inputs[0] not in consts]


def target_keys(g: Graph) -> dict[Value, str]:
    """Each target's weight value -> its key: the weight's name, else the layer output's name
    + '.w' (both do not depend on the input shape); weights of neither are skipped."""
    out = {}
    for n in targets(g):
        w = n.operand("w")
        assert w is not None
        key = w.name or (f"{n.output.name}.w" if n.output.name else "")
        if key:
            out[w] = key
    return out


def bias_keys(g: Graph) -> dict[Value, str]:
    """Each target's constant bias value -> its key: the bias's name, else the layer output's
    name + '.b'; targets without a constant bias are absent."""
    consts = {n.outputs[0] for n in g.nodes if n.op.name == "const"}
    out = {}
    for n in targets(g):
        b = n.operand("b")
        key = (b.name or (f"{n.output.name}.b" if n.output.name else "")) if b else ""
        if b in consts and key:
            out[b] = key
    return out


def _cols(n: Node, x: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Per group, a random subset of the im2col rows [rows, K] of node n's input x."""
    if n.op.name == "dense":
        c = x.reshape(-1, x.shape[-1]).astype(np.float64)
        return [c[rng.permutation(len(c))[:ROWS_PER_SAMPLE]]]
    w = n.operand("w")
    assert w is not None
    _, cg, kh, kw = w.type.shape
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = n.attr("strides"), n.attr("pads"), n.attr("dilations")
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    nb, c, h, wd = xp.shape
    ho, wo = (h - dh * (kh - 1) - 1) // sh + 1, (wd - dw * (kw - 1) - 1) // sw + 1
    st = xp.strides
    win = np.lib.stride_tricks.as_strided(
        xp, (nb, c, ho, wo, kh, kw), (st[0], st[1], st[2] * sh, st[3] * sw, st[2] * dh,
                                      st[3] * dw), writeable=False)
    pick = rng.permutation(nb * ho * wo)[:ROWS_PER_SAMPLE]
    out = []
    for gi in range(n.attr("group")):
        cols = win[:, gi * cg:(gi + 1) * cg].transpose(0, 2, 3, 1, 4, 5).reshape(nb * ho * wo, -1)
        out.append(cols[pick])
    return out


Stats = list[tuple[np.ndarray, np.ndarray, int]]  # per group: (X^T X, column sums, rows)


def hessians(g: Graph, data: Iterable[Mapping[str, np.ndarray]],
             seed: int = 0) -> dict[Value, Stats]:
    """Per target weight value, per group, (H = sum X^T X, sum of X's rows, rows) over `data`."""
    rng = np.random.default_rng(seed)
    nodes = targets(g)
    wanted: dict[Value, list[Node]] = {}
    for n in nodes:
        wanted.setdefault(n.inputs[0], []).append(n)
    hs: dict[Value, Stats] = {}

    def add(v: Value, a: np.ndarray) -> None:
        for t in wanted.get(v, []):
            key = t.operand("w")
            assert key is not None
            parts = [(c.T @ c, c.sum(axis=0), len(c)) for c in _cols(t, np.asarray(a), rng)]
            hs[key] = parts if key not in hs else [
                (h + ph, m + pm, n + pn) for (h, m, n), (ph, pm, pn) in zip(hs[key], parts)]

    def hook(node: Node, outs: list[np.ndarray]) -> None:
        for v, a in zip(node.outputs, outs):
            add(v, a)

    for sample in data:
        for v in g.inputs:  # a target fed by a graph input
            if v.name in sample:
                add(v, sample[v.name])
        run(g, sample, hook)
    return hs


def gptq_round(w: np.ndarray, h: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The int8 codes Q [M, K] of w [M, K] on the per-row grid `scale`, GPTQ order (columns by
    decreasing H diagonal, lazy batches), with every row keeping a +-127 code at its largest
    |w| (so the grid max|Q * s| / 127 = s is unchanged) and every exact zero of w code 0."""
    w = np.array(w, np.float64)
    m, k = w.shape
    zero = w == 0  # pruned: stays pruned
    h = np.array(h, np.float64)
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    h += DAMP * np.mean(np.diag(h)) * np.eye(k)
    perm = np.argsort(-np.diag(h), kind="stable")
    wp, hp, zp = w[:, perm], h[np.ix_(perm, perm)], zero[:, perm]
    u = np.linalg.cholesky(np.linalg.inv(hp)).T  # upper: H^-1 = U^T U
    s = scale.reshape(-1, 1)
    q = np.zeros((m, k), np.float64)
    for i1 in range(0, k, BLOCK):
        i2 = min(i1 + BLOCK, k)
        w1, u1 = wp[:, i1:i2].copy(), u[i1:i2, i1:i2]
        err = np.zeros_like(w1)
        for i in range(i2 - i1):
            qi = np.clip(np.rint(w1[:, i:i + 1] / s), -127, 127)
            qi[zp[:, i1 + i]] = 0.0
            q[:, i1 + i] = qi[:, 0]
            e = (w1[:, i:i + 1] - qi * s) / u1[i, i]
            w1[:, i:] -= e * u1[i:i + 1, i:]
            err[:, i] = e[:, 0]
        wp[:, i2:] -= err @ u[i1:i2, i2:]
    out = np.empty_like(q)
    out[:, perm] = q
    top = np.argmax(np.abs(w), axis=1)
    rows = np.arange(m)
    keep = np.abs(w[rows, top]) > 0
    out[rows[keep], top[keep]] = np.sign(w[rows[keep], top[keep]]) * 127
    return out.astype(np.int8)


def gptq_weights(g: Graph, data: Iterable[Mapping[str, np.ndarray]],
                 seed: int = 0, center: bool = True) -> dict[str, np.ndarray]:
    """The GPTQ-rounded float weights of g's conv and dense layers, and the biases that absorb
    their mean error (module docstring), by key (`target_keys`, `bias_keys`: names, which do not
    depend on the input shape, so one set serves every shape). center=False: plain GPTQ against
    H everywhere, the biases untouched."""
    hs = hessians(g, data, seed)
    by_w = {n.operand("w"): n for n in targets(g)}
    keys, bkeys = target_keys(g), bias_keys(g)
    consts = {c.outputs[0]: c.attrs["value"] for c in g.nodes if c.op.name == "const"}
    out: dict[str, np.ndarray] = {}
    for c in g.nodes:
        v = c.outputs[0] if c.op.name == "const" else None
        if v is None or v not in keys or v not in hs:
            continue
        n = by_w[v]
        w = np.asarray(c.attrs["value"], np.float64)
        groups = n.attr("group") if n.op.name == "conv" else 1
        flat = w.reshape(w.shape[0], -1)
        amax = np.abs(flat).max(axis=1)
        scale = np.where(amax > 0, amax / 127.0, 1.0)
        mg = w.shape[0] // groups
        bv = n.operand("b")
        centred = center and bv in bkeys
        qs, shift = [], np.zeros(w.shape[0])
        for gi in range(groups):
            rows = slice(gi * mg, (gi + 1) * mg)
            h, total, count = hs[v][gi]
            mu = total / max(count, 1)
            cov = h - count * np.outer(mu, mu) if centred else h
            q = gptq_round(flat[rows], cov, scale[rows])
            shift[rows] = (flat[rows] - q.astype(np.float64) * scale[rows, None]) @ mu
            qs.append(q)
        q = np.concatenate(qs)
        out[keys[v]] = (q.astype(np.float64) * scale.reshape(-1, 1)).reshape(w.shape).astype(
            c.attrs["value"].dtype)
        if centred:
            b = consts[bv]
            out[bkeys[bv]] = (np.asarray(b, np.float64) + shift).astype(b.dtype)
    centred_n = sum(1 for k in bkeys.values() if k in out)
    log.info("gptq: %d of %d weights rounded with error feedback, %d of them centred",
             len(out) - centred_n, len(by_w), centred_n)
    return out


def with_weights(g: Graph, weights: Mapping[str, np.ndarray]) -> Graph:
    """g with the layer weights and biases keyed in `weights` (gptq_weights) replaced (same
    shapes)."""
    keys = {**target_keys(g), **bias_keys(g)}
    out = Graph(list(g.inputs), [], list(g.outputs), g.name)
    for c in g.nodes:
        v = c.outputs[0] if c.op.name == "const" else None
        w = weights.get(keys.get(v, "")) if v is not None else None
        if v is not None and w is not None and w.shape == v.type.shape:
            out.nodes.append(Node(c.op, (), {**c.attrs, "value": w}, c.outputs, c.name))
        else:
            out.nodes.append(c)
    return out


def gptq(g: Graph, data: Iterable[Mapping[str, np.ndarray]], seed: int = 0,
         center: bool = True) -> Graph:
    """g with its named conv and dense weights GPTQ-rounded (see gptq_weights)."""
    return with_weights(g, gptq_weights(g, data, seed, center))
