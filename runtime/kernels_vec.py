"""numba kernels of the vector unit: requantise, rescale, add, mul, table lookup, pooling, the
int16 LSTM operations, strided copy and fill. Each loads its operands as int64 copies, applies
the qmath reference function of the op (the same function the golden interpreter calls) element
by element and stores the result, already clamped into the output type's range (verify.py
checks lo/hi). Loading every operand before the first store keeps the result independent of
how the output overlaps the inputs; the loops are fused (no per-operation temporaries) and index
with U (uint64, see kernels.py) so that LLVM vectorises them.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from ocrc.runtime import isa
from ocrc.runtime.cycles import conv_out
from ocrc.runtime.isa import Opcode, PoolMode
from ocrc.runtime.kernels import U, copy_bytes, drop_stale_cache
from ocrc.runtime.qmath import (
    ADD8_FRAC_BITS,
    LUT16_SIZE,
    add16_ref,
    add_ref,
    add_shift_ref,
    clamp,
    lut16_ref,
    lut_ref,
    mul16_ref,
    mul_ref,
    mul_round_shift,
    requantize,
    rescale_ref,
)


@njit(cache=True)
def ld(sram, addr, count, dt):  # type: ignore[no-untyped-def]
    """count elements of type dt (DType) at byte address addr, as an int64 copy."""
    out = np.empty(count, np.int64)
    if dt == 0:
        v8 = sram.view(np.int8)
        for i in range(count):
            out[i] = v8[U(addr + i)]
    elif dt == 1:
        v16 = sram.view(np.int16)
        b = addr // 2
        for i in range(count):
            out[i] = v16[U(b + i)]
    else:
        v32 = sram.view(np.int32)
        b = addr // 4
        for i in range(count):
            out[i] = v32[U(b + i)]
    return out


@njit(cache=True)
def st(sram, addr, vals, dt):  # type: ignore[no-untyped-def]
    """Store int64 values (already in range) as dt at byte address addr."""
    n = vals.shape[0]
    if dt == 0:
        v8 = sram.view(np.int8)
        for i in range(n):
            v8[U(addr + i)] = vals[i]
    elif dt == 1:
        v16 = sram.view(np.int16)
        b = addr // 2
        for i in range(n):
            v16[U(b + i)] = vals[i]
    else:
        v32 = sram.view(np.int32)
        b = addr // 4
        for i in range(n):
            v32[U(b + i)] = vals[i]


@njit(cache=True)
def _qp(sram, qp, n):  # type: ignore[no-untyped-def]
    """(bias, mult, shift) int64 vectors of n channels at qp; shifts clamped to [1, 62]."""
    q = qp // 4
    s32 = sram.view(np.int32)
    shift = np.minimum(np.maximum(s32[q + 2 * n:q + 3 * n].astype(np.int64), 1), 62)
    return s32[q:q + n].astype(np.int64), s32[q + n:q + 2 * n].astype(np.int64), shift


@njit(cache=True)
def _pool(sram, f):  # type: ignore[no-untyped-def]
    h, w, c, kh, kw = f[isa.C_H], f[isa.C_W], f[isa.C_C], f[isa.C_KH], f[isa.C_KW]
    sh, sw, pt, pl = f[isa.C_SH], f[isa.C_SW], f[isa.C_PT], f[isa.C_PL]
    ho = conv_out(h, pt, f[isa.C_PB], kh, sh, 1)
    wo = conv_out(w, pl, f[isa.C_PR], kw, sw, 1)
    mode = f[isa.C_MODE]
    zx, zy, lo, hi = f[isa.C_ZX], f[isa.C_ZY], f[isa.C_LO], f[isa.C_HI]
    area = kh * kw
    in_dt, out_dt = f[isa.C_IN_DT], f[isa.C_OUT_DT]
    ie = 1 << in_dt
    x = ld(sram, f[isa.C_SRC], h * w * c, in_dt)
    y = np.empty(ho * wo * c, np.int64)
    if mode != PoolMode.MAX:
        q = f[isa.C_QP] // 4
        s32 = sram.view(np.int32)
        mult = s32[q:q + area + 1].astype(np.int64)
        shift = np.minimum(np.maximum(s32[q + area + 1:q + 2 * area + 2].astype(np.int64), 1),
                           62)
    acc = np.empty(c, np.int64)
    for oy in range(ho):
        for ox in range(wo):
            acc[:] = (-128 if ie == 1 else -32768) if mode == PoolMode.MAX else 0
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
                    b = (iy * w + ix) * c
                    if mode == PoolMode.MAX:
                        for ch in range(c):
                            acc[ch] = max(acc[ch], x[U(b + ch)])
                    else:
                        for ch in range(c):
                            acc[ch] += x[U(b + ch)] - zx
            if mode == PoolMode.AVG_PAD:
                cnt = area
            o = (oy * wo + ox) * c
            for ch in range(c):
                if mode == PoolMode.MAX:
                    v = clamp(acc[ch], lo, hi)
                else:
                    v = clamp(mul_round_shift(acc[ch], mult[cnt], shift[cnt]) + zy, lo, hi)
                y[U(o + ch)] = v
    st(sram, f[isa.C_DST], y, out_dt)


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
                        sram[U(d + i0 * ds0 + e)] = sram[U(s + i0 * ss0 + e)]


@njit(cache=True)
def _lut8_direct(sram, src, dst, cnt, table, out_dt):  # type: ignore[no-untyped-def]
    """One-table LUT on int8 input element by element, without int64 copies: the same result
    as loading every input first when the output is disjoint from the input or is the input
    itself (same element size), as _lut checks."""
    v8 = sram.view(np.int8)
    if out_dt == 0:
        for i in range(cnt):
            v8[U(dst + i)] = lut_ref(np.int64(v8[U(src + i)]), table)
    else:
        v16 = sram.view(np.int16)
        b = dst // 2
        for i in range(cnt):
            v16[U(b + i)] = lut_ref(np.int64(v8[U(src + i)]), table)


@njit(cache=True)
def _lut(sram, f):  # type: ignore[no-untyped-def]
    cnt, out_dt = f[isa.C_COUNT], f[isa.C_OUT_DT]
    nt = max(f[isa.C_TABLES], 1)
    # blocks of one table period: no modulo per element (one table: the whole count)
    if f[isa.C_IN_DT] == 1:  # int16 input: windowed int16 tables, interpolated
        table = ld(sram, f[isa.C_TABLE], LUT16_SIZE * nt, 1)
        x = ld(sram, f[isa.C_SRC], cnt, 1)
        y = np.empty(cnt, np.int64)
        lo, hi = (-32768, 32767) if out_dt == 1 else (-128, 127)
        for i0 in range(0, cnt, nt):
            for t in range(min(nt, cnt - i0)):
                y[U(i0 + t)] = lut16_ref(x[U(i0 + t)], table[LUT16_SIZE * t:], lo, hi)
    else:
        table = ld(sram, f[isa.C_TABLE], 256 * nt, out_dt)
        src, dst = f[isa.C_SRC], f[isa.C_DST]
        if nt == 1 and ((src == dst and out_dt == 0) or dst + (cnt << out_dt) <= src
                        or src + cnt <= dst):
            _lut8_direct(sram, src, dst, cnt, table, out_dt)
            return
        x = ld(sram, src, cnt, 0)
        y = np.empty(cnt, np.int64)
        if nt == 1:
            for i in range(cnt):
                y[i] = lut_ref(x[i], table)
        else:
            for i0 in range(0, cnt, nt):
                for t in range(min(nt, cnt - i0)):
                    y[U(i0 + t)] = lut_ref(x[U(i0 + t)], table[256 * t:])
    st(sram, f[isa.C_DST], y, out_dt)


@njit(cache=True)
def _binary(sram, f, op):  # type: ignore[no-untyped-def]
    """ADD, MUL, IADD, IMUL: y[i] = op(a[i], b[i mod b_period])."""
    cnt, per = f[isa.C_COUNT], f[isa.C_B_PERIOD]
    if op == Opcode.ADD or op == Opcode.MUL:
        a_dt, b_dt, out_dt = 0, 0, 0
    else:
        a_dt, b_dt, out_dt = f[isa.C_A_DT], f[isa.C_B_DT], f[isa.C_OUT_DT]
    xa = ld(sram, f[isa.C_A], cnt, a_dt)
    xb = ld(sram, f[isa.C_B], per, b_dt)
    y = np.empty(cnt, np.int64)
    zy, lo, hi, mult, shift = (f[isa.C_ZY], f[isa.C_LO], f[isa.C_HI], f[isa.C_MULT],
                               f[isa.C_SHIFT])
    za, zb = f[isa.C_ZA], f[isa.C_ZB]
    # blocks of one b period: the inner loops have no modulo and vectorise
    for i0 in range(0, cnt, per):
        nb = min(per, cnt - i0)
        if op == Opcode.ADD:
            ma, sa, mb, sb = f[isa.C_MA], f[isa.C_SA], f[isa.C_MB], f[isa.C_SB]
            for j in range(nb):
                y[U(i0 + j)] = add_ref(xa[U(i0 + j)], za, ma, sa, xb[j], zb, mb, sb, zy, lo, hi,
                                       ADD8_FRAC_BITS)
        elif op == Opcode.MUL:
            for j in range(nb):
                y[U(i0 + j)] = mul_ref(xa[U(i0 + j)], za, xb[j], zb, mult, shift, zy, lo, hi)
        elif op == Opcode.IADD and shift == 0:
            for j in range(nb):
                y[U(i0 + j)] = add16_ref(xa[U(i0 + j)], xb[j], lo, hi)
        elif op == Opcode.IADD:
            for j in range(nb):
                y[U(i0 + j)] = add_shift_ref(xa[U(i0 + j)], xb[j], shift, lo, hi)
        else:
            for j in range(nb):
                y[U(i0 + j)] = mul16_ref(xa[U(i0 + j)], xb[j], mult, shift, lo, hi, zy)
    st(sram, f[isa.C_DST], y, out_dt)


@njit(cache=True)
def vector(sram, f):  # type: ignore[no-untyped-def]
    """Execute one vector-unit instruction (field row f) on SRAM."""
    op = f[isa.C_OPCODE]
    cnt = f[isa.C_COUNT]
    if op == Opcode.REQUANT:
        ch = f[isa.C_CHAN]
        bias, mult, shift = _qp(sram, f[isa.C_QP], ch)
        x = ld(sram, f[isa.C_SRC], cnt, 2)
        lo, hi, zy = f[isa.C_LO], f[isa.C_HI], f[isa.C_ZY]
        if f[isa.C_OUT_DT] == 2:
            lo, hi = -(2**31), 2**31 - 1
        y = np.empty(cnt, np.int64)
        for i0 in range(0, cnt, ch):  # blocks of one channel period (vectorises)
            for c in range(min(ch, cnt - i0)):
                y[U(i0 + c)] = requantize(x[U(i0 + c)] + bias[c], mult[c], shift[c], zy, lo, hi)
        st(sram, f[isa.C_DST], y, f[isa.C_OUT_DT])
    elif op == Opcode.RESCALE:
        x = ld(sram, f[isa.C_SRC], cnt, f[isa.C_IN_DT])
        zx, mult, shift = f[isa.C_ZX], f[isa.C_MULT], f[isa.C_SHIFT]
        zy, lo, hi = f[isa.C_ZY], f[isa.C_LO], f[isa.C_HI]
        if f[isa.C_OUT_DT] == 2:
            lo, hi = -(2**31), 2**31 - 1
        for i in range(cnt):
            x[i] = rescale_ref(x[i], zx, mult, shift, zy, lo, hi)
        st(sram, f[isa.C_DST], x, f[isa.C_OUT_DT])
    elif op == Opcode.ADD or op == Opcode.MUL or op == Opcode.IADD or op == Opcode.IMUL:
        _binary(sram, f, op)
    elif op == Opcode.LUT:
        _lut(sram, f)
    elif op == Opcode.POOL:
        _pool(sram, f)
    elif op == Opcode.COPY:
        _copy(sram, f)
    elif op == Opcode.FILL:
        st(sram, f[isa.C_DST], np.full(cnt, f[isa.C_VALUE], np.int64), f[isa.C_DT])


drop_stale_cache(globals())
