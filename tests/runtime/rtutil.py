"""Helpers of the runtime tests: run one instruction on a given SRAM image."""

from __future__ import annotations

import numpy as np
from ocrc.runtime.builder import ProgramBuilder
from ocrc.runtime.isa import Opcode
from ocrc.runtime.program import Program
from ocrc.runtime.stats import Stats
from ocrc.runtime.target import Target, load_target
from ocrc.runtime.vm import VM

IMAGE = 16384  # bytes of SRAM the helper loads and stores back


def single(opcode: Opcode, target: Target | None = None, image: np.ndarray | None = None,
           **fields: int) -> Program:
    """LOAD image -> SRAM[0:IMAGE]; the instruction; STORE SRAM[0:IMAGE] -> output 'sram'."""
    t = target or load_target("npu")
    b = ProgramBuilder(t)
    img = np.zeros(IMAGE, np.uint8) if image is None else np.asarray(image, np.uint8)
    src = b.const("image", img)
    out = b.output("sram", (IMAGE,), dtype="int8")
    b.emit(Opcode.LOAD, dram=src, sram=0, n0=IMAGE, n1=1, n2=1, push_next=1)
    b.emit(opcode, pop_prev=1, push_next=1, **fields)
    b.emit(Opcode.STORE, dram=out.addr, sram=0, n0=IMAGE, n1=1, n2=1, pop_prev=1)
    return b.build()


def run_single(opcode: Opcode, image: np.ndarray, target: Target | None = None,
               **fields: int) -> tuple[np.ndarray, Stats]:
    """The SRAM image after the instruction (uint8) and the run's Stats."""
    prog = single(opcode, target, image, **fields)
    outs, stats = VM(prog).run_raw({})
    return outs["sram"].view(np.uint8), stats


class Image:
    """A byte image with typed writes/reads at byte addresses."""

    def __init__(self, size: int = IMAGE) -> None:
        self.b = np.zeros(size, np.uint8)

    def put(self, addr: int, arr: np.ndarray) -> int:
        raw = np.ascontiguousarray(arr).view(np.uint8).ravel()
        self.b[addr:addr + raw.size] = raw
        return addr

    @staticmethod
    def get(img: np.ndarray, addr: int, n: int, dtype: type) -> np.ndarray:
        size = np.dtype(dtype).itemsize
        return img[addr:addr + n * size].view(dtype).astype(np.int64)
