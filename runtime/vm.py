"""The NPU virtual machine: verifies a program, then executes it bit-exactly with numba kernels
over the decoded int64 field matrix while timing the three queues (docs/cycle-model.md).

`VM(program).run({name: float array})` quantises the inputs with their I/O descriptors, runs,
and returns dequantised float outputs and a Stats. The jitted loop returns a status code and the
failing pc; the wrapper raises VMError with the disassembled instruction. NUMBA_DISABLE_JIT=1
runs the same code as plain Python.
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit
from ocrc.runtime import isa
from ocrc.runtime.cycles import insn_cycles
from ocrc.runtime.errors import VMError
from ocrc.runtime.isa import Opcode
from ocrc.runtime.kernels import (
    ST_BAD_STREAM,
    ST_NO_TOKEN,
    ST_OK,
    STATUS_TEXT,
    conv,
    dma,
    drop_stale_cache,
    matmul,
)
from ocrc.runtime.kernels_dw import conv_dw, dw_applies
from ocrc.runtime.kernels_vec import vector
from ocrc.runtime.kernels_weights import loadw, predecode
from ocrc.runtime.program import DTYPES, Program, TensorDesc
from ocrc.runtime.qmath import dequantize_ref, quantize_ref
from ocrc.runtime.stats import Stats, collect_stats
from ocrc.runtime.target import Target
from ocrc.runtime.verify import C2L, C2S, L2C, S2C, VerifiedProgram, verify


@njit(cache=True)
def _pop(fifo_t, head, tail, fi, start):  # type: ignore[no-untyped-def]
    if head[fi] >= tail[fi]:
        return -1
    t = fifo_t[fi, head[fi]]
    head[fi] += 1
    return max(start, t)


@njit(cache=True)
def run_fields(fields, queues, dram, sram, p, vovh, starts, ends):  # type: ignore[no-untyped-def]
    """Execute a verified program in program order; the queues' timing goes to starts/ends.
    Returns (status, pc): status 0 and pc == n on success."""
    n = fields.shape[0]
    fifo_t = np.zeros((4, n + 1), np.int64)
    head = np.zeros(4, np.int64)
    tail = np.zeros(4, np.int64)
    qfree = np.zeros(3, np.int64)
    for pc in range(n):
        f = fields[pc]
        q = queues[pc]
        op = f[isa.C_OPCODE]
        start = qfree[q]
        if f[isa.C_POP_PREV] != 0:
            start = _pop(fifo_t, head, tail, L2C if q == 1 else C2S, start)
            if start < 0:
                return ST_NO_TOKEN, pc
        if f[isa.C_POP_NEXT] != 0:
            start = _pop(fifo_t, head, tail, C2L if q == 0 else S2C, start)
            if start < 0:
                return ST_NO_TOKEN, pc
        status = ST_OK
        cyc = 0
        if op == Opcode.LOAD:
            dma(dram, sram, f, True)
            cyc = insn_cycles(f, p, vovh)
        elif op == Opcode.STORE:
            dma(sram, dram, f, False)
            cyc = insn_cycles(f, p, vovh)
        elif op == Opcode.LOADW:
            status = loadw(dram, sram, f)
            cyc = insn_cycles(f, p, vovh)
        elif op == Opcode.CONV:
            if dw_applies(f):
                status, cyc = conv_dw(sram, f, p)
            else:
                status, cyc = conv(sram, f, p)
        elif op == Opcode.MATMUL:
            status, cyc = matmul(sram, f, p)
        elif op == Opcode.HALT:
            start = max(start, qfree.max())
        elif op != Opcode.NOP:
            vector(sram, f)
            cyc = insn_cycles(f, p, vovh)
        if status != ST_OK:
            return status, pc
        end = start + cyc
        qfree[q] = end
        starts[pc] = start
        ends[pc] = end
        if f[isa.C_PUSH_PREV] != 0:
            fi = C2L if q == 1 else S2C
            fifo_t[fi, tail[fi]] = end
            tail[fi] += 1
        if f[isa.C_PUSH_NEXT] != 0:
            fi = L2C if q == 0 else C2S
            fifo_t[fi, tail[fi]] = end
            tail[fi] += 1
    return ST_OK, n


def _view(dram: np.ndarray, d: TensorDesc) -> np.ndarray:
    """The I/O tensor as a strided numpy view of DRAM."""
    return np.ndarray(d.shape, DTYPES[d.dtype], buffer=dram, offset=d.addr, strides=d.strides)


class VM:
    """A loaded, verified program ready to run many times (the DRAM image of the constants is
    built once; scratch, I/O and SRAM are cleared before each run)."""

    def __init__(self, program: Program | VerifiedProgram, target: Target | None = None) -> None:
        self.vp = program if isinstance(program, VerifiedProgram) else verify(program, target)
        prog = self.vp.program
        self.program = prog
        self.target = target or prog.target
        self.params = self.target.vm_params()
        self.vovh = self.target.vector_overheads()
        self.dram = np.zeros(-(-prog.dram_size // 64) * 64, np.uint8)  # uint64 copies
        self.sram = np.zeros(self.target.sram_bytes, np.uint8)
        off = 0
        self._clear: list[tuple[int, int]] = []
        for r in prog.regions:
            if r.kind == "const":
                self.dram[r.addr:r.addr + r.size] = np.frombuffer(prog.const_data, np.uint8,
                                                                  r.size, off)
                off += r.size
            else:
                self._clear.append((r.addr, r.size))
        # compressed weight streams in const regions are decoded once, here
        self.fields, self.dram, bad = predecode(
            self.vp.fields, [(r.addr, r.size) for r in prog.regions if r.kind == "const"],
            self.dram)
        if bad >= 0:
            raise VMError(f"instruction {bad} `{isa.disasm_row(self.vp.fields[bad])}`: "
                          f"{STATUS_TEXT[ST_BAD_STREAM]}")

    def run_raw(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], Stats]:
        """Run on already-quantised integer inputs; returns integer outputs (copies)."""
        prog = self.program
        want = {d.name: d for d in prog.inputs}
        if set(inputs) != set(want):
            raise VMError(f"inputs {sorted(inputs)} do not match the program's inputs "
                          f"{sorted(want)}")
        for a, size in self._clear:
            self.dram[a:a + size] = 0
        self.sram[:] = 0
        for name, d in want.items():
            arr = np.asarray(inputs[name])
            if arr.shape != d.shape:
                raise VMError(f"input '{name}': shape {list(arr.shape)}, expected "
                              f"{list(d.shape)}")
            _view(self.dram, d)[...] = arr.astype(DTYPES[d.dtype])
        n = prog.n_insns
        starts = np.zeros(n, np.int64)
        ends = np.zeros(n, np.int64)
        t0 = time.perf_counter()
        status, pc = run_fields(self.fields, self.vp.queues, self.dram, self.sram,
                                self.params, self.vovh, starts, ends)
        wall = time.perf_counter() - t0
        if status != ST_OK:
            raise VMError(f"instruction {pc} `{isa.disasm_row(self.vp.fields[pc])}`: "
                          f"{STATUS_TEXT.get(int(status), f'status {status}')}")
        outs = {d.name: _view(self.dram, d).copy() for d in prog.outputs}
        return outs, collect_stats(self.vp, self.target, starts, ends, wall)

    def run(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], Stats]:
        """float in, float out: inputs are quantised with the program's I/O descriptors
        (qmath.quantize_ref), outputs dequantised to float32."""
        q = {}
        for d in self.program.inputs:
            if d.name not in inputs:
                names = [x.name for x in self.program.inputs]
                raise VMError(f"missing input '{d.name}' (the program's inputs: {names})")
            info = np.iinfo(DTYPES[d.dtype])
            q[d.name] = quantize_ref(np.asarray(inputs[d.name], np.float32), d.scale,
                                     d.zero_point, int(info.min), int(info.max))
        extra = set(inputs) - {d.name for d in self.program.inputs}
        if extra:
            raise VMError(f"unknown inputs {sorted(extra)}")
        raw, stats = self.run_raw(q)
        outs = {d.name: dequantize_ref(raw[d.name], d.scale, d.zero_point)
                for d in self.program.outputs}
        return outs, stats


def run_program(program: Program, inputs: dict[str, np.ndarray],
                target: Target | None = None) -> tuple[dict[str, np.ndarray], Stats]:
    """Verify and run a program once: float inputs by name -> (float outputs, Stats)."""
    return VM(program, target).run(inputs)


drop_stale_cache(globals())
