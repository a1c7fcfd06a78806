"""numba kernels of the DMA engine and the MAC array: one function per instruction, taking the
memories (uint8 arrays) and the decoded field row. Bounds were checked by verify.py before any of
this runs (numba does not check them); data-dependent values read from SRAM (shifts) are clamped
here so that no byte pattern can cause undefined behaviour.

MAC semantics are exact integer arithmetic: raw int8 x int8 products summed in int32 (|sum| <
2**14 * 65535 < 2**31 since verify.py caps K at 65535), then acc = bias + sum - zx * sum(w) in
int64, equal to bias + sum w*(x - zx) of qmath.conv_ref / dense_ref.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from ocrc.runtime import isa
from ocrc.runtime.cycles import cdiv, conv_out, gemm_cycles_kf
from ocrc.runtime.isa import DType, Sparse
from ocrc.runtime.qmath import requantize
from ocrc.runtime.target import (
    P_COLS,
    P_DATAFLOW,
    P_INT16_SLOWDOWN,
    P_OVERLAP,
    P_ROWS,
    P_ZERO_BLOCK,
)

ST_OK, ST_BAD_STREAM, ST_NOT_2_4, ST_NO_TOKEN = 0, 1, 2, 3
STATUS_TEXT = {
    ST_BAD_STREAM: "the bitmask weight stream has more nonzeros than its length allows",
    ST_NOT_2_4: "sparse=two_four but the weights are not 2:4 sparse along K",
    ST_NO_TOKEN: "pops a dependency token that no earlier instruction pushed",
}


# ---------------------------------------------------------------- DMA
@njit(cache=True)
def copy_bytes(dst, d, src, s, n):  # type: ignore[no-untyped-def]
    """dst[d:d+n] = src[s:s+n], 8 bytes at a time where both sides are 8-aligned (a uint8
    slice assignment is a byte loop in numba, ~8x slower)."""
    if d % 8 == s % 8 and n >= 64:
        head = (8 - d % 8) % 8
        for i in range(head):
            dst[d + i] = src[s + i]
        d8, s8 = (d + head) // 8, (s + head) // 8
        n8 = (n - head) // 8
        dst.view(np.uint64)[d8:d8 + n8] = src.view(np.uint64)[s8:s8 + n8]
        for i in range(head + 8 * n8, n):
            dst[d + i] = src[s + i]
    else:
        dst[d:d + n] = src[s:s + n]


@njit(cache=True)
def dma(src, dst, f, to_sram):  # type: ignore[no-untyped-def]
    """LOAD (to_sram) or STORE: 3-D strided byte copy."""
    n0 = f[isa.C_N0]
    if to_sram:
        sbase, dbase = f[isa.C_DRAM], f[isa.C_SRAM]
        s1, s2, d1, d2 = f[isa.C_DS1], f[isa.C_DS2], f[isa.C_SS1], f[isa.C_SS2]
    else:
        sbase, dbase = f[isa.C_SRAM], f[isa.C_DRAM]
        s1, s2, d1, d2 = f[isa.C_SS1], f[isa.C_SS2], f[isa.C_DS1], f[isa.C_DS2]
    for i2 in range(f[isa.C_N2]):
        for i1 in range(f[isa.C_N1]):
            s = sbase + i2 * s2 + i1 * s1
            d = dbase + i2 * d2 + i1 * d1
            copy_bytes(dst, d, src, s, n0)


@njit(cache=True)
def loadw(dram, sram, f):  # type: ignore[no-untyped-def]
    """LOADW: dense or bitmask weight stream -> dense SRAM bytes. Returns a status."""
    base, clen, dst, count = f[isa.C_DRAM], f[isa.C_CLEN], f[isa.C_SRAM], f[isa.C_COUNT]
    if f[isa.C_FMT] == 0:
        copy_bytes(sram, dst, dram, base, count)
        return ST_OK
    mb = cdiv(count, 8)
    vp = base + mb
    vend = base + clen
    for i in range(count):
        if (dram[base + (i >> 3)] >> (i & 7)) & 1:
            if vp >= vend:
                return ST_BAD_STREAM
            sram[dst + i] = dram[vp]
            vp += 1
        else:
            sram[dst + i] = 0
    return ST_OK


# ---------------------------------------------------------------- MAC array
@njit(cache=True)
def _dot_i32(x, w, out):  # type: ignore[no-untyped-def]
    """out[m, n] = sum_k x[m, k] * w[n, k] for int8 x, w (exact in int32, K <= 65535)."""
    m_, k_ = x.shape
    for m in range(m_):
        for n in range(w.shape[0]):
            s = np.int32(0)
            for k in range(k_):
                s += np.int32(x[m, k]) * np.int32(w[n, k])
            out[m, n] = s


@njit(cache=True)
def _dot_i64(x, w, out):  # type: ignore[no-untyped-def]
    """As _dot_i32 for int16 activations, accumulated in int64."""
    m_, k_ = x.shape
    for m in range(m_):
        for n in range(w.shape[0]):
            s = np.int64(0)
            for k in range(k_):
                s += np.int64(x[m, k]) * np.int64(w[n, k])
            out[m, n] = s


@njit(cache=True)
def _im2col(xin, h, w, cin, c0, cg, kh, kw, sh, sw, dh, dw, pt, pl, ho, wo, zx, col):
    """col[p, (ky*kw + kx)*cg + ci] = x(iy, ix, c0 + ci), zx outside the tile (HWC input)."""
    for oy in range(ho):
        for ox in range(wo):
            p = oy * wo + ox
            for ky in range(kh):
                iy = oy * sh - pt + ky * dh
                for kx in range(kw):
                    ix = ox * sw - pl + kx * dw
                    k0 = (ky * kw + kx) * cg
                    if iy < 0 or iy >= h or ix < 0 or ix >= w:
                        col[p, k0:k0 + cg] = zx
                    else:
                        b = (iy * w + ix) * cin + c0
                        col[p, k0:k0 + cg] = xin[b:b + cg]


@njit(cache=True)
def _write_out(sram, f, dot, wsum, bias, mult, shift, c0, dst, row_stride, out_i32, accum):
    """acc = (accum ? SRAM_i32 : bias) + dot - zx*wsum; store int32 or requantised int8.
    dst/row_stride are in bytes; columns c0.. of a row of width row_stride."""
    s8 = sram.view(np.int8)
    s32 = sram.view(np.int32)
    zx, zy, lo, hi = f[isa.C_ZX], f[isa.C_ZY], f[isa.C_LO], f[isa.C_HI]
    for p in range(dot.shape[0]):
        for j in range(dot.shape[1]):
            c = c0 + j
            v = np.int64(dot[p, j]) - zx * wsum[j]
            if out_i32:
                i = (dst + p * row_stride) // 4 + c
                v += np.int64(s32[i]) if accum else np.int64(bias[c])
                s32[i] = np.int32(((v + 0x80000000) & 0xFFFFFFFF) - 0x80000000)  # int32 wrap
            else:
                v += np.int64(bias[c])
                n = min(max(np.int64(shift[c]), 1), 62)
                s8[dst + p * row_stride + c] = np.int8(
                    requantize(v, np.int64(mult[c]), n, zy, lo, hi))


@njit(cache=True)
def _kfold(w, p, two_four):  # type: ignore[no-untyped-def]
    """Effective K per column fold of weights w[n, k] (zero K-blocks skipped / 2:4), or -1 if
    two_four is claimed but violated."""
    n, k = w.shape
    cols = p[P_COLS]
    nf = cdiv(n, cols)
    kf = np.full(nf, k, np.int64)
    if two_four:
        for c in range(n):
            for k0 in range(0, k, 4):
                nz = 0
                for kk in range(k0, min(k0 + 4, k)):
                    nz += w[c, kk] != 0
                if nz > 2:
                    return kf, -1
        kf[:] = cdiv(k, 2)
        return kf, 0
    blk = p[P_ZERO_BLOCK]
    for j in range(nf):
        c1 = min((j + 1) * cols, n)
        for k0 in range(0, k, blk):
            k1 = min(k0 + blk, k)
            if not np.any(w[j * cols:c1, k0:k1]):
                kf[j] -= k1 - k0
    return kf, 0


@njit(cache=True)
def _mac_cycles(w, f, p, m):  # type: ignore[no-untyped-def]
    """Cycles of one group's GEMM with weights w[n, k] (status -1 if 2:4 is violated)."""
    sp = f[isa.C_SPARSE]
    n, k = w.shape
    if sp == Sparse.DENSE or (sp == Sparse.ZERO_BLOCK and p[P_ZERO_BLOCK] == 0):
        kf = np.full(cdiv(n, p[P_COLS]), k, np.int64)
        st = 0
    else:
        kf, st = _kfold(w, p, sp == Sparse.TWO_FOUR)
    cyc = gemm_cycles_kf(m, n, kf, p[P_ROWS], p[P_COLS], p[P_DATAFLOW], p[P_OVERLAP])
    if f[isa.C_IN_DT] != DType.I8:
        cyc *= p[P_INT16_SLOWDOWN]
    return cyc, st


@njit(cache=True)
def conv(sram, f, p):  # type: ignore[no-untyped-def]
    """CONV on an HWC tile. Returns (status, cycles)."""
    s8 = sram.view(np.int8)
    s16 = sram.view(np.int16)
    s32 = sram.view(np.int32)
    h, w, cin, cout = f[isa.C_H], f[isa.C_W], f[isa.C_CIN], f[isa.C_COUT]
    kh, kw, sh, sw, dh, dw = (f[isa.C_KH], f[isa.C_KW], f[isa.C_SH], f[isa.C_SW], f[isa.C_DH],
                              f[isa.C_DW])
    pt, pl = f[isa.C_PT], f[isa.C_PL]
    ho = conv_out(h, pt, f[isa.C_PB], kh, sh, dh)
    wo = conv_out(w, pl, f[isa.C_PR], kw, sw, dw)
    g_n = f[isa.C_GROUPS]
    cg, ng = cin // g_n, cout // g_n
    kg = kh * kw * cg
    m = ho * wo
    q = f[isa.C_QP] // 4
    bias, mult, shift = s32[q:q + cout], s32[q + cout:q + 2 * cout], s32[q + 2 * cout:q + 3 * cout]
    out_i32 = f[isa.C_OUT] == DType.I32
    osz = 4 if out_i32 else 1
    i16 = f[isa.C_IN_DT] == DType.I16
    direct = (kh == 1 and kw == 1 and sh == 1 and sw == 1 and pt == 0 and pl == 0
              and f[isa.C_PB] == 0 and f[isa.C_PR] == 0 and g_n == 1 and not i16)
    col8 = np.empty((0 if direct or i16 else m, kg), np.int8)
    col16 = np.empty((m if i16 else 0, kg), np.int16)
    dot32 = np.empty((0 if i16 else m, ng), np.int32)
    dot64 = np.empty((m if i16 else 0, ng), np.int64)
    cycles = 0
    status = 0
    for g in range(g_n):
        wg = s8[f[isa.C_WGT] + g * ng * kg:f[isa.C_WGT] + (g + 1) * ng * kg].reshape(ng, kg)
        wsum = np.zeros(ng, np.int64)
        for j in range(ng):
            for kk in range(kg):
                wsum[j] += wg[j, kk]
        if i16:
            xin16 = s16[f[isa.C_SRC] // 2:f[isa.C_SRC] // 2 + h * w * cin]
            _im2col(xin16, h, w, cin, g * cg, cg, kh, kw, sh, sw, dh, dw, pt, pl, ho, wo,
                    f[isa.C_ZX], col16)
            _dot_i64(col16, wg, dot64)
            _write_out(sram, f, dot64, wsum, bias, mult, shift, g * ng, f[isa.C_DST],
                       cout * osz, out_i32, f[isa.C_ACC] != 0)
        else:
            if direct:
                _dot_i32(s8[f[isa.C_SRC]:f[isa.C_SRC] + m * cin].reshape(m, cin), wg, dot32)
            else:
                _im2col(s8[f[isa.C_SRC]:f[isa.C_SRC] + h * w * cin], h, w, cin, g * cg, cg, kh,
                        kw, sh, sw, dh, dw, pt, pl, ho, wo, f[isa.C_ZX], col8)
                _dot_i32(col8, wg, dot32)
            _write_out(sram, f, dot32, wsum, bias, mult, shift, g * ng, f[isa.C_DST],
                       cout * osz, out_i32, f[isa.C_ACC] != 0)
        cyc, st = _mac_cycles(wg, f, p, m)
        cycles += cyc
        if st != 0:
            status = ST_NOT_2_4
    return status, cycles


@njit(cache=True)
def matmul(sram, f, p):  # type: ignore[no-untyped-def]
    """MATMUL: dst[m, n] from a[m, k] (row stride a_rs) and b[n, k]. Returns (status, cycles)."""
    s8 = sram.view(np.int8)
    s16 = sram.view(np.int16)
    s32 = sram.view(np.int32)
    m, n, k = f[isa.C_M], f[isa.C_N], f[isa.C_K]
    a, a_rs = f[isa.C_A], f[isa.C_A_RS]
    wb = s8[f[isa.C_B]:f[isa.C_B] + n * k].reshape(n, k)
    q = f[isa.C_QP] // 4
    bias, mult, shift = s32[q:q + n], s32[q + n:q + 2 * n], s32[q + 2 * n:q + 3 * n]
    wsum = np.zeros(n, np.int64)
    for j in range(n):
        for kk in range(k):
            wsum[j] += wb[j, kk]
    if f[isa.C_IN_DT] == DType.I16:
        x16 = np.empty((m, k), np.int16)
        for i in range(m):
            b = (a + i * a_rs) // 2
            x16[i, :] = s16[b:b + k]
        dot = np.empty((m, n), np.int64)
        _dot_i64(x16, wb, dot)
        _write_out(sram, f, dot, wsum, bias, mult, shift, 0, f[isa.C_DST], f[isa.C_D_RS],
                   f[isa.C_OUT] == DType.I32, f[isa.C_ACC] != 0)
    else:
        if a_rs == k or m == 1:
            x8 = s8[a:a + m * k].reshape(m, k)
        else:
            x8 = np.empty((m, k), np.int8)
            for i in range(m):
                x8[i, :] = s8[a + i * a_rs:a + i * a_rs + k]
        dot32 = np.empty((m, n), np.int32)
        _dot_i32(x8, wb, dot32)
        _write_out(sram, f, dot32, wsum, bias, mult, shift, 0, f[isa.C_DST], f[isa.C_D_RS],
                   f[isa.C_OUT] == DType.I32, f[isa.C_ACC] != 0)
    cyc, st = _mac_cycles(wb, f, p, m)
    return (ST_NOT_2_4 if st != 0 else ST_OK), cyc
