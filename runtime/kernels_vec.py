"""numba kernels of the vector unit: requantise, rescale, add, mul, table lookup, pooling, the
int16 LSTM operations, strided copy and fill. Each loads its operands as int64 vectors, applies
the qmath reference function of the op (the same function the golden interpreter calls) and
stores the result, already clamped into the output type's range (verify.py checks lo/hi).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from ocrc.runtime import isa
from ocrc.runtime.cycles import conv_out
from ocrc.runtime.isa import Opcode, PoolMode
from ocrc.runtime.kernels import copy_bytes
from ocrc.runtime.qmath import (
    add16_ref,
    add_ref,
    add_shift_ref,
    clamp,
    lut_ref,
    mul16_ref,
    mul_ref,
    mul_round_shift,
    requantize,
    rescale_ref,
)


@njit(cache=True)
def ld(sram, addr, count, dt):  # type: ignore[no-untyped-def]
    """count elements of type dt (DType) at byte address addr, as int64."""
    if dt == 0:
        return sram.view(np.int8)[addr:addr + count].astype(np.int64)
    if dt == 1:
        b = addr // 2
        return sram.view(np.int16)[b:b + count].astype(np.int64)
    b = addr // 4
    return sram.view(np.int32)[b:b + count].astype(np.int64)


@njit(cache=True)
def st(sram, addr, vals, dt):  # type: ignore[no-untyped-def]
    """Store int64 values (already in range) as dt at byte address addr."""
    n = vals.shape[0]
    if dt == 0:
        sram.view(np.int8)[addr:addr + n] = vals.astype(np.int8)
    elif dt == 1:
        b = addr // 2
        sram.view(np.int16)[b:b + n] = vals.astype(np.int16)
    else:
        b = addr // 4
        sram.view(np.int32)[b:b + n] = vals.astype(np.int32)


@njit(cache=True)
def ld_b(sram, addr, count, period, dt):  # type: ignore[no-untyped-def]
    """The b operand: element i is b[i mod period] (broadcast)."""
    v = ld(sram, addr, period, dt)
    if period == count:
        return v
    return v[np.arange(count) % period]


@njit(cache=True)
def _qp(sram, qp, n):  # type: ignore[no-untyped-def]
    """(bias, mult, shift) int64 vectors of n channels at qp; shifts clamped to [1, 62]."""
    q = qp // 4
    s32 = sram.view(np.int32)
    shift = np.minimum(np.maximum(s32[q + 2 * n:q + 3 * n].astype(np.int64), 1), 62)
    return s32[q:q + n].astype(np.int64), s32[q + n:q + 2 * n].astype(np.int64), shift


@njit(cache=True)
def _pool(sram, f):  # type: ignore[no-untyped-def]
    s8 = sram.view(np.int8)
    h, w, c, kh, kw = f[isa.C_H], f[isa.C_W], f[isa.C_C], f[isa.C_KH], f[isa.C_KW]
    sh, sw, pt, pl = f[isa.C_SH], f[isa.C_SW], f[isa.C_PT], f[isa.C_PL]
    ho = conv_out(h, pt, f[isa.C_PB], kh, sh, 1)
    wo = conv_out(w, pl, f[isa.C_PR], kw, sw, 1)
    src, dst, mode = f[isa.C_SRC], f[isa.C_DST], f[isa.C_MODE]
    zx, zy, lo, hi = f[isa.C_ZX], f[isa.C_ZY], f[isa.C_LO], f[isa.C_HI]
    area = kh * kw
    if mode != PoolMode.MAX:
        q = f[isa.C_QP] // 4
        s32 = sram.view(np.int32)
        mult = s32[q:q + area + 1].astype(np.int64)
        shift = np.minimum(np.maximum(s32[q + area + 1:q + 2 * area + 2].astype(np.int64), 1),
                           62)
    acc = np.empty(c, np.int64)
    for oy in range(ho):
        for ox in range(wo):
            acc[:] = -128 if mode == PoolMode.MAX else 0
            cnt = 0
            for ky in range(kh):
                iy = oy * sh - pt + ky
                if iy < 0 or iy >= h:
                    continue
                for kx in range(kw):
                    ix = ox * sw - pl + kx
                    if ix < 0 or ix >= w:
                        continue
                    cnt += 1
                    b = src + (iy * w + ix) * c
                    for ch in range(c):
                        v = np.int64(s8[b + ch])
                        if mode == PoolMode.MAX:
                            acc[ch] = max(acc[ch], v)
                        else:
                            acc[ch] += v - zx
            if mode == PoolMode.AVG_PAD:
                cnt = area
            o = dst + (oy * wo + ox) * c
            for ch in range(c):
                if mode == PoolMode.MAX:
                    y = clamp(acc[ch], lo, hi)
                else:
                    y = clamp(mul_round_shift(acc[ch], mult[cnt], shift[cnt]) + zy, lo, hi)
                s8[o + ch] = np.int8(y)


@njit(cache=True)
def _copy(sram, f):  # type: ignore[no-untyped-def]
    esz = 1 << f[isa.C_ESIZE]
    n0 = f[isa.C_N0]
    ss0, ds0 = f[isa.C_SS0], f[isa.C_DS0]
    for i2 in range(f[isa.C_N2]):
        for i1 in range(f[isa.C_N1]):
            s = f[isa.C_SRC] + i2 * f[isa.C_SS2] + i1 * f[isa.C_SS1]
            d = f[isa.C_DST] + i2 * f[isa.C_DS2] + i1 * f[isa.C_DS1]
            if ss0 == esz and ds0 == esz:
                copy_bytes(sram, d, sram, s, n0 * esz)
            else:
                for i0 in range(n0):
                    for e in range(esz):
                        sram[d + i0 * ds0 + e] = sram[s + i0 * ss0 + e]


@njit(cache=True)
def vector(sram, f):  # type: ignore[no-untyped-def]
    """Execute one vector-unit instruction (field row f) on SRAM."""
    op = f[isa.C_OPCODE]
    cnt = f[isa.C_COUNT]
    if op == Opcode.REQUANT:
        ch = f[isa.C_CHAN]
        bias, mult, shift = _qp(sram, f[isa.C_QP], ch)
        c = np.arange(cnt) % ch
        x = ld(sram, f[isa.C_SRC], cnt, 2)
        lo, hi = f[isa.C_LO], f[isa.C_HI]
        if f[isa.C_OUT_DT] == 2:
            lo, hi = -(2**31), 2**31 - 1
        y = requantize(x + bias[c], mult[c], shift[c], f[isa.C_ZY], lo, hi)
        st(sram, f[isa.C_DST], y, f[isa.C_OUT_DT])
    elif op == Opcode.RESCALE:
        x = ld(sram, f[isa.C_SRC], cnt, f[isa.C_IN_DT])
        y = rescale_ref(x, f[isa.C_ZX], f[isa.C_MULT], f[isa.C_SHIFT], f[isa.C_ZY], f[isa.C_LO],
                        f[isa.C_HI])
        st(sram, f[isa.C_DST], y, f[isa.C_OUT_DT])
    elif op == Opcode.ADD:
        xa = ld(sram, f[isa.C_A], cnt, 0)
        xb = ld_b(sram, f[isa.C_B], cnt, f[isa.C_B_PERIOD], 0)
        y = add_ref(xa, f[isa.C_ZA], f[isa.C_MA], f[isa.C_SA], xb, f[isa.C_ZB], f[isa.C_MB],
                    f[isa.C_SB], f[isa.C_ZY], f[isa.C_LO], f[isa.C_HI])
        st(sram, f[isa.C_DST], y, 0)
    elif op == Opcode.MUL:
        xa = ld(sram, f[isa.C_A], cnt, 0)
        xb = ld_b(sram, f[isa.C_B], cnt, f[isa.C_B_PERIOD], 0)
        y = mul_ref(xa, f[isa.C_ZA], xb, f[isa.C_ZB], f[isa.C_MULT], f[isa.C_SHIFT],
                    f[isa.C_ZY], f[isa.C_LO], f[isa.C_HI])
        st(sram, f[isa.C_DST], y, 0)
    elif op == Opcode.LUT:
        table = ld(sram, f[isa.C_TABLE], 256, f[isa.C_OUT_DT])
        st(sram, f[isa.C_DST], lut_ref(ld(sram, f[isa.C_SRC], cnt, 0), table), f[isa.C_OUT_DT])
    elif op == Opcode.IADD:
        a = ld(sram, f[isa.C_A], cnt, f[isa.C_A_DT])
        b = ld_b(sram, f[isa.C_B], cnt, f[isa.C_B_PERIOD], f[isa.C_B_DT])
        if f[isa.C_SHIFT] == 0:
            y = add16_ref(a, b, f[isa.C_LO], f[isa.C_HI])
        else:
            y = add_shift_ref(a, b, f[isa.C_SHIFT], f[isa.C_LO], f[isa.C_HI])
        st(sram, f[isa.C_DST], y, f[isa.C_OUT_DT])
    elif op == Opcode.IMUL:
        a = ld(sram, f[isa.C_A], cnt, f[isa.C_A_DT])
        b = ld_b(sram, f[isa.C_B], cnt, f[isa.C_B_PERIOD], f[isa.C_B_DT])
        y = mul16_ref(a, b, f[isa.C_MULT], f[isa.C_SHIFT], f[isa.C_LO], f[isa.C_HI], f[isa.C_ZY])
        st(sram, f[isa.C_DST], y, f[isa.C_OUT_DT])
    elif op == Opcode.POOL:
        _pool(sram, f)
    elif op == Opcode.COPY:
        _copy(sram, f)
    elif op == Opcode.FILL:
        st(sram, f[isa.C_DST], np.full(cnt, f[isa.C_VALUE], np.int64), f[isa.C_DT])
