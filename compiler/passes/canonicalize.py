"""`canonicalize`: constant folding, no-op removal, layout-chain merging, dense formation,
common-subexpression and dead-code elimination. Runs first and last in every pipeline; the
fusion passes match the canonical forms it leaves (adds and muls by constants, dense ops)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ocrc.compiler.ir.graph import Graph, Node, Value
from ocrc.compiler.passes.base import Pass, PassContext, register
from ocrc.compiler.rewrite import (
    FOLD_LIMIT,
    Rewriter,
    apply_patterns,
    axis_vector,
    eliminate_common_subexpressions,
    fold_constants,
    with_operands,
)

MAX_ROUNDS = 8
_VIEW_OPS = ("reshape", "squeeze", "unsqueeze", "flatten")


def remove_identity(rw: Rewriter, node: Node) -> Value | None:
    """identity(x), dropout(x) (inference) and one-operand concat -> x."""
    name = node.op.name
    if name in ("identity", "dropout") or (name == "concat" and len(node.inputs) == 1):
        x = node.inputs[0]
        return x if x is not None and x.type == node.outputs[0].type else None
    return None


def remove_noop_layout(rw: Rewriter, node: Node) -> Value | None:
    """reshape/transpose/cast/pad/slice/expand/tile that leave x unchanged -> x."""
    x = node.inputs[0] if node.inputs else None
    if x is None or len(node.outputs) != 1 or x.type != node.outputs[0].type:
        return None
    name, a = node.op.name, node.all_attrs
    noop = (name in _VIEW_OPS or name in ("cast", "expand")
            or (name == "transpose" and list(a["perm"]) == sorted(a["perm"]))
            or (name == "pad" and not any(a["pads"]))
            or (name == "slice" and all(s == 1 for s in a["steps"]))
            or (name == "tile" and all(r == 1 for r in a["repeats"]))
            or (name == "split" and len(a["sizes"]) == 1))
    return x if noop else None


def views_as_reshape(rw: Rewriter, node: Node) -> Value | None:
    """squeeze/unsqueeze/flatten -> reshape to the static output shape."""
    if node.op.name in ("squeeze", "unsqueeze", "flatten") and node.inputs[0] is not None:
        return rw.emit("reshape", (node.inputs[0],), {"shape": node.outputs[0].type.shape})
    return None


def merge_reshapes(rw: Rewriter, node: Node) -> Value | None:
    """reshape(reshape(x)) -> reshape(x)."""
    if node.op.name != "reshape":
        return None
    inner = rw.op_of(node.inputs[0], *_VIEW_OPS)
    if inner is None or inner.inputs[0] is None:
        return None
    return rw.emit("reshape", (inner.inputs[0],), {"shape": node.outputs[0].type.shape})


def merge_transposes(rw: Rewriter, node: Node) -> Value | None:
    """transpose(transpose(x, p), q) -> transpose(x, p[q]) (or x when that is the identity)."""
    if node.op.name != "transpose":
        return None
    inner = rw.op_of(node.inputs[0], "transpose")
    if inner is None:
        return None
    p, q = inner.attr("perm"), node.attr("perm")
    perm = tuple(p[i] for i in q)
    x = inner.inputs[0]
    assert x is not None
    if perm == tuple(range(len(perm))):
        return x
    return rw.emit("transpose", (x,), {"perm": perm})


def transpose_as_reshape(rw: Rewriter, node: Node) -> Value | None:
    """A transpose that only moves size-1 axes keeps the element order: a reshape."""
    if node.op.name != "transpose":
        return None
    x = node.inputs[0]
    assert x is not None
    moved = [p for p in node.attr("perm") if x.type.shape[p] != 1]
    if moved != sorted(moved):
        return None
    return rw.emit("reshape", (x,), {"shape": node.outputs[0].type.shape})


def sub_div_by_constant(rw: Rewriter, node: Node) -> Value | None:
    """x - c -> x + (-c); x / c -> x * (1 / c) for float constants c (and x not constant)."""
    if node.op.name not in ("sub", "div"):
        return None
    x, cv = node.inputs
    c = rw.const_value(cv)
    if c is None or c.dtype.kind != "f" or rw.const_value(x) is not None:
        return None
    if node.op.name == "div" and not np.all(np.isfinite(1 / c.astype(np.float64))):
        return None
    new = -c if node.op.name == "sub" else (np.float64(1) / c.astype(np.float64)).astype(c.dtype)
    return rw.emit("add" if node.op.name == "sub" else "mul", (x, rw.const(new, c.dtype)))


def remove_neutral_binary(rw: Rewriter, node: Node) -> Value | None:
    """x + 0 and x * 1 (constants that do not broadcast x to a larger shape) -> x."""
    if node.op.name not in ("add", "mul"):
        return None
    neutral = 0 if node.op.name == "add" else 1
    for x, cv in ((node.inputs[0], node.inputs[1]), (node.inputs[1], node.inputs[0])):
        c = rw.const_value(cv)
        if (c is not None and x is not None and x.type == node.outputs[0].type
                and c.size and np.all(c == neutral)):
            return x
    return None


def matmul_to_dense(rw: Rewriter, node: Node) -> Value | None:
    """matmul(x, W) with a constant 2-D W -> dense(x, W^T) (dense is the canonical GEMM)."""
    if node.op.name != "matmul":
        return None
    x, wv = node.inputs
    w = rw.const_value(wv)
    if w is None or w.ndim != 2 or x is None or x.type.rank < 1 or rw.const_value(x) is not None:
        return None
    return rw.emit("dense", (x, rw.const(np.ascontiguousarray(w.T), w.dtype)))


def add_bias_to_dense(rw: Rewriter, node: Node) -> Value | None:
    """dense(x, w[, b]) + c with c constant along the last axis -> dense(x, w, b + c)."""
    if node.op.name != "add":
        return None
    out = node.outputs[0].type
    for yv, cv in ((node.inputs[0], node.inputs[1]), (node.inputs[1], node.inputs[0])):
        d = rw.op_of(yv, "dense")
        c = rw.const_value(cv)
        if d is None or c is None or yv is None or not rw.single_use(yv):
            continue
        if d.attr("act") != "none" or yv.type != out:
            continue
        vec = axis_vector(c, out.shape, -1)
        if vec is None:
            continue
        bias = rw.const_value(d.operand("b"))
        if d.operand("b") is not None and bias is None:
            continue
        new_b = vec if bias is None else (bias + vec).astype(bias.dtype)
        ins = list(d.inputs) + [None] * (5 - len(d.inputs))
        ins[2] = rw.const(new_b, vec.dtype)
        return rw.emit("dense", ins, d.attrs, name=d.name)
    return None


def fold_scale_shift_into_dense(rw: Rewriter, node: Node) -> Value | None:
    """dense(x + c) -> dense(x) with b += W @ c; dense(x * c) -> W * c (c constant along the
    feature axis or a scalar): input normalisation before a classifier costs nothing."""
    if node.op.name != "dense":
        return None
    xv = node.inputs[0]
    pre = rw.op_of(xv, "add", "mul")
    w = rw.const_value(node.operand("w"))
    b = rw.const_value(node.operand("b"))
    if pre is None or xv is None or w is None or not rw.single_use(xv):
        return None
    if node.operand("b") is not None and b is None:
        return None
    for x, cv in ((pre.inputs[0], pre.inputs[1]), (pre.inputs[1], pre.inputs[0])):
        c = rw.const_value(cv)
        vec = None if c is None or x is None or x.type != xv.type else axis_vector(
            c, xv.type.shape, -1)
        if vec is None or vec.dtype.kind != "f":
            continue
        w64, v64 = w.astype(np.float64), vec.astype(np.float64)
        b64 = np.zeros(w.shape[0]) if b is None else b.astype(np.float64)
        if pre.op.name == "add":
            w_new, b_new = w, b64 + w64 @ v64
        else:
            w_new, b_new = w64 * v64[None, :], b64
        ins = with_operands(node, w=rw.const(w_new, w.dtype), b=rw.const(b_new, w.dtype))
        ins[0] = x
        return rw.emit("dense", ins, node.attrs, name=node.name)
    return None


def move_reshape_above_dense(rw: Rewriter, node: Node) -> Value | None:
    """reshape(dense(view(x))) where the outer reshape keeps the feature axis: reshape x once,
    straight to the leading dims the outer reshape wants, and let the dense produce the
    result (a CRNN classifier's reshape / dense / reshape collapses to reshape / dense)."""
    if node.op.name != "reshape":
        return None
    d = rw.op_of(node.inputs[0], "dense")
    if d is None or not rw.single_use(d.outputs[0]):
        return None
    if d.operand("res") is not None or d.operand("slope") is not None:
        return None  # both are tied to the old output shape
    inner = rw.op_of(d.inputs[0], *_VIEW_OPS)
    out = node.outputs[0].type.shape
    if inner is None or inner.inputs[0] is None or not out:
        return None
    n, k = d.outputs[0].type.shape[-1], d.inputs[0].type.shape[-1]  # type: ignore[union-attr]
    if out[-1] != n:
        return None
    x = inner.inputs[0]
    want = out[:-1] + (k,)
    if x.type.shape != want:
        x = rw.emit("reshape", (x,), {"shape": want}, name=inner.name)
    return rw.emit("dense", (x,) + tuple(d.inputs[1:]), d.attrs, name=d.name)


@register
@dataclass(frozen=True)
class Canonicalize(Pass):
    """Bring the graph to canonical form.

    - constant folding: any op whose operands are all constants is evaluated with its op-table
      `ref` (outputs above `fold_limit` elements are left alone);
    - no-ops removed: identity, dropout, same-shape reshape/expand/cast, identity transpose,
      zero pad, full slice, unit tile; x + 0, x * 1;
    - squeeze/unsqueeze/flatten become reshapes; reshape chains merge; transpose chains
      compose; a transpose that only moves size-1 axes becomes a reshape;
    - x - c -> x + (-c), x / c -> x * (1/c) (float constants only);
    - matmul by a constant 2-D matrix -> dense; dense + per-feature constant -> dense bias;
      dense(x + c) and dense(x * c) with per-feature constants fold into its weights/bias;
      reshape(dense(reshape(x))) -> dense(reshape(x)) when the outer one keeps the features;
    - common-subexpression elimination (constants by content), dead-code elimination.
    Bails out (leaves a node alone) when a value it would fold or merge is used elsewhere.
    Guarantees: the result computes the same function (bit-exact except x/c -> x*(1/c) and
    constant-folded float arithmetic, which round once differently); graph output names stay.
    """

    name: ClassVar[str] = "canonicalize"
    fold_limit: int = FOLD_LIMIT

    def patterns(self) -> list[Any]:
        def fold(rw: Rewriter, node: Node) -> Any:
            return fold_constants(rw, node, self.fold_limit)

        fold.__name__ = "fold_constants"
        return [fold, remove_identity, remove_noop_layout, views_as_reshape, merge_reshapes,
                merge_transposes, transpose_as_reshape, sub_div_by_constant,
                remove_neutral_binary, matmul_to_dense, add_bias_to_dense,
                fold_scale_shift_into_dense, move_reshape_above_dense]

    def run(self, g: Graph, ctx: PassContext) -> Graph:
        pats = self.patterns()
        for _ in range(MAX_ROUNDS):
            g1 = apply_patterns(g, pats)
            g = eliminate_common_subexpressions(g1)
            if len(g.nodes) == len(g1.nodes):
                break
        return g
