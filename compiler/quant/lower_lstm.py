"""float `lstm` -> `qlstm`: the constants of the integer LSTM (docs/quantization.md §4).

Per direction: per-row symmetric int8 W and R, the summed ONNX biases at the input
accumulator's scale, the (mult, shift) pairs that bring both gate accumulators to the int8
pre-activation scale of their gate (with 2**8 extra fraction bits), the five Q0.15 tables, the
cell format and the output rescale. Gate and cell ranges come from the calibration's LstmStats.
A factored R (U V, the float lstm's `rv`): V per-row int8 and the int8 intermediate t = V h at
a per-row scale s_t (calibrated max |V h| / 127; rv_mult/rv_shift bring V (h - h_zp) there),
U's columns scaled by s_t before its per-row int8 rounding (so U t needs one rescale per row,
h_mult/h_shift, like R h).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ocrc.compiler.ir.graph import Node
from ocrc.compiler.ir.ops.qlstm import GATE_FRAC, N_TABLES
from ocrc.compiler.ir.ops.rnn import LSTM_DIRECTIONS
from ocrc.compiler.quant.qparams import (ADD_FRAC, QuantizeError, gate_table, multiplier,
                                         multipliers, quantize_bias, quantize_weights,
                                         sigmoid64)
from ocrc.runtime import qmath

if TYPE_CHECKING:
    from ocrc.compiler.quant.quantizer import _Q

SIGMOID_RANGE = 8.0  # beyond +-8 sigmoid is within 2**-11 of 0 or 1
TANH_RANGE = 4.0  # beyond +-4 tanh is within 2**-10 of +-1
CELL_MARGIN = 1.5  # headroom of the int16 cell format over the calibrated max |c|
MIN_RANGE = 1e-3


def cell_frac(cell_absmax: float) -> int:
    """Fraction bits f of the int16 cell: CELL_MARGIN * max|c| fits in 2**(15 - f)."""
    top = max(0, math.ceil(math.log2(max(CELL_MARGIN * cell_absmax, 1e-9))))
    return int(min(max(GATE_FRAC - top, 1), GATE_FRAC))


def emit_qlstm(st: _Q, n: Node) -> None:
    x, w_v, r_v, b_v, h0_v, c0_v, p_v, rv_v = (list(n.inputs) + [None] * 8)[:8]
    assert x is not None
    if p_v is not None:
        raise QuantizeError(f"{n.label()}: peephole LSTMs are not supported in int8")
    w, r = st.const(w_v, n, "weight W"), st.const(r_v, n, "weight R")
    v = st.const(rv_v, n, "weight V of R = U V") if rv_v is not None else None
    b, h0, c0 = (st.const(b_v, n, "bias B"), st.const(h0_v, n, "initial_h"),
                 st.const(c0_v, n, "initial_c"))
    assert w is not None and r is not None
    y_v, yh_v, yc_v = n.outputs
    stats = st.table.lstm.get(y_v.name)
    if stats is None:
        raise QuantizeError(f"{n.label()}: the LSTM's internals were not calibrated")
    if v is not None and (stats.vh_absmax is None or stats.vh_absmax.shape != v.shape[:2]):
        raise QuantizeError(f"{n.label()}: the factored R's V h was not calibrated (calibrate "
                            f"the graph with the factored LSTM)")
    users = st.g.users()
    if users.get(yc_v) or yc_v in st.outputs:
        raise QuantizeError(f"{n.label()}: the cell state output Y_c cannot stay int16 here")
    d_n, hs = LSTM_DIRECTIONS[n.attr("direction")], n.attr("hidden_size")
    qx, qpx = st.narrow(x, n)  # the integer LSTM reads int8 (an int16 x is rescaled)
    qph = st.qp(y_v)
    where = n.label()

    wq = np.zeros(w.shape, np.int8)
    rq = np.zeros(r.shape, np.int8)
    bias = np.zeros((d_n, 4 * hs), np.int32)
    xm, xs, hm, hsh = (np.zeros((d_n, 4 * hs), np.int32) for _ in range(4))
    tables = np.zeros((d_n, N_TABLES, 256), np.int16)
    fracs, cm, cs, om, osh = [], [], [], [], []
    sws, srs = np.zeros((d_n, 4 * hs)), np.zeros((d_n, 4 * hs))
    if v is not None:
        vq = np.zeros(v.shape, np.int8)
        vm, vsh = (np.zeros(v.shape[:2], np.int32) for _ in range(2))
        svs = np.zeros(v.shape[:2])
    for d in range(d_n):
        wq[d], sw = quantize_weights(w[d], axis=0)
        if v is not None:
            assert stats.vh_absmax is not None
            st_ = np.maximum(stats.vh_absmax[d], MIN_RANGE) / 127  # scale of t = V h, per row
            vq[d], svs[d] = quantize_weights(v[d], axis=0)
            vm[d], vsh[d] = multipliers(qph.scale * svs[d] / st_, where)
            rq[d], sr = quantize_weights(r[d] * st_[None, :], axis=0)  # U diag(s_t): t unitless
            r_in = 1.0
        else:
            rq[d], sr = quantize_weights(r[d], axis=0)
            r_in = qph.scale
        sws[d], srs[d] = sw, sr
        bsum = (b[d, :4 * hs] + b[d, 4 * hs:]).astype(np.float64) if b is not None else None
        bias[d] = quantize_bias(bsum, qpx.scale * sw, 4 * hs)
        caps = (SIGMOID_RANGE,) * 3 + (TANH_RANGE,)
        sp = np.array([max(min(stats.gate_absmax[d, k], caps[k]), MIN_RANGE) / 127
                       for k in range(4)])
        sp_row = np.repeat(sp, hs)
        xm[d], xs[d] = multipliers(qpx.scale * sw / sp_row * 2**ADD_FRAC, where)
        hm[d], hsh[d] = multipliers(r_in * sr / sp_row * 2**ADD_FRAC, where)
        for k in range(3):
            tables[d, k] = gate_table(sigmoid64, sp[k])
        tables[d, 3] = gate_table(np.tanh, sp[3])
        su = max(min(stats.cell_absmax[d], TANH_RANGE), MIN_RANGE) / 127
        tables[d, 4] = gate_table(np.tanh, su)
        f = cell_frac(stats.cell_absmax[d])
        fracs.append(f)
        m, s = multiplier(2.0**-f / su, where)
        cm.append(m)
        cs.append(s)
        m, s = multiplier(2.0**-(2 * GATE_FRAC) / qph.scale, where)
        om.append(m)
        osh.append(s)
    st.res.weights[f"{y_v.name}.W"] = (wq, sws, 1)
    if v is None:
        st.res.weights[f"{y_v.name}.R"] = (rq, srs, 1)
    else:  # U in units of t (its scales include s_t); V per row
        st.res.weights[f"{y_v.name}.U"] = (rq, srs, 1)
        st.res.weights[f"{y_v.name}.V"] = (vq, svs, 1)
    b_ = st.b
    ops = [b_.const(a, f"{y_v.name}.{k}") for k, a in
           (("w", wq), ("r", rq), ("bias", bias), ("x_mult", xm), ("x_shift", xs),
            ("h_mult", hm), ("h_shift", hsh), ("tables", tables))]
    if h0 is not None:
        ops.append(b_.const(qph.quantize(h0), f"{y_v.name}.h0"))
    elif c0 is not None:
        ops.append(None)
    if c0 is not None:
        c0q = np.stack([np.clip(np.rint(c0[d] * 2.0**fracs[d]), qmath.INT16_MIN,
                                qmath.INT16_MAX) for d in range(d_n)]).astype(np.int16)
        ops.append(b_.const(c0q, f"{y_v.name}.c0"))
    if v is not None:
        ops += [None] * (10 - len(ops))  # initial_h, initial_c absent
        ops += [b_.const(vq, f"{y_v.name}.rv"), b_.const(vm, f"{y_v.name}.rv_mult"),
                b_.const(vsh, f"{y_v.name}.rv_shift")]
    y, yh, _ = b_.emit("qlstm", [qx] + ops,
                       {"hidden_size": hs, "direction": n.attr("direction"), "x_zp": qpx.zp,
                        "h_zp": qph.zp, "cell_frac": fracs, "cell_mult": cm, "cell_shift": cs,
                        "out_mult": om, "out_shift": osh}, n.name)
    st.bind(y_v, y, qph, n.name)
    st.bind(yh_v, yh, qph, n.name)
