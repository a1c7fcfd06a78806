"""`fuse-residual`: a conv, conv_transpose or dense whose result is added to another tensor of
the same shape takes that tensor as its epilogue's `res` operand, y = act(op(x, w) + b + res);
an activation after the add then fuses too (it comes after the residual, as computed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ocrc.compiler.ir.graph import Graph, Node, Value
from ocrc.compiler.passes.base import Pass, PassContext, register
from ocrc.compiler.passes.fuse_act import EPILOGUE_OPS, SPELLINGS, fuse_act_into_producer
from ocrc.compiler.rewrite import Rewriter, apply_patterns, with_operands


def fuse_add_into_epilogue(rw: Rewriter, add: Node) -> Value | None:
    """add(mac(x), other) or add(other, mac(x)) -> mac(x, res=other)."""
    if add.op.name != "add":
        return None
    out = add.outputs[0].type
    a, b = add.inputs[0], add.inputs[1]
    for y, other in ((b, a), (a, b)):  # prefer the second operand: exporters put the skip first
        mac = rw.op_of(y, *EPILOGUE_OPS)
        if mac is None or y is None or other is None or y is other or not rw.single_use(y):
            continue
        if y.type != out or other.type != out:
            continue  # the epilogue adds a tensor of the output's shape, no broadcasting
        if mac.attr("act") != "none" or mac.operand("res") is not None:
            continue  # act(y) + r is not act(y + r); a second residual needs a real add
        return rw.emit(mac.op, with_operands(mac, res=other), mac.attrs, name=mac.name)
    return None


@register
@dataclass(frozen=True)
class FuseResidual(Pass):
    """Fold residual adds into the producing conv/conv_transpose/dense epilogue.

    Matches add(mac, other) where `mac` is such an op with no activation and no residual
    yet, read only by the add, and `other` has exactly the output's shape (a broadcasting add
    is a bias, left to fold-bn). With `with_act`, an activation after the add (any spelling
    fuse-act recognises) then fuses into the same epilogue. Bails out when the conv already has
    an activation: act(conv) + other must stay an add. Guarantees: the same numbers up to the
    order of the float32 additions (op + b + res).
    """

    name: ClassVar[str] = "fuse-residual"
    with_act: bool = True

    def run(self, g: Graph, ctx: PassContext) -> Graph:
        pats: list[Any] = [fuse_add_into_epilogue]
        if self.with_act:
            pats += SPELLINGS + [fuse_act_into_producer]
        return apply_patterns(g, pats)
