"""The fused elementwise tail of a kernel (emit_kernels.py): LUT, RESCALE, ADD, MUL on a dense
tile in SRAM, with the int16 forms (docs/quantization.md §8): interpolated LUTs of int16 inputs,
and add/mul with an int16 operand or result decomposed into RESCALE/IADD and IMUL (the ADD and
MUL instructions are int8).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ocrc.compiler.backend.emit import DT, KernelEmitter, View
from ocrc.compiler.errors import UnsupportedOpError
from ocrc.compiler.ir.graph import Node, Value
from ocrc.runtime import qmath
from ocrc.runtime.isa import DType, Opcode


class Misfit(Exception):
    """A candidate tiling the kernel cannot use (e.g. a broadcast operand misaligned)."""


def identity_rescale(zx: int, zy: int, mult: int, shift: int) -> bool:
    return zx == zy and mult == 1 << 30 and shift == 30


def dt(v: Value | None) -> DType:
    """The ISA element type of a value."""
    assert v is not None
    return DT[v.type.dtype.np.itemsize]


def item(v: Value | None) -> int:
    assert v is not None
    return int(v.type.dtype.np.itemsize)


def table_bytes(n: Node) -> int:
    """Bytes of one table of an npu.lut: 256 entries of the result type, or LUT16_SIZE int16
    entries (knots and window header) for an i16 input."""
    return 2 * qmath.LUT16_SIZE if item(n.inputs[0]) == 2 else 256 * item(n.outputs[0])


def wide_binary(n: Node) -> bool:
    """npu.add/npu.mul with an i16 operand or result: RESCALE/IADD or IMUL (the ADD and MUL
    instructions are int8)."""
    return any(item(v) == 2 for v in (*n.inputs, n.outputs[0]))


def _check_add_bound(n: Node) -> None:
    """The int32 intermediates of a wide add (apply) must not saturate: |mrs(x - zx, m, s)|
    + 256*|y_zp| < 2**31 for every code x of each operand."""
    a = n.all_attrs
    for v, zp, m, sh in ((n.inputs[0], a["a_zp"], a["a_mult"], a["a_shift"]),
                         (n.inputs[1], a["b_zp"], a["b_mult"], a["b_shift"])):
        lo, hi = (qmath.INT16_MIN, qmath.INT16_MAX) if item(v) == 2 else (-128, 127)
        big = max(abs(lo - zp), abs(hi - zp)) * m // (1 << sh) + 1
        if big + 256 * abs(a["y_zp"]) >= 2**31:
            raise UnsupportedOpError(f"{n.label()}: operand scale ratio too large for the "
                                     "int32 intermediate of an int16 add")


class TailMixin(KernelEmitter):
    """The fused elementwise ops of a kernel, applied to a dense tile [rows][cb] of the
    output view in SRAM."""

    def prepare_tail(self, nodes: list[Node], out: View, rows: int, cb: int) -> None:
        self._tail: list[tuple[Node, Any]] = []
        for n in nodes:
            aux: Any = None
            if n.op.name == "npu.lut":
                table = self.ctx.array(n.inputs[1])
                if table.ndim == 2 and out.c > 1:  # per-channel: each tile loads its block
                    aux = (self.const(f"{n.output.name}.table", table),
                           [self.alloc(cb * table_bytes(n)) for _ in range(2)])
                else:
                    aux = self.load_const(f"{n.output.name}.table", table)
            elif n.op.name in ("npu.add", "npu.mul"):
                b = n.inputs[1]
                assert b is not None
                if b.type.shape == n.output.type.shape:
                    bv = self.ctx.view(b, out.c)
                    bufs = [self.alloc(rows * cb * item(b)) for _ in range(2)] \
                        if self.needs_buf(bv, rows, cb) else [None, None]
                    aux = ("full", bv, bufs)
                else:
                    aux = ("periodic", self.periodic(b), b.type.size)
                if wide_binary(n):  # scratch of the decomposition (apply)
                    big = rows * cb if aux[0] == "full" else b.type.size
                    if n.op.name == "npu.add":
                        _check_add_bound(n)
                        aux = (*aux, (self.alloc(4 * rows * cb), self.alloc(4 * big)))
                    else:
                        aux = (*aux, (self.alloc(2 * rows * cb), self.alloc(2 * big)))
            self._tail.append((n, aux))

    def channel_tables(self, n: Node, aux: Any, box: tuple[int, int, int, int], out: View,
                       parity: int) -> tuple[int, int]:
        """(table address, tables) of a per-channel LUT on a tile of the NHWC output: a
        [rows][c0:c1] box of channels loads tables c0..c1-1 into a tile buffer; a flat chunk
        (one column, all tables resident) starts at a multiple of the channel count
        (tiling.candidates keeps chunks so)."""
        p0, _, c0, c1 = box
        nch = n.inputs[1].type.shape[0]  # type: ignore[union-attr]
        if out.c == 1:
            assert p0 % nch == 0, f"{n.label()}: chunk at {p0} is not channel-aligned"
            return aux, nch
        assert out.c == nch, f"{n.label()}: per-channel tables on a {out.c}-column view"
        dram, bufs = aux
        tb = table_bytes(n)
        self.dma(Opcode.LOAD, dram + tb * c0, bufs[parity], tb * (c1 - c0))
        return bufs[parity], c1 - c0

    def periodic(self, b: Value) -> int:
        """A broadcast operand loaded whole into the workspace (SRAM address)."""
        if b in self.ctx.values:
            return self.load_const(f"{b.name}.b", self.ctx.array(b).astype(b.type.dtype.np))
        v = self.ctx.flat(b)
        buf = self.alloc(b.type.size * item(b))
        return self.fetch(v, 0, v.p, 0, 1, buf)

    def apply(self, n: Node, aux: Any, src: int, dst: int, box: tuple[int, int, int, int],
              out: View, parity: int) -> None:
        """One elementwise op: src -> dst (count = the box's elements)."""
        p0, p1, c0, c1 = box
        count = (p1 - p0) * (c1 - c0)
        a = n.all_attrs
        if n.op.name == "npu.lut":
            table, tables = aux, 0
            if n.inputs[1].type.rank == 2:  # type: ignore[union-attr]
                table, tables = self.channel_tables(n, aux, box, out, parity)
            self.ins(Opcode.LUT, src=src, dst=dst, count=count, table=table, tables=tables,
                     out_dt=dt(n.outputs[0]), in_dt=dt(n.inputs[0]))
            return
        if n.op.name == "npu.rescale":
            self.ins(Opcode.RESCALE, src=src, dst=dst, count=count, in_dt=dt(n.inputs[0]),
                     out_dt=dt(n.outputs[0]), mult=a["mult"], shift=a["shift"], zx=a["x_zp"],
                     zy=a["y_zp"], lo=a["lo"], hi=a["hi"])
            return
        kind, bref, extra = aux[:3]
        bi = item(n.inputs[1])
        if kind == "full":
            b, period = self.fetch(bref, p0, p1, c0, c1, extra[parity]), count
        else:
            period_total = extra
            cb = c1 - c0
            if cb == out.c and (p0 * out.c) % period_total == 0 and count % period_total == 0:
                b, period = bref, period_total
            elif period_total == out.c:
                b, period = bref + c0 * bi, cb
            else:
                raise Misfit(f"{n.label()}: broadcast operand does not align with the tile")
        if wide_binary(n):
            self.apply_wide(n, aux[3], src, b, dst, count, period)
            return
        common = dict(a=src, b=b, dst=dst, count=count, b_period=period, za=a["a_zp"],
                      zb=a["b_zp"], zy=a["y_zp"], lo=a["lo"], hi=a["hi"])
        if n.op.name == "npu.add":
            self.ins(Opcode.ADD, ma=a["a_mult"], sa=a["a_shift"], mb=a["b_mult"],
                     sb=a["b_shift"], **common)
        else:
            self.ins(Opcode.MUL, mult=a["mult"], shift=a["shift"], **common)

    def apply_wide(self, n: Node, scratch: tuple[int, int], src: int, b: int, dst: int,
                   count: int, period: int) -> None:
        """npu.add/npu.mul with int16 (docs/quantization.md §8) on the vector unit:
        add: ta = RESCALE(a -> i32, zy = 256*y_zp), tb = RESCALE(b -> i32), y = IADD(ta, tb)
        >> 8 with the clamp: mrs(ta + tb + 256*y_zp, 1, 8) = mrs(ta + tb, 1, 8) + y_zp, which
        is qmath.add_ref exactly (_check_add_bound keeps ta, tb inside int32);
        mul: IMUL(a - a_zp, b - b_zp), an i8 operand with a zero point first RESCALEd (identity
        multiplier) to int16 codes x - zp, which is qmath.mul_ref."""
        a = n.all_attrs
        xa, xb = n.inputs
        sa, sb = scratch
        y = dt(n.outputs[0])
        if n.op.name == "npu.add":
            for x, v, s_, cnt, p in ((src, xa, sa, count, "a_"), (b, xb, sb, period, "b_")):
                self.ins(Opcode.RESCALE, src=x, dst=s_, count=cnt, in_dt=dt(v),
                         out_dt=DType.I32, mult=a[p + "mult"], shift=a[p + "shift"],
                         zx=a[p + "zp"], zy=256 * a["y_zp"] if p == "a_" else 0, lo=0, hi=0)
            self.ins(Opcode.IADD, a=sa, b=sb, dst=dst, count=count, b_period=period,
                     a_dt=DType.I32, b_dt=DType.I32, out_dt=y, shift=qmath.add_frac_bits(True),
                     lo=a["lo"], hi=a["hi"])
            return
        ops = []
        for x, v, s_, cnt, zp in ((src, xa, sa, count, a["a_zp"]), (b, xb, sb, period,
                                                                     a["b_zp"])):
            if zp:
                self.ins(Opcode.RESCALE, src=x, dst=s_, count=cnt, in_dt=dt(v),
                         out_dt=DType.I16, mult=1 << 30, shift=30, zx=zp, zy=0,
                         lo=qmath.INT16_MIN, hi=qmath.INT16_MAX)
                ops.append((s_, DType.I16))
            else:
                ops.append((x, dt(v)))
        self.ins(Opcode.IMUL, a=ops[0][0], b=ops[1][0], dst=dst, count=count, b_period=period,
                 a_dt=ops[0][1], b_dt=ops[1][1], out_dt=y, mult=a["mult"], shift=a["shift"],
                 zy=a["y_zp"], lo=a["lo"], hi=a["hi"])

    def tail(self, dst: int, box: tuple[int, int, int, int], out: View, parity: int) -> None:
        for n, aux in self._tail:
            self.apply(n, aux, dst, dst, box, out, parity)
