"""The cycle model of one instruction (docs/cycle-model.md): MAC array per dataflow with
systolic fill/drain and folds (SCALE-Sim's counting), DMA latency + bytes/bandwidth, vector
elements/lanes + overhead. The VM calls these very functions (register_jitable); so do the
compiler's cost model and benchmarks/scalesim_compare.py.
"""

from __future__ import annotations

import numpy as np
from numba.extending import register_jitable
from ocrc.runtime import isa
from ocrc.runtime.isa import Opcode
from ocrc.runtime.target import (
    P_COLS,
    P_DATAFLOW,
    P_DRAM_BW,
    P_DRAM_LAT,
    P_INT16_SLOWDOWN,
    P_LANES,
    P_OVERLAP,
    P_ROWS,
    P_ZERO_BLOCK,
)

DF_OS, DF_WS, DF_IS = 0, 1, 2  # index in target.DATAFLOWS


@register_jitable
def cdiv(a, b):  # type: ignore[no-untyped-def]
    return (a + b - 1) // b


@register_jitable
def gemm_cycles_kf(m, n, kf, rows, cols, dataflow, overlap):  # type: ignore[no-untyped-def]
    """Cycles of an M x N x K product whose column fold j (output columns j*cols ...) has the
    effective reduction length kf[j] (K for dense weights, less where zero blocks are skipped).

    SCALE-Sim mapping, per fold (docs/cycle-model.md):
      os: rows <- M, cols <- N, streams K:  ceil(M/R) folds of K + R + C - 2 per column fold
      ws: rows <- K, cols <- N, streams M:  ceil(K/R) folds of 2R + C + M - 2 per column fold
      is: rows <- K, cols <- M, streams N:  ceil(K/R) * ceil(M/C) folds of 2R + C + N - 2
    With overlap, consecutive folds pipeline: each costs max(T, R) and one fill/drain of
    R + C - 2 (+ R for the first stationary load in ws/is) is paid once.
    """
    r = rows
    c = cols
    total = 0
    nfolds = 0
    if dataflow == DF_OS:
        for j in range(len(kf)):
            f = cdiv(m, r)
            nfolds += f
            total += f * (kf[j] + r + c - 2) if overlap == 0 else f * max(kf[j], r)
        if overlap != 0 and nfolds > 0:
            total += r + c - 2
    elif dataflow == DF_WS:
        for j in range(len(kf)):
            f = cdiv(kf[j], r)
            nfolds += f
            total += f * (2 * r + c + m - 2) if overlap == 0 else f * max(m, r)
        if overlap != 0 and nfolds > 0:
            total += 2 * r + c - 2
    else:
        kmax = 0
        for j in range(len(kf)):
            kmax = max(kmax, kf[j])
        f = cdiv(kmax, r) * cdiv(m, c)
        total = f * (2 * r + c + n - 2) if overlap == 0 else f * max(n, r) + 2 * r + c - 2
    return total


@register_jitable
def gemm_cycles(m, n, k, rows, cols, dataflow, overlap):  # type: ignore[no-untyped-def]
    """Dense M x N x K product on an R x C array (see gemm_cycles_kf)."""
    kf = np.full(cdiv(n, cols), k, np.int64)
    return gemm_cycles_kf(m, n, kf, rows, cols, dataflow, overlap)


@register_jitable
def sparse_kfold(w, p, two_four):  # type: ignore[no-untyped-def]
    """Effective K per column fold of weights w[n, k] for gemm_cycles_kf, and a status: with
    two_four, ceil(K/2) everywhere (status -1 if some 4 consecutive weights along K of a row,
    from 0, hold more than 2 nonzeros); else K less the all-zero K-blocks of
    p[P_ZERO_BLOCK] rows (from 0) of the fold's columns. The VM's MAC kernels and the
    compiler's cost model (compiler/backend/weights.py) both call this."""
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


@register_jitable
def dma_cycles(nbytes, bw, latency):  # type: ignore[no-untyped-def]
    return latency + cdiv(nbytes, bw)


@register_jitable
def vector_cycles(work, lanes, overhead):  # type: ignore[no-untyped-def]
    return overhead + cdiv(work, lanes)


@register_jitable
def conv_out(size, pad0, pad1, k, stride, dil):  # type: ignore[no-untyped-def]
    """Output length of a convolution/pool along one axis (floor mode)."""
    return (size + pad0 + pad1 - dil * (k - 1) - 1) // stride + 1


@register_jitable
def gemm_shape(f):  # type: ignore[no-untyped-def]
    """(groups, M, N, K per group, in_dt) of a CONV or MATMUL field row."""
    if f[isa.C_OPCODE] == Opcode.CONV:
        ho = conv_out(f[isa.C_H], f[isa.C_PT], f[isa.C_PB], f[isa.C_KH], f[isa.C_SH], f[isa.C_DH])
        wo = conv_out(f[isa.C_W], f[isa.C_PL], f[isa.C_PR], f[isa.C_KW], f[isa.C_SW], f[isa.C_DW])
        g = f[isa.C_GROUPS]
        return (g, ho * wo, f[isa.C_COUT] // g, f[isa.C_KH] * f[isa.C_KW] * (f[isa.C_CIN] // g),
                f[isa.C_IN_DT])
    return 1, f[isa.C_M], f[isa.C_N], f[isa.C_K], f[isa.C_IN_DT]


@register_jitable
def vector_work(f):  # type: ignore[no-untyped-def]
    """Elements the vector unit processes for one vector instruction."""
    op = f[isa.C_OPCODE]
    if op == Opcode.POOL:
        ho = conv_out(f[isa.C_H], f[isa.C_PT], f[isa.C_PB], f[isa.C_KH], f[isa.C_SH], 1)
        wo = conv_out(f[isa.C_W], f[isa.C_PL], f[isa.C_PR], f[isa.C_KW], f[isa.C_SW], 1)
        return ho * wo * f[isa.C_C] * f[isa.C_KH] * f[isa.C_KW]
    if op == Opcode.COPY:
        return f[isa.C_N0] * f[isa.C_N1] * f[isa.C_N2]
    return f[isa.C_COUNT]


@register_jitable
def insn_cycles(f, p, vovh):  # type: ignore[no-untyped-def]
    """Cycles of one instruction (decoded field row f) on the target (p = Target.vm_params(),
    vovh = Target.vector_overheads()), with dense weights. The VM adds sparsity savings."""
    op = f[isa.C_OPCODE]
    if op == Opcode.LOAD or op == Opcode.STORE:
        return dma_cycles(f[isa.C_N0] * f[isa.C_N1] * f[isa.C_N2], p[P_DRAM_BW], p[P_DRAM_LAT])
    if op == Opcode.LOADW:
        return dma_cycles(f[isa.C_CLEN], p[P_DRAM_BW], p[P_DRAM_LAT])
    if op == Opcode.CONV or op == Opcode.MATMUL:
        g, m, n, k, in_dt = gemm_shape(f)
        cyc = g * gemm_cycles(m, n, k, p[P_ROWS], p[P_COLS], p[P_DATAFLOW], p[P_OVERLAP])
        return cyc * p[P_INT16_SLOWDOWN] if in_dt != 0 else cyc
    if op == Opcode.HALT or op == Opcode.NOP:
        return 0
    return vector_cycles(vector_work(f), p[P_LANES], vovh[op])


def program_cycles(fields: np.ndarray, params: np.ndarray, vovh: np.ndarray) -> np.ndarray:
    """Dense-weight cycles of every instruction of a decoded program (Python helper)."""
    return np.array([insn_cycles(row, params, vovh) for row in fields], np.int64)
