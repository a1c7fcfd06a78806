"""Weight streams and weight sparsity of the backend: for every weight block a kernel loads, the
smallest stream format LOADW decodes (dense, bitmask + nonzeros, csr run-length, each with raw
int8 values or 4-bit indices into a 16-entry codebook when the block holds at most 16 distinct
values, as after the share-weights pass), and for every MAC instruction the sparsity hint
(zero-block skipping, 2:4) that makes the MAC array fastest on the target.

Sizes are computed analytically (the tiler asks for every candidate tiling) and the streams
encoded once, by runtime/weightcodec.py, for the program; cycles use the very functions the VM
runs (cycles.sparse_kfold via kernels_weights.kfold, cycles.gemm_cycles_kf), so the compiler's
estimate and the VM agree exactly. `weight_report` reads the choices back from a program.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from ocrc.runtime import cycles, isa
from ocrc.runtime import weightcodec as wc
from ocrc.runtime.isa import Book, Comp, DType, Opcode, Sparse
from ocrc.runtime.kernels_weights import kfold
from ocrc.runtime.target import P_INT16_SLOWDOWN, Target

BOOK16 = 16
# Tie-break order: the simpler decoder first.
_FORMATS = ((Comp.DENSE, Book.NONE), (Comp.BITMASK, Book.NONE), (Comp.CSR, Book.NONE),
            (Comp.DENSE, Book.K16), (Comp.BITMASK, Book.K16), (Comp.CSR, Book.K16))
_BASE = {Comp.DENSE: "dense", Comp.BITMASK: "bitmask", Comp.CSR: "csr"}


@dataclass(frozen=True)
class Stream:
    """The stored form of one weight block: LOADW's fmt and cb, its length and the codebook."""

    fmt: Comp
    cb: Book
    clen: int
    count: int
    codebook: np.ndarray | None = None

    @property
    def name(self) -> str:
        return _BASE[self.fmt] + ("+cb16" if self.cb == Book.K16 else "")

    def encode(self, values: np.ndarray) -> bytes:
        """The stream bytes (runtime/weightcodec.py layout, what LOADW decodes)."""
        sf = wc.StreamFormat(_BASE[self.fmt], BOOK16 if self.cb == Book.K16 else 0)
        raw = wc.encode(values, sf, self.codebook)
        assert len(raw) == self.clen, f"{self.name}: {len(raw)} bytes, predicted {self.clen}"
        return raw


def codebook16(v: np.ndarray) -> np.ndarray | None:
    """A 16-entry codebook holding 0 and every value of v (sorted, padded with its last
    entry), or None when v has more than 15 distinct nonzero values."""
    u = np.unique(np.concatenate([v, np.zeros(1, np.int8)]))
    if len(u) > BOOK16:
        return None
    return np.concatenate([u, np.full(BOOK16 - len(u), u[-1], np.int8)]).astype(np.int8)


def stream_sizes(v: np.ndarray) -> dict[tuple[Comp, Book], int]:
    """Bytes of the flat int8 block v in every format LOADW decodes (codebook formats only when
    a 16-entry codebook holds it); the 256-entry codebook is never smaller than raw values."""
    count = v.size
    nz = np.flatnonzero(v)
    nnz = len(nz)
    gaps = np.diff(nz, prepend=-1) - 1
    n_csr = nnz + int((gaps // (wc.MAX_GAP + 1)).sum())
    mb = -(-count // 8)
    out = {(Comp.DENSE, Book.NONE): count, (Comp.BITMASK, Book.NONE): mb + nnz,
           (Comp.CSR, Book.NONE): 4 + (n_csr + 1) // 2 + n_csr}
    if codebook16(v) is not None:
        out[Comp.DENSE, Book.K16] = _k16(count)
        out[Comp.BITMASK, Book.K16] = mb + _k16(nnz)
        out[Comp.CSR, Book.K16] = 4 + (n_csr + 1) // 2 + _k16(n_csr)
    return out


def _k16(n: int) -> int:
    """Bytes of n values as 4-bit indices after a 16-entry codebook."""
    return BOOK16 + (n + 1) // 2


def _k16(n: int) -> int:
    """Bytes of n values as 4-bit indices after a 16-entry codebook."""
    return BOOK16 + (n + 1) // 2


def choose_stream(v: np.ndarray, compress: bool = True) -> Stream:
    """The smallest stream of the flat int8 block v (dense when compress is False)."""
    v = np.ascontiguousarray(v, np.int8).reshape(-1)
    if not compress:
        return Stream(Comp.DENSE, Book.NONE, v.size, v.size)
    sizes = stream_sizes(v)
    fmt, cb = min((f for f in _FORMATS if f in sizes), key=lambda f: sizes[f])
    return Stream(fmt, cb, sizes[fmt, cb], v.size, codebook16(v) if cb == Book.K16 else None)


@dataclass(frozen=True)
class MacWeights:
    """The sparsity hint of one MAC instruction's weights and, per group, the effective K per
    column fold under it (what cycles.gemm_cycles_kf takes)."""

    hint: Sparse
    kfs: tuple[np.ndarray, ...]


class WeightPlanner:
    """Per program: cached stream choices and sparsity plans of weight blocks, keyed by the
    caller (const value, block bounds), since the tiler evaluates many tilings."""

    def __init__(self, target: Target, compress: bool = True, sparse: bool = True) -> None:
        self.target = target
        self.params = target.vm_params()
        self.compress, self.sparse = compress, sparse
        self._streams: dict[Any, Stream] = {}
        self._macs: dict[Any, MacWeights] = {}

    def stream(self, key: Any, block: np.ndarray) -> Stream:
        if key not in self._streams:
            self._streams[key] = choose_stream(block, self.compress)
        return self._streams[key]

    def mac(self, key: Any, groups: np.ndarray, m: int) -> MacWeights:
        """The hint for weights groups[g, n, k] (int8) that minimises the cycles of an m-row
        product: dense, zero-block skipping, or 2:4 at double rate, as the target allows.
        Ties go to dense (the VM need not scan the weights)."""
        if key in self._macs:
            return self._macs[key]
        w = np.ascontiguousarray(groups, np.int8)
        g, n, k = w.shape
        t = self.target
        dense = tuple(np.full(cycles.cdiv(n, t.cols), k, np.int64) for _ in range(g))
        best = MacWeights(Sparse.DENSE, dense)
        if self.sparse:
            cands = []
            if t.zero_block:
                cands.append((Sparse.ZERO_BLOCK, False))
            if t.two_four:
                cands.append((Sparse.TWO_FOUR, True))
            best_c = self._gemm(best.kfs, m, n)
            for hint, two_four in cands:
                kfs = []
                for gi in range(g):
                    kf, st = kfold(w[gi], self.params, two_four)
                    if st != 0:
                        break
                    kfs.append(kf)
                else:
                    c = self._gemm(tuple(kfs), m, n)
                    if c < best_c:
                        best, best_c = MacWeights(hint, tuple(kfs)), c
        self._macs[key] = best
        return best

    def _gemm(self, kfs: tuple[np.ndarray, ...], m: int, n: int) -> int:
        t = self.target
        df = {"os": cycles.DF_OS, "ws": cycles.DF_WS, "is": cycles.DF_IS}[t.dataflow]
        return sum(int(cycles.gemm_cycles_kf(m, n, kf, t.rows, t.cols, df, int(t.fold_overlap)))
                   for kf in kfs)

    def mac_cycles(self, op: Opcode, mw: MacWeights, f: dict[str, int]) -> int:
        """Cycles of a CONV/MATMUL with fields f and weights mw: exactly the VM's count."""
        row = np.zeros(isa.N_COLS, np.int64)
        row[isa.C_OPCODE] = int(op)
        for name, val in f.items():
            row[isa.COL[name]] = val
        g, m, n, _, in_dt = cycles.gemm_shape(row)
        assert g == len(mw.kfs), "one effective-K table per group"
        c = self._gemm(mw.kfs, int(m), int(n))
        return c * int(self.params[P_INT16_SLOWDOWN]) if in_dt != DType.I8 else c


# ---- reading the choices back from a program (ocrc disasm --stats, benchmarks)
@dataclass
class LayerWeights:
    """One layer's weight traffic: the distinct streams it stores and what its LOADWs move."""

    layer: str
    stored: int = 0  # bytes of the distinct streams
    stored_dense: int = 0  # their decompressed bytes
    moved: int = 0  # bytes all LOADWs of one inference read
    moved_dense: int = 0
    formats: dict[str, int] | None = None  # stored bytes per format name
    hints: dict[str, int] | None = None  # MAC instructions per sparsity hint


def weight_report(fields: np.ndarray, layer_ids: np.ndarray, layers: list[str]
                  ) -> list[LayerWeights]:
    """Per layer (program order), from a decoded program: weight stream formats, bytes stored
    and moved against dense, and the sparsity hints of its MAC instructions."""
    out: dict[int, LayerWeights] = {}
    seen: set[tuple[int, int]] = set()
    for pc in range(fields.shape[0]):
        row = fields[pc]
        op = int(row[isa.C_OPCODE])
        if op not in (Opcode.LOADW, Opcode.CONV, Opcode.MATMUL):
            continue
        lid = int(layer_ids[pc])
        lw = out.setdefault(lid, LayerWeights(layers[lid], formats=defaultdict(int),
                                              hints=defaultdict(int)))
        assert lw.formats is not None and lw.hints is not None
        if op == Opcode.LOADW:
            clen, count = int(row[isa.C_CLEN]), int(row[isa.C_COUNT])
            lw.moved += clen
            lw.moved_dense += count
            key = (int(row[isa.C_DRAM]), clen)
            if key not in seen:
                seen.add(key)
                lw.stored += clen
                lw.stored_dense += count
                name = Comp(int(row[isa.C_FMT])).name.lower()
                if int(row[isa.C_CB]) != Book.NONE:
                    name += f"+{Book(int(row[isa.C_CB])).name.lower()}"
                lw.formats[name] += clen
        else:
            lw.hints[Sparse(int(row[isa.C_SPARSE])).name.lower()] += 1
    return [out[k] for k in sorted(out) if out[k].moved_dense]
