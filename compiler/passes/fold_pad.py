"""`fold-pad`: an explicit constant Pad before a conv or pool becomes that op's own padding:
zero pads into conv and avg_pool (counting the pad in the average), -inf pads into max_pool
(whose padding never wins the max)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from ocrc.compiler.ir.graph import Graph, Node, Value
from ocrc.compiler.passes.base import Pass, PassContext, register
from ocrc.compiler.rewrite import Rewriter, apply_patterns


def spatial_pads(pad: Node) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) of a 4-D pad that only pads H and W by >= 0, else None."""
    p = pad.attr("pads")
    if len(p) != 8 or pad.attr("mode") != "constant":
        return None
    if p[0] or p[1] or p[4] or p[5] or min(p) < 0:
        return None
    return p[2], p[3], p[6], p[7]


def fold_pad_into_window(rw: Rewriter, node: Node) -> Value | None:
    """pad(x) -> conv|avg_pool|max_pool  =>  the op on x with the pad added to `pads`."""
    name = node.op.name
    if name not in ("conv", "avg_pool", "max_pool"):
        return None
    pad = rw.op_of(node.inputs[0], "pad")
    if pad is None or not rw.single_use(node.inputs[0]):  # type: ignore[arg-type]
        return None
    extra = spatial_pads(pad)
    if extra is None:
        return None
    value = float(pad.attr("value"))
    attrs = dict(node.attrs)
    if name == "max_pool":
        if not (math.isinf(value) and value < 0):
            return None  # a finite pad value can win the max; pool padding never does
    elif value != 0.0:
        return None
    if name != "conv":
        if node.attr("ceil_mode"):
            return None  # ceil_mode's last-window rule counts explicit pads differently
        if name == "avg_pool" and any(node.attr("pads")) and not node.attr("count_include_pad"):
            return None  # the pool's own pads are excluded from the divisor, the Pad's are not
        if name == "avg_pool":
            attrs["count_include_pad"] = 1
    pads = tuple(int(a + b) for a, b in zip(node.attr("pads"), extra))
    if name != "conv":
        kh, kw = node.attr("kernel_shape")
        if max(pads[0], pads[2]) >= kh or max(pads[1], pads[3]) >= kw:
            return None  # ONNX pools need pads smaller than the kernel
    attrs["pads"] = pads
    x = pad.inputs[0]
    return rw.emit(node.op, (x,) + tuple(node.inputs[1:]), attrs, name=node.name)


@register
@dataclass(frozen=True)
class FoldPad(Pass):
    """Fold explicit constant pads into the padding of the following conv or pool.

    Folds a 4-D constant pad that pads only H/W by non-negative amounts and is read only by
    the conv/pool: value 0 into conv; value 0 into avg_pool (which then counts padding in
    the divisor, as the explicit zeros were counted); value -inf into max_pool. Bails out for
    other modes or values (a zero pad before max_pool is not -inf), negative (cropping) pads,
    ceil_mode pools, an avg_pool with its own uncounted padding, and pool pads that would
    reach the kernel size. Guarantees: bit-identical results.
    """

    name: ClassVar[str] = "fold-pad"

    def run(self, g: Graph, ctx: PassContext) -> Graph:
        return apply_patterns(g, [fold_pad_into_window])
