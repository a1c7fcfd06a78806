"""Instruction emission, shared machinery: npu ops -> instructions through the runtime's ISA (the
emitter only names fields; `isa.encode` does the bits).

`Ctx` is one program being built: the instruction list, the DRAM constants, the cost model.
`KernelEmitter` is one kernel's tile loop: a bump allocator over its SRAM workspace, DMA/COPY
helpers that split transfers to the 16-bit count fields, `fetch`/`put` of 2-D boxes of an
activation wherever it lives (SRAM: in place or a COPY; DRAM: LOAD/STORE), and per-tile cost
accounting (max(compute, memory), cost.py). In dry mode nothing is recorded: the tiler runs
candidate tilings through the very emitter to measure their workspace and cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from ocrc.compiler.backend.cost import Machine, TileCost, pipeline_cycles
from ocrc.compiler.backend.memory import MemoryPlan, align
from ocrc.compiler.backend.schedule import DRAM, SRAM, Insn
from ocrc.compiler.backend.weights import MacWeights, Stream, WeightPlanner
from ocrc.compiler.ir.graph import Graph, Value
from ocrc.runtime.isa import FORMATS, DType, Opcode, Unit
from ocrc.runtime.target import Target

MAX16 = 65535  # the n0/n1/n2 count fields are 16 bits
CHUNK = 32768  # row length used to split long contiguous transfers
_ADDR_FIELDS = frozenset(("src", "dst", "a", "b", "wgt", "qp", "table", "dram", "sram"))
DT = {1: DType.I8, 2: DType.I16, 4: DType.I32}
# the fields a CONV/MATMUL's cycles depend on besides its weights (cycles.gemm_shape)
_MAC_SHAPE = ("h", "w", "cin", "cout", "kh", "kw", "sh", "sw", "dh", "dw", "pt", "pb", "pl",
              "pr", "groups", "m", "n", "k", "in_dt", "sparse")


class WorkspaceOverflow(Exception):
    """A candidate tiling needs more SRAM workspace than the kernel's budget (internal)."""


@dataclass
class View:
    """An activation as a dense [P][C] array of items at (mem, addr)."""

    mem: int
    addr: int
    p: int
    c: int
    item: int

    def at(self, p0: int, c0: int = 0) -> int:
        return self.addr + (p0 * self.c + c0) * self.item


class Ctx:
    """One program under construction."""

    def __init__(self, target: Target, graph: Graph, plan: MemoryPlan, const: Any,
                 weights: WeightPlanner | None = None) -> None:
        self.target = target
        self.graph = graph
        self.plan = plan
        self.machine = Machine.of(target)
        self.weights = weights or WeightPlanner(target)
        self.insns: list[Insn] = []
        self._const_fn = const  # (name, bytes) -> DRAM address
        self._consts: dict[str, int] = {}
        self._cost_cache: dict[tuple[Any, ...], int] = {}
        self.mac_cache: dict[tuple[Any, ...], int] = {}  # CONV/MATMUL cycles per weights, shape
        self.scratch_base = 0
        self.values = {n.output: n.attrs["value"] for n in graph.nodes if n.op.name == "const"}

    def const(self, name: str, data: np.ndarray | bytes) -> int:
        if name not in self._consts:
            raw = data if isinstance(data, bytes) else np.ascontiguousarray(data).tobytes()
            self._consts[name] = self._const_fn(name, raw)
        return self._consts[name]

    def array(self, v: Value | None) -> np.ndarray:
        assert v is not None and v in self.values, "operand must be a constant"
        return np.asarray(self.values[v])

    def cost(self, op: Opcode, f: dict[str, int]) -> int:
        # unsorted: a call site always names its fields in the same order (a different order
        # is only another cache entry)
        key = (op, *[(k, v) for k, v in f.items() if k not in _ADDR_FIELDS
                     and not k.startswith(("pop", "push"))])
        c = self._cost_cache.get(key)
        if c is None:
            c = self._cost_cache[key] = self.machine.insn(op, **{
                k: v for k, v in f.items() if not k.startswith(("pop", "push"))})
        return c

    def flat(self, v: Value) -> View:
        """v as [size][1]: elementwise kernels walk the bytes in memory order."""
        w = self.view(v)
        return View(w.mem, w.addr, v.type.size, 1, w.item)

    def view(self, v: Value, c: int | None = None) -> View:
        """The [P][C] view of an activation (C items per row; default its innermost memory
        dim; conv/pool pass the channels of an NHWC value, GEMMs the row length)."""
        from ocrc.compiler.backend import layout as L
        s = self.plan.of[v]
        if c is None:
            ms = L.mem_shape(v.type.shape, self.plan.layout[v])
            c = ms[-1] if ms else 1
        mem = SRAM if s.home == "sram" else DRAM
        addr = s.addr + (self.scratch_base if s.kind == "temp" and s.home == "dram" else 0)
        return View(mem, addr, v.type.size // max(c, 1), c, v.type.dtype.np.itemsize)


class KernelEmitter:
    """Shared helpers of one kernel's emission (subclasses implement `run`)."""

    def __init__(self, ctx: Ctx, kernel: Any, budget: int, params: dict[str, Any],
                 dry: bool = False) -> None:
        self.ctx, self.kernel, self.budget, self.params, self.dry = (ctx, kernel, budget,
                                                                     params, dry)
        self.top = 0
        self.peak = 0
        self.tiles: list[TileCost] = [TileCost()]
        self.out: list[Insn] = []
        self.layer = kernel.name if kernel is not None else ""
        self.overlap = True  # False when single-buffered staging serialises the tiles
        self.dram_bytes = 0  # DRAM bytes the kernel's DMAs move (the tiler's tie-breaker)

    # ---- bookkeeping
    def alloc(self, nbytes: int) -> int:
        addr = self.top
        self.top = align(addr + max(nbytes, 1))
        self.peak = max(self.peak, self.top)
        if self.top > self.budget and not self.dry:
            raise WorkspaceOverflow(f"{self.layer}: workspace {self.top} > {self.budget}")
        return addr

    def tile(self) -> None:
        """Start the cost accounting of a new tile."""
        if self.tiles[-1].cycles:
            self.tiles.append(TileCost())

    @property
    def estimate(self) -> int:
        if self.overlap:
            return pipeline_cycles(self.tiles)
        return sum(t.load + t.compute + t.store for t in self.tiles)  # single-buffered: serial

    def ins(self, op: Opcode, mac: MacWeights | None = None, **f: int) -> None:
        """Append an instruction and charge its cycles to the current tile; a CONV/MATMUL
        passes its weights' sparsity plan (its `sparse` field is set from it)."""
        unit = FORMATS[op].unit
        if mac is not None:
            f["sparse"] = int(mac.hint)
            key = (op, id(mac), *(f.get(k, 0) for k in _MAC_SHAPE))  # macs live in the planner
            c = self.ctx.mac_cache.get(key)  # type: ignore[assignment]
            if c is None:
                c = self.ctx.mac_cache[key] = self.ctx.weights.mac_cycles(op, mac, f)
        else:
            c = self.ctx.cost(op, f)
        t = self.tiles[-1]
        if unit is Unit.MAC:
            t.mac += c
        elif op is Opcode.STORE:
            t.store += c
        elif unit is Unit.DMA:
            t.load += c
        if op is Opcode.LOADW:
            self.dram_bytes += f["clen"]
        elif unit is Unit.DMA:
            self.dram_bytes += f["n0"] * f["n1"] * f["n2"]
        elif unit is Unit.VECTOR:
            t.vector += c
        if not self.dry:
            self.out.append(Insn(op, f, self.layer))

    def const(self, name: str, data: np.ndarray | bytes) -> int:
        return 0 if self.dry else self.ctx.const(f"k{self.kernel.index}.{name}", data)

    # ---- transfers
    def _contig(self, emit: Any, a: int, b: int, nbytes: int) -> None:
        """Contiguous bytes: rows of CHUNK, at most MAX16 rows per instruction."""
        row = min(nbytes, CHUNK)
        full, rem = divmod(nbytes, row)
        while full:
            k = min(full, MAX16)
            emit(a, b, row, k, row, row)
            a, b, full = a + k * row, b + k * row, full - k
        if rem:
            emit(a, b, rem, 1, rem, rem)

    def dma(self, op: Opcode, dram: int, sram: int, n0: int, n1: int = 1, ds1: int = 0,
            ss1: int = 0) -> None:
        """LOAD/STORE of n1 rows of n0 bytes (row strides ds1 in DRAM, ss1 in SRAM)."""
        def emit(d: int, s: int, m0: int, m1: int, d1: int, s1: int) -> None:
            self.ins(op, dram=d, sram=s, n0=m0, n1=m1, n2=1, ds1=d1 if m1 > 1 else 0,
                     ss1=s1 if m1 > 1 else 0)
        if n1 == 1 or (ds1 == n0 and ss1 == n0):
            self._contig(emit, dram, sram, n0 * n1)
            return
        if n0 > MAX16:  # rows longer than the n0 field (int16 data): each row in pieces
            for r in range(n1):
                self._contig(emit, dram + r * ds1, sram + r * ss1, n0)
            return
        for r in range(0, n1, MAX16):
            emit(dram + r * ds1, sram + r * ss1, n0, min(MAX16, n1 - r), ds1, ss1)

    def copy(self, src: int, dst: int, n0: int, n1: int, ss1: int, ds1: int, item: int = 1,
             n2: int = 1, ss2: int = 0, ds2: int = 0, ss0: int = 0, ds0: int = 0) -> None:
        """SRAM -> SRAM COPY of n2 x n1 x n0 elements (strides in bytes; 0 = dense)."""
        ss0, ds0 = ss0 or item, ds0 or item
        es = int(DT[item])
        if n2 == 1 and ss0 == ds0 == item and (n1 == 1 or ss1 == ds1 == n0 * item):
            total = n0 * n1
            row = min(total, CHUNK)
            full, rem = divmod(total, row)
            a, b = src, dst
            while full:
                k = min(full, MAX16)
                self.ins(Opcode.COPY, src=a, dst=b, n0=row, n1=k, n2=1, ss0=item, ds0=item,
                         ss1=row * item, ds1=row * item, esize=es)
                a, b, full = a + k * row * item, b + k * row * item, full - k
            if rem:
                self.ins(Opcode.COPY, src=a, dst=b, n0=rem, n1=1, n2=1, ss0=item, ds0=item,
                         esize=es)
            return
        assert n0 <= MAX16 and n2 <= MAX16
        for r in range(0, n1, MAX16):
            self.ins(Opcode.COPY, src=src + r * ss1, dst=dst + r * ds1, n0=n0,
                     n1=min(MAX16, n1 - r), n2=n2, ss0=ss0, ds0=ds0, ss1=ss1, ds1=ds1,
                     ss2=ss2, ds2=ds2, esize=es)

    def fetch(self, v: View, p0: int, p1: int, c0: int, c1: int, buf: int | None) -> int:
        """SRAM address of the dense box [p0, p1) x [c0, c1) of v (in place when possible,
        else gathered into buf)."""
        rows, cb = p1 - p0, c1 - c0
        if v.mem == SRAM and (cb == v.c or rows == 1):
            return v.at(p0, c0)
        assert buf is not None, "fetch needs a staging buffer"
        if v.mem == SRAM:
            self.copy(v.at(p0, c0), buf, cb, rows, v.c * v.item, cb * v.item, v.item)
        else:
            self.dma(Opcode.LOAD, v.at(p0, c0), buf, cb * v.item, rows, v.c * v.item,
                     cb * v.item)
        return buf

    def needs_buf(self, v: View, rows: int, cb: int) -> bool:
        return not (v.mem == SRAM and (cb == v.c or rows == 1))

    def in_place(self, v: View, cb: int) -> bool:
        """True if a box of all channels can be computed directly at its home."""
        return v.mem == SRAM and cb == v.c

    def put(self, v: View, p0: int, p1: int, c0: int, c1: int, src: int) -> None:
        """Write the dense box at src to [p0, p1) x [c0, c1) of v (nothing if src is it)."""
        rows, cb = p1 - p0, c1 - c0
        if v.mem == SRAM:
            if src != v.at(p0, c0) or not (cb == v.c or rows == 1):
                self.copy(src, v.at(p0, c0), cb, rows, cb * v.item, v.c * v.item, v.item)
        else:
            self.dma(Opcode.STORE, v.at(p0, c0), src, cb * v.item, rows, v.c * v.item,
                     cb * v.item)

    def weight_streams(self, name: str, blocks: list[tuple[Any, np.ndarray]]
                       ) -> tuple[int, list[tuple[int, Stream]]]:
        """Store weight blocks (key, int8 array), in load order, as one const of back-to-back
        streams, each in its smallest format; returns the DRAM address and (offset, stream)
        per block. A key names a block across tilings (its const value and bounds)."""
        streams = [self.ctx.weights.stream(k, b) for k, b in blocks]
        offs = np.concatenate([[0], np.cumsum([s.clen for s in streams])]).astype(int).tolist()
        blob = b"" if self.dry else b"".join(s.encode(b) for s, (_, b) in zip(streams, blocks))
        return self.const(name, blob), list(zip(offs, streams))

    def loadw(self, addr: int, stream: tuple[int, Stream], sram: int) -> None:
        """LOADW of one block stored by weight_streams."""
        off, s = stream
        self.ins(Opcode.LOADW, dram=addr + off, clen=s.clen, sram=sram, count=s.count,
                 fmt=int(s.fmt), cb=int(s.cb))

    def load_const(self, name: str, data: np.ndarray) -> int:
        """A constant (table, qp block) loaded once into the workspace."""
        raw = np.ascontiguousarray(data)
        buf = self.alloc(raw.nbytes)
        self.dma(Opcode.LOAD, self.const(name, raw), buf, raw.nbytes)
        return buf

    def run(self) -> None:
        raise NotImplementedError
