"""`fuse-act`: recognise the spellings exporters give activations (SiLU, hard-swish, hard-sigmoid,
relu6, relu as max) as single activation ops, then fold each activation into the epilogue
(`act`, `act_params`, `slope`) of the conv, conv_transpose or dense that produces its operand."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ocrc.compiler.ir.graph import Graph, Node, Value
from ocrc.compiler.ir.ops.elementwise import ACTIVATIONS
from ocrc.compiler.passes.base import Pass, PassContext, register
from ocrc.compiler.rewrite import Rewriter, apply_patterns, is_exactly, scalar_of, with_operands

SIXTH = 1.0 / 6.0
FUSABLE = tuple(ACTIVATIONS) + ("prelu",)
EPILOGUE_OPS = ("conv", "conv_transpose", "dense")  # the float ops with act(y + b + res)


def exact_float(a: float, want: float) -> bool:
    """`a` is `want` exactly, in float64 or float32 (ONNX stores float attributes as float32)."""
    return a == want or a == float(np.float32(want))


def _pairs(node: Node) -> tuple[tuple[Value | None, Value | None], ...]:
    a, b = node.inputs[0], node.inputs[1]
    return ((a, b), (b, a))


def _sole(rw: Rewriter, v: Value | None, *ops: str) -> Node | None:
    """The producer of `v` if it is one of `ops` and `v` has no other reader."""
    n = rw.op_of(v, *ops)
    return n if n is not None and v is not None and rw.single_use(v) else None


def _clip_is(n: Node, lo: float, hi: float) -> bool:
    return exact_float(n.attr("min"), lo) and exact_float(n.attr("max"), hi)


def recognise_silu(rw: Rewriter, node: Node) -> Value | None:
    """x * sigmoid(x) -> silu(x)."""
    if node.op.name != "mul":
        return None
    for x, s in _pairs(node):
        sig = _sole(rw, s, "sigmoid")
        if sig is not None and sig.inputs[0] is x and x is not None:
            return rw.emit("silu", (x,))
    return None


def recognise_relu(rw: Rewriter, node: Node) -> Value | None:
    """max(x, 0) -> relu(x)."""
    if node.op.name != "max":
        return None
    for x, c in _pairs(node):
        if x is not None and x.type == node.outputs[0].type and is_exactly(rw, c, 0.0):
            return rw.emit("relu", (x,))
    return None


def recognise_hard_sigmoid(rw: Rewriter, node: Node) -> Value | None:
    """clip(x * a + b, 0, 1) with scalar constants a, b -> hard_sigmoid(x){alpha=a, beta=b}."""
    if node.op.name != "clip" or not _clip_is(node, 0.0, 1.0):
        return None
    add = _sole(rw, node.inputs[0], "add")
    if add is None:
        return None
    for mv, bv in _pairs(add):
        beta = scalar_of(rw, bv)
        mul = _sole(rw, mv, "mul")
        if beta is None or mul is None:
            continue
        for x, av in _pairs(mul):
            alpha = scalar_of(rw, av)
            if alpha is not None and x is not None and x.type == node.outputs[0].type:
                return rw.emit("hard_sigmoid", (x,), {"alpha": alpha, "beta": beta})
    return None


def _relu6_of_x_plus_3(rw: Rewriter, g: Value | None, x: Value | None) -> bool:
    """g == clip(x + 3, 0, 6) exactly, every intermediate used once."""
    clip = _sole(rw, g, "clip")
    if clip is None or not _clip_is(clip, 0.0, 6.0):
        return False
    add = _sole(rw, clip.inputs[0], "add")
    return add is not None and any(a is x and is_exactly(rw, c, 3.0) for a, c in _pairs(add))


def _over_six(rw: Rewriter, node: Node | None) -> Value | None:
    """If `node` is v * (1/6) or v / 6 (exact constants), return v."""
    if node is None:
        return None
    if node.op.name == "div":
        return node.inputs[0] if is_exactly(rw, node.inputs[1], 6.0) else None
    if node.op.name == "mul":
        for v, c in _pairs(node):
            if is_exactly(rw, c, SIXTH):
                return v
    return None


def recognise_hard_swish(rw: Rewriter, node: Node) -> Value | None:
    """x * hard_sigmoid(x){1/6, 0.5}, (x * clip(x+3, 0, 6)) / 6 or * (1/6), and
    x * (clip(x+3, 0, 6) / 6 or * (1/6)) -> hard_swish(x)."""
    if node.op.name not in ("mul", "div"):
        return None
    out = node.outputs[0].type
    # (x * relu6(x + 3)) * (1/6)  or  / 6
    inner = _sole(rw, _over_six(rw, node), "mul")
    if inner is not None:
        for x, g in _pairs(inner):
            if x is not None and x.type == out and _relu6_of_x_plus_3(rw, g, x):
                return rw.emit("hard_swish", (x,))
    if node.op.name != "mul":
        return None
    for x, q in _pairs(node):
        if x is None or x.type != out:
            continue
        hs = _sole(rw, q, "hard_sigmoid")
        if (hs is not None and hs.inputs[0] is x and exact_float(hs.attr("alpha"), SIXTH)
                and exact_float(hs.attr("beta"), 0.5)):
            return rw.emit("hard_swish", (x,))
        gate = _sole(rw, q, "mul", "div")
        if gate is not None and _relu6_of_x_plus_3(rw, _over_six(rw, gate), x):
            return rw.emit("hard_swish", (x,))
    return None


def fuse_act_into_producer(rw: Rewriter, node: Node) -> Value | None:
    """conv/conv_transpose/dense (act none) -> activation  =>  the op with act=... (prelu: the
    slope becomes its `slope` operand)."""
    name = node.op.name
    if name not in FUSABLE or "activation" not in node.op.traits:
        return None
    x = node.inputs[0]
    mac = rw.op_of(x, *EPILOGUE_OPS)
    if mac is None or x is None or not rw.single_use(x) or mac.attr("act") != "none":
        return None
    if name == "prelu":
        return rw.emit(mac.op, with_operands(mac, slope=node.inputs[1]),
                       {**mac.attrs, "act": "prelu"}, name=mac.name)
    params = tuple(float(node.attr(p)) for p, _ in ACTIVATIONS[name].params)
    attrs: dict[str, Any] = {**mac.attrs, "act": name}
    if params:
        attrs["act_params"] = params
    return rw.emit(mac.op, mac.inputs, attrs, name=mac.name)


SPELLINGS = [recognise_silu, recognise_relu, recognise_hard_sigmoid, recognise_hard_swish]


@register
@dataclass(frozen=True)
class FuseAct(Pass):
    """Recognise activation spellings and fuse activations into MAC-op epilogues.

    Spellings (every constant checked exactly, in float32 or float64):
    x * sigmoid(x) -> silu; max(x, 0) -> relu; clip(x * a + b, 0, 1) -> hard_sigmoid(a, b);
    x * hard_sigmoid(x){1/6, 1/2}, x * clip(x + 3, 0, 6) / 6 (or * 1/6, in either
    association) -> hard_swish. Bails out on a near miss such as clip(x + 3, 0, 6.5) or
    alpha 0.2, and when an intermediate value has another reader.
    Fusion (with `into_epilogue`): relu, clip (relu6), leaky_relu, prelu, sigmoid, tanh,
    hard_sigmoid, hard_swish and silu after a conv, conv_transpose or dense whose epilogue has
    no activation yet; bails out when that op's output has another reader.
    Guarantees: every recognised spelling becomes one op; outputs equal the original within
    float32 rounding (the fused functions are the op table's own, so x * sigmoid(x) and silu
    agree bit for bit).
    """

    name: ClassVar[str] = "fuse-act"
    into_epilogue: bool = True

    def run(self, g: Graph, ctx: PassContext) -> Graph:
        pats: list[Any] = list(SPELLINGS)
        if self.into_epilogue:
            pats.append(fuse_act_into_producer)
        return apply_patterns(g, pats)
