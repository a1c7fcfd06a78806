"""ProgramBuilder: the Python API that assembles an NPU program (used by the compiler backend
and by tests). It owns a DRAM bump allocator (const, I/O and scratch regions), a layer table and
the instruction list; `emit` goes through the range-checked `isa.encode`.

    b = ProgramBuilder(load_target("npu"))
    w = b.const("conv0.w", weights)                      # DRAM address of the bytes
    x = b.input("x", (1, 1, 64, 160), scale=1/128, zero_point=0)
    b.layer("Conv_0")
    b.emit(Opcode.LOAD, dram=x.addr, sram=0, n0=..., n1=1, n2=1, push_next=1)
    prog = b.build()                                      # appends HALT, verifies
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ocrc.runtime import isa
from ocrc.runtime.errors import ProgramError
from ocrc.runtime.isa import Opcode
from ocrc.runtime.program import DTYPES, Program, Region, TensorDesc
from ocrc.runtime.target import Target


def dense_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """C-order byte strides of a dense tensor."""
    out, acc = [], itemsize
    for n in reversed(shape):
        out.append(acc)
        acc *= max(n, 1)
    return tuple(reversed(out))


class ProgramBuilder:
    """Accumulates DRAM regions and instructions; `build()` returns a verified Program."""

    def __init__(self, target: Target, meta: dict[str, Any] | None = None) -> None:
        self.target = target
        self.meta = dict(meta or {})
        self._top = 0
        self._regions: list[Region] = []
        self._const: list[bytes] = []
        self._inputs: list[TensorDesc] = []
        self._outputs: list[TensorDesc] = []
        self._words: list[int] = []
        self._layer_of: list[int] = []
        self._layers: list[str] = ["<none>"]
        self._layer = 0

    # ---- DRAM
    def _alloc(self, name: str, kind: str, nbytes: int, align: int) -> int:
        if align < 1 or align & (align - 1):
            raise ProgramError(f"region '{name}': align={align} is not a power of two")
        addr = -(-self._top // align) * align
        if addr + nbytes > self.target.dram_bytes:
            raise ProgramError(f"region '{name}': {nbytes} bytes at {addr} exceed the target's "
                               f"DRAM ({self.target.dram_bytes} bytes)")
        self._regions.append(Region(name, kind, addr, int(nbytes)))
        self._top = addr + nbytes
        return addr

    def const(self, name: str, data: bytes | np.ndarray, align: int = 64) -> int:
        """Place constant bytes (weights, bias/multiplier blocks, tables) in DRAM; returns the
        address. Arrays are stored as their little-endian bytes in C order."""
        raw = data if isinstance(data, bytes) else np.ascontiguousarray(data).tobytes()
        addr = self._alloc(name, "const", len(raw), align)
        self._const.append(raw)
        return addr

    def scratch(self, name: str, nbytes: int, align: int = 64) -> int:
        """Reserve DRAM for intermediate tensors (zeroed before every run)."""
        return self._alloc(name, "scratch", nbytes, align)

    def _io(self, kind: str, name: str, shape: tuple[int, ...], dtype: str, scale: float,
            zero_point: int, strides: tuple[int, ...] | None, addr: int | None) -> TensorDesc:
        if dtype not in DTYPES:
            raise ProgramError(f"{kind} '{name}': dtype {dtype!r}, expected one of "
                               f"{sorted(DTYPES)}")
        item = np.dtype(DTYPES[dtype]).itemsize
        strides = tuple(strides) if strides is not None else dense_strides(tuple(shape), item)
        d = TensorDesc(name, tuple(int(s) for s in shape), dtype, float(scale), int(zero_point),
                       0, strides)
        if addr is None:
            addr = self._alloc(name, kind, d.nbytes_span, 64)
        d = TensorDesc(d.name, d.shape, dtype, d.scale, d.zero_point, int(addr), strides)
        (self._inputs if kind == "input" else self._outputs).append(d)
        return d

    def input(self, name: str, shape: tuple[int, ...], dtype: str = "int8", scale: float = 1.0,
              zero_point: int = 0, strides: tuple[int, ...] | None = None,
              addr: int | None = None) -> TensorDesc:
        """Declare a program input (allocated in DRAM unless addr is given; strides in bytes,
        C-order by default)."""
        return self._io("input", name, shape, dtype, scale, zero_point, strides, addr)

    def output(self, name: str, shape: tuple[int, ...], dtype: str = "int8", scale: float = 1.0,
               zero_point: int = 0, strides: tuple[int, ...] | None = None,
               addr: int | None = None) -> TensorDesc:
        """Declare a program output (as input())."""
        return self._io("output", name, shape, dtype, scale, zero_point, strides, addr)

    # ---- code
    def layer(self, name: str) -> int:
        """Tag the following instructions with this layer (reused if the name exists)."""
        if name not in self._layers:
            self._layers.append(name)
        self._layer = self._layers.index(name)
        return self._layer

    def emit(self, opcode: Opcode, **fields: int) -> int:
        """Append one instruction (fields as in docs/isa.md); returns its index (pc)."""
        self._words.append(isa.encode(opcode, **fields))
        self._layer_of.append(self._layer)
        return len(self._words) - 1

    def emit_asm(self, text: str) -> None:
        """Append instructions written in the disassembler's syntax, one per line."""
        for line in text.splitlines():
            if line.split(";", 1)[0].strip():
                self._words.append(isa.assemble(line))
                self._layer_of.append(self._layer)

    @property
    def pc(self) -> int:
        return len(self._words)

    def build(self, verify: bool = True) -> Program:
        """The Program (a HALT is appended unless the last instruction is one); verified unless
        verify=False (tests of the verifier itself)."""
        if not self._words or isa.decode(self._words[-1]).opcode is not Opcode.HALT:
            self.emit(Opcode.HALT)
        prog = Program(
            target=self.target, code=isa.encode_program(self._words),
            dram_size=max(-(-self._top // 64) * 64, 64), regions=list(self._regions),
            const_data=b"".join(self._const), inputs=list(self._inputs),
            outputs=list(self._outputs), layers=list(self._layers),
            layer_ids=np.array(self._layer_of, np.uint32), meta=dict(self.meta))
        if verify:
            from ocrc.runtime.verify import verify as _verify

            _verify(prog)
        return prog
