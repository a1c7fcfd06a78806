"""Quantised IR ops: the golden int8 model (docs/quantization.md), with int16 activations.

Every integer op's reference semantics calls the composite functions of `ocrc.runtime.qmath`
(the VM compiles the same ones), so the VM is bit-exact with the interpreter by construction.
Scales never appear in types: zero points, clamps and scalar multipliers are int attributes;
per-channel multipliers/shifts, biases and tables are integer constant operands. Only
`quantize`/`dequantize` (the graph edges) touch floats. An activation is i8 (asymmetric) or
i16 (symmetric, zero point 0; docs §8): the operand types say which, `y_bits` the result's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ocrc.compiler.ir.opdef import AttrDef, Attrs, defop
from ocrc.compiler.ir.ops.elementwise import broadcast_shape
from ocrc.compiler.ir.ops.nn import WINDOW_ATTRS, _check_window, window_out
from ocrc.compiler.ir.ops.pool import POOL_ATTRS, _pool_geometry
from ocrc.compiler.ir.types import DType, TensorType
from ocrc.runtime import qmath

I8_RANGE = {"lo": AttrDef("int", qmath.INT8_MIN), "hi": AttrDef("int", qmath.INT8_MAX)}
Y_BITS = {"y_bits": AttrDef("int", 8)}  # 8: i8 result, 16: i16 result (clamp lo/hi explicit)
MAX_K = 32768  # reduction length bound that keeps the int32 accumulator exact (docs §3)
BIAS_MAX = 2**30  # |bias| bound of the same argument
ACT_DTYPES = (DType.I8, DType.I16)
TYPE_RANGE = {DType.I8: (qmath.INT8_MIN, qmath.INT8_MAX),
              DType.I16: (qmath.INT16_MIN, qmath.INT16_MAX)}


def _t(types: Sequence[TensorType | None], i: int) -> TensorType:
    t = types[i]
    assert t is not None
    return t


def _want(t: TensorType | None, dtype: DType, what: str,
          shape: tuple[int, ...] | None = None) -> None:
    if t is None:
        raise ValueError(f"{what} is required")
    if t.dtype != dtype:
        raise ValueError(f"{what} must be {dtype.value}, got {t}")
    if shape is not None and t.shape != shape:
        raise ValueError(f"{what} must be {dtype.value}{list(shape)}, got {t}")


def _act(t: TensorType | None, what: str) -> TensorType:
    """An activation operand: i8 or i16."""
    if t is None:
        raise ValueError(f"{what} is required")
    if t.dtype not in ACT_DTYPES:
        raise ValueError(f"{what} must be i8 or i16, got {t}")
    return t


def y_dtype(attrs: Attrs) -> DType:
    """The result type `y_bits` asks for (8 -> i8, 16 -> i16)."""
    bits = attrs.get("y_bits", 8)
    if bits not in (8, 16):
        raise ValueError(f"y_bits must be 8 or 16, got {bits}")
    return DType.I8 if bits == 8 else DType.I16


def _check_clamp(attrs: Attrs, y: DType = DType.I8,
                 zps: dict[str, DType] | None = None) -> None:
    """[lo, hi] inside y's range; each zero point (attr -> its operand's type) inside its
    type's range, and 0 for an i16 operand (int16 activations are symmetric)."""
    ylo, yhi = TYPE_RANGE[y]
    if "lo" in attrs and not ylo <= attrs["lo"] <= attrs["hi"] <= yhi:
        raise ValueError(f"clamp [lo, hi] = [{attrs['lo']}, {attrs['hi']}] must be inside "
                         f"[{ylo}, {yhi}] with lo <= hi")
    zps = {"y_zp": y, **(zps or {})}
    for key in ("x_zp", "y_zp", "a_zp", "b_zp"):
        if key not in attrs:
            continue
        dt = zps.get(key, DType.I8)
        lo, hi = (0, 0) if dt == DType.I16 else TYPE_RANGE[DType.I8]
        if not lo <= attrs[key] <= hi:
            raise ValueError(f"zero point {key} = {attrs[key]} is outside [{lo}, {hi}]"
                             + (" (int16 activations are symmetric)" if dt == DType.I16 else ""))


def _check_mult(mult: int, shift: int, what: str) -> None:
    if not (0 <= mult < 2**31 and 1 <= shift <= qmath.MAX_SHIFT):
        raise ValueError(f"{what} multiplier ({mult}, {shift}) needs 0 <= mult < 2**31 and "
                         f"1 <= shift <= {qmath.MAX_SHIFT}")


def _as(a: np.ndarray, attrs: Attrs) -> np.ndarray:
    """The result in the storage type y_bits asks for."""
    return np.asarray(a).astype(np.int16 if attrs.get("y_bits", 8) == 16 else np.int8)


def _check_wide(mult: np.ndarray, what: str) -> None:
    """A wide (int16-input) accumulator needs 15-bit multipliers (docs §8)."""
    if np.any(np.asarray(mult, np.int64) >= 1 << qmath.WIDE_MULT_BITS):
        raise ValueError(f"{what}: an int16 input needs multipliers below 2**"
                         f"{qmath.WIDE_MULT_BITS} (wide accumulator)")


# --- edges -------------------------------------------------------------------------------------
def _infer_quantize(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x = _t(types, 0)
    if not x.dtype.is_float:
        raise ValueError(f"quantize needs a float input, got {x}")
    if not attrs["scale"] > 0:
        raise ValueError(f"scale must be > 0, got {attrs['scale']}")
    y = y_dtype({"y_bits": attrs["bits"]})
    _check_clamp({"y_zp": attrs["zp"]}, y)
    return [TensorType(y, x.shape)]


def _ref_quantize(xs: Sequence[np.ndarray | None], a: Attrs) -> list[np.ndarray]:
    lo, hi = TYPE_RANGE[y_dtype({"y_bits": a["bits"]})]
    return [_as(qmath.quantize_ref(xs[0], a["scale"], a["zp"], lo, hi), {"y_bits": a["bits"]})]


QUANTIZE = defop(
    "quantize", ("x",), _infer_quantize, _ref_quantize,
    "float -> int8 (bits = 16: int16, zp 0): clamp(rint(x / scale) + zp, type range) (half to "
    "even; a graph input edge).",
    attrs={"scale": AttrDef("float"), "zp": AttrDef("int", 0), "bits": AttrDef("int", 8)},
    traits=("quant_edge",))


def _infer_dequantize(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x = _t(types, 0)
    if x.dtype not in (DType.I8, DType.I16, DType.I32):
        raise ValueError(f"dequantize needs an int8/16/32 input, got {x}")
    return [TensorType(DType.F32, x.shape)]


DEQUANTIZE = defop(
    "dequantize", ("x",), _infer_dequantize,
    lambda xs, a: [qmath.dequantize_ref(xs[0], a["scale"], a["zp"])],
    "int -> float32: (x - zp) * scale (a graph output edge).",
    attrs={"scale": AttrDef("float"), "zp": AttrDef("int", 0)}, traits=("quant_edge",))


# --- qconv / qdense -------------------------------------------------------------------------
def _check_requant_operands(types: Sequence[TensorType | None], m: int, k: int) -> None:
    wide = _t(types, 0).dtype == DType.I16  # int16 input: wide accumulator, int64 bias
    _want(types[1], DType.I8, "weight w")
    _want(types[2], DType.I64 if wide else DType.I32, "bias" + (" (int16 input)" if wide else ""),
          (m,))
    _want(types[3], DType.I32, "mult", (m,))
    _want(types[4], DType.I32, "shift", (m,))
    if k > MAX_K:
        raise ValueError(f"reduction length K = {k} exceeds MAX_K = {MAX_K}: the int32 "
                         "accumulator could overflow (split the layer)")


def _infer_qconv(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x, w = _act(types[0], "input x"), _t(types, 1)
    if x.rank != 4 or w.rank != 4:
        raise ValueError(f"qconv needs 4-D x and w, got {x} and {w}")
    _check_window(attrs)
    y = y_dtype(attrs)
    _check_clamp(attrs, y, {"x_zp": x.dtype})
    g = attrs["group"]
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    if g < 1 or c != cg * g or m % g:
        raise ValueError(f"group {g}: x has {c} channels, w is {list(w.shape)}")
    _check_requant_operands(types, m, cg * kh * kw)
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = attrs["strides"], attrs["pads"], attrs["dilations"]
    return [TensorType(y, (n, m, window_out(h, kh, sh, pt, pb, dh),
                           window_out(wd, kw, sw, pl, pr, dw)))]


def _ref_qconv(xs: Sequence[np.ndarray | None], a: Attrs) -> list[np.ndarray]:
    x, w, b, mult, shift = xs
    assert x is not None
    if x.dtype == np.int16:
        _check_wide(mult, "qconv")
    y = qmath.conv_ref(x, w, b, mult, shift, a["x_zp"], a["y_zp"], a["lo"], a["hi"],
                       tuple(a["strides"]), tuple(a["pads"]), tuple(a["dilations"]), a["group"])
    return [_as(y, a)]


_ZP_ATTRS = {"x_zp": AttrDef("int", 0), "y_zp": AttrDef("int", 0)}
QCONV = defop(
    "qconv", ("x", "w", "bias", "mult", "shift"), _infer_qconv, _ref_qconv,
    "int8 conv: acc = bias + sum w * (x - x_zp) (padding adds 0); "
    "y = clamp(mul_round_shift(acc, mult[c], shift[c]) + y_zp, lo, hi). An i16 x (x_zp 0) "
    "accumulates wide: i64 bias, 15-bit multipliers; y_bits = 16 gives an i16 result.",
    attrs={**WINDOW_ATTRS, "group": AttrDef("int", 1), **_ZP_ATTRS, **I8_RANGE, **Y_BITS},
    traits=("mac", "quantized"))


def _infer_qdense(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x, w = _act(types[0], "input x"), _t(types, 1)
    if w.rank != 2 or x.rank < 1 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"qdense needs x[..., K] and w[N, K], got {x} and {w}")
    y = y_dtype(attrs)
    _check_clamp(attrs, y, {"x_zp": x.dtype})
    _check_requant_operands(types, w.shape[0], w.shape[1])
    return [TensorType(y, x.shape[:-1] + (w.shape[0],))]


def _ref_qdense(xs: Sequence[np.ndarray | None], a: Attrs) -> list[np.ndarray]:
    x, w, b, mult, shift = xs
    assert x is not None
    if x.dtype == np.int16:
        _check_wide(mult, "qdense")
    return [_as(qmath.dense_ref(x, w, b, mult, shift, a["x_zp"], a["y_zp"], a["lo"], a["hi"]),
                a)]


QDENSE = defop(
    "qdense", ("x", "w", "bias", "mult", "shift"), _infer_qdense, _ref_qdense,
    "int8 dense: acc = bias + (x - x_zp) @ w.T; "
    "y = clamp(mul_round_shift(acc, mult[c], shift[c]) + y_zp, lo, hi). i16 x / y_bits as "
    "qconv.",
    attrs={**_ZP_ATTRS, **I8_RANGE, **Y_BITS}, traits=("mac", "quantized"))


# --- elementwise -------------------------------------------------------------------------------
def _infer_lut(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x, table = _act(types[0], "input x"), _t(types, 1)
    y = y_dtype(attrs)
    # i8 x: a 256-entry table of the result type; i16 x: a windowed, interpolated i16 table of
    # LUT16_SIZE entries (513 knots and a header).
    size, tdt = (256, y) if x.dtype == DType.I8 else (qmath.LUT16_SIZE, DType.I16)
    if table.rank == 2:  # one table per channel along `axis`
        ax = attrs["axis"]
        if not -x.rank <= ax < x.rank:
            raise ValueError(f"axis {ax} is out of range for {x}")
        _want(table, tdt, "per-channel table", (x.shape[ax], size))
    else:
        _want(table, tdt, "table", (size,))
    return [TensorType(y, x.shape)]


def ref_lut(xs: Sequence[np.ndarray | None], a: Attrs) -> list[np.ndarray]:
    x, table = xs
    assert x is not None and table is not None
    x64 = np.asarray(x, np.int64)
    t64 = np.asarray(table, np.int64)
    wide = x.dtype == np.int16
    lo, hi = (qmath.INT16_MIN, qmath.INT16_MAX) if a.get("y_bits", 8) == 16 else \
        (qmath.INT8_MIN, qmath.INT8_MAX)
    if table.ndim == 1:
        y = qmath.lut16_ref(x64, t64, lo, hi) if wide else qmath.lut_ref(x64, t64)
        return [_as(y, a)]
    if not wide:
        shape = [1] * x.ndim
        shape[a["axis"]] = -1
        channel = np.arange(table.shape[0]).reshape(shape)
        return [_as(t64[channel, x64 + 128], a)]
    xc = np.moveaxis(x64, a["axis"], 0)  # each channel with its own table and window
    y = np.stack([qmath.lut16_ref(xc[c], t64[c], lo, hi) for c in range(len(t64))])
    return [_as(np.moveaxis(y, 0, a["axis"]), a)]


LUT = defop(
    "lut", ("x", "table"), _infer_lut, ref_lut,
    "int8 table activation: y = table[x + 128] (table: a 256-entry constant of the result "
    "type), or, with a [C, 256] table, y = table[c, x + 128] with c the index along `axis` "
    "(per-channel tables of cross-layer equalisation). An i16 x reads an i16 table of 513 "
    "knots and a window header, interpolating inside the window and extrapolating linearly "
    "outside it (qmath.lut16_ref).",
    attrs={"axis": AttrDef("int", 1), **Y_BITS}, traits=("quantized", "elementwise"))


def _infer_rescale(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x = _act(types[0], "input x")
    y = y_dtype(attrs)
    _check_clamp(attrs, y, {"x_zp": x.dtype})
    _check_mult(attrs["mult"], attrs["shift"], "rescale")
    return [TensorType(y, x.shape)]


RESCALE = defop(
    "rescale", ("x",), _infer_rescale,
    lambda xs, a: [_as(qmath.rescale_ref(np.asarray(xs[0], np.int64), a["x_zp"], a["mult"],
                                         a["shift"], a["y_zp"], a["lo"], a["hi"]), a)],
    "int8/int16 -> int8 (y_bits = 16: int16) requantisation: "
    "clamp(mul_round_shift(x - x_zp, mult, shift) + y_zp, lo, hi).",
    attrs={**_ZP_ATTRS, "mult": AttrDef("int"), "shift": AttrDef("int"), **I8_RANGE, **Y_BITS},
    traits=("quantized", "elementwise"))


def _infer_qbinary(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    a, b = _act(types[0], "operand a"), _act(types[1], "operand b")
    y = y_dtype(attrs)
    _check_clamp(attrs, y, {"a_zp": a.dtype, "b_zp": b.dtype})
    for p in ("a_", "b_", ""):
        if f"{p}mult" in attrs:
            _check_mult(attrs[f"{p}mult"], attrs[f"{p}shift"], f"{p or 'product '}")
    return [TensorType(y, broadcast_shape(a.shape, b.shape))]


def ref_qadd(xs: Sequence[np.ndarray | None], a: Attrs) -> list[np.ndarray]:
    """qadd and npu.add: 16 add fraction bits when all are int8, 8 with an int16 operand or
    result (qmath.add_frac_bits)."""
    wide = a.get("y_bits", 8) == 16 or any(np.asarray(v).dtype == np.int16 for v in xs)
    xa, xb = (np.asarray(v, np.int64) for v in xs)
    return [_as(qmath.add_ref(xa, a["a_zp"], a["a_mult"], a["a_shift"], xb, a["b_zp"],
                              a["b_mult"], a["b_shift"], a["y_zp"], a["lo"], a["hi"],
                              qmath.add_frac_bits(wide)), a)]


QADD = defop(
    "qadd", ("a", "b"), _infer_qbinary, ref_qadd,
    "int8 add, broadcasting: ta = mul_round_shift(a - a_zp, a_mult, a_shift), tb likewise "
    "(multipliers carry 2**8); y = clamp(mul_round_shift(ta + tb, 1, 8) + y_zp, lo, hi). "
    "Operands i8 or i16, y_bits the result's.",
    attrs={"a_zp": AttrDef("int", 0), "a_mult": AttrDef("int"), "a_shift": AttrDef("int"),
           "b_zp": AttrDef("int", 0), "b_mult": AttrDef("int"), "b_shift": AttrDef("int"),
           "y_zp": AttrDef("int", 0), **I8_RANGE, **Y_BITS},
    traits=("quantized", "elementwise", "binary"))


def _ref_qmul(xs: Sequence[np.ndarray | None], a: Attrs) -> list[np.ndarray]:
    xa, xb = (np.asarray(v, np.int64) for v in xs)
    return [_as(qmath.mul_ref(xa, a["a_zp"], xb, a["b_zp"], a["mult"], a["shift"], a["y_zp"],
                              a["lo"], a["hi"]), a)]


QMUL = defop(
    "qmul", ("a", "b"), _infer_qbinary, _ref_qmul,
    "int8 multiply, broadcasting: "
    "y = clamp(mul_round_shift((a - a_zp) * (b - b_zp), mult, shift) + y_zp, lo, hi). "
    "Operands i8 or i16, y_bits the result's.",
    attrs={"a_zp": AttrDef("int", 0), "b_zp": AttrDef("int", 0), "mult": AttrDef("int"),
           "shift": AttrDef("int"), "y_zp": AttrDef("int", 0), **I8_RANGE, **Y_BITS},
    traits=("quantized", "elementwise", "binary"))


# --- concat ------------------------------------------------------------------------------------
def _infer_qconcat(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    xs = [_t(types, i) for i in range(len(types))]
    n = len(xs)
    for key in ("x_zps", "mults", "shifts"):
        if len(attrs[key]) != n:
            raise ValueError(f"attr '{key}' needs {n} ints (one per operand), "
                             f"got {list(attrs[key])}")
    for i, (m, s) in enumerate(zip(attrs["mults"], attrs["shifts"])):
        _check_mult(m, s, f"operand {i}")
    for i, t in enumerate(xs):
        _act(t, "every operand")
        _check_clamp({"x_zp": attrs["x_zps"][i]}, DType.I8, {"x_zp": t.dtype})
    y = y_dtype(attrs)
    _check_clamp({"y_zp": attrs["y_zp"]}, y)
    rank = xs[0].rank
    ax = attrs["axis"] % rank if -rank <= attrs["axis"] < rank else -1
    if ax < 0:
        raise ValueError(f"axis {attrs['axis']} is out of range for rank {rank}")
    rest = {t.shape[:ax] + t.shape[ax + 1:] for t in xs}
    if len(rest) != 1 or any(t.rank != rank for t in xs):
        raise ValueError(f"operands differ outside axis {ax}: {[str(t) for t in xs]}")
    return [TensorType(y, xs[0].shape[:ax] + (sum(t.shape[ax] for t in xs),)
                       + xs[0].shape[ax + 1:])]


def ref_qconcat(xs: Sequence[np.ndarray | None], a: Attrs) -> list[np.ndarray]:
    lo, hi = TYPE_RANGE[y_dtype(a)]
    parts = [qmath.rescale_ref(np.asarray(x, np.int64), zx, m, s, a["y_zp"], lo, hi)
             for x, zx, m, s in zip(xs, a["x_zps"], a["mults"], a["shifts"])]
    return [_as(np.concatenate(parts, axis=a["axis"]), a)]


QCONCAT = defop(
    "qconcat", ("xs*",), _infer_qconcat, ref_qconcat,
    "int8 concat along `axis`; operand i is first rescaled to the output's zero point: "
    "clamp(mul_round_shift(x_i - x_zps[i], mults[i], shifts[i]) + y_zp, -128, 127) (operands "
    "i8 or i16; y_bits = 16: an i16 result, clamped to the int16 range).",
    attrs={"axis": AttrDef("int"), "x_zps": AttrDef("ints"), "mults": AttrDef("ints"),
           "shifts": AttrDef("ints"), "y_zp": AttrDef("int", 0), **Y_BITS},
    traits=("quantized",))


# --- pools -------------------------------------------------------------------------------------
def _ceil_pads(x: np.ndarray, a: Attrs) -> tuple[int, int, int, int]:
    """Explicit pads plus the ceil_mode overhang (bottom/right), as one pads tuple."""
    oh, ow = _pool_geometry(TensorType.of(x), a)
    (kh, kw), (sh, sw) = a["kernel_shape"], a["strides"]
    pt, pl, pb, pr = a["pads"]
    eh = max(0, (oh - 1) * sh + kh - (x.shape[2] + pt + pb))
    ew = max(0, (ow - 1) * sw + kw - (x.shape[3] + pl + pr))
    return pt, pl, pb + eh, pr + ew


def _infer_qpool(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x = _act(types[0], "input x")
    if tuple(attrs["dilations"]) != (1, 1):
        raise ValueError(f"dilated pooling is not supported, got {list(attrs['dilations'])}")
    oh, ow = _pool_geometry(x, attrs)
    # max pool: the result has x's type and scale; average pool: y_bits.
    y = y_dtype(attrs) if len(types) > 1 else x.dtype
    _check_clamp(attrs, y, {"x_zp": x.dtype})
    if len(types) > 1:  # average pool: one (mult, shift) per window count 0..area
        area = attrs["kernel_shape"][0] * attrs["kernel_shape"][1]
        _want(types[1], DType.I32, "mult", (area + 1,))
        _want(types[2], DType.I32, "shift", (area + 1,))
        if attrs["ceil_mode"] and attrs["count_include_pad"]:
            raise ValueError("ceil_mode with count_include_pad is not supported")
    return [TensorType(y, x.shape[:2] + (oh, ow))]


def _ref_qmax_pool(xs: Sequence[np.ndarray | None], a: Attrs) -> list[np.ndarray]:
    x = xs[0]
    assert x is not None
    y = qmath.maxpool_ref(x, tuple(a["kernel_shape"]), tuple(a["strides"]), _ceil_pads(x, a),
                          a["lo"], a["hi"])
    return [np.asarray(y).astype(x.dtype)]


QMAX_POOL = defop(
    "qmax_pool", ("x",), _infer_qpool, _ref_qmax_pool,
    "int8 max pool (padding never wins), then clamp(., lo, hi); same scale and type (i8 or "
    "i16) in and out.",
    attrs={**POOL_ATTRS, **I8_RANGE}, traits=("quantized", "pool"))


def _ref_qavg_pool(xs: Sequence[np.ndarray | None], a: Attrs) -> list[np.ndarray]:
    x, mult, shift = xs
    assert x is not None and mult is not None and shift is not None
    y = qmath.avgpool_ref(x, tuple(a["kernel_shape"]), tuple(a["strides"]), _ceil_pads(x, a),
                          a["x_zp"], a["y_zp"], mult, shift, bool(a["count_include_pad"]),
                          a["lo"], a["hi"])
    return [_as(y, a)]


QAVG_POOL = defop(
    "qavg_pool", ("x", "mult", "shift"), _infer_qpool, _ref_qavg_pool,
    "int8 average pool: s = sum of (x - x_zp) over the window (pads add 0), c = the window's "
    "element count; y = clamp(mul_round_shift(s, mult[c], shift[c]) + y_zp, lo, hi) (x i8 or "
    "i16, y_bits the result's).",
    attrs={**POOL_ATTRS, "count_include_pad": AttrDef("int", 0), **_ZP_ATTRS, **I8_RANGE,
           **Y_BITS},
    traits=("quantized", "pool"))
