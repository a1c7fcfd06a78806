"""Ops without an integer form rewritten into ops that have one (patterns for `prepare` and the
`decompose` pass): `affine` (a batch norm that could not fold) becomes a depthwise 1x1 conv,
`lrn` becomes mul, a 1x1 conv with a band matrix, pow and mul. Float results change only by
float32 rounding (the band sum is a float32 conv where the lrn reference sums in float64).
"""

from __future__ import annotations

import numpy as np
from ocrc.compiler.ir.graph import Node, Value
from ocrc.compiler.rewrite import Rewriter

DECOMPOSABLE = ("affine", "lrn")


def affine_as_conv(rw: Rewriter, node: Node) -> Value | None:
    """affine(x, s, t) on NCHW with constant s, t => conv(x, s as [C,1,1,1], t, group=C)."""
    if node.op.name != "affine":
        return None
    x = node.inputs[0]
    s, t = (rw.const_value(v) for v in node.inputs[1:])
    if x is None or s is None or t is None or x.type.rank != 4:
        return None
    c = x.type.shape[1]
    w = np.broadcast_to(s.reshape(-1), (c,)).reshape(c, 1, 1, 1)
    b = np.broadcast_to(t.reshape(-1), (c,))
    return rw.emit("conv", (x, rw.const(w), rw.const(b)),
                   {"group": c}, name=node.name)


def band_matrix(c: int, size: int, scale: float) -> np.ndarray:
    """[C, C, 1, 1] conv weight summing channels c - floor((size-1)/2) .. c + ceil((size-1)/2)
    (ONNX LRN's window), times `scale`."""
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    i = np.arange(c)
    band = (i[None, :] >= i[:, None] - lo) & (i[None, :] <= i[:, None] + hi)
    return (band * np.float32(scale)).astype(np.float32).reshape(c, c, 1, 1)


def lrn_as_ops(rw: Rewriter, node: Node) -> Value | None:
    """lrn(x) => x * pow(bias + alpha/size * conv1x1_band(x * x), -beta) on NCHW."""
    if node.op.name != "lrn":
        return None
    x = node.inputs[0]
    if x is None or x.type.rank != 4:
        return None
    a = node.all_attrs
    c = x.type.shape[1]
    sq = rw.emit("mul", (x, x), name=node.name)
    w = band_matrix(c, a["size"], a["alpha"] / a["size"])
    den = rw.emit("conv", (sq, rw.const(w), rw.const(np.full(c, a["bias"], np.float32))),
                  name=node.name)
    inv = rw.emit("pow", (den, rw.const(np.float32(-a["beta"]))), name=node.name)
    # Calibration and the quantiser key ranges by value name: unnamed intermediates of two
    # steps (or two lrn nodes) would share one range (the x*x range for pow's output).
    out = node.outputs[0].name or node.name
    for v, suffix in ((sq, "sq"), (den, "den"), (inv, "pow")):
        v.name = f"{out}.lrn_{suffix}"
    return rw.emit("mul", (x, inv), name=node.name)


PATTERNS = {"affine": affine_as_conv, "lrn": lrn_as_ops}
