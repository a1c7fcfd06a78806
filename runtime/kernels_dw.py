"""numba kernel of the depthwise CONV (one input and one output channel per group, int8 input):
one output row at a time, tap by tap, each tap a loop over the row's columns with an inner
loop over their contiguous channels (HWC), instead of kernels.conv's one group at a time (an
im2col, a 1-column product and a strided write-out per channel: ~10x slower on the depthwise
layers of PP-OCR).

It computes the very integers of kernels.conv's int8 loop (acc = bias + sum (x - zx) * w in
int32, padding contributing (zx - zx) * w = 0, then the same _write_out arithmetic) but in
another order, so the VM takes it only when the output overlaps none of the operands (input,
weights, qp block): then the order cannot change a bit (dw_applies).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from ocrc.runtime import isa
from ocrc.runtime.cycles import conv_out
from ocrc.runtime.isa import DType, Sparse
from ocrc.runtime.kernels import (
    ST_NOT_2_4,
    ST_OK,
    U,
    _mac_cycles,
    _out_form,
    _qp_terms_v,
    drop_stale_cache,
)
from ocrc.runtime.qmath import requantize


@njit(cache=True)
def _disjoint(a0, a1, b0, b1):  # type: ignore[no-untyped-def]
    return a1 <= b0 or b1 <= a0


@njit(cache=True)
def dw_applies(f):  # type: ignore[no-untyped-def]
    """True when CONV f is depthwise with int8 input and its output bytes overlap none of its
    operands' bytes (so conv_dw computes exactly what kernels.conv does)."""
    g = f[isa.C_GROUPS]
    if f[isa.C_IN_DT] != DType.I8 or f[isa.C_CIN] != g or f[isa.C_COUT] != g:
        return False
    ho = conv_out(f[isa.C_H], f[isa.C_PT], f[isa.C_PB], f[isa.C_KH], f[isa.C_SH], f[isa.C_DH])
    wo = conv_out(f[isa.C_W], f[isa.C_PL], f[isa.C_PR], f[isa.C_KW], f[isa.C_SW], f[isa.C_DW])
    d0 = f[isa.C_DST]
    d1 = d0 + ho * wo * g * _out_form(f)[0]
    src, wgt, qp = f[isa.C_SRC], f[isa.C_WGT], f[isa.C_QP]
    return (_disjoint(d0, d1, src, src + f[isa.C_H] * f[isa.C_W] * g)
            and _disjoint(d0, d1, wgt, wgt + g * f[isa.C_KH] * f[isa.C_KW])
            and _disjoint(d0, d1, qp, qp + 12 * g))


@njit(cache=True)
def conv_dw(sram, f, p):  # type: ignore[no-untyped-def]
    """CONV for which dw_applies(f): returns (status, cycles) as kernels.conv does."""
    s8 = sram.view(np.int8)
    s16 = sram.view(np.int16)
    s32 = sram.view(np.int32)
    h, w, c = f[isa.C_H], f[isa.C_W], f[isa.C_CIN]
    kh, kw, sh, sw, dh, dw = (f[isa.C_KH], f[isa.C_KW], f[isa.C_SH], f[isa.C_SW], f[isa.C_DH],
                              f[isa.C_DW])
    pt, pl = f[isa.C_PT], f[isa.C_PL]
    ho = conv_out(h, pt, f[isa.C_PB], kh, sh, dh)
    wo = conv_out(w, pl, f[isa.C_PR], kw, sw, dw)
    kk = kh * kw
    src, wgt, zx, q, dst = f[isa.C_SRC], f[isa.C_WGT], f[isa.C_ZX], f[isa.C_QP] // 4, f[isa.C_DST]
    out_i32, accum = f[isa.C_OUT] == DType.I32, f[isa.C_ACC] != 0
    osz, lo, hi = _out_form(f)
    zy = f[isa.C_ZY]
    # weights tap-major (wt[t, ch]) so that the inner loop runs over contiguous channels
    wt = np.empty((kk, c), np.int32)
    for ch in range(c):
        for t in range(kk):
            wt[t, ch] = s8[U(wgt + ch * kk + t)]
    off = np.empty(c, np.int64)
    m64 = np.empty(c, np.int64)
    n64 = np.empty(c, np.int64)
    s64 = sram.view(np.int64)
    for ch in range(c):
        bias, m64[ch], n64[ch] = _qp_terms_v(s32, s64, q, c, ch, False)
        off[ch] = 0 if accum else bias
    acc = np.empty(wo * c, np.int32)  # one output row; taps outer, so the inner loops are long
    for oy in range(ho):
        acc[:] = 0
        for ky in range(kh):
            iy = oy * sh - pt + ky * dh
            if iy < 0 or iy >= h:
                continue
            for kx in range(kw):
                # the output columns whose input column ix = ox*sw - pl + kx*dw is in [0, w)
                ox0 = max(0, -((kx * dw - pl) // sw))
                ox1 = min(wo, (w - 1 + pl - kx * dw) // sw + 1)
                t = ky * kw + kx
                for ox in range(ox0, ox1):
                    b = src + (iy * w + ox * sw - pl + kx * dw) * c
                    a = ox * c
                    for ch in range(c):
                        acc[U(a + ch)] += (np.int32(s8[U(b + ch)]) - np.int32(zx)) * wt[t, ch]
        for ox in range(wo):
            a = ox * c
            o = (oy * wo + ox) * c
            if out_i32:
                b = dst // 4 + o
                for ch in range(c):
                    v = np.int64(acc[U(a + ch)]) + off[ch]
                    if accum:
                        v += np.int64(s32[U(b + ch)])
                    s32[U(b + ch)] = np.int32(((v + 0x80000000) & 0xFFFFFFFF) - 0x80000000)
            elif osz == 2:
                b = dst // 2 + o
                for ch in range(c):
                    s16[U(b + ch)] = np.int16(requantize(np.int64(acc[U(a + ch)]) + off[ch],
                                                         m64[ch], n64[ch], zy, lo, hi))
            else:
                b = dst + o
                for ch in range(c):
                    s8[U(b + ch)] = np.int8(requantize(np.int64(acc[U(a + ch)]) + off[ch],
                                                       m64[ch], n64[ch], zy, lo, hi))
    m = ho * wo
    if f[isa.C_SPARSE] == Sparse.DENSE:  # every group costs the same
        cyc, st = _mac_cycles(s8[wgt:wgt + kk].reshape(1, kk), f, p, m)
        return ST_OK, cyc * c
    cycles = 0
    status = ST_OK
    for g in range(c):
        cyc, st = _mac_cycles(s8[wgt + g * kk:wgt + (g + 1) * kk].reshape(1, kk), f, p, m)
        cycles += cyc
        if st != 0:
            status = ST_NOT_2_4
    return status, cycles


drop_stale_cache(globals())
