"""`qlstm`: the fully integer LSTM of docs/quantization.md §4 (golden semantics for the VM).

Gate matmuls int8 x int8 -> int32, gate pre-activations requantised to int8 and looked up in
256-entry int16 (Q0.15) tables, the cell state int16 with `cell_frac` fraction bits, the hidden
state and Y int8. Layout and gate order (i, o, f, c) are ONNX's, like the float `lstm`. A
factored R (the float lstm's `rv`) adds one int8 matmul per step: t = requantize(V (h - h_zp))
to int8 (per row of V), then the gate accumulator is U t instead of R (h - h_zp).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ocrc.compiler.ir.opdef import AttrDef, Attrs, defop
from ocrc.compiler.ir.ops.quant import MAX_K
from ocrc.compiler.ir.ops.rnn import LSTM_DIRECTIONS
from ocrc.compiler.ir.types import DType, TensorType
from ocrc.runtime import qmath

N_TABLES = 5  # sigmoid(i), sigmoid(o), sigmoid(f), tanh(c~) at their pre-activation scales; tanh(c)
GATE_FRAC = 15  # gate values and tanh(c) are Q0.15 int16


def _infer_qlstm(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x, w, r, bias, xm, xsh, hm, hsh, tab, h0, c0, rv, vm, vsh = (list(types) + [None] * 14)[:14]
    assert x is not None and w is not None and r is not None
    if attrs["direction"] not in LSTM_DIRECTIONS:
        raise ValueError(f"direction {attrs['direction']!r} is not one of "
                         f"{', '.join(LSTM_DIRECTIONS)}")
    d, hs = LSTM_DIRECTIONS[attrs["direction"]], attrs["hidden_size"]
    if x.rank != 3 or x.dtype != DType.I8:
        raise ValueError(f"qlstm x must be i8[T, B, I], got {x}")
    t, bs, i = x.shape
    if max(i, hs) > MAX_K:
        raise ValueError(f"input size {i} / hidden size {hs} exceeds MAX_K = {MAX_K}")
    k = hs
    if rv is not None or vm is not None or vsh is not None:
        if rv is None or rv.rank != 3 or not 1 <= rv.shape[1] <= min(hs, MAX_K):
            raise ValueError(f"qlstm operand 'rv' (V of a factored R) must be i8[{d}, k, {hs}] "
                             f"with 1 <= k <= {min(hs, MAX_K)}, got {rv}")
        k = rv.shape[1]
    want = {"w": (w, DType.I8, (d, 4 * hs, i)), "r": (r, DType.I8, (d, 4 * hs, k)),
            "bias": (bias, DType.I32, (d, 4 * hs)), "x_mult": (xm, DType.I32, (d, 4 * hs)),
            "x_shift": (xsh, DType.I32, (d, 4 * hs)), "h_mult": (hm, DType.I32, (d, 4 * hs)),
            "h_shift": (hsh, DType.I32, (d, 4 * hs)),
            "tables": (tab, DType.I16, (d, N_TABLES, 256)),
            "initial_h": (h0, DType.I8, (d, bs, hs)), "initial_c": (c0, DType.I16, (d, bs, hs))}
    if rv is not None:
        want.update({"rv": (rv, DType.I8, (d, k, hs)), "rv_mult": (vm, DType.I32, (d, k)),
                     "rv_shift": (vsh, DType.I32, (d, k))})
    for name, (ty, dt, shape) in want.items():
        if ty is None and name in ("initial_h", "initial_c"):
            continue
        if ty is None or ty.dtype != dt or ty.shape != shape:
            raise ValueError(f"qlstm operand '{name}' must be {dt.value}{list(shape)}, got {ty}")
    for key in ("cell_frac", "cell_mult", "cell_shift", "out_mult", "out_shift"):
        if len(attrs[key]) != d:
            raise ValueError(f"attr '{key}' needs {d} ints (one per direction), "
                             f"got {list(attrs[key])}")
    if not all(1 <= f <= GATE_FRAC for f in attrs["cell_frac"]):
        raise ValueError(f"cell_frac must be in [1, {GATE_FRAC}], got {list(attrs['cell_frac'])}")
    for zp in ("x_zp", "h_zp"):
        if not qmath.INT8_MIN <= attrs[zp] <= qmath.INT8_MAX:
            raise ValueError(f"zero point {zp} = {attrs[zp]} is outside [-128, 127]")
    return [TensorType(DType.I8, (t, d, bs, hs)), TensorType(DType.I8, (d, bs, hs)),
            TensorType(DType.I16, (d, bs, hs))]


def _matmul_exact(a: np.ndarray, w64: np.ndarray) -> np.ndarray:
    """int64 a[..., K] @ w.T for int8 w given as float64: |a| <= 255, |w| <= 127 and K <= MAX_K
    keep every partial sum below 2**30, so float64 (53-bit) accumulation is exact in any order."""
    return np.rint(a.astype(np.float64) @ w64.T).astype(np.int64)


def lstm_steps(tx: np.ndarray, r64: np.ndarray, hmult: np.ndarray, hshift: np.ndarray,
               tables: np.ndarray, h: np.ndarray, c: np.ndarray, zh: int, frac: int, a: Attrs,
               d: int, reverse: bool, y: np.ndarray,
               factored: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """The recurrent steps of one direction, the one definition of the integer LSTM cell
    (docs/quantization.md) that qlstm and the lowered npu.lstm both run: per step the
    recurrent GEMM and its rescale, the saturated int8 gate pre-activation, the gate tables
    (Q0.15), the int16 cell update, tanh(c) by table and the int8 hidden state. tx: the rescaled
    input projections [T, B, 4H]; writes y[step] = h; returns the final (h, c). `factored`
    = (V as float64 [k, H], mult [k], shift [k]) when r64 holds U [4H, k]: the recurrent GEMM
    is then U t with t = requantize(V (h - zh), mult, shift) the int8 [B, k] intermediate."""
    hs = h.shape[-1]
    i16 = (qmath.INT16_MIN, qmath.INT16_MAX)
    gate_of_row = np.repeat(np.arange(4), hs)  # row g of [4H] belongs to gate g // H
    for step in (range(tx.shape[0] - 1, -1, -1) if reverse else range(tx.shape[0])):
        hz = h - zh
        if factored is not None:
            v64, vmult, vshift = factored
            hz = qmath.requantize(_matmul_exact(hz, v64), vmult, vshift, 0, qmath.INT8_MIN,
                                  qmath.INT8_MAX)
        th = qmath.mul_round_shift(_matmul_exact(hz, r64), hmult, hshift)
        p = qmath.clamp(qmath.mul_round_shift(tx[step] + th, 1, qmath.ADD_FRAC_BITS),
                        qmath.INT8_MIN, qmath.INT8_MAX)
        g = tables[gate_of_row, p + 128]  # [B, 4H] Q0.15 gate values
        gi, go, gf, gc = (g[:, k * hs:(k + 1) * hs] for k in range(4))
        c = qmath.add16_ref(qmath.mul16_ref(gf, c, 1, GATE_FRAC, *i16),
                            qmath.mul16_ref(gi, gc, 1, 2 * GATE_FRAC - frac, *i16), *i16)
        u = qmath.rescale_ref(c, 0, a["cell_mult"][d], a["cell_shift"][d], 0,
                              qmath.INT8_MIN, qmath.INT8_MAX)
        h = qmath.rescale_ref(go * tables[N_TABLES - 1, u + 128], 0, a["out_mult"][d],
                              a["out_shift"][d], zh, qmath.INT8_MIN, qmath.INT8_MAX)
        y[step] = h
    return h, c


def factored_of(rv: np.ndarray | None, vm: np.ndarray | None, vsh: np.ndarray | None,
                d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """lstm_steps' `factored` argument of direction d (None without a factored R)."""
    if rv is None or vm is None or vsh is None:
        return None
    return (np.asarray(rv[d], np.float64), np.asarray(vm[d], np.int64),
            np.asarray(vsh[d], np.int64))


def _ref_qlstm(xs: Sequence[np.ndarray | None], a: Attrs) -> list[np.ndarray]:
    x, w, r, bias, xm, xsh, hm, hsh, tab, h0, c0, rv, vm, vsh = (list(xs) + [None] * 14)[:14]
    assert x is not None and w is not None and r is not None and bias is not None
    assert xm is not None and xsh is not None and hm is not None and hsh is not None
    assert tab is not None
    d_n, hs = LSTM_DIRECTIONS[a["direction"]], a["hidden_size"]
    t_n, bs, _ = x.shape
    zx, zh = a["x_zp"], a["h_zp"]
    y = np.zeros((t_n, d_n, bs, hs), np.int64)
    hn = np.zeros((d_n, bs, hs), np.int64)
    cn = np.zeros((d_n, bs, hs), np.int64)
    x64 = np.asarray(x, np.int64)
    for d in range(d_n):
        reverse = a["direction"] == "reverse" or d == 1
        tables = np.asarray(tab[d], np.int64)
        # Input projection of every step at once: ax = bias + W (x - zx), then its rescale.
        ax = qmath.dense_ref(x64, w[d], bias[d], None, None, zx, 0, 0, 0, requant=False)
        tx = qmath.mul_round_shift(ax, np.asarray(xm[d], np.int64), np.asarray(xsh[d], np.int64))
        r64 = np.asarray(r[d], np.float64)
        hmult, hshift = np.asarray(hm[d], np.int64), np.asarray(hsh[d], np.int64)
        h = np.asarray(h0[d], np.int64) if h0 is not None else np.full((bs, hs), zh, np.int64)
        c = np.asarray(c0[d], np.int64) if c0 is not None else np.zeros((bs, hs), np.int64)
        frac = a["cell_frac"][d]
        h, c = lstm_steps(tx, r64, hmult, hshift, tables, h, c, zh, frac, a, d, reverse,
                          y[:, d], factored_of(rv, vm, vsh, d))
        hn[d], cn[d] = h, c
    return [y.astype(np.int8), hn.astype(np.int8), cn.astype(np.int16)]


QLSTM = defop(
    "qlstm",
    ("x", "w", "r", "bias", "x_mult", "x_shift", "h_mult", "h_shift", "tables", "initial_h?",
     "initial_c?", "rv?", "rv_mult?", "rv_shift?"),
    _infer_qlstm, _ref_qlstm,
    "Integer LSTM (docs/quantization.md §4): int8 x/W/R/h, int32 gate accumulators rescaled "
    "to int8 pre-activations, Q0.15 int16 gate tables [D, 5, 256], int16 cell with cell_frac "
    "fraction bits; results Y i8[T, D, B, H], Y_h i8[D, B, H], Y_c i16[D, B, H]. With a "
    "factored R (rv = V i8[D, k, H], rv_mult/rv_shift i32[D, k]) r is U i8[D, 4H, k] and each "
    "step's recurrent accumulator is U requantize(V (h - h_zp), rv_mult, rv_shift) (int8).",
    attrs={"hidden_size": AttrDef("int"), "direction": AttrDef("str", "forward"),
           "x_zp": AttrDef("int", 0), "h_zp": AttrDef("int", 0),
           "cell_frac": AttrDef("ints"), "cell_mult": AttrDef("ints"),
           "cell_shift": AttrDef("ints"), "out_mult": AttrDef("ints"),
           "out_shift": AttrDef("ints")},
    num_outputs=3, traits=("mac", "recurrent", "quantized"),
)
