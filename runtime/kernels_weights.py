"""Weights in the VM, with numba: LOADW's decompression of a weight stream (the layouts of
runtime/weightcodec.py, the semantics of isa.FORMATS[LOADW]) from DRAM into dense SRAM bytes,
and the jitted entry of the MAC array's sparsity scan (cycles.sparse_kfold) for the compiler.

The verifier bounds [dram, dram + clen) and [sram, sram + count); the stream's own contents
(popcount, csr entry count and gaps) are data, so the decoder checks them before it reads or
writes: it never reads outside the stream nor writes outside the destination, whatever the
bytes, and returns ST_BAD_STREAM for a stream whose format does not account for exactly clen
bytes.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from ocrc.runtime import isa
from ocrc.runtime.cycles import sparse_kfold
from ocrc.runtime.isa import Book, Comp
from ocrc.runtime.kernels import ST_BAD_STREAM, ST_OK, copy_bytes, drop_stale_cache

_BOOK = (0, 16, 256)  # entries per Book value
# VM-internal cb value of an execution copy of the field matrix (see predecode): the LOADW reads
# count dense bytes at dram. The verifier rejects it in programs (cb must be a Book).
PREDECODED = 3


@njit(cache=True)
def values_len(n, cb):  # type: ignore[no-untyped-def]
    """Bytes of n values coded per Book cb (codebook included)."""
    if cb == Book.K16:
        return 16 + (n + 1) // 2
    if cb == Book.K256:
        return 256 + n
    return n


@njit(cache=True)
def _value(dram, vbase, j, cb):  # type: ignore[no-untyped-def]
    """Value j of a values section at vbase (j < n; the caller checked values_len fits).
    Bytes are widened to int64 before arithmetic: with NUMBA_DISABLE_JIT=1, NumPy 2 would keep
    uint8 + int in uint8."""
    if cb == Book.NONE:
        return dram[vbase + j]
    if cb == Book.K16:
        idx = (np.int64(dram[vbase + 16 + (j >> 1)]) >> (4 * (j & 1))) & 15
        return dram[vbase + idx]
    return dram[vbase + np.int64(dram[vbase + 256 + j])]


@njit(cache=True)
def _popcount(dram, base, count):  # type: ignore[no-untyped-def]
    """Set bits among the first count bits of the mask at base."""
    n = 0
    for i in range(count >> 3):
        b = np.int64(dram[base + i])
        while b:
            b &= b - 1
            n += 1
    for i in range(count & ~7, count):
        n += (np.int64(dram[base + (i >> 3)]) >> (i & 7)) & 1
    return n


@njit(cache=True)
def loadw(dram, sram, f):  # type: ignore[no-untyped-def]
    """LOADW: the stream at dram[f.dram : f.dram + f.clen] -> count dense bytes at sram[f.sram].
    Returns a status (ST_OK or ST_BAD_STREAM)."""
    base, clen, dst, count = f[isa.C_DRAM], f[isa.C_CLEN], f[isa.C_SRAM], f[isa.C_COUNT]
    fmt, cb = f[isa.C_FMT], f[isa.C_CB]
    if cb == PREDECODED:
        copy_bytes(sram, dst, dram, base, count)
        return ST_OK
    if cb > Book.K256:
        return ST_BAD_STREAM
    if fmt == Comp.DENSE:
        if values_len(count, cb) != clen:
            return ST_BAD_STREAM
        if cb == Book.NONE:
            copy_bytes(sram, dst, dram, base, count)
        else:
            for i in range(count):
                sram[dst + i] = _value(dram, base, i, cb)
        return ST_OK
    if fmt == Comp.BITMASK:
        mb = (count + 7) >> 3
        if mb > clen or mb + values_len(_popcount(dram, base, count), cb) != clen:
            return ST_BAD_STREAM
        vb = base + mb
        j = 0
        for i in range(count):
            if (dram[base + (i >> 3)] >> (i & 7)) & 1:
                sram[dst + i] = _value(dram, vb, j, cb)
                j += 1
            else:
                sram[dst + i] = 0
        return ST_OK
    if fmt == Comp.CSR:
        if clen < 4:
            return ST_BAD_STREAM
        n = (np.int64(dram[base]) | np.int64(dram[base + 1]) << 8
             | np.int64(dram[base + 2]) << 16 | np.int64(dram[base + 3]) << 24)
        gb = (n + 1) >> 1
        if 4 + gb + values_len(n, cb) != clen:
            return ST_BAD_STREAM
        for i in range(count):
            sram[dst + i] = 0
        vb = base + 4 + gb
        pos = -1
        for j in range(n):
            pos += ((np.int64(dram[base + 4 + (j >> 1)]) >> (4 * (j & 1))) & 15) + 1
            if pos >= count:
                return ST_BAD_STREAM
            sram[dst + pos] = _value(dram, vb, j, cb)
        return ST_OK
    return ST_BAD_STREAM


@njit(cache=True)
def kfold(w, p, two_four):  # type: ignore[no-untyped-def]
    """cycles.sparse_kfold, jitted: the very scan the MAC kernels run, for the cost model."""
    return sparse_kfold(w, p, two_four)


def predecode(fields: np.ndarray, const_ranges: list[tuple[int, int]], dram: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, int]:
    """Decode once, at load time, every compressed LOADW stream that lies in a const region
    (read-only: the verifier rejects STOREs into them), so runs copy instead of decoding
    (the LSTM re-streams its weights every step). Returns the execution copy of the field
    matrix, whose such LOADWs read the dense copy (cb = PREDECODED; dram, fmt changed, clen
    kept for the cycle count), the DRAM image extended with the dense copies, and the pc of a
    corrupt stream (-1 if none)."""
    fields = fields.copy()
    extra: list[np.ndarray] = []
    top = dram.size
    done: dict[tuple[int, ...], int] = {}
    for pc in np.flatnonzero((fields[:, isa.C_OPCODE] == isa.Opcode.LOADW)
                             & ((fields[:, isa.C_FMT] != Comp.DENSE)
                                | (fields[:, isa.C_CB] != Book.NONE))):
        row = fields[pc]
        lo, n = int(row[isa.C_DRAM]), int(row[isa.C_CLEN])
        if not any(a <= lo and lo + n <= a + size for a, size in const_ranges):
            continue
        key = (lo, n, int(row[isa.C_COUNT]), int(row[isa.C_FMT]), int(row[isa.C_CB]))
        if key not in done:
            buf = np.zeros(-(-key[2] // 64) * 64, np.uint8)  # keeps DRAM 64-byte aligned
            tmp = row.copy()
            tmp[isa.C_SRAM] = 0
            if loadw(dram, buf, tmp) != ST_OK:
                return fields, dram, int(pc)
            done[key] = top
            extra.append(buf)
            top += buf.size
        row[isa.C_DRAM], row[isa.C_FMT], row[isa.C_CB] = done[key], Comp.DENSE, PREDECODED
    if extra:
        dram = np.concatenate([dram, *extra])
    return fields, dram, -1


def stream_bounds(fmt: int, cb: int, count: int) -> tuple[int, int]:
    """(min, max) clen of a stream of count decompressed bytes (the verifier's static check;
    the exact length depends on the stream's contents and is the decoder's check)."""
    book = _BOOK[cb] if 0 <= cb < len(_BOOK) else 0
    idx = (lambda n: (n + 1) // 2) if cb == Book.K16 else (lambda n: n)
    if fmt == Comp.DENSE:
        exact = book + idx(count)
        return exact, exact
    if fmt == Comp.BITMASK:
        mb = (count + 7) // 8
        return mb + book, mb + book + idx(count)
    # csr: n <= count entries (each advances pos by at least 1)
    return 4 + book, 4 + (count + 1) // 2 + book + idx(count)


drop_stale_cache(globals())
