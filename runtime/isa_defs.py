"""The vocabulary of the ISA table (runtime/isa.py): word geometry, the opcodes, the enums that
fields take, `Field`/`Format`, the dependency-flag header and the field constructors. isa.py
builds the table `FORMATS` from these and derives the codec; everything is re-exported there.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

WORD_BITS = 64
WORDS = 4
INSN_BITS = WORD_BITS * WORDS
OPCODE_BITS = 8
SRAM_ADDR_BITS = 24  # target.MAX_SRAM_BYTES follows from this
DRAM_ADDR_BITS = 32


class Opcode(IntEnum):
    HALT = 0
    NOP = 1
    LOAD = 2
    LOADW = 3
    STORE = 4
    CONV = 5
    MATMUL = 6
    REQUANT = 7
    RESCALE = 8
    ADD = 9
    MUL = 10
    LUT = 11
    POOL = 12
    IADD = 13
    IMUL = 14
    COPY = 15
    FILL = 16


class Queue(IntEnum):
    LOAD = 0
    COMPUTE = 1
    STORE = 2


class Unit(IntEnum):
    CTRL = 0
    DMA = 1
    MAC = 2
    VECTOR = 3


class DType(IntEnum):  # element types of SRAM operands; the value is log2(size in bytes)
    I8 = 0
    I16 = 1
    I32 = 2


class Comp(IntEnum):  # LOADW stream formats (layouts: runtime/weightcodec.py); csr: run-length
    DENSE = 0
    BITMASK = 1
    CSR = 2


class Book(IntEnum):  # LOADW values: raw int8, or indices into a codebook of 16 or 256 entries
    NONE = 0
    K16 = 1
    K256 = 2


class PoolMode(IntEnum):
    MAX = 0
    AVG = 1  # divide by the number of valid (non-padding) elements
    AVG_PAD = 2  # divide by the kernel area (count_include_pad)


class Sparse(IntEnum):  # how the MAC array treats one instruction's weights (cycles only)
    DENSE = 0
    ZERO_BLOCK = 1  # skip all-zero K-blocks of target.zero_block rows
    TWO_FOUR = 2  # weights are 2:4 sparse along K: double rate (the VM checks it)


ENUMS = (Queue, Unit, DType, Comp, Book, PoolMode, Sparse)


@dataclass(frozen=True)
class Field:
    name: str
    bits: int
    doc: str
    signed: bool = False
    enum: type[IntEnum] | None = None

    def range(self) -> tuple[int, int]:
        if self.signed:
            return -(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1
        return 0, (1 << self.bits) - 1


@dataclass(frozen=True)
class Format:
    opcode: Opcode
    queue: Queue
    unit: Unit
    fields: tuple[Field, ...]
    summary: str
    semantics: str
    cycles: str

    @property
    def mnemonic(self) -> str:
        return self.opcode.name


HEADER_FIELDS = (
    Field("pop_prev", 1, "wait for and consume a token from the previous queue"),
    Field("pop_next", 1, "wait for and consume a token from the next queue"),
    Field("push_prev", 1, "send a token to the previous queue when done"),
    Field("push_next", 1, "send a token to the next queue when done"),
)


def _sa(name: str, doc: str) -> Field:
    return Field(name, SRAM_ADDR_BITS, f"SRAM byte address: {doc}")


def _dt(name: str, doc: str) -> Field:
    return Field(name, 2, doc, enum=DType)


def _s8(name: str, doc: str) -> Field:
    return Field(name, 8, doc, signed=True)


def _s16(name: str, doc: str) -> Field:
    return Field(name, 16, doc, signed=True)
