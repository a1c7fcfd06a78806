"""Scheduling across the three queues: the emitter produces instructions in a valid sequential
order (program order); this module derives the dependency tokens that let the load, compute and
store queues run concurrently without breaking that order's semantics (as VTA does).

For every instruction it finds, per other queue, the latest earlier instruction it conflicts
with (read-after-write, write-after-read, write-after-write on 64-byte blocks of SRAM or DRAM).
A dependency already implied by an earlier token of the same queue pair needs nothing; otherwise
the producer pushes and the consumer pops one token, so tokens pair up in FIFO order. Load and
store queues share no FIFO: such a dependency goes through a compute-queue NOP. Double
buffering is then just the emitter's ping-pong buffers: the tokens let tile i+1 load while
tile i computes and tile i-1 stores.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from ocrc.runtime.isa import FORMATS, Opcode, PoolMode, Queue

BLOCK = 64  # bytes; every buffer the backend allocates is aligned to it
SRAM, DRAM = 0, 1


@dataclass
class Insn:
    """One instruction before encoding: opcode, fields (names of docs/isa.md) and the layer
    (IR node) it came from."""

    op: Opcode
    fields: dict[str, int]
    layer: str
    reads: list[tuple[int, int, int]] = field(default_factory=list)  # (memory, lo, hi)
    writes: list[tuple[int, int, int]] = field(default_factory=list)

    @property
    def queue(self) -> Queue:
        if self.op is Opcode.NOP:
            return Queue(self.fields["queue"])
        return FORMATS[self.op].queue


def _es(dt: int) -> int:
    return 1 << dt


def _ext3(f: dict[str, int], p: str, n0: int) -> int:
    """Extent in bytes of a 3-D strided access with strides p1/p2 and n0 contiguous bytes."""
    return (f["n2"] - 1) * f[f"{p}2"] + (f["n1"] - 1) * f[f"{p}1"] + n0


def accesses(op: Opcode, f: dict[str, int]) -> tuple[list[tuple[int, int, int]],
                                                     list[tuple[int, int, int]]]:
    """(reads, writes) as bounding byte ranges (memory, lo, hi) of one instruction."""
    g: dict[str, int] = defaultdict(int, f)  # absent fields encode as 0
    r: list[tuple[int, int, int]] = []
    w: list[tuple[int, int, int]] = []

    def rd(mem: int, addr: int, n: int) -> None:
        r.append((mem, addr, addr + n))

    def wr(mem: int, addr: int, n: int) -> None:
        w.append((mem, addr, addr + n))

    if op in (Opcode.LOAD, Opcode.STORE):
        d, s = _ext3(g, "ds", g["n0"]), _ext3(g, "ss", g["n0"])
        if op is Opcode.LOAD:
            rd(DRAM, g["dram"], d)
            wr(SRAM, g["sram"], s)
        else:
            rd(SRAM, g["sram"], s)
            wr(DRAM, g["dram"], d)
    elif op is Opcode.LOADW:
        rd(DRAM, g["dram"], g["clen"])
        wr(SRAM, g["sram"], g["count"])
    elif op in (Opcode.CONV, Opcode.MATMUL):
        ie, oe = _es(g["in_dt"]), _es(g["out"])
        if op is Opcode.CONV:
            from ocrc.runtime.cycles import conv_out
            ho = conv_out(g["h"], g["pt"], g["pb"], g["kh"], g["sh"], g["dh"])
            wo = conv_out(g["w"], g["pl"], g["pr"], g["kw"], g["sw"], g["dw"])
            kg = g["kh"] * g["kw"] * (g["cin"] // g["groups"])
            rd(SRAM, g["src"], g["h"] * g["w"] * g["cin"] * ie)
            rd(SRAM, g["wgt"], g["cout"] * kg)
            n, out_n = g["cout"], ho * wo * g["cout"] * oe
        else:
            rd(SRAM, g["a"], (g["m"] - 1) * g["a_rs"] + g["k"] * ie)
            rd(SRAM, g["b"], g["n"] * g["k"])
            n, out_n = g["n"], (g["m"] - 1) * g["d_rs"] + g["n"] * oe
        rd(SRAM, g["qp"], 12 * n)
        wr(SRAM, g["dst"], out_n)
        if g["acc"]:
            rd(SRAM, g["dst"], out_n)
    elif op is Opcode.REQUANT:
        rd(SRAM, g["src"], 4 * g["count"])
        rd(SRAM, g["qp"], 12 * g["chan"])
        wr(SRAM, g["dst"], g["count"] * _es(g["out_dt"]))
    elif op is Opcode.RESCALE:
        rd(SRAM, g["src"], g["count"] * _es(g["in_dt"]))
        wr(SRAM, g["dst"], g["count"] * _es(g["out_dt"]))
    elif op in (Opcode.ADD, Opcode.MUL, Opcode.IADD, Opcode.IMUL):
        ea, eb, eo = (_es(g[k]) for k in ("a_dt", "b_dt", "out_dt"))
        rd(SRAM, g["a"], g["count"] * ea)
        rd(SRAM, g["b"], g["b_period"] * eb)
        wr(SRAM, g["dst"], g["count"] * eo)
    elif op is Opcode.LUT:
        e = _es(g["out_dt"])
        rd(SRAM, g["src"], g["count"])
        rd(SRAM, g["table"], 256 * e * max(g["tables"], 1))
        wr(SRAM, g["dst"], g["count"] * e)
    elif op is Opcode.POOL:
        from ocrc.runtime.cycles import conv_out
        ho = conv_out(g["h"], g["pt"], g["pb"], g["kh"], g["sh"], 1)
        wo = conv_out(g["w"], g["pl"], g["pr"], g["kw"], g["sw"], 1)
        rd(SRAM, g["src"], g["h"] * g["w"] * g["c"])
        if g["mode"] != PoolMode.MAX:
            rd(SRAM, g["qp"], 8 * (g["kh"] * g["kw"] + 1))
        wr(SRAM, g["dst"], ho * wo * g["c"])
    elif op is Opcode.COPY:
        e = _es(g["esize"])
        for key, fn in (("s", rd), ("d", wr)):
            ext = ((g["n2"] - 1) * g[f"{key}s2"] + (g["n1"] - 1) * g[f"{key}s1"]
                   + (g["n0"] - 1) * g[f"{key}s0"] + e)
            fn(SRAM, g["src" if key == "s" else "dst"], ext)
    elif op is Opcode.FILL:
        wr(SRAM, g["dst"], g["count"] * _es(g["dt"]))
    return r, w


_PUSH_TO = {(Queue.LOAD, Queue.COMPUTE): "push_next", (Queue.COMPUTE, Queue.LOAD): "push_prev",
            (Queue.COMPUTE, Queue.STORE): "push_next", (Queue.STORE, Queue.COMPUTE): "push_prev"}
_POP_FROM = {(Queue.COMPUTE, Queue.LOAD): "pop_prev", (Queue.LOAD, Queue.COMPUTE): "pop_next",
             (Queue.STORE, Queue.COMPUTE): "pop_prev", (Queue.COMPUTE, Queue.STORE): "pop_next"}


class _Tracker:
    """Per memory and queue: the index of the last instruction that wrote / read each block."""

    def __init__(self, sizes: tuple[int, int]) -> None:
        self.lastw = [[np.full(-(-s // BLOCK) + 1, -1, np.int64) for _ in Queue] for s in sizes]
        self.lastr = [[np.full(-(-s // BLOCK) + 1, -1, np.int64) for _ in Queue] for s in sizes]

    @staticmethod
    def _blk(lo: int, hi: int) -> slice:
        return slice(lo // BLOCK, -(-hi // BLOCK))

    def need(self, ins: Insn, q: Queue) -> int:
        """Latest instruction of queue q that ins conflicts with (-1: none)."""
        best = -1
        for mem, lo, hi in ins.reads + ins.writes:
            a = self.lastw[mem][q][self._blk(lo, hi)]
            if a.size:
                best = max(best, int(a.max()))
        for mem, lo, hi in ins.writes:
            a = self.lastr[mem][q][self._blk(lo, hi)]
            if a.size:
                best = max(best, int(a.max()))
        return best

    def record(self, ins: Insn, idx: int) -> None:
        q = ins.queue
        for mem, lo, hi in ins.reads:
            self.lastr[mem][q][self._blk(lo, hi)] = idx
        for mem, lo, hi in ins.writes:
            self.lastw[mem][q][self._blk(lo, hi)] = idx


def assign_tokens(insns: list[Insn]) -> list[Insn]:
    """The instructions with dependency flags set (and NOPs inserted for load<->store
    dependencies). Program order is kept; flags present on the input are discarded."""
    out: list[Insn] = []
    hi = [64, 64]
    for ins in insns:
        ins.reads, ins.writes = accesses(ins.op, ins.fields)
        for mem, _, end in ins.reads + ins.writes:
            hi[mem] = max(hi[mem], end)
    tr = _Tracker((hi[SRAM], hi[DRAM]))
    synced = {(a, b): -1 for a in Queue for b in Queue}  # latest producer of a seen by b

    def flag(idx: int, name: str) -> None:
        out[idx].fields[name] = 1

    def link(prod_q: Queue, cons_q: Queue, prod: int, cons: Insn) -> None:
        flag(prod, _PUSH_TO[prod_q, cons_q])
        cons.fields[_POP_FROM[cons_q, prod_q]] = 1
        synced[prod_q, cons_q] = prod

    def add(ins: Insn) -> None:
        tr.record(ins, len(out))
        out.append(ins)

    for ins in insns:
        for k in ("pop_prev", "pop_next", "push_prev", "push_next"):
            ins.fields.pop(k, None)
        q = ins.queue
        need = {p: tr.need(ins, p) for p in Queue if p != q}
        far = Queue.STORE if q is Queue.LOAD else Queue.LOAD if q is Queue.STORE else None
        if far is not None and need[far] > synced[far, q]:
            # route far -> compute -> q through a NOP, which also covers every compute dep.
            nop = Insn(Opcode.NOP, {"queue": int(Queue.COMPUTE)}, ins.layer)
            if need[far] > synced[far, Queue.COMPUTE]:
                link(far, Queue.COMPUTE, need[far], nop)
            add(nop)
            synced[far, q] = need[far]
            need[Queue.COMPUTE] = len(out) - 1
        for p, prod in need.items():
            if p is not far and prod > synced[p, q]:
                link(p, q, prod, ins)
        add(ins)
    return out
