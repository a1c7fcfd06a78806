"""`fold-bn`: inference batch normalisation and per-channel constant scale/shift folded into the
weights and bias of the conv, conv_transpose or dense next to them; what cannot be folded
becomes one per-channel `affine` op."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ocrc.compiler.ir.graph import Graph, Node, Value
from ocrc.compiler.passes.base import Pass, PassContext, register
from ocrc.compiler.rewrite import Rewriter, apply_patterns, axis_vector, with_operands

_MAC_OPS = ("conv", "conv_transpose", "dense")


def bn_scale_shift(rw: Rewriter, bn: Node) -> tuple[np.ndarray, np.ndarray] | None:
    """(s, t) with bn(x) = x * s + t per channel, for a batch_norm or affine with constant
    parameters; computed in float64 (rounded once when the folded weights are stored)."""
    params = [rw.const_value(v) for v in bn.inputs[1:]]
    if any(p is None for p in params):
        return None
    if bn.op.name == "affine":
        s, t = (np.asarray(p, np.float64) for p in params)  # type: ignore[arg-type]
        return s, t
    if bn.op.name != "batch_norm":
        return None
    scale, bias, mean = (np.asarray(p, np.float64) for p in params[:3])  # type: ignore[arg-type]
    var = params[3]
    assert var is not None
    # The reference adds epsilon in float32 (nn.BATCH_NORM): do the same, then widen.
    var_eps = (var + np.asarray(bn.attr("epsilon"), var.dtype)).astype(np.float64)
    s = scale / np.sqrt(var_eps)
    return s, bias - mean * s


def _out_axis(node: Node) -> int:
    return -1 if node.op.name == "dense" else 1


def scale_out_channels(node: Node, w: np.ndarray, s: np.ndarray) -> np.ndarray:
    """The weights of `node` (conv, conv_transpose, dense) with output channel o scaled by s[o]."""
    if node.op.name == "conv":
        return w * s.reshape(-1, 1, 1, 1)
    if node.op.name == "dense":
        return w * s[:, None]
    g = int(node.attr("group"))  # conv_transpose: w is [Cin, Cout/g, kh, kw]
    cin, coutg = w.shape[:2]
    ws = w.reshape(g, cin // g, coutg, *w.shape[2:]) * s.reshape(g, 1, coutg, 1, 1)
    return ws.reshape(w.shape)


def _rebuild(rw: Rewriter, node: Node, w: np.ndarray, b: np.ndarray, dtype: np.dtype,
             x: Value | None = None) -> Value:
    """`node` with new weights and bias (and input `x` when given)."""
    ins = with_operands(node, w=rw.const(w, dtype), b=rw.const(b, dtype))
    if x is not None:
        ins[0] = x
    return rw.emit(node.op, ins, node.attrs, name=node.name)


def _foldable_producer(rw: Rewriter, v: Value | None) -> tuple[Node, np.ndarray,
                                                                   np.ndarray] | None:
    """(node, w, b) if `v` is the only-used output of a conv/conv_transpose/dense with constant
    weights, no activation and no residual; b as float64 (zeros when absent)."""
    node = rw.op_of(v, *_MAC_OPS)
    if node is None or v is None or not rw.single_use(v):
        return None
    if node.attr("act") != "none" or node.operand("res") is not None:
        return None
    w = rw.const_value(node.operand("w"))
    b = rw.const_value(node.operand("b"))
    if w is None or (node.operand("b") is not None and b is None):
        return None
    m = v.type.shape[_out_axis(node)]
    return node, w, np.zeros(m) if b is None else np.asarray(b, np.float64)


def fold_bn_into_producer(rw: Rewriter, bn: Node) -> Value | None:
    """conv/conv_transpose/dense -> batch_norm|affine  =>  the MAC op with scaled weights."""
    if bn.op.name not in ("batch_norm", "affine"):
        return None
    found = _foldable_producer(rw, bn.inputs[0])
    st = bn_scale_shift(rw, bn)
    if found is None or st is None:
        return None
    node, w, b = found
    if node.op.name == "dense" and bn.inputs[0].type.rank != 2:  # type: ignore[union-attr]
        return None  # the normalised axis (1) is the feature axis only for [B, F]
    s, t = st
    return _rebuild(rw, node, scale_out_channels(node, w.astype(np.float64), s), b * s + t,
                    w.dtype)


def fold_channel_mul_add(rw: Rewriter, node: Node) -> Value | None:
    """conv/conv_transpose/dense -> mul or add by a per-output-channel constant => folded."""
    if node.op.name not in ("mul", "add"):
        return None
    for yv, cv in ((node.inputs[0], node.inputs[1]), (node.inputs[1], node.inputs[0])):
        c = rw.const_value(cv)
        found = _foldable_producer(rw, yv)
        if c is None or found is None or yv is None or yv.type != node.outputs[0].type:
            continue
        mac, w, b = found
        vec = axis_vector(c, yv.type.shape, _out_axis(mac))
        if vec is None or vec.dtype.kind != "f":
            continue
        v64 = vec.astype(np.float64)
        if node.op.name == "add":
            return _rebuild(rw, mac, w, b + v64, w.dtype)
        return _rebuild(rw, mac, scale_out_channels(mac, w.astype(np.float64), v64), b * v64,
                        w.dtype)
    return None


def fold_bn_into_consumer(rw: Rewriter, conv: Node) -> Value | None:
    """batch_norm|affine -> conv  =>  conv with input channels scaled. Exact only where zero
    padding stays zero: the conv has no padding, or the shift t is zero on every channel."""
    if conv.op.name not in ("conv", "dense"):
        return None
    bn = rw.op_of(conv.inputs[0], "batch_norm", "affine")
    if bn is None or not rw.single_use(conv.inputs[0]):  # type: ignore[arg-type]
        return None
    st = bn_scale_shift(rw, bn)
    w = rw.const_value(conv.operand("w"))
    b = rw.const_value(conv.operand("b"))
    if st is None or w is None or (conv.operand("b") is not None and b is None):
        return None
    s, t = st
    w64 = w.astype(np.float64)
    m = w.shape[0]
    b64 = np.zeros(m) if b is None else b.astype(np.float64)
    if conv.op.name == "dense":
        if bn.inputs[0].type.rank != 2:  # type: ignore[union-attr]
            return None
        return _rebuild(rw, conv, w64 * s[None, :], b64 + w64 @ t, w.dtype, bn.inputs[0])
    if any(conv.attr("pads")) and np.any(t != 0):
        return None  # the padded border would see t instead of 0
    g, cg = int(conv.attr("group")), w.shape[1]
    s_in = s.reshape(g, 1, cg)  # input channel of (group, ci)
    t_in = t.reshape(g, 1, cg)
    wg = w64.reshape(g, m // g, cg, *w.shape[2:])
    new_w = (wg * s_in[..., None, None]).reshape(w.shape)
    new_b = b64 + (wg.sum(axis=(3, 4)) * t_in).sum(axis=2).reshape(m)
    return _rebuild(rw, conv, new_w, new_b, w.dtype, bn.inputs[0])


def _scalar(rw: Rewriter, v: Value | None) -> float | None:
    c = rw.const_value(v)
    return float(c.reshape(())) if c is not None and c.size == 1 and c.dtype.kind == "f" \
        else None


def _scalar_affine(rw: Rewriter, v: Value | None) -> tuple[Value, float, float] | None:
    """(x, a, b) when single-use `v` is add(mul(x, a), b), mul(x, a) or add(x, b) with scalar
    float constants a, b (either operand order; a = 1 or b = 0 when absent)."""
    node = rw.op_of(v, "mul", "add")
    if node is None or v is None or not rw.single_use(v):
        return None
    for x, cv in ((node.inputs[0], node.inputs[1]), (node.inputs[1], node.inputs[0])):
        c = _scalar(rw, cv)
        if c is None or x is None or x.type != v.type:
            continue
        if node.op.name == "mul":
            return x, c, 0.0
        inner = _scalar_affine(rw, x) if rw.op_of(x, "mul") is not None else None
        return (inner[0], inner[1], c) if inner is not None else (x, 1.0, c)
    return None


def fold_scalar_affine_into_consumer(rw: Rewriter, mac: Node) -> Value | None:
    """x * a + b (scalar constants) -> conv or dense  =>  the MAC op with weights * a and bias
    + b * (sum of each output's weights). A conv only when it has no padding or b is 0 (the
    zero border must stay zero), and only when x is an activation's output. PP-OCRv4 rec's
    learnable affine blocks (a * hardswish(conv) + b) before its 1x1 convs; the float pipeline
    runs fold-bn once more after fuse-act for them."""
    if mac.op.name not in ("conv", "dense"):
        return None
    found = _scalar_affine(rw, mac.inputs[0])
    w = rw.const_value(mac.operand("w"))
    b = rw.const_value(mac.operand("b"))
    if found is None or w is None or (mac.operand("b") is not None and b is None):
        return None
    x, a, t = found
    if mac.op.name == "conv" and any(mac.attr("pads")) and t != 0.0:
        return None
    # Only after an activation (an activation op, or a MAC op with a fused one): a scalar mul
    # or add inside an activation still being spelled out (hardswish's x * clip(x + 3) / 6
    # before fuse-act) must stay for fuse-act to find it.
    prod = rw.producer(x)
    if prod is None or not ("activation" in prod.op.traits or (
            prod.op.name in ("conv", "dense") and prod.attr("act") != "none")):
        return None
    w64 = w.astype(np.float64)
    b64 = np.zeros(w.shape[0]) if b is None else b.astype(np.float64)
    new_b = b64 + t * w64.reshape(w.shape[0], -1).sum(axis=1)
    return _rebuild(rw, mac, w64 * a, new_b, w.dtype, x)


def merge_channel_affine(rw: Rewriter, node: Node) -> Value | None:
    """affine(x, s, t) then mul/add by a per-channel constant -> one affine; and
    add(mul(x, c), d) with per-channel constants c, d (not both scalars) -> affine(x, c, d)."""
    out = node.outputs[0].type
    if node.op.name not in ("mul", "add") or out.rank < 2:
        return None
    for yv, cv in ((node.inputs[0], node.inputs[1]), (node.inputs[1], node.inputs[0])):
        c = rw.const_value(cv)
        vec = None if c is None else axis_vector(c, out.shape, 1)
        prod = rw.producer(yv)
        if vec is None or vec.dtype.kind != "f" or prod is None or yv is None:
            continue
        if yv.type != out or not rw.single_use(yv):
            continue
        if prod.op.name == "affine":
            s, t = rw.const_value(prod.inputs[1]), rw.const_value(prod.inputs[2])
            if s is None or t is None:
                continue
            if node.op.name == "mul":
                s, t = s * vec, t * vec
            else:
                t = t + vec
            return rw.emit("affine", (prod.inputs[0], rw.const(s, s.dtype), rw.const(t, t.dtype)))
        if node.op.name == "add" and prod.op.name == "mul":
            for x, sv in ((prod.inputs[0], prod.inputs[1]), (prod.inputs[1], prod.inputs[0])):
                sc = rw.const_value(sv)
                svec = None if sc is None else axis_vector(sc, out.shape, 1)
                if svec is None or x is None or x.type != out or svec.dtype != vec.dtype:
                    continue
                if sc.size == 1 and c.size == 1:  # type: ignore[union-attr]
                    continue  # scalars stay elementwise: x * a + b may be a hard-sigmoid
                return rw.emit("affine", (x, rw.const(svec, svec.dtype),
                                          rw.const(vec, vec.dtype)))
    return None


def bn_to_affine(rw: Rewriter, bn: Node) -> Value | None:
    """A batch_norm left standing -> affine(x, s, t)."""
    if bn.op.name != "batch_norm":
        return None
    st = bn_scale_shift(rw, bn)
    x = bn.inputs[0]
    if st is None or x is None:
        return None
    dt = x.type.dtype.np
    return rw.emit("affine", (x, rw.const(st[0], dt), rw.const(st[1], dt)))


@register
@dataclass(frozen=True)
class FoldBn(Pass):
    """Fold inference batch normalisation into neighbouring MAC ops.

    - batch_norm/affine after a conv, conv_transpose (per output channel, groups respected) or
      dense with a [B, F] output: weights scaled, bias shifted;
    - mul/add by a per-output-channel (or scalar) constant after such an op: folded the same
      way (this is how exporters spell a conv bias or a frozen BN);
    - with `forward`, a batch_norm/affine *before* a conv or [B, F] dense is folded into the
      consumer's input channels, and so is x * a + b with scalar constants before a conv or
      dense of any rank, only when the conv has no padding or the shift is zero (the zero
      border must stay zero);
    - with `to_affine`, any batch_norm left becomes one per-channel `affine` op, and per-channel
      mul/add constants after it (or a per-channel mul then add) merge into one affine.
    Bails out when the MAC op already has an activation or residual, its output has other
    users, or weights/parameters are not constants. Guarantees: no batch_norm remains when
    `to_affine`; results equal the original within float32 rounding of the folded weights.
    """

    name: ClassVar[str] = "fold-bn"
    forward: bool = True
    to_affine: bool = True

    def run(self, g: Graph, ctx: PassContext) -> Graph:
        pats: list[Any] = [fold_bn_into_producer, fold_channel_mul_add]
        if self.forward:
            pats += [fold_bn_into_consumer, fold_scalar_affine_into_consumer]
        g = apply_patterns(g, pats)
        if self.to_affine:
            g = apply_patterns(g, [bn_to_affine])
            g = apply_patterns(g, pats + [merge_channel_affine])  # affines fold or merge
        return g
