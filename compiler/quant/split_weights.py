"""Two-term int8 weights for the layers int8 weights hurt most (docs/quantization.md §8).

`split_weights(g, count)` rewrites each of the first `count` conv/dense layers `y = conv(x, W, b)`
into `y = conv(x, W_hi, b) + conv(x, W_lo)` with `W_hi = s * rint(W / s)` (s = max|W_c| / 127
per output channel: exactly the int8 weights the quantiser would take) and `W_lo = W - W_hi`,
the rounding residual, which the quantiser gives its own per-channel scale (about s / 254). The
pair reads every weight to about 15 bits while the MAC array still multiplies int8 weights: the
layer costs twice its MACs plus an add. The graph stays float-equivalent to g (up to float32
rounding of W_hi + W_lo). The partial sums must not be narrowed to int8 (that would undo the
gain), so the returned names (`y.hi`, `y.lo` and y) are to be kept in int16.

Why: PP-OCRv2 rec's first two layers (a 3x3 conv on the image, K = 27, and a 3x3 depthwise
conv, K = 9) carry the largest share of its int8 weight error: with GPTQ weights everywhere
else, keeping just these two in float raises the weights-only model's agreement with fp32 from
95.0% to 97.0% (300 clean images), for 0.3% of its MACs. GPTQ (compiler/quant/gptq.py) run
after the split leaves W_hi on its grid and rounds W_lo with error feedback.
"""

from __future__ import annotations

import logging

import numpy as np

from ocrc.compiler.ir.graph import Builder, Graph, Node
from ocrc.compiler.ir.opdef import OPS

log = logging.getLogger(__name__)
SPLIT_OPS = ("conv", "dense")


def eligible(g: Graph) -> list[Node]:
    """The conv/dense nodes (graph order) with a constant weight, a named output, no fused
    activation and no residual operand: those `split_weights` can rewrite."""
    consts = {n.outputs[0] for n in g.nodes if n.op.name == "const"}
    return [n for n in g.nodes if n.op.name in SPLIT_OPS and len(n.inputs) > 1
            and n.inputs[1] in consts and n.outputs[0].name
            and n.attrs.get("act", "none") == "none"
            and all(v is None for v in n.inputs[3:])]


def split_parts(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(W_hi, W_lo): W_hi on the per-output-channel int8 grid of W (axis 0), W_lo = W - W_hi."""
    w = np.asarray(w, np.float64)
    flat = w.reshape(w.shape[0], -1)
    amax = np.abs(flat).max(axis=1)
    s = np.where(amax > 0, amax / 127.0, 1.0)[:, None]
    hi = (np.clip(np.rint(flat / s), -127, 127) * s).reshape(w.shape)
    return hi, w - hi


def split_weights(g: Graph, count: int) -> tuple[Graph, list[str]]:
    """g with its first `count` eligible layers split (module docstring), and the value names
    that must stay int16."""
    chosen = eligible(g)[:max(count, 0)]
    if not chosen:
        return g, []
    consts = {n.outputs[0]: n.attrs["value"] for n in g.nodes if n.op.name == "const"}
    b = Builder(Graph(list(g.inputs), [], list(g.outputs), g.name))
    keep: list[str] = []
    for n in g.nodes:
        if n not in chosen:
            b.graph.nodes.append(n)
            continue
        y, w = n.outputs[0], n.inputs[1]
        assert w is not None
        dtype = consts[w].dtype
        hi, lo = split_parts(consts[w])
        rest = list(n.inputs[2:3])
        vh = b.op(n.op, n.inputs[0], b.const(hi.astype(dtype), name=f"{y.name}.hi.w"), *rest,
                  name=n.name, out_name=f"{y.name}.hi", **n.attrs)
        vl = b.op(n.op, n.inputs[0], b.const(lo.astype(dtype), name=f"{y.name}.lo.w"),
                  name=n.name, out_name=f"{y.name}.lo", **n.attrs)
        b.graph.nodes.append(Node(OPS["add"], (vh, vl), {}, n.outputs, n.name))
        keep += [vh.name, vl.name, y.name]
    log.info("split-weights: %d layer(s) with two-term int8 weights (%s)", len(chosen),
             ", ".join(n.outputs[0].name for n in chosen))
    return b.graph, keep
