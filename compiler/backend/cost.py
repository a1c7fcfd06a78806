"""The analytic cost model of the backend: cycles of one instruction (the very formulas of
runtime/cycles.py, which the VM runs) and of one tile, max(compute, memory) as in Vela's
npu_performance. The tiler compares candidate tilings with it; the sum over tiles is the
compiler's estimate of a program's cycles (benchmarks compare it with the VM's count).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ocrc.runtime import cycles, isa
from ocrc.runtime.isa import Opcode
from ocrc.runtime.target import Target


@dataclass(frozen=True)
class Machine:
    """The target's parameters in the form runtime.cycles takes them."""

    target: Target
    params: np.ndarray
    vovh: np.ndarray

    @staticmethod
    def of(target: Target) -> Machine:
        return Machine(target, target.vm_params(), target.vector_overheads())

    def insn(self, op: Opcode, **fields: int) -> int:
        """Cycles of one instruction with dense weights: exactly what the VM counts."""
        row = np.zeros(isa.N_COLS, np.int64)
        row[isa.C_OPCODE] = int(op)
        for k, v in fields.items():
            row[isa.COL[k]] = v
        return int(cycles.insn_cycles(row, self.params, self.vovh))

    def gemm(self, m: int, n: int, k: int, groups: int = 1) -> int:
        t = self.target
        return groups * int(cycles.gemm_cycles(m, n, k, t.rows, t.cols, _df(t.dataflow),
                                               int(t.fold_overlap)))

    def dma(self, nbytes: int) -> int:
        if nbytes <= 0:
            return 0
        return int(cycles.dma_cycles(nbytes, self.target.dram_bw, self.target.dram_latency))

    def vector(self, op: Opcode, work: int) -> int:
        if work <= 0:
            return 0
        return int(cycles.vector_cycles(work, self.target.lanes, int(self.vovh[int(op)])))


def _df(name: str) -> int:
    return {"os": cycles.DF_OS, "ws": cycles.DF_WS, "is": cycles.DF_IS}[name]


@dataclass
class TileCost:
    """Busy cycles of one tile per unit (DMA split into the load and store queues)."""

    mac: int = 0
    vector: int = 0
    load: int = 0
    store: int = 0

    @property
    def compute(self) -> int:
        return self.mac + self.vector

    @property
    def cycles(self) -> int:
        """The tile alone: max(compute, memory)."""
        return max(self.compute, self.load + self.store)


def pipeline_cycles(tiles: list[TileCost]) -> int:
    """A kernel's tiles on the three queues with double buffering: tile i computes while tile
    i+1 loads and tile i-1 stores, so each step costs the slowest of the three; the first load
    and the last store are not hidden."""
    if not tiles:
        return 0
    total = tiles[0].load + tiles[-1].store
    for i, t in enumerate(tiles):
        nxt = tiles[i + 1].load if i + 1 < len(tiles) else 0
        prev = tiles[i - 1].store if i > 0 else 0
        total += max(t.compute, nxt, prev)
    return total
