"""The integer ops of the int8 graph in standard ONNX ops, exactly (`-t onnx --onnx-form integer`).

A QDQ file (compiler/export_onnx.py) leaves the arithmetic between its QuantizeLinear and
DequantizeLinear nodes to the runtime: onnxruntime fuses DQ-Conv-Q into QLinearConv, which
requantises with a float32 multiply and rounds half to even, so about one output in 10^5 lands
one code away from the golden model's fixed-point result (docs/quantization.md §6), and a
sensitive network amplifies that. The integer form instead writes every op of the int8 graph
(`qconv`, `qdense`, `lut`, `rescale`, `qadd`, `qmul`, `qconcat`, the pools, `qlstm`) as the
integer computation its reference semantics define (`ocrc.runtime.qmath`), in int32/int64
tensors:

- accumulators by ConvInteger / MatMulInteger (int8 x int8 -> int32, zero points as operands;
  an int16 input is split into two bytes, x = 256 (hi - 128) + lo, two byte convolutions
  combined in int64: the wide accumulator of docs §8);
- mul_round_shift(v, m, n) = floor((v m + 2**(n-1)) / 2**n) as int64 Mul, Add, Mod and an
  exact Div (Mod's result has the divisor's sign, so v - Mod(v, 2**n) is the floor multiple);
- clamps as Max/Min, tables by Gather, the int16 tables' window, interpolation and
  extrapolation (qmath.lut16_ref) by int64 arithmetic and Where;
- the LSTM as a Scan over time whose body is `lstm_steps` in the same int64 ops.

onnxruntime then computes the golden model's codes, bit for bit
(tests/quant/test_export_integer.py).
The file is standard opset-17 ONNX and opens in Netron; it is a reference, not a fast model
(onnxruntime's integer kernels are its slow path).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from onnx import TensorProto, helper

from ocrc.compiler.errors import UnsupportedOpError
from ocrc.compiler.ir.graph import Graph, Node
from ocrc.compiler.ir.ops.qlstm import GATE_FRAC, N_TABLES
from ocrc.compiler.ir.ops.quant import TYPE_RANGE, y_dtype
from ocrc.compiler.ir.ops.pool import _pool_geometry
from ocrc.compiler.ir.types import DType
from ocrc.runtime import qmath

if TYPE_CHECKING:
    from ocrc.compiler.export_onnx import _Writer

I64, I32, I16, I8, U8 = (TensorProto.INT64, TensorProto.INT32, TensorProto.INT16,
                         TensorProto.INT8, TensorProto.UINT8)
F32 = TensorProto.FLOAT
_STORE = {DType.I8: I8, DType.I16: I16, DType.I32: I32}


class IntOps:
    """int64 arithmetic on the ONNX names of writer `w` (each op a node or two)."""

    def __init__(self, w: _Writer, tag: str) -> None:
        self.w, self.tag = w, tag

    def const(self, arr: Any, what: str, dtype: type = np.int64) -> str:
        return self.w.init(np.asarray(arr, dtype), f"{self.tag}.{what}")

    def op(self, op: str, ins: list[str], **attrs: Any) -> str:
        return self.w.node(op, ins, self.tag, **attrs)[0]

    def cast(self, v: str, to: int) -> str:
        return self.op("Cast", [v], to=to)

    def i64(self, v: str) -> str:
        return self.cast(v, I64)

    def add(self, a: str, b: str) -> str:
        return self.op("Add", [a, b])

    def sub(self, a: str, b: str) -> str:
        return self.op("Sub", [a, b])

    def mul(self, a: str, b: str) -> str:
        return self.op("Mul", [a, b])

    def addc(self, v: str, c: Any, what: str = "c") -> str:
        """v + a constant (nothing when it is all zero)."""
        return v if not np.any(np.asarray(c)) else self.add(v, self.const(c, what))

    def floor_shift(self, v: str, n: Any) -> str:
        """floor(v / 2**n) (n >= 0, scalar or broadcastable)."""
        n = np.asarray(n, np.int64)
        if not np.any(n):
            return v
        p = self.const(np.left_shift(np.int64(1), n), "pow2")
        return self.op("Div", [self.sub(v, self.op("Mod", [v, p], fmod=0)), p])

    def mrs(self, v: str, mult: Any, n: Any) -> str:
        """qmath.mul_round_shift: floor((v mult + 2**(n-1)) / 2**n), rounding half up."""
        mult, n = np.asarray(mult, np.int64), np.asarray(n, np.int64)
        if not np.all(mult == 1):
            v = self.mul(v, self.const(mult, "mult"))
        return self.floor_shift(self.add(v, self.const(np.left_shift(np.int64(1), n - 1),
                                                       "half")), n)

    def clamp(self, v: str, lo: Any, hi: Any) -> str:
        return self.op("Min", [self.op("Max", [v, self.const(lo, "lo")]), self.const(hi, "hi")])


def _store(o: IntOps, v: str, dtype: DType) -> str:
    return o.cast(v, _STORE[dtype])


def _bytes(o: IntOps, x: str) -> tuple[str, str]:
    """An int16 tensor x as (hi, lo) uint8 with x = 256 (hi - 128) + lo."""
    v = o.add(o.cast(x, I32), o.const(32768, "off", np.int32))
    hi = o.op("Div", [v, o.const(256, "b256", np.int32)])
    lo = o.sub(v, o.mul(hi, o.const(256, "b256", np.int32)))
    return o.cast(hi, U8), o.cast(lo, U8)


def _accumulate(o: IntOps, n: Node, kernel: Callable[[str, str], str]) -> str:
    """The int64 sum of w * (x - x_zp) of MAC node n, kernel(x, zp) being the integer conv or
    matmul of an 8-bit x against n's weights with zero point zp (int32 out)."""
    x = n.inputs[0]
    assert x is not None
    if x.type.dtype == DType.I8:
        return o.i64(kernel(o.w.ref(x), o.const(n.all_attrs.get("x_zp", 0), "xzp", np.int8)))
    hi, lo = _bytes(o, o.w.ref(x))  # int16 (zero point 0): padding is x = 0 = (128, 0)
    acc_hi = o.i64(kernel(hi, o.const(128, "zhi", np.uint8)))
    acc_lo = o.i64(kernel(lo, o.const(0, "zlo", np.uint8)))
    return o.add(o.mul(acc_hi, o.const(256, "b256")), acc_lo)


def _requant(o: IntOps, n: Node, acc: str, per_channel_shape: tuple[int, ...]) -> str:
    g = o.w.g
    mult, shift = (g.const_value(n.inputs[k]) for k in (3, 4))
    bias = g.const_value(n.inputs[2])
    if mult is None or shift is None or bias is None:
        raise UnsupportedOpError(f"ONNX export: {n.label()} needs constant bias/mult/shift")
    acc = o.addc(acc, np.asarray(bias, np.int64).reshape(per_channel_shape), "bias")
    a = n.all_attrs
    y = o.mrs(acc, np.asarray(mult).reshape(per_channel_shape),
              np.asarray(shift).reshape(per_channel_shape))
    return _store(o, o.clamp(o.addc(y, a["y_zp"], "yzp"), a["lo"], a["hi"]), y_dtype(a))


def _qconv(w: _Writer, n: Node) -> list[str]:
    o, a = IntOps(w, n.outputs[0].name), n.all_attrs
    wt = w.ref(n.inputs[1])

    def conv(x: str, zp: str) -> str:
        return o.op("ConvInteger", [x, wt, zp], strides=list(a["strides"]),
                    pads=list(a["pads"]), dilations=list(a["dilations"]), group=a["group"])
    return [_requant(o, n, _accumulate(o, n, conv), (1, -1, 1, 1))]


def _qdense(w: _Writer, n: Node) -> list[str]:
    o = IntOps(w, n.outputs[0].name)
    wv = w.g.const_value(n.inputs[1])
    if wv is None:
        raise UnsupportedOpError(f"ONNX export: {n.label()} needs a constant weight")
    wt = o.const(np.ascontiguousarray(np.asarray(wv).T), "wT", np.int8)
    acc = _accumulate(o, n, lambda x, zp: o.op("MatMulInteger", [x, wt, zp]))
    return [_requant(o, n, acc, (-1,))]


def _channel_shape(rank: int, axis: int) -> list[int]:
    shape = [1] * rank
    shape[axis % rank] = -1
    return shape


def _lut(w: _Writer, n: Node) -> list[str]:
    o, a = IntOps(w, n.outputs[0].name), n.all_attrs
    x, tv = n.inputs[0], n.inputs[1]
    assert x is not None
    table = w.g.const_value(tv)
    if table is None:
        raise UnsupportedOpError(f"ONNX export: {n.label()} needs a constant table")
    table = np.asarray(table, np.int64)
    rank, y = x.type.rank, y_dtype(a)
    xi = o.i64(w.ref(x))
    size = table.shape[-1]
    offs = (np.arange(table.shape[0]) * size).reshape(_channel_shape(rank, a["axis"])) \
        if table.ndim == 2 else np.zeros((), np.int64)
    flat = o.const(table.reshape(-1), "table")
    if x.type.dtype == DType.I8:
        idx = o.addc(xi, offs + 128, "idx")
        return [_store(o, o.op("Gather", [flat, idx], axis=0), y)]
    # int16: qmath.lut16_ref with the header's constants (per channel: broadcast along axis)
    knots = qmath.LUT16_KNOTS
    head = table[..., knots:]
    cshape = _channel_shape(rank, a["axis"]) if table.ndim == 2 else [1]

    def per(v: np.ndarray) -> np.ndarray:
        return np.asarray(v, np.int64).reshape(cshape) if table.ndim == 2 else \
            np.asarray(v, np.int64).reshape(())

    k = np.clip(head[..., 1], 0, qmath.LUT16_FRAC)
    sl = qmath.lut16_word(head[..., 2], head[..., 3])
    sh = qmath.lut16_word(head[..., 4], head[..., 5])
    width = np.left_shift(np.int64(512), k)
    d = o.sub(xi, o.const(per(head[..., 0]), "x0"))
    i = o.clamp(o.floor_shift(d, per(k)), 0, knots - 2)
    f = o.mul(o.sub(d, o.mul(i, o.const(per(np.left_shift(np.int64(1), k)), "seg"))),
              o.const(per(np.left_shift(np.int64(1), qmath.LUT16_FRAC - k)), "fscale"))
    at = o.addc(i, offs, "choff")
    t0 = o.op("Gather", [flat, at], axis=0)
    t1 = o.op("Gather", [flat, o.addc(at, 1, "one")], axis=0)
    inside = o.add(t0, o.mrs(o.mul(o.sub(t1, t0), f), 1, qmath.LUT16_FRAC))
    first, last = o.const(per(table[..., 0]), "first"), o.const(per(table[..., knots - 1]), "last")
    below = o.add(first, o.mrs(o.mul(d, o.const(per(sl), "slo")), 1, qmath.LUT16_SLOPE_FRAC))
    above = o.add(last, o.mrs(o.mul(o.sub(d, o.const(per(width), "w")), o.const(per(sh), "shi")),
                              1, qmath.LUT16_SLOPE_FRAC))
    is_below = o.op("Less", [d, o.const(0, "zero")])
    is_above = o.op("Not", [o.op("Less", [d, o.const(per(width), "w")])])
    yv = o.op("Where", [is_below, below, o.op("Where", [is_above, above, inside])])
    lo, hi = TYPE_RANGE[y]
    return [_store(o, o.clamp(yv, lo, hi), y)]


def _rescale(o: IntOps, x: str, zx: int, mult: int, shift: int, zy: int, lo: int,
             hi: int) -> str:
    """qmath.rescale_ref on the int64 x."""
    return o.clamp(o.addc(o.mrs(o.addc(x, -zx, "xzp"), mult, shift), zy, "yzp"), lo, hi)


def _qrescale(w: _Writer, n: Node) -> list[str]:
    o, a = IntOps(w, n.outputs[0].name), n.all_attrs
    y = _rescale(o, o.i64(w.ref(n.inputs[0])), a["x_zp"], a["mult"], a["shift"], a["y_zp"],
                 a["lo"], a["hi"])
    return [_store(o, y, y_dtype(a))]


def _qadd(w: _Writer, n: Node) -> list[str]:
    o, a = IntOps(w, n.outputs[0].name), n.all_attrs
    wide = a.get("y_bits", 8) == 16 or any(v is not None and v.type.dtype == DType.I16
                                            for v in n.inputs)
    ta = o.mrs(o.addc(o.i64(w.ref(n.inputs[0])), -a["a_zp"], "azp"), a["a_mult"], a["a_shift"])
    tb = o.mrs(o.addc(o.i64(w.ref(n.inputs[1])), -a["b_zp"], "bzp"), a["b_mult"], a["b_shift"])
    y = o.addc(o.mrs(o.add(ta, tb), 1, qmath.add_frac_bits(wide)), a["y_zp"], "yzp")
    return [_store(o, o.clamp(y, a["lo"], a["hi"]), y_dtype(a))]


def _qmul(w: _Writer, n: Node) -> list[str]:
    o, a = IntOps(w, n.outputs[0].name), n.all_attrs
    p = o.mul(o.addc(o.i64(w.ref(n.inputs[0])), -a["a_zp"], "azp"),
              o.addc(o.i64(w.ref(n.inputs[1])), -a["b_zp"], "bzp"))
    y = o.addc(o.mrs(p, a["mult"], a["shift"]), a["y_zp"], "yzp")
    return [_store(o, o.clamp(y, a["lo"], a["hi"]), y_dtype(a))]


def _qconcat(w: _Writer, n: Node) -> list[str]:
    o, a = IntOps(w, n.outputs[0].name), n.all_attrs
    y = y_dtype(a)
    lo, hi = TYPE_RANGE[y]
    parts = [_store(o, _rescale(o, o.i64(w.ref(v)), zx, m, s, a["y_zp"], lo, hi), y)
             for v, zx, m, s in zip(n.inputs, a["x_zps"], a["mults"], a["shifts"])]
    return [o.op("Concat", parts, axis=a["axis"])]


def _pool_pads(n: Node) -> tuple[int, int, int, int]:
    """The pool's pads plus the ceil_mode overhang (bottom/right), as qmath's pools take them."""
    x = n.inputs[0]
    assert x is not None
    a = n.all_attrs
    oh, ow = _pool_geometry(x.type, a)
    (kh, kw), (sh, sw) = a["kernel_shape"], a["strides"]
    pt, pl, pb, pr = a["pads"]
    eh = max(0, (oh - 1) * sh + kh - (x.type.shape[2] + pt + pb))
    ew = max(0, (ow - 1) * sw + kw - (x.type.shape[3] + pl + pr))
    return pt, pl, pb + eh, pr + ew


def _qmax_pool(w: _Writer, n: Node) -> list[str]:
    """Max pool on the exact float32 image of the codes (padding never wins), then the clamp."""
    o, a = IntOps(w, n.outputs[0].name), n.all_attrs
    x = n.inputs[0]
    assert x is not None
    m = o.op("MaxPool", [o.cast(w.ref(x), F32)], kernel_shape=list(a["kernel_shape"]),
             strides=list(a["strides"]), pads=list(_pool_pads(n)))
    return [_store(o, o.clamp(o.i64(m), a["lo"], a["hi"]), x.type.dtype)]


def _qavg_pool(w: _Writer, n: Node) -> list[str]:
    """The window sums of (x - x_zp) by a ConvInteger of ones (one group per channel), the
    per-position element count folded into constant (mult, shift) maps."""
    o, a = IntOps(w, n.outputs[0].name), n.all_attrs
    x = n.inputs[0]
    assert x is not None
    c, (h, wd) = x.type.shape[1], x.type.shape[2:]
    (kh, kw), strides, pads = a["kernel_shape"], list(a["strides"]), _pool_pads(n)
    ones = o.const(np.ones((c, 1, kh, kw)), "ones", np.int8)
    s = _accumulate(o, n, lambda xv, zp: o.op("ConvInteger", [xv, ones, zp], strides=strides,
                                                pads=list(pads), group=c))
    if a["count_include_pad"]:
        cnt = np.full(_pool_geometry(x.type, a), kh * kw, np.int64)
    else:
        cover = np.pad(np.ones((h, wd), np.int64), ((pads[0], pads[2]), (pads[1], pads[3])))
        oh, ow = _pool_geometry(x.type, a)
        cnt = np.array([[cover[i * strides[0]:i * strides[0] + kh,
                               j * strides[1]:j * strides[1] + kw].sum() for j in range(ow)]
                        for i in range(oh)], np.int64)
    mult, shift = (w.g.const_value(n.inputs[k]) for k in (1, 2))
    if mult is None or shift is None:
        raise UnsupportedOpError(f"ONNX export: {n.label()} needs constant mult/shift")
    y = o.mrs(s, np.asarray(mult, np.int64)[cnt][None, None],
              np.asarray(shift, np.int64)[cnt][None, None])
    return [_store(o, o.clamp(o.addc(y, a["y_zp"], "yzp"), a["lo"], a["hi"]), y_dtype(a))]


def _dequantize(w: _Writer, n: Node) -> list[str]:
    """float32(q - zp) * float32(scale), as qmath.dequantize_ref."""
    o, a = IntOps(w, n.outputs[0].name), n.all_attrs
    v = o.cast(o.addc(o.i64(w.ref(n.inputs[0])), -a["zp"], "zp"), F32)
    return [o.mul(v, o.const(a["scale"], "scale", np.float32))]


def _quantize(w: _Writer, n: Node) -> list[str]:
    """QuantizeLinear (float32 division, half to even, saturation; com.microsoft for int16)."""
    from ocrc.compiler.export_onnx import MS_DOMAIN

    o, a = IntOps(w, n.outputs[0].name), n.all_attrs
    wide = a["bits"] == 16
    w.int16 = w.int16 or wide
    args = [w.ref(n.inputs[0]), o.const(a["scale"], "scale", np.float32),
            o.const(a["zp"], "zp", np.int16 if wide else np.int8)]
    return [o.op("QuantizeLinear", args, **({"domain": MS_DOMAIN} if wide else {}))]


def qlstm_steps(w: _Writer, q: Node, xq: str, tag: str, graph: Graph | None = None) -> list[str]:
    """The integer LSTM `q` on the int8 tensor xq, exactly (qlstm's reference: per direction
    `MatMulInteger` of x and W plus the bias and its rescale, then a Scan over time whose body
    is `lstm_steps` in int64). Returns Y i8[T, D, B, H], Y_h i8[D, B, H], Y_c i16[D, B, H].
    `graph`: q's graph when it is not the one being written (the QDQ export's LSTM)."""
    a = q.all_attrs
    g = graph or w.g
    cv = [g.const_value(v) if v is not None else None for v in q.inputs]
    wq, rq, bias, xm, xsh, hm, hsh, tables = cv[1:9]
    h0q, c0q, rv, vm, vsh = (cv + [None] * 14)[9:14]
    if any(v is None for v in cv[1:9]):
        raise UnsupportedOpError(f"ONNX export: {q.label()} needs constant weights and tables")
    hs, zx, zh = a["hidden_size"], a["x_zp"], a["h_zp"]
    x = q.inputs[0]
    assert x is not None
    d_n, bs = wq.shape[0], x.type.shape[1]
    i16 = (qmath.INT16_MIN, qmath.INT16_MAX)
    gate_base = np.repeat(np.arange(4) * 256 + 128, hs)  # Gather offsets of the gate tables
    ys, hns, cns = [], [], []
    for d in range(d_n):
        dt = f"{tag}.d{d}"
        o = IntOps(w, dt)
        ax = o.i64(o.op("MatMulInteger", [xq, o.const(np.ascontiguousarray(wq[d].T), "W",
                                                       np.int8), o.const(zx, "xzp", np.int8)]))
        tx = o.mrs(o.addc(ax, bias[d], "bias"), xm[d], xsh[d])  # [T, B, 4H]
        h0 = o.const(h0q[d] if h0q is not None else np.full((bs, hs), zh), "h0", np.int8)
        c0 = o.const(c0q[d] if c0q is not None else np.zeros((bs, hs)), "c0")
        outer, w.nodes = w.nodes, []
        h, c, xt = (w.fresh(f"{dt}.{k}") for k in ("h", "c", "tx"))
        hz = o.const(zh, "hzp", np.int8)
        if rv is not None:  # t = requantize(V (h - zh)) int8, then U t
            vh = o.op("MatMulInteger", [h, o.const(np.ascontiguousarray(rv[d].T), "V", np.int8),
                                        hz])
            t = o.cast(o.clamp(o.mrs(o.i64(vh), vm[d], vsh[d]), -128, 127), I8)
            ah = o.op("MatMulInteger", [t, o.const(np.ascontiguousarray(rq[d].T), "U", np.int8)])
        else:
            ah = o.op("MatMulInteger", [h, o.const(np.ascontiguousarray(rq[d].T), "R", np.int8),
                                        hz])
        th = o.mrs(o.i64(ah), hm[d], hsh[d])
        p = o.clamp(o.mrs(o.add(xt, th), 1, qmath.ADD_FRAC_BITS), -128, 127)
        g = o.op("Gather", [o.const(tables[d, :4].reshape(-1), "tables"),
                            o.addc(p, gate_base, "gidx")], axis=0)
        gi, go, gf, gc = w.node("Split", [g], f"{dt}.gates", n_out=4, axis=1)
        frac = a["cell_frac"][d]
        fc = o.clamp(o.mrs(o.mul(gf, c), 1, GATE_FRAC), *i16)
        ic = o.clamp(o.mrs(o.mul(gi, gc), 1, 2 * GATE_FRAC - frac), *i16)
        c_new = o.clamp(o.add(fc, ic), *i16)
        u = _rescale(o, c_new, 0, a["cell_mult"][d], a["cell_shift"][d], 0, -128, 127)
        tu = o.op("Gather", [o.const(tables[d, N_TABLES - 1], "tanh"), o.addc(u, 128, "uoff")],
                  axis=0)
        h_new = o.cast(_rescale(o, o.mul(go, tu), 0, a["out_mult"][d], a["out_shift"][d], zh,
                                -128, 127), I8)
        y_t = o.op("Identity", [h_new])
        body_nodes, w.nodes = w.nodes, outer
        body = helper.make_graph(
            body_nodes, f"{dt}.step",
            [helper.make_tensor_value_info(h, I8, [bs, hs]),
             helper.make_tensor_value_info(c, I64, [bs, hs]),
             helper.make_tensor_value_info(xt, I64, [bs, 4 * hs])],
            [helper.make_tensor_value_info(v, t_, [bs, hs])
             for v, t_ in ((h_new, I8), (c_new, I64), (y_t, I8))])
        rev = int(a["direction"] == "reverse" or d == 1)
        hn, cn, y = w.node("Scan", [h0, c0, tx], dt, n_out=3, body=body, num_scan_inputs=1,
                           scan_input_directions=[rev], scan_output_directions=[rev])
        ax1, ax0 = (o.const([k], f"axis{k}") for k in (1, 0))
        ys.append(o.op("Unsqueeze", [y, ax1]))  # [T, 1, B, H]
        hns.append(o.op("Unsqueeze", [hn, ax0]))
        cns.append(o.op("Unsqueeze", [o.cast(cn, I16), ax0]))
    return [w.node("Concat", v, tag, axis=k)[0] if len(v) > 1 else v[0]
            for v, k in ((ys, 1), (hns, 0), (cns, 0))]


def _qlstm(w: _Writer, n: Node) -> list[str]:
    return qlstm_steps(w, n, w.ref(n.inputs[0]), n.outputs[0].name)


QEMITTERS: dict[str, Callable[[_Writer, Node], list[str]]] = {
    "quantize": _quantize, "dequantize": _dequantize, "qconv": _qconv, "qdense": _qdense,
    "lut": _lut, "rescale": _qrescale, "qadd": _qadd, "qmul": _qmul, "qconcat": _qconcat,
    "qmax_pool": _qmax_pool, "qavg_pool": _qavg_pool, "qlstm": _qlstm,
}
