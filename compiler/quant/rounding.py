"""DC-preserving int8 weight rounding of k x k convs, a data-free float pre-pass.

Rounding each tap of a conv kernel to nearest on its channel's grid `s_c = max|W_c| / 127`
shifts the kernel's response to a constant input (its DC gain, the sum of the taps of each
input-channel slice) by up to `k*k*s_c/2`. Where the taps nearly cancel and the input is flat
(a text image's background), that shift is the whole output signal, and a following
normalisation amplifies it: PP-OCRv2 rec's first depthwise conv alone, rounded to nearest,
changes 97% of the recognised strings (float activations; docs/quantization.md §6).

`dc_weights` rounds each slice W[c, i, :, :] so that its codes sum to `rint(sum(W[c, i]) / s_c)`:
round to nearest, then move the |d| taps whose residuals lean furthest in the direction of the
missing sum d by one code each (the smallest extra per-tap error that closes the sum; |d| is at
most k*k/2). The tap holding the channel's largest |w| keeps its +-127 code and no code leaves
[-127, 127], so the grid is the quantiser's own and `quantize_weights` gives back the codes
exactly. 1x1 convs and dense layers have one tap per slice: nothing changes there.
"""

from __future__ import annotations

import logging

import numpy as np

from ocrc.compiler.ir.graph import Graph
from ocrc.compiler.quant.gptq import target_keys, targets, with_weights

log = logging.getLogger(__name__)


def dc_round(w: np.ndarray) -> np.ndarray:
    """The int8 codes [M, C, kh, kw] of conv weights w on the per-output-channel grid, each
    (output, input) slice's code sum equal to rint(its sum / s) where [-127, 127] allows."""
    w = np.asarray(w, np.float64)
    m = w.shape[0]
    flat = w.reshape(m, -1)
    amax = np.abs(flat).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0)
    r = w / scale.reshape(-1, 1, 1, 1)
    q = np.clip(np.rint(r), -127, 127)
    top = np.zeros(flat.shape, bool)
    top[np.arange(m), np.argmax(np.abs(flat), axis=1)] = True
    top = top.reshape(w.shape)
    slices = q.reshape(w.shape[0] * w.shape[1], -1)
    res = (r - q).reshape(slices.shape)
    fixed = top.reshape(slices.shape)
    want = np.rint(r.reshape(slices.shape).sum(axis=1))
    for j in np.nonzero(want != slices.sum(axis=1))[0]:
        d = int(want[j] - slices[j].sum())
        step = 1 if d > 0 else -1
        movable = ~fixed[j] & (np.abs(slices[j] + step) <= 127)
        lean = np.where(movable, res[j] * step, -np.inf)
        order = np.argsort(-lean, kind="stable")[:abs(d)]
        order = order[np.isfinite(lean[order])]
        slices[j, order] += step
    return slices.reshape(w.shape).astype(np.int8)


def dc_weights(g: Graph) -> dict[str, np.ndarray]:
    """The DC-preserving rounded float weights (codes x grid) of g's k x k convs, by key (the
    weight's name, which does not depend on the input shape)."""
    keys = target_keys(g)
    out: dict[str, np.ndarray] = {}
    for n in targets(g):
        v = n.operand("w")
        if n.op.name != "conv" or v is None or v not in keys or np.prod(v.type.shape[2:]) == 1:
            continue
        w = np.asarray(g.const_value(v), np.float64)
        amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
        scale = np.where(amax > 0, amax / 127.0, 1.0).reshape(-1, 1, 1, 1)
        out[keys[v]] = (dc_round(w).astype(np.float64) * scale).astype(np.float32)
    log.info("dc rounding: %d conv weights", len(out))
    return out


def dc_rounding(g: Graph) -> Graph:
    """g with its named k x k conv weights DC-preserving rounded (see dc_weights)."""
    return with_weights(g, dc_weights(g))
