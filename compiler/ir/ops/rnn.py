"""Recurrent ops: `lstm` with ONNX semantics (one op; the backend lowers it late).

Layout is ONNX's default (layout=0): x [T, B, I], W [D, 4H, I], R [D, 4H, H], B [D, 8H]
(Wb then Rb), initial states [D, B, H], peepholes P [D, 3H]; gate order i, o, f, c; the
activations are sigmoid/tanh/tanh. D is 2 for "bidirectional" (forward then reverse).
Results: Y [T, D, B, H], Y_h and Y_c [D, B, H]. An optional last operand `rv` = V [D, k, H]
factors the recurrence (the lowrank pass): R is then U [D, 4H, k] and each step's recurrent
term is U (V h) instead of R h (ONNX's LSTM has no such form; the export multiplies U V out).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ocrc.compiler.ir.opdef import AttrDef, Attrs, defop
from ocrc.compiler.ir.ops.elementwise import ACTIVATIONS
from ocrc.compiler.ir.types import TensorType

LSTM_DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}


def _infer_lstm(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x, w, r, b, h0, c0, p, rv = (list(types) + [None] * 8)[:8]
    assert x is not None and w is not None and r is not None
    if attrs["direction"] not in LSTM_DIRECTIONS:
        raise ValueError(f"direction {attrs['direction']!r} is not one of "
                         f"{', '.join(LSTM_DIRECTIONS)}")
    d, hs = LSTM_DIRECTIONS[attrs["direction"]], attrs["hidden_size"]
    if x.rank != 3:
        raise ValueError(f"lstm x must be [T, B, I], got {x}")
    t, bs, i = x.shape
    k = hs
    if rv is not None:
        if rv.rank != 3 or rv.shape[0] != d or rv.shape[2] != hs or not 1 <= rv.shape[1] <= hs:
            raise ValueError(f"lstm operand 'rv' (V of a factored R) must be [{d}, k, {hs}] "
                             f"with 1 <= k <= {hs}, got {list(rv.shape)}")
        k = rv.shape[1]
    want = {"w": (w, (d, 4 * hs, i)), "r": (r, (d, 4 * hs, k)), "b": (b, (d, 8 * hs)),
            "initial_h": (h0, (d, bs, hs)), "initial_c": (c0, (d, bs, hs)),
            "p": (p, (d, 3 * hs))}
    for name, (ty, shape) in want.items():
        if ty is not None and ty.shape != shape:
            what = " (U of a factored R: V has k rows)" if name == "r" and rv is not None else ""
            raise ValueError(f"lstm operand '{name}'{what} must be {list(shape)}, "
                             f"got {list(ty.shape)}")
    state = TensorType(x.dtype, (d, bs, hs))
    return [TensorType(x.dtype, (t, d, bs, hs)), state, state]


def recurrent_term(h: np.ndarray, r: np.ndarray, rv: np.ndarray | None) -> np.ndarray:
    """One step's recurrent projection of one direction: h R^T, or (h V^T) U^T when R is
    factored (r = U [4H, k], rv = V [k, H])."""
    return h @ r.T if rv is None else (h @ rv.T) @ r.T


def _ref_lstm(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x, w, r, b, h0, c0, p, rv = (list(xs) + [None] * 8)[:8]
    assert x is not None and w is not None and r is not None
    sigmoid = ACTIVATIONS["sigmoid"].fn
    d, hs = LSTM_DIRECTIONS[attrs["direction"]], attrs["hidden_size"]
    t, bs, _ = x.shape
    y = np.zeros((t, d, bs, hs), x.dtype)
    hn = np.zeros((d, bs, hs), x.dtype)
    cn = np.zeros((d, bs, hs), x.dtype)
    for k in range(d):
        reverse = attrs["direction"] == "reverse" or k == 1
        xw = np.matmul(x, w[k].T)  # [T, B, 4H]: the input projection of every step at once
        if b is not None:
            xw = xw + b[k, :4 * hs] + b[k, 4 * hs:]
        h = h0[k] if h0 is not None else np.zeros((bs, hs), x.dtype)
        c = c0[k] if c0 is not None else np.zeros((bs, hs), x.dtype)
        pi, po, pf = (p[k, :hs], p[k, hs:2 * hs], p[k, 2 * hs:]) if p is not None else (0, 0, 0)
        for step in (range(t - 1, -1, -1) if reverse else range(t)):
            gates = xw[step] + recurrent_term(h, r[k], rv[k] if rv is not None else None)
            gi, go, gf, gc = (gates[:, j * hs:(j + 1) * hs] for j in range(4))
            i_t = sigmoid(gi + pi * c)
            f_t = sigmoid(gf + pf * c)
            c = (f_t * c + i_t * np.tanh(gc)).astype(x.dtype)
            h = (sigmoid(go + po * c) * np.tanh(c)).astype(x.dtype)
            y[step, k] = h
        hn[k], cn[k] = h, c
    return [y, hn, cn]


LSTM = defop(
    "lstm", ("x", "w", "r", "b?", "initial_h?", "initial_c?", "p?", "rv?"), _infer_lstm,
    _ref_lstm,
    "ONNX LSTM (layout 0, gates i o f c, sigmoid/tanh/tanh, optional peepholes): results "
    "Y [T, D, B, H], Y_h, Y_c [D, B, H]; direction forward, reverse or bidirectional. With "
    "rv = V [D, k, H] the recurrence is factored: r is U [D, 4H, k] and each step adds "
    "U (V h) instead of R h.",
    attrs={"hidden_size": AttrDef("int"), "direction": AttrDef("str", "forward")},
    num_outputs=3, traits=("mac", "recurrent"),
)
