"""Static verification of a program before it runs: the safety boundary of the VM.

numba does not bounds-check, so every instruction is checked here: fields in range, every
address + extent of every strided access inside its memory (computed with Python integers, so
nothing overflows), int16/int32 operands aligned, dependency tokens balanced (the FIFO counts are
simulated in program order), HALT last. A program that passes cannot make the VM read or write
out of bounds, whatever its bytes. Errors name the instruction (disassembled) and the field.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ocrc.runtime import isa
from ocrc.runtime.cycles import conv_out
from ocrc.runtime.errors import ISAEncodeError, ProgramError
from ocrc.runtime.isa import COL, FORMATS, Book, Comp, DType, Opcode, PoolMode, Queue, Sparse
from ocrc.runtime.kernels_weights import stream_bounds
from ocrc.runtime.program import Program
from ocrc.runtime.qmath import LUT16_SIZE
from ocrc.runtime.target import Target

MAX_K = 65535  # keeps the int32 sums of int8 products exact (kernels.py)
_RANGE = {DType.I8: (-128, 127), DType.I16: (-32768, 32767), DType.I32: (-(2**31), 2**31 - 1)}
# Token FIFOs: load->compute, compute->load, compute->store, store->compute.
L2C, C2L, C2S, S2C = range(4)
# (queue, flag) -> FIFO; a missing entry means the flag is illegal on that queue.
POPS = {(Queue.COMPUTE, "pop_prev"): L2C, (Queue.STORE, "pop_prev"): C2S,
        (Queue.LOAD, "pop_next"): C2L, (Queue.COMPUTE, "pop_next"): S2C}
PUSHES = {(Queue.COMPUTE, "push_prev"): C2L, (Queue.STORE, "push_prev"): S2C,
          (Queue.LOAD, "push_next"): L2C, (Queue.COMPUTE, "push_next"): C2S}


@dataclass
class VerifiedProgram:
    """What verification learnt: the decoded field matrix and static per-instruction facts."""

    program: Program
    fields: np.ndarray  # int64[n, isa.N_COLS]
    queues: np.ndarray  # int64[n]
    dram_read: np.ndarray  # bytes per instruction
    dram_written: np.ndarray
    macs: np.ndarray  # useful MACs per instruction
    sram_peak: int  # one past the highest SRAM byte any instruction touches


def esize(dt: int) -> int:
    return 1 << dt


def queue_of(row: np.ndarray) -> Queue:
    op = Opcode(int(row[isa.C_OPCODE]))
    return Queue(int(row[isa.C_QUEUE])) if op is Opcode.NOP else FORMATS[op].queue


class _Insn:
    """Checks of one instruction; every failure names pc, the disassembly and the field."""

    def __init__(self, pc: int, row: np.ndarray, target: Target, prog: Program) -> None:
        self.pc, self.row, self.target, self.prog = pc, row, target, prog
        self.sram_hi = 0

    def __getitem__(self, name: str) -> int:
        return int(self.row[COL[name]])

    def fail(self, field: str, msg: str) -> None:
        raise ProgramError(f"instruction {self.pc} `{isa.disasm_row(self.row)}`: field "
                           f"'{field}' = {self[field] if field in COL else '?'}: {msg}")

    def ge(self, *names: str, lo: int = 1) -> None:
        for n in names:
            if self[n] < lo:
                self.fail(n, f"must be >= {lo}")

    def one_of(self, name: str, allowed: tuple[int, ...]) -> None:
        if self[name] not in allowed:
            self.fail(name, f"expected one of {[int(a) for a in allowed]}")

    def clamp_ok(self, dt: int) -> None:
        lo, hi = _RANGE[DType(dt)]
        if not lo <= self["lo"] <= self["hi"] <= hi:
            self.fail("lo", f"clamp [lo={self['lo']}, hi={self['hi']}] must satisfy "
                      f"{lo} <= lo <= hi <= {hi}")

    def shift_ok(self, *names: str) -> None:
        for n in names:
            if not 1 <= self[n] <= 62:
                self.fail(n, "a multiplier shift must be in [1, 62]")

    def span(self, field: str, extent: int, mem: str = "sram", align: int = 1,
             strides: tuple[str, ...] = ()) -> None:
        """[addr, addr + extent) must lie inside mem; addr and strides multiples of align."""
        addr = self[field]
        size = self.target.sram_bytes if mem == "sram" else self.prog.dram_size
        if addr + extent > size:
            self.fail(field, f"accesses {mem.upper()} [{addr}, {addr + extent}), beyond its "
                      f"{size} bytes")
        for n in (field, *strides):
            if self[n] % align:
                self.fail(n, f"must be a multiple of {align} (element size)")
        if mem == "sram":
            self.sram_hi = max(self.sram_hi, addr + extent)


def _no_overlap(c: _Insn, counts: tuple[str, ...], strides: tuple[str, ...], e: int) -> None:
    """Written elements never overlap (so writes are order-free and the work of one
    instruction is bounded by the size of the memory it writes)."""
    extent = e
    for n, s in zip(counts, strides, strict=True):
        if c[n] > 1 and c[s] < extent:
            c.fail(s, f"destination rows overlap: stride {c[s]} < extent {extent}")
        extent = (c[n] - 1) * c[s] + extent


def _check_dma(c: _Insn, op: Opcode) -> None:
    c.ge("n0", "n1", "n2")
    dst = ("ss1", "ss2") if op is Opcode.LOAD else ("ds1", "ds2")
    _no_overlap(c, ("n1", "n2"), dst, c["n0"])
    ext_d = (c["n2"] - 1) * c["ds2"] + (c["n1"] - 1) * c["ds1"] + c["n0"]
    ext_s = (c["n2"] - 1) * c["ss2"] + (c["n1"] - 1) * c["ss1"] + c["n0"]
    c.span("dram", ext_d, "dram")
    c.span("sram", ext_s)
    if op is Opcode.STORE:
        lo, hi = c["dram"], c["dram"] + ext_d
        for r in c.prog.regions:
            if r.kind == "const" and lo < r.addr + r.size and r.addr < hi:
                c.fail("dram", f"STORE into const region '{r.name}'")


def _check_loadw(c: _Insn) -> None:
    """Static bounds of the stream length; its exact length depends on the stream's contents
    (popcount, csr entries), which the decoder checks (kernels_weights.loadw)."""
    c.ge("count")
    c.one_of("fmt", tuple(Comp))
    c.one_of("cb", tuple(Book))
    lo, hi = stream_bounds(c["fmt"], c["cb"], c["count"])
    if not lo <= c["clen"] <= hi:
        what = f"{Comp(c['fmt']).name.lower()}/{Book(c['cb']).name.lower()}"
        c.fail("clen", f"a {what} stream of count={c['count']} has {lo} <= clen <= {hi}")
    c.span("dram", c["clen"], "dram")
    c.span("sram", c["count"])


def _check_mac_common(c: _Insn) -> int:
    """The checks CONV and MATMUL share; returns the qp block's bytes per channel."""
    c.one_of("out", (DType.I8, DType.I16, DType.I32))
    c.one_of("in_dt", (DType.I8, DType.I16))
    if c["in_dt"] == DType.I16 and not c.target.int16:
        c.fail("in_dt", f"target '{c.target.name}' has no int16 MAC mode")
    if c["in_dt"] == DType.I16 and c["out"] == DType.I32:
        c.fail("out", "the wide (in_dt=i16) accumulator has no int32 form: out must be i8/i16")
    if c["acc"] and c["out"] != DType.I32:
        c.fail("acc", "accumulation needs out=i32")
    if c["lo"] > c["hi"]:
        c.fail("lo", "lo must be <= hi")
    c.one_of("sparse", tuple(Sparse))
    if c["sparse"] == Sparse.TWO_FOUR and not c.target.two_four:
        c.fail("sparse", f"target '{c.target.name}' has no 2:4 mode")
    if c["sparse"] == Sparse.ZERO_BLOCK and not c.target.zero_block:
        c.fail("sparse", f"target '{c.target.name}' has no zero-block skipping")
    return 16 if c["in_dt"] == DType.I16 else 12


def _check_conv(c: _Insn) -> int:
    c.ge("h", "w", "cin", "cout", "kh", "kw", "sh", "sw", "dh", "dw", "groups")
    qpe = _check_mac_common(c)
    g = c["groups"]
    for n in ("cin", "cout"):
        if c[n] % g:
            c.fail(n, f"must be divisible by groups={g}")
    ho = conv_out(c["h"], c["pt"], c["pb"], c["kh"], c["sh"], c["dh"])
    wo = conv_out(c["w"], c["pl"], c["pr"], c["kw"], c["sw"], c["dw"])
    if ho < 1 or wo < 1:
        c.fail("h" if ho < 1 else "w", f"the output is empty ({ho}x{wo})")
    kg = c["kh"] * c["kw"] * (c["cin"] // g)
    if kg > MAX_K:
        c.fail("cin", f"kh*kw*cin/groups = {kg} exceeds {MAX_K}")
    ie, oe = esize(c["in_dt"]), esize(c["out"])
    c.span("src", c["h"] * c["w"] * c["cin"] * ie, align=ie)
    c.span("wgt", c["cout"] * kg)
    c.span("qp", qpe * c["cout"], align=8 if qpe == 16 else 4)
    c.span("dst", ho * wo * c["cout"] * oe, align=oe)
    return ho * wo * c["cout"] * kg


def _check_matmul(c: _Insn) -> int:
    c.ge("m", "n", "k")
    qpe = _check_mac_common(c)
    ie, oe = esize(c["in_dt"]), esize(c["out"])
    if c["m"] > 1 and c["d_rs"] < c["n"] * oe:
        c.fail("d_rs", f"output rows overlap (d_rs < n*{oe})")
    c.span("a", (c["m"] - 1) * c["a_rs"] + c["k"] * ie, align=ie, strides=("a_rs",))
    c.span("b", c["n"] * c["k"])
    c.span("qp", qpe * c["n"], align=8 if qpe == 16 else 4)
    c.span("dst", (c["m"] - 1) * c["d_rs"] + c["n"] * oe, align=oe, strides=("d_rs",))
    return c["m"] * c["n"] * c["k"]


def _check_eltwise(c: _Insn, op: Opcode) -> None:
    c.ge("count")
    if not 1 <= c["b_period"] <= c["count"]:
        c.fail("b_period", f"must be in [1, count={c['count']}]")
    if op in (Opcode.ADD, Opcode.MUL):
        c.clamp_ok(DType.I8)
        c.shift_ok(*(("sa", "sb") if op is Opcode.ADD else ("shift",)))
        ea = eb = eo = 1
    else:
        ins = tuple(DType) if op is Opcode.IADD else (DType.I8, DType.I16)
        c.one_of("a_dt", ins)
        c.one_of("b_dt", ins)
        c.one_of("out_dt", (DType.I8, DType.I16))
        c.clamp_ok(c["out_dt"])
        if op is Opcode.IMUL or c["shift"]:
            c.shift_ok("shift")
        ea, eb, eo = esize(c["a_dt"]), esize(c["b_dt"]), esize(c["out_dt"])
    c.span("a", c["count"] * ea, align=ea)
    c.span("b", c["b_period"] * eb, align=eb)
    c.span("dst", c["count"] * eo, align=eo)


def _check_pool(c: _Insn) -> None:
    c.ge("h", "w", "c", "kh", "kw", "sh", "sw")
    c.one_of("mode", tuple(PoolMode))
    c.one_of("in_dt", (DType.I8, DType.I16))
    c.one_of("out_dt", (DType.I8, DType.I16))
    if c["mode"] == PoolMode.MAX and c["out_dt"] != c["in_dt"]:
        c.fail("out_dt", "max pooling keeps the input type: out_dt must equal in_dt")
    c.clamp_ok(c["out_dt"])
    ie, oe = esize(c["in_dt"]), esize(c["out_dt"])
    ho = conv_out(c["h"], c["pt"], c["pb"], c["kh"], c["sh"], 1)
    wo = conv_out(c["w"], c["pl"], c["pr"], c["kw"], c["sw"], 1)
    if ho < 1 or wo < 1:
        c.fail("h" if ho < 1 else "w", f"the output is empty ({ho}x{wo})")
    c.span("src", c["h"] * c["w"] * c["c"] * ie, align=ie)
    c.span("dst", ho * wo * c["c"] * oe, align=oe)
    if c["mode"] != PoolMode.MAX:
        c.span("qp", 8 * (c["kh"] * c["kw"] + 1), align=4)


def _check_copy(c: _Insn) -> None:
    c.ge("n0", "n1", "n2")
    c.one_of("esize", tuple(DType))
    e = esize(c["esize"])
    ext = {s: (c["n2"] - 1) * c[f"{s}2"] + (c["n1"] - 1) * c[f"{s}1"] + (c["n0"] - 1)
           * c[f"{s}0"] + e for s in ("ss", "ds")}
    _no_overlap(c, ("n0", "n1", "n2"), ("ds0", "ds1", "ds2"), e)
    c.span("src", ext["ss"], align=e, strides=("ss0", "ss1", "ss2"))
    c.span("dst", ext["ds"], align=e, strides=("ds0", "ds1", "ds2"))
    if c["src"] < c["dst"] + ext["ds"] and c["dst"] < c["src"] + ext["ss"]:
        c.fail("dst", "the destination overlaps the source")


def _check_vector(c: _Insn, op: Opcode) -> None:
    if op is Opcode.REQUANT:
        c.ge("count", "chan")
        if c["out_dt"] == DType.I32:
            if c["lo"] or c["hi"]:
                c.fail("lo", "out_dt=i32 clamps to the int32 range: lo and hi must be 0")
        else:
            c.one_of("out_dt", (DType.I8, DType.I16))
            c.clamp_ok(c["out_dt"])
        c.span("src", 4 * c["count"], align=4)
        c.span("qp", 12 * c["chan"], align=4)
        c.span("dst", c["count"] * esize(c["out_dt"]), align=esize(c["out_dt"]))
    elif op is Opcode.RESCALE:
        c.ge("count")
        c.one_of("in_dt", tuple(DType))
        c.one_of("out_dt", tuple(DType))
        if c["out_dt"] == DType.I32:
            if c["lo"] or c["hi"]:
                c.fail("lo", "out_dt=i32 clamps to the int32 range: lo and hi must be 0")
        else:
            c.clamp_ok(c["out_dt"])
        c.shift_ok("shift")
        c.span("src", c["count"] * esize(c["in_dt"]), align=esize(c["in_dt"]))
        c.span("dst", c["count"] * esize(c["out_dt"]), align=esize(c["out_dt"]))
    elif op in (Opcode.ADD, Opcode.MUL, Opcode.IADD, Opcode.IMUL):
        _check_eltwise(c, op)
    elif op is Opcode.LUT:
        c.ge("count")
        c.one_of("out_dt", (DType.I8, DType.I16))
        c.one_of("in_dt", (DType.I8, DType.I16))
        e, ie = esize(c["out_dt"]), esize(c["in_dt"])
        c.span("src", c["count"] * ie, align=ie)
        if c["in_dt"] == DType.I16:  # int16 tables of qmath.LUT16_SIZE entries
            c.span("table", 2 * LUT16_SIZE * max(c["tables"], 1), align=2)
        else:
            c.span("table", 256 * e * max(c["tables"], 1), align=e)
        c.span("dst", c["count"] * e, align=e)
    elif op is Opcode.POOL:
        _check_pool(c)
    elif op is Opcode.COPY:
        _check_copy(c)
    elif op is Opcode.FILL:
        c.ge("count")
        c.one_of("dt", tuple(DType))
        lo, hi = _RANGE[DType(c["dt"])]
        if not lo <= c["value"] <= hi:
            c.fail("value", f"does not fit {DType(c['dt']).name.lower()} [{lo}, {hi}]")
        c.span("dst", c["count"] * esize(c["dt"]), align=esize(c["dt"]))


def _check_deps(c: _Insn, q: Queue, fifo: list[int]) -> None:
    for flag in ("pop_prev", "pop_next"):
        if c[flag]:
            if (q, flag) not in POPS:
                c.fail(flag, f"the {q.name.lower()} queue has no {flag.split('_')[1]} queue")
            if fifo[POPS[q, flag]] == 0:
                c.fail(flag, "pops a token that no earlier instruction pushed")
            fifo[POPS[q, flag]] -= 1
    for flag in ("push_prev", "push_next"):
        if c[flag]:
            if (q, flag) not in PUSHES:
                c.fail(flag, f"the {q.name.lower()} queue has no {flag.split('_')[1]} queue")
            fifo[PUSHES[q, flag]] += 1


def verify(prog: Program, target: Target | None = None) -> VerifiedProgram:
    """Check everything the VM relies on; raise ProgramError naming the instruction and field."""
    target = target or prog.target
    if target.hash != prog.target.hash:
        raise ProgramError(f"program built for target '{prog.target.name}' "
                           f"({prog.target.hash[:12]}), not '{target.name}' ({target.hash[:12]})")
    if prog.layer_ids.shape != (prog.n_insns,):
        raise ProgramError(f"layer table has {prog.layer_ids.size} entries for "
                           f"{prog.n_insns} instructions")
    try:
        fields = isa.decode_program(prog.code)
    except ISAEncodeError as e:
        raise ProgramError(str(e)) from None
    n = fields.shape[0]
    queues = np.zeros(n, np.int64)
    dram_r, dram_w, macs = (np.zeros(n, np.int64) for _ in range(3))
    fifo = [0, 0, 0, 0]
    sram_peak = 0
    for pc in range(n):
        row = fields[pc]
        c = _Insn(pc, row, target, prog)
        op = Opcode(int(row[isa.C_OPCODE]))
        if op is Opcode.NOP:
            c.one_of("queue", tuple(Queue))
        q = queue_of(row)
        queues[pc] = int(q)
        if op is Opcode.HALT and pc != n - 1:
            c.fail("opcode", "HALT before the end of the program")
        if op in (Opcode.LOAD, Opcode.STORE):
            _check_dma(c, op)
            nbytes = c["n0"] * c["n1"] * c["n2"]
            (dram_r if op is Opcode.LOAD else dram_w)[pc] = nbytes
        elif op is Opcode.LOADW:
            _check_loadw(c)
            dram_r[pc] = c["clen"]
        elif op is Opcode.CONV:
            macs[pc] = _check_conv(c)
        elif op is Opcode.MATMUL:
            macs[pc] = _check_matmul(c)
        elif FORMATS[op].unit is isa.Unit.VECTOR:
            _check_vector(c, op)
        _check_deps(c, q, fifo)
        sram_peak = max(sram_peak, c.sram_hi)
    if n == 0 or Opcode(int(fields[-1, isa.C_OPCODE])) is not Opcode.HALT:
        raise ProgramError("the program does not end with HALT")
    if any(fifo):
        names = ("load->compute", "compute->load", "compute->store", "store->compute")
        left = {names[i]: k for i, k in enumerate(fifo) if k}
        raise ProgramError(f"dependency tokens unbalanced at HALT: {left} never popped")
    return VerifiedProgram(prog, fields, queues, dram_r, dram_w, macs, sram_peak)
