"""numba kernels of the DMA engine and the MAC array: one function per instruction, taking the
memories (uint8 arrays) and the decoded field row. Bounds were checked by verify.py before any of
this runs (numba does not check them); data-dependent values read from SRAM (shifts) are clamped
here so that no byte pattern can cause undefined behaviour.

MAC semantics are exact integer arithmetic, acc = bias + sum w*(x - zx) of qmath.conv_ref /
dense_ref, computed in one of three exact ways: int8 w times int16 (x - zx) summed in int32;
raw int8 products summed by float32 sgemm in exact K-chunks, then bias - zx*sum(w) added in
int64 (large products, see F32_MAX_K); int16 activations in int64.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit
from ocrc.runtime import isa
from ocrc.runtime.cycles import cdiv, conv_out, gemm_cycles_kf, sparse_kfold
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
# Hot loops index with U(i) (uint64): numba then skips its negative-index wraparound check,
# which otherwise keeps LLVM from vectorising the loop (6x on im2col). Only ever wrap a final,
# non-negative index: arithmetic mixing uint64 and int64 gives float64 in numba.
U = np.uint64
STATUS_TEXT = {
    ST_BAD_STREAM: "corrupt weight stream: its format does not account for exactly clen bytes, "
                   "or a csr entry lands past count",
    ST_NOT_2_4: "sparse=two_four but the weights are not 2:4 sparse along K",
    ST_NO_TOKEN: "pops a dependency token that no earlier instruction pushed",
}


# The runtime's files whose code or constants jitted code compiles in (register_jitable
# helpers, C_* columns, P_* parameters, callees in other files).
_JIT_SOURCES = ("isa.py", "isa_defs.py", "target.py", "qmath.py", "cycles.py", "kernels.py",
                "kernels_dw.py", "kernels_vec.py", "kernels_weights.py", "vm.py")


def drop_stale_cache(namespace: dict[str, Any]) -> None:
    """Flush the numba cache entries of a module's jitted functions when the runtime's jitted
    sources changed since they were written. numba keys a cached function on its own file only,
    so machine code with stale copies of what it compiled in from other files (callees,
    register_jitable helpers, module constants) would otherwise be reused (a documented numba
    limitation). Each jitted module of the runtime calls this at its end, before any call."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in _JIT_SOURCES:
        h.update((here / name).read_bytes())
    digest = h.hexdigest()
    module = namespace["__name__"]
    jitted = [v for v in namespace.values() if hasattr(v, "_cache") and hasattr(v, "py_func")
              and v.py_func.__module__ == module and hasattr(v._cache, "flush")]
    if not jitted:
        return
    stamp = Path(jitted[0]._cache.cache_path) / f"{module.rsplit('.', 1)[-1]}.jit-sources"
    try:
        if stamp.read_text() == digest:
            return
    except OSError:
        pass
    for d in jitted:
        d._cache.flush()
    try:
        tmp = stamp.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(digest)
        os.replace(tmp, stamp)
    except OSError:  # a read-only cache directory: numba does not cache there either
        pass


# ---------------------------------------------------------------- DMA
@njit(cache=True)
def copy_bytes(dst, d, src, s, n):  # type: ignore[no-untyped-def]
    """dst[d:d+n] = src[s:s+n] for non-overlapping ranges (a byte loop that LLVM vectorises:
    2-3x a numba slice assignment)."""
    for i in range(n):
        dst[U(d + i)] = src[U(s + i)]


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


# ---------------------------------------------------------------- MAC array
# Large products go through float32 BLAS (np.dot in numba calls the sgemm of scipy's BLAS),
# small ones through the integer loop; both give the same int32 sums (tests/runtime/
# test_rt_speed_paths.py). Why float32 sgemm is exact here:
#   The operands are the raw int8 values x, w in [-128, 127] (the zero point is applied apart,
#   as -zx * sum(w) in int64), so every product is an integer with |x*w| <= 2**14 (attained only
#   at x = w = -128), exact in float32 (int8 -> float32 conversion is exact as well). However
#   the BLAS orders, blocks or fuses (FMA) the reduction of one output element, each value it
#   rounds is a sum over a subset S of the K products, an integer of magnitude <= |S| * 2**14
#   <= K * 2**14, provided every earlier rounding was exact. float32 holds every integer up to
#   2**24 exactly, so by induction every rounding is exact when K * 2**14 <= 2**24: K <= 1024.
#   Longer reductions run in chunks of at most F32_MAX_K; the chunk sums (exact integers) are
#   added in int32, where |total| <= 65535 * 2**14 < 2**31 (verify.MAX_K, the 16-bit k field).
#   This assumes a BLAS that computes sums of the products at float32 (OpenBLAS, MKL, BLIS do:
#   no Strassen-like algorithms, no reduced-precision modes unless asked for).
# int16 activations (the wide accumulator): |x*w| <= 2**22, so float64 sums of up to 2**31
# products are exact integers (float64 holds every integer up to 2**53; same induction); large
# products go through dgemm, small ones through the int64 loop.
F32_MAX_K = 1024
# The integer loop below these sizes: there it is as fast as sgemm (python -m
# benchmarks.vm_speed --sweep; AVX2 and AVX-512 OpenBLAS kernels), e.g. M = 20 rows (LSTM
# projections, classifier tiles) or m = 1 (LSTM recurrence).
BLAS_MIN_M = 32
BLAS_MIN_N = 8
BLAS_MIN_MACS = 1 << 16


@njit(cache=True)
def use_blas(m, n, k):  # type: ignore[no-untyped-def]
    """True when an m x n x k int8 product is faster through float32 sgemm."""
    return m >= BLAS_MIN_M and n >= BLAS_MIN_N and m * n * k >= BLAS_MIN_MACS


@njit(cache=True)
def _dot_i32(x, w, out):  # type: ignore[no-untyped-def]
    """out[m, n] = sum_k x[m, k] * w[n, k] for int8 w and x = int8 - zx as int16 (|x| <= 255):
    exact in int32, |sum| <= 65535 * 255 * 128 < 2**31. With the zero point inside x no
    sum(w) pass is needed (it costs as much as the product itself when m = 1)."""
    m_, k_ = x.shape
    for m in range(m_):
        for n in range(w.shape[0]):
            s = np.int32(0)
            for k in range(k_):
                s += np.int32(x[m, k]) * np.int32(w[n, k])
            out[m, n] = s


@njit(cache=True)
def _dot_f32(xf, wf, out):  # type: ignore[no-untyped-def]
    """out[m, n] = sum_k xf[m, k] * wf[n, k] for float32 copies of int8 values, through sgemm in
    K-chunks of at most F32_MAX_K (exact: see the comment above)."""
    m_, k_ = xf.shape
    n_ = wf.shape[0]
    nc = cdiv(k_, F32_MAX_K)
    for c in range(nc):
        if nc == 1:
            r = np.dot(xf, wf.T)
        else:
            k0, k1 = c * F32_MAX_K, min((c + 1) * F32_MAX_K, k_)
            r = np.dot(np.ascontiguousarray(xf[:, k0:k1]),
                       np.ascontiguousarray(wf[:, k0:k1]).T)
        for i in range(m_):
            for j in range(n_):
                v = np.int32(r[i, j])
                out[i, j] = v if c == 0 else out[i, j] + v


@njit(cache=True)
def _dot_wide(x, w, out):  # type: ignore[no-untyped-def]
    """out[m, n] = sum_k x[m, k] * w[n, k] for int16 x and int8 w, exact in int64 (through
    float64 dgemm when large, see above)."""
    m_, k_ = x.shape
    n_ = w.shape[0]
    if not use_blas(m_, n_, k_):
        _dot_i64(x, w, out)
        return
    r = np.dot(x.astype(np.float64), w.astype(np.float64).T)
    for i in range(m_):
        for j in range(n_):
            out[i, j] = np.int64(r[i, j])


@njit(cache=True)
def _dot_i64(x, w, out):  # type: ignore[no-untyped-def]
    """out[m, n] = sum_k x[m, k] * w[n, k] for raw int16 activations, in int64."""
    m_, k_ = x.shape
    for m in range(m_):
        for n in range(w.shape[0]):
            s = np.int64(0)
            for k in range(k_):
                s += np.int64(x[m, k]) * np.int64(w[n, k])
            out[m, n] = s


@njit(cache=True)
def _im2col(xin, h, w, cin, c0, cg, kh, kw, sh, sw, dh, dw, pt, pl, ho, wo, zx, sub, col):
    """col[p, (ky*kw + kx)*cg + ci] = x(iy, ix, c0 + ci) - sub, and zx - sub outside the tile
    (HWC input); col is int16 or float32 (exact copies of the integers)."""
    kg = col.shape[1]
    cf = col.reshape(col.size)
    pad = zx - sub
    for oy in range(ho):
        for ox in range(wo):
            p = (oy * wo + ox) * kg
            for ky in range(kh):
                iy = oy * sh - pt + ky * dh
                for kx in range(kw):
                    ix = ox * sw - pl + kx * dw
                    k0 = p + (ky * kw + kx) * cg
                    if iy < 0 or iy >= h or ix < 0 or ix >= w:
                        for ci in range(cg):
                            cf[U(k0 + ci)] = pad
                    else:
                        b = (iy * w + ix) * cin + c0
                        for ci in range(cg):
                            cf[U(k0 + ci)] = xin[U(b + ci)] - sub


@njit(cache=True)
def _zsum(w, zx, wf):  # type: ignore[no-untyped-def]
    """zx * sum_k w[n, k] per output column (int64); copies w into wf (float32) on the way
    unless wf is empty."""
    out = np.zeros(w.shape[0], np.int64)
    copy = wf.shape[0] > 0
    for j in range(w.shape[0]):
        s = np.int64(0)
        for kk in range(w.shape[1]):
            s += w[j, kk]
            if copy:
                wf[j, kk] = w[j, kk]
        out[j] = zx * s
    return out


@njit(cache=True)
def _out_form(f):  # type: ignore[no-untyped-def]
    """(element size of the result, clamp lo, clamp hi) of a CONV/MATMUL: out=i16 clamps to
    [256*lo, 256*hi + 255] (isa.py)."""
    out = f[isa.C_OUT]
    if out == DType.I32:
        return 4, f[isa.C_LO], f[isa.C_HI]
    if out == DType.I16:
        return 2, f[isa.C_LO] * 256, f[isa.C_HI] * 256 + 255
    return 1, f[isa.C_LO], f[isa.C_HI]


@njit(cache=True)
def _qp_terms(sram, q, nq, c, wide):  # type: ignore[no-untyped-def]
    """(bias, mult, shift) of channel c of the qp block at int32 index q of nq channels: int32
    bias, mult, shift; wide (in_dt=i16): int64 bias, then int32 mult, shift. Shifts are clamped
    to [1, 62]."""
    return _qp_terms_v(sram.view(np.int32), sram.view(np.int64), q, nq, c, wide)


@njit(cache=True)
def _qp_terms_v(s32, s64, q, nq, c, wide):  # type: ignore[no-untyped-def]
    """_qp_terms on the int32 and int64 views of SRAM (made once by callers that loop over
    channels: making them costs ~10 ns each)."""
    if wide:
        bias = np.int64(s64[q // 2 + c])
        qm = q + 2 * nq
    else:
        bias = np.int64(s32[q + c])
        qm = q + nq
    return bias, np.int64(s32[qm + c]), min(max(np.int64(s32[qm + nq + c]), 1), 62)


@njit(cache=True)
def _store_out(sram, i, osz, v):  # type: ignore[no-untyped-def]
    """Store an in-range result v as element i (int8 or int16) of the byte-addressed SRAM."""
    if osz == 2:
        sram.view(np.int16)[U(i // 2)] = np.int16(v)
    else:
        sram.view(np.int8)[U(i)] = np.int8(v)


@njit(cache=True)
def _write_out(sram, f, dot, corr, q, nq, c0, dst, row_stride, out_i32, accum):
    """acc = (accum ? SRAM_i32 : bias) + dot - corr (zx * sum(w), or 0 when x - zx went into
    the dot); store int32 or requantised int8/int16. q: int32 index of the qp block (bias, mult,
    shift of nq channels; int64 biases when in_dt=i16); dst/row_stride in bytes; columns c0.. of
    a row. The per-column terms are read once up front (int64 sums are exact, the order of the
    additions is free) unless the output overlaps the qp block: then each element reads them
    when it is written."""
    s32 = sram.view(np.int32)
    wide = f[isa.C_IN_DT] == DType.I16
    nn = dot.shape[1]
    osz, lo, hi = _out_form(f)
    lo_b = dst + c0 * osz
    hi_b = dst + (dot.shape[0] - 1) * row_stride + (c0 + nn) * osz
    if lo_b < 4 * (q + (4 if wide else 3) * nq) and 4 * q < hi_b:
        _write_out_inorder(sram, f, dot, corr, q, nq, c0, dst, row_stride, out_i32, accum)
        return
    zy = f[isa.C_ZY]
    off = np.empty(nn, np.int64)
    m64 = np.empty(nn, np.int64)
    n64 = np.empty(nn, np.int64)
    s64 = sram.view(np.int64)
    for j in range(nn):
        bias, m64[j], n64[j] = _qp_terms_v(s32, s64, q, nq, c0 + j, wide)
        off[j] = (0 if accum else bias) - corr[j]
    s8 = sram.view(np.int8)
    s16 = sram.view(np.int16)
    for p in range(dot.shape[0]):
        if out_i32:
            b = (dst + p * row_stride) // 4 + c0
            for j in range(nn):
                v = np.int64(dot[p, j]) + off[j]
                if accum:
                    v += np.int64(s32[U(b + j)])
                s32[U(b + j)] = np.int32(((v + 0x80000000) & 0xFFFFFFFF) - 0x80000000)  # wrap
        elif osz == 2:
            b = (dst + p * row_stride) // 2 + c0
            for j in range(nn):
                s16[U(b + j)] = np.int16(requantize(np.int64(dot[p, j]) + off[j], m64[j],
                                                    n64[j], zy, lo, hi))
        else:
            b = dst + p * row_stride + c0
            for j in range(nn):
                s8[U(b + j)] = np.int8(requantize(np.int64(dot[p, j]) + off[j], m64[j], n64[j],
                                               zy, lo, hi))


@njit(cache=True)
def _write_out_inorder(sram, f, dot, corr, q, nq, c0, dst, row_stride, out_i32, accum):
    """_write_out element by element, reading bias/mult/shift as each element is written."""
    s32 = sram.view(np.int32)
    wide = f[isa.C_IN_DT] == DType.I16
    osz, lo, hi = _out_form(f)
    zy = f[isa.C_ZY]
    for p in range(dot.shape[0]):
        for j in range(dot.shape[1]):
            c = c0 + j
            v = np.int64(dot[p, j]) - corr[j]
            if out_i32:
                i = (dst + p * row_stride) // 4 + c
                v += np.int64(s32[i]) if accum else _qp_terms(sram, q, nq, c, wide)[0]
                s32[i] = np.int32(((v + 0x80000000) & 0xFFFFFFFF) - 0x80000000)
            else:
                bias, mult, n = _qp_terms(sram, q, nq, c, wide)
                _store_out(sram, dst + p * row_stride + c * osz, osz,
                           requantize(v + bias, mult, n, zy, lo, hi))


@njit(cache=True)
def _mac_cycles(w, f, p, m):  # type: ignore[no-untyped-def]
    """Cycles of one group's GEMM with weights w[n, k] (status -1 if 2:4 is violated)."""
    sp = f[isa.C_SPARSE]
    n, k = w.shape
    if sp == Sparse.DENSE or (sp == Sparse.ZERO_BLOCK and p[P_ZERO_BLOCK] == 0):
        kf = np.full(cdiv(n, p[P_COLS]), k, np.int64)
        st = 0
    else:
        kf, st = sparse_kfold(w, p, sp == Sparse.TWO_FOUR)
    cyc = gemm_cycles_kf(m, n, kf, p[P_ROWS], p[P_COLS], p[P_DATAFLOW], p[P_OVERLAP])
    if f[isa.C_IN_DT] != DType.I8:
        cyc *= p[P_INT16_SLOWDOWN]
    return cyc, st


@njit(cache=True)
def conv(sram, f, p):  # type: ignore[no-untyped-def]
    """CONV on an HWC tile. Returns (status, cycles)."""
    s8 = sram.view(np.int8)
    s16 = sram.view(np.int16)
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
    src, zx, q = f[isa.C_SRC], f[isa.C_ZX], f[isa.C_QP] // 4
    out_i32, accum = f[isa.C_OUT] == DType.I32, f[isa.C_ACC] != 0
    row = cout * _out_form(f)[0]
    i16 = f[isa.C_IN_DT] == DType.I16
    blas = not i16 and use_blas(m, ng, kg)
    # int8 input: float32 copies for sgemm, or x - zx as int16; int16 input: raw x, int64 sums
    colf = np.empty((m if blas else 0, kg), np.float32)
    wf = np.empty((ng if blas else 0, kg), np.float32)
    col16 = np.empty((0 if blas else m, kg), np.int16)
    dot32 = np.empty((0 if i16 else m, ng), np.int32)
    dot64 = np.empty((m if i16 else 0, ng), np.int64)
    no_corr = np.zeros(ng, np.int64)
    cycles = 0
    status = 0
    for g in range(g_n):
        wg = s8[f[isa.C_WGT] + g * ng * kg:f[isa.C_WGT] + (g + 1) * ng * kg].reshape(ng, kg)
        if i16:
            corr = _zsum(wg, zx, wf)
            _im2col(s16[src // 2:src // 2 + h * w * cin], h, w, cin, g * cg, cg, kh, kw, sh, sw,
                    dh, dw, pt, pl, ho, wo, zx, 0, col16)
            _dot_wide(col16, wg, dot64)
            _write_out(sram, f, dot64, corr, q, cout, g * ng, f[isa.C_DST], row, out_i32, accum)
        else:
            xin = s8[src:src + h * w * cin]
            if blas:
                corr = _zsum(wg, zx, wf)
                _im2col(xin, h, w, cin, g * cg, cg, kh, kw, sh, sw, dh, dw, pt, pl, ho, wo, zx,
                        0, colf)
                _dot_f32(colf, wf, dot32)
            else:
                corr = no_corr
                _im2col(xin, h, w, cin, g * cg, cg, kh, kw, sh, sw, dh, dw, pt, pl, ho, wo, zx,
                        zx, col16)
                _dot_i32(col16, wg, dot32)
            _write_out(sram, f, dot32, corr, q, cout, g * ng, f[isa.C_DST], row, out_i32, accum)
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
    m, n, k = f[isa.C_M], f[isa.C_N], f[isa.C_K]
    a, a_rs, zx, q = f[isa.C_A], f[isa.C_A_RS], f[isa.C_ZX], f[isa.C_QP] // 4
    wb = s8[f[isa.C_B]:f[isa.C_B] + n * k].reshape(n, k)
    out_i32, accum = f[isa.C_OUT] == DType.I32, f[isa.C_ACC] != 0
    if f[isa.C_IN_DT] == DType.I16:
        x16 = np.empty((m, k), np.int16)
        for i in range(m):
            b = (a + i * a_rs) // 2
            x16[i, :] = s16[b:b + k]
        corr = _zsum(wb, zx, np.empty((0, 0), np.float32))
        dot = np.empty((m, n), np.int64)
        _dot_wide(x16, wb, dot)
        _write_out(sram, f, dot, corr, q, n, 0, f[isa.C_DST], f[isa.C_D_RS], out_i32, accum)
    else:
        dot32 = np.empty((m, n), np.int32)
        if use_blas(m, n, k):
            xf = np.empty((m, k), np.float32)
            for i in range(m):
                for j in range(k):
                    xf[i, j] = s8[U(a + i * a_rs + j)]
            wf = np.empty((n, k), np.float32)
            corr = _zsum(wb, zx, wf)
            _dot_f32(xf, wf, dot32)
        else:
            xz = np.empty((m, k), np.int16)
            for i in range(m):
                for j in range(k):
                    xz[i, j] = s8[U(a + i * a_rs + j)] - zx
            corr = np.zeros(n, np.int64)
            _dot_i32(xz, wb, dot32)
        _write_out(sram, f, dot32, corr, q, n, 0, f[isa.C_DST], f[isa.C_D_RS], out_i32, accum)
    cyc, st = _mac_cycles(wb, f, p, m)
    return (ST_NOT_2_4 if st != 0 else ST_OK), cyc


drop_stale_cache(globals())
