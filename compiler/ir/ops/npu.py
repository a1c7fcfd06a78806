"""NPU-level ops: what `compiler.backend.lower` turns the quantised IR into (`--dump-ir` prints
them). Each is one kernel the emitter tiles onto the MAC array or the vector unit, with its
constants already in the layouts the instructions read (weights OHWI, per-channel
bias/mult/shift packed as one i32[3, N] operand). Their `ref` is the same integer arithmetic as
the quantised ops (runtime.qmath), so `interp(lowered) == interp(quantised)` bit for bit.

Common attrs: `layout` (memory order of the result's logical dims, e.g. [0, 2, 3, 1] = NHWC;
empty = row-major) and `fused` (1: computed inside the tile loop of the kernel producing its
first operand, never stored on its own).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ocrc.compiler.ir.opdef import AttrDef, Attrs, defop
from ocrc.compiler.ir.ops.elementwise import broadcast_shape
from ocrc.compiler.ir.ops.nn import WINDOW_ATTRS, window_out
from ocrc.compiler.ir.ops.qlstm import N_TABLES, factored_of, lstm_steps
from ocrc.compiler.ir.ops.quant import ref_lut, ref_qadd, ref_qconcat
from ocrc.compiler.ir.ops.rnn import LSTM_DIRECTIONS
from ocrc.compiler.ir.types import DType, TensorType
from ocrc.runtime import qmath

_COMMON = {"layout": AttrDef("ints", ()), "fused": AttrDef("int", 0)}
_CLAMP = {"lo": AttrDef("int", qmath.INT8_MIN), "hi": AttrDef("int", qmath.INT8_MAX)}
_ZP = {"x_zp": AttrDef("int", 0), "y_zp": AttrDef("int", 0)}
I32_RANGE = (qmath.INT32_MIN, qmath.INT32_MAX)


def _t(types: Sequence[TensorType | None], i: int) -> TensorType:
    t = types[i]
    assert t is not None
    return t


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _qp_ok(t: TensorType | None, n: int, what: str = "qp", wide: bool = False) -> None:
    dt = DType.I64 if wide else DType.I32
    _need(t is not None and t.dtype == dt and t.shape == (3, n),
          f"{what} must be {dt.value}[3, {n}] (bias, mult, shift)"
          + (" for an i16 input (wide accumulator)" if wide else "") + f", got {t}")


def _i8(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).astype(np.int8)


ACTS = (DType.I8, DType.I16)
_YB = {"y_bits": AttrDef("int", 8)}  # 8: i8 result, 16: i16 result (as the quantised ops)


def _y(a: Attrs) -> DType:
    _need(a.get("y_bits", 8) in (8, 16), f"y_bits must be 8 or 16, got {a.get('y_bits')}")
    return DType.I16 if a.get("y_bits", 8) == 16 else DType.I8


def _as(y: np.ndarray, a: Attrs) -> np.ndarray:
    return np.asarray(y).astype(_y(a).np)


# --- MAC-array kernels -------------------------------------------------------------------------
def _infer_conv(types: Sequence[TensorType | None], a: Attrs) -> list[TensorType]:
    x, w = _t(types, 0), _t(types, 1)
    _need(x.dtype in ACTS and x.rank == 4 and x.shape[0] == 1,
          f"npu.conv needs an i8/i16[1, C, H, W] input, got {x}")
    _need(w.dtype == DType.I8 and w.rank == 4, f"npu.conv weights must be i8 OHWI, got {w}")
    cout, kh, kw, cg = w.shape
    g = a["group"]
    _need(g >= 1 and x.shape[1] == cg * g and cout % g == 0,
          f"group {g}: x has {x.shape[1]} channels, w is {list(w.shape)}")
    _qp_ok(types[2], cout, wide=x.dtype == DType.I16)
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = a["strides"], a["pads"], a["dilations"]
    return [TensorType(_y(a), (1, cout, window_out(x.shape[2], kh, sh, pt, pb, dh),
                                  window_out(x.shape[3], kw, sw, pl, pr, dw)))]


def _ref_conv(xs: Sequence[np.ndarray | None], a: Attrs) -> list[np.ndarray]:
    x, w, qp = xs
    assert x is not None and w is not None and qp is not None
    y = qmath.conv_ref(x, np.transpose(w, (0, 3, 1, 2)), qp[0], qp[1], qp[2], a["x_zp"],
                       a["y_zp"], a["lo"], a["hi"], tuple(a["strides"]), tuple(a["pads"]),
                       tuple(a["dilations"]), a["group"])
    return [_as(y, a)]


CONV = defop(
    "npu.conv", ("x", "w", "qp"), _infer_conv, _ref_conv,
    "CONV tiles: acc = qp[0] + sum w * (x - x_zp), y = requantize(acc, qp[1], qp[2], y_zp, lo, "
    "hi); w is OHWI (cout, kh, kw, cin/group). An i16 x accumulates wide (qp i64[3, N]); "
    "y_bits = 16: an i16 result.",
    attrs={**WINDOW_ATTRS, "group": AttrDef("int", 1), **_ZP, **_CLAMP, **_YB, **_COMMON},
    traits=("mac", "npu"))


def _infer_matmul(types: Sequence[TensorType | None], a: Attrs) -> list[TensorType]:
    x, w = _t(types, 0), _t(types, 1)
    _need(x.dtype in ACTS and w.dtype == DType.I8 and w.rank == 2
          and x.shape[-1] == w.shape[1],
          f"npu.matmul needs i8/i16 x[..., K], i8 w[N, K]: {x}, {w}")
    wide = x.dtype == DType.I16
    _qp_ok(types[2], w.shape[0], wide=wide)
    _need(a["out"] in ("i8", "i16", "i32") and not (wide and a["out"] == "i32"),
          f"out must be 'i8', 'i16' or (i8 x) 'i32', got {a['out']!r}")
    return [TensorType(DType(a["out"]), x.shape[:-1] + w.shape[:1])]


def _ref_matmul(xs: Sequence[np.ndarray | None], a: Attrs) -> list[np.ndarray]:
    x, w, qp = xs
    assert x is not None and w is not None and qp is not None
    if a["out"] != "i32":
        y = qmath.dense_ref(x, w, qp[0], qp[1], qp[2], a["x_zp"], a["y_zp"], a["lo"], a["hi"])
        return [np.asarray(y).astype(DType(a["out"]).np)]
    acc = qmath.dense_ref(x, w, qp[0], None, None, a["x_zp"], 0, 0, 0, requant=False)
    y = qmath.requantize(acc, qp[1].astype(np.int64), qp[2].astype(np.int64), 0, *I32_RANGE)
    return [np.asarray(y).astype(np.int32)]


MATMUL = defop(
    "npu.matmul", ("x", "w", "qp"), _infer_matmul, _ref_matmul,
    "MATMUL tiles: acc = qp[0] + (x - x_zp) @ w.T; out=i8/i16: requantize(acc, qp[1], qp[2], "
    "y_zp, lo, hi); out=i32: clamp(mul_round_shift(acc, qp[1], qp[2]), int32) (LSTM "
    "projections). An i16 x accumulates wide (qp i64[3, N]).",
    attrs={**_ZP, **_CLAMP, "out": AttrDef("str", "i8"), **_COMMON}, traits=("mac", "npu"))


# --- vector-unit kernels -----------------------------------------------------------------------
POOL_MODES = ("max", "avg", "avg_pad")


def _infer_pool(types: Sequence[TensorType | None], a: Attrs) -> list[TensorType]:
    x = _t(types, 0)
    _need(x.dtype in ACTS and x.rank == 4 and x.shape[0] == 1,
          f"npu.pool needs an i8/i16[1, C, H, W] input, got {x}")
    _need(a["mode"] != "max" or _y(a) == x.dtype, "max pooling keeps the input type (y_bits)")
    _need(a["mode"] in POOL_MODES, f"mode must be one of {POOL_MODES}, got {a['mode']!r}")
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = a["kernel_shape"], a["strides"], a["pads"]
    if a["mode"] != "max":
        q = _t(types, 1)
        _need(q.dtype == DType.I32 and q.shape == (2, kh * kw + 1),
              f"avg pool qp must be i32[2, {kh * kw + 1}] (mult, shift), got {q}")
    return [TensorType(_y(a), x.shape[:2] + (window_out(x.shape[2], kh, sh, pt, pb),
                                                window_out(x.shape[3], kw, sw, pl, pr)))]


def _ref_pool(xs: Sequence[np.ndarray | None], a: Attrs) -> list[np.ndarray]:
    x = xs[0]
    assert x is not None
    k, s, p = tuple(a["kernel_shape"]), tuple(a["strides"]), tuple(a["pads"])
    if a["mode"] == "max":
        return [_as(qmath.maxpool_ref(x, k, s, p, a["lo"], a["hi"]), a)]
    qp = xs[1]
    assert qp is not None
    return [_as(qmath.avgpool_ref(x, k, s, p, a["x_zp"], a["y_zp"], qp[0], qp[1],
                                  a["mode"] == "avg_pad", a["lo"], a["hi"]), a)]


POOL = defop(
    "npu.pool", ("x", "qp?"), _infer_pool, _ref_pool,
    "POOL tiles: max, avg (divide by the valid count) or avg_pad (by the kernel area); pads "
    "include any ceil_mode overhang; qp = i32[2, area + 1] per-count (mult, shift) for avg.",
    attrs={"kernel_shape": AttrDef("ints"), "strides": AttrDef("ints", (1, 1)),
           "pads": AttrDef("ints", (0, 0, 0, 0)), "mode": AttrDef("str", "max"), **_ZP,
           **_CLAMP, **_YB, **_COMMON},
    traits=("pool", "npu"))


def _infer_unary(types: Sequence[TensorType | None], a: Attrs) -> list[TensorType]:
    x = _t(types, 0)
    _need(x.dtype in ACTS, f"needs an i8 or i16 input, got {x}")
    y = _y(a)
    if len(types) > 1:
        t = _t(types, 1)
        # i8 x: 256 entries of the result type; i16 x: LUT16_SIZE i16 entries (knots, header)
        size, tdt = (256, y) if x.dtype == DType.I8 else (qmath.LUT16_SIZE, DType.I16)
        per_channel = x.rank >= 2 and t.shape == (x.shape[1], size)
        _need(t.dtype == tdt and (t.shape == (size,) or per_channel),
              f"table must be {tdt.value}[{size}] or {tdt.value}[C, {size}] with C = x's "
              f"channels (axis 1), got {t}")
    return [TensorType(y, x.shape)]


LUT = defop(
    "npu.lut", ("x", "table"), _infer_unary,
    lambda xs, a: ref_lut(xs, {"axis": 1, "y_bits": a.get("y_bits", 8)}),
    "LUT: y = table[x + 128]; with an i8[C, 256] table, one table per channel (axis 1; the LUT "
    "instruction's `tables` on a channel-innermost tile). An i16 x reads windowed i16 tables "
    "(513 knots and a header; qmath.lut16_ref).", attrs={**_YB, **_COMMON},
    traits=("elementwise", "npu"))

RESCALE = defop(
    "npu.rescale", ("x",), _infer_unary,
    lambda xs, a: [_as(qmath.rescale_ref(np.asarray(xs[0], np.int64), a["x_zp"], a["mult"],
                                         a["shift"], a["y_zp"], a["lo"], a["hi"]), a)],
    "RESCALE: clamp(mul_round_shift(x - x_zp, mult, shift) + y_zp, lo, hi) (i8/i16 in and "
    "out).",
    attrs={**_ZP, "mult": AttrDef("int"), "shift": AttrDef("int"), **_CLAMP, **_YB, **_COMMON},
    traits=("elementwise", "npu"))


def _infer_binary(types: Sequence[TensorType | None], a: Attrs) -> list[TensorType]:
    x, y = _t(types, 0), _t(types, 1)
    _need(x.dtype in ACTS and y.dtype in ACTS, f"needs i8/i16 operands, got {x}, {y}")
    out = broadcast_shape(x.shape, y.shape)
    _need(out == x.shape, f"the first operand must have the result's shape {list(out)} "
          f"(only b broadcasts), got {x}")
    return [TensorType(_y(a), x.shape)]


_AB = {"a_zp": AttrDef("int", 0), "b_zp": AttrDef("int", 0), "y_zp": AttrDef("int", 0)}
# The lambda (not ref_qadd itself) keeps npu.add listed under npu in docs/ir.md, which groups
# ops by the module of their ref (compiler/ir/ops/reference.py).
ADD = defop(
    "npu.add", ("a", "b"), _infer_binary, lambda xs, a: ref_qadd(xs, a),
    "ADD (b broadcasts periodically over a's memory order): qmath.add_ref. With an i16 operand "
    "or result: RESCALE of each operand to int32 and IADD >> 8.",
    attrs={**_AB, "a_mult": AttrDef("int"), "a_shift": AttrDef("int"), "b_mult": AttrDef("int"),
           "b_shift": AttrDef("int"), **_CLAMP, **_YB, **_COMMON},
    traits=("elementwise", "npu"))


def _ref_mul(xs: Sequence[np.ndarray | None], a: Attrs) -> list[np.ndarray]:
    xa, xb = (np.asarray(v, np.int64) for v in xs)
    return [_as(qmath.mul_ref(xa, a["a_zp"], xb, a["b_zp"], a["mult"], a["shift"], a["y_zp"],
                              a["lo"], a["hi"]), a)]


MUL = defop(
    "npu.mul", ("a", "b"), _infer_binary, _ref_mul,
    "MUL (b broadcasts): qmath.mul_ref. With an i16 operand or result: IMUL (an i8 operand "
    "with a zero point is first RESCALEd to i16).",
    attrs={**_AB, "mult": AttrDef("int"), "shift": AttrDef("int"), **_CLAMP, **_YB, **_COMMON},
    traits=("elementwise", "npu"))


# --- data movement -----------------------------------------------------------------------------
def _infer_concat(types: Sequence[TensorType | None], a: Attrs) -> list[TensorType]:
    xs = [_t(types, i) for i in range(len(types))]
    rank, ax = xs[0].rank, a["axis"]
    _need(0 <= ax < rank and all(t.rank == rank and t.dtype in ACTS for t in xs),
          f"npu.concat needs i8/i16 operands of one rank and 0 <= axis < rank, got {ax}")
    for key in ("x_zps", "mults", "shifts"):
        _need(len(a[key]) == len(xs), f"attr '{key}' needs {len(xs)} ints")
    return [TensorType(_y(a), xs[0].shape[:ax] + (sum(t.shape[ax] for t in xs),)
                       + xs[0].shape[ax + 1:])]


def _ref_concat(xs: Sequence[np.ndarray | None], a: Attrs) -> list[np.ndarray]:
    """The same numbers as qconcat (one definition of the rescaling)."""
    return ref_qconcat(xs, a)


CONCAT = defop(
    "npu.concat", ("xs*",), _infer_concat, _ref_concat,
    "RESCALE + COPY of every operand into its slice of the result (identity rescales skipped).",
    attrs={"axis": AttrDef("int"), "x_zps": AttrDef("ints"), "mults": AttrDef("ints"),
           "shifts": AttrDef("ints"), "y_zp": AttrDef("int", 0), **_YB, **_COMMON},
    traits=("npu",))

COPY = defop(
    "npu.copy", ("x",), lambda ts, a: [_t(ts, 0)], lambda xs, a: [np.asarray(xs[0])],
    "COPY into the memory order `layout` (the logical value is unchanged).",
    attrs=dict(_COMMON), traits=("npu",))


# --- the recurrent part of the LSTM ------------------------------------------------------------
def _infer_lstm(types: Sequence[TensorType | None], a: Attrs) -> list[TensorType]:
    tx, r, rqp, tab = (_t(types, i) for i in range(4))
    rv, rvqp = (list(types) + [None] * 8)[6:8]
    d, hs = LSTM_DIRECTIONS[a["direction"]], a["hidden_size"]
    _need(tx.dtype == DType.I32 and tx.rank == 3 and tx.shape[1] == 1
          and tx.shape[2] == d * 4 * hs, f"tx must be i32[T, 1, {d * 4 * hs}], got {tx}")
    k = hs
    if rv is not None or rvqp is not None:
        _need(rv is not None and rv.dtype == DType.I8 and rv.rank == 3
              and rv.shape[0] == d and rv.shape[2] == hs,
              f"rv (V of a factored R) must be i8[{d}, k, {hs}], got {rv}")
        k = rv.shape[1]  # type: ignore[union-attr]
        _need(rvqp is not None and rvqp.dtype == DType.I32 and rvqp.shape == (d, 3, k),
              f"rvqp must be i32[{d}, 3, {k}] (bias, mult, shift of V h), got {rvqp}")
    _need(r.dtype == DType.I8 and r.shape == (d, 4 * hs, k), f"r must be i8[{d}, {4 * hs}, "
          f"{k}], got {r}")
    _need(rqp.dtype == DType.I32 and rqp.shape == (d, 2, 4 * hs),
          f"rqp must be i32[{d}, 2, {4 * hs}] (h_mult, h_shift), got {rqp}")
    _need(tab.dtype == DType.I16 and tab.shape == (d, N_TABLES, 256),
          f"tables must be i16[{d}, {N_TABLES}, 256], got {tab}")
    t = tx.shape[0]
    return [TensorType(DType.I8, (t, d, 1, hs)), TensorType(DType.I8, (d, 1, hs)),
            TensorType(DType.I16, (d, 1, hs))]


def _ref_lstm(xs: Sequence[np.ndarray | None], a: Attrs) -> list[np.ndarray]:
    """The step loop of qlstm's reference (ocrc.compiler.ir.ops.qlstm) from the rescaled input
    projections tx = mul_round_shift(bias + W (x - x_zp), x_mult, x_shift)."""
    tx, r, rqp, tab, h0, c0, rv, rvqp = (list(xs) + [None] * 8)[:8]
    assert tx is not None and r is not None and rqp is not None and tab is not None
    d_n, hs = LSTM_DIRECTIONS[a["direction"]], a["hidden_size"]
    t_n = tx.shape[0]
    zh = a["h_zp"]
    y = np.zeros((t_n, d_n, 1, hs), np.int64)
    hn, cn = np.zeros((d_n, 1, hs), np.int64), np.zeros((d_n, 1, hs), np.int64)
    for d in range(d_n):
        reverse = a["direction"] == "reverse" or d == 1
        tables = np.asarray(tab[d], np.int64)
        txd = np.asarray(tx[:, :, d * 4 * hs:(d + 1) * 4 * hs], np.int64)
        r64 = np.asarray(r[d], np.float64)
        hm, hsh = np.asarray(rqp[d, 0], np.int64), np.asarray(rqp[d, 1], np.int64)
        h = np.asarray(h0[d], np.int64) if h0 is not None else np.full((1, hs), zh, np.int64)
        c = np.asarray(c0[d], np.int64) if c0 is not None else np.zeros((1, hs), np.int64)
        frac = a["cell_frac"][d]
        fac = factored_of(rv, rvqp[:, 1] if rvqp is not None else None,
                          rvqp[:, 2] if rvqp is not None else None, d)
        h, c = lstm_steps(txd, r64, hm, hsh, tables, h, c, zh, frac, a, d, reverse, y[:, d], fac)
        hn[d], cn[d] = h, c
    return [y.astype(np.int8), hn.astype(np.int8), cn.astype(np.int16)]


LSTM = defop(
    "npu.lstm", ("tx", "r", "rqp", "tables", "initial_h?", "initial_c?", "rv?", "rvqp?"),
    _infer_lstm, _ref_lstm,
    "The recurrent steps of qlstm (batch 1) from the input projections tx (an npu.matmul with "
    "out=i32): per step MATMUL h @ R, REQUANT, IADD>>8, 4 LUTs, IMUL/IADD for the int16 cell, "
    "RESCALE, LUT tanh(c), IMUL for h. With a factored R (rv = V, rvqp its MATMUL qp with "
    "bias 0) r is U and each step first computes t = MATMUL V h (out=i8), then U t.",
    attrs={"hidden_size": AttrDef("int"), "direction": AttrDef("str", "forward"),
           "h_zp": AttrDef("int", 0), "cell_frac": AttrDef("ints"), "cell_mult": AttrDef("ints"),
           "cell_shift": AttrDef("ints"), "out_mult": AttrDef("ints"),
           "out_shift": AttrDef("ints"), **_COMMON},
    num_outputs=3, traits=("mac", "recurrent", "npu"))
