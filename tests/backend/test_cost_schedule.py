"""The cost model against the VM (exact on single instructions, within a stated tolerance on
whole programs), dependency tokens, layouts, offset assignment and lowering errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ocrc.compiler.backend import layout as L
from ocrc.compiler.backend.codegen import compile_program
from ocrc.compiler.backend.cost import Machine
from ocrc.compiler.backend.lower import lower
from ocrc.compiler.backend.memory import Storage, assign_offsets
from ocrc.compiler.backend.moves import copy_plan
from ocrc.compiler.backend.schedule import Insn, assign_tokens
from ocrc.compiler.errors import UnsupportedOpError
from ocrc.compiler.ir import Builder, DType, TensorType
from ocrc.runtime.builder import ProgramBuilder
from ocrc.runtime.isa import DType as D
from ocrc.runtime.isa import Opcode, PoolMode
from ocrc.runtime.target import load_target
from ocrc.runtime.vm import VM

from tests.backend.helpers import TARGETS, quantise
from tests.backend.test_e2e import CASES

# Whole programs: the cost model's sum over tiles of max(compute, memory) vs the VM's count.
WHOLE_MODEL_TOLERANCE = 0.10

SINGLE = [
    (Opcode.CONV, dict(src=0, wgt=8192, qp=12288, dst=16384, h=9, w=11, cin=6, cout=10, kh=3,
                       kw=3, sh=1, sw=2, dh=1, dw=1, pt=1, pb=1, pl=1, pr=0, groups=2, hi=127,
                       lo=-128)),
    (Opcode.CONV, dict(src=0, wgt=8192, qp=12288, dst=16384, h=4, w=40, cin=16, cout=40, kh=1,
                       kw=1, sh=1, sw=1, dh=1, dw=1, groups=1, hi=127, lo=-128)),
    (Opcode.MATMUL, dict(a=0, b=4096, qp=12288, dst=16384, m=7, n=45, k=33, a_rs=33, d_rs=180,
                         out=D.I32)),
    (Opcode.LOAD, dict(dram=0, sram=0, n0=100, n1=7, n2=2, ds1=128, ds2=1024, ss1=100,
                       ss2=700)),
    (Opcode.STORE, dict(dram=4096, sram=0, n0=333, n1=1, n2=1)),
    (Opcode.LOADW, dict(dram=0, clen=1000, sram=0, count=1000)),
    (Opcode.POOL, dict(src=0, dst=8192, h=8, w=8, c=5, kh=2, kw=3, sh=2, sw=1, lo=-128, hi=127,
                       mode=PoolMode.MAX)),
    (Opcode.LUT, dict(src=0, dst=4096, count=777, table=8192)),
    (Opcode.ADD, dict(a=0, b=2048, dst=4096, count=300, b_period=30, ma=1 << 30, sa=30,
                      mb=1 << 30, sb=30, lo=-128, hi=127)),
    (Opcode.REQUANT, dict(src=0, dst=8192, count=64, chan=16, qp=12288, lo=-128, hi=127)),
    (Opcode.COPY, dict(src=0, dst=8192, n0=5, n1=6, n2=2, ss0=12, ss1=1, ss2=60, ds0=1, ds1=5,
                       ds2=30)),
]


@pytest.mark.parametrize("preset", ["npu-lite", "npu", "npu-large"])
@pytest.mark.parametrize("op,fields", SINGLE, ids=[f"{o.name}{i}" for i, (o, _) in
                                                   enumerate(SINGLE)])
def test_single_instruction_cost_is_exact(preset: str, op: Opcode, fields: dict) -> None:
    t = load_target(preset)
    b = ProgramBuilder(t)
    b.const("zeros", np.zeros(4096, np.uint8))
    b.scratch("scratch", 8192)
    b.emit(op, **fields)
    prog = b.build()
    _, stats = VM(prog).run_raw({})
    assert stats.total_cycles == Machine.of(t).insn(op, **fields)


@pytest.mark.parametrize("preset", ["npu-lite", "npu", "npu-large"])
def test_whole_program_estimate(preset: str) -> None:
    res = compile_program(quantise(CASES["lstm_bi"]()), load_target(preset))
    rng = np.random.default_rng(0)
    x = {d.name: rng.random(d.shape).astype(np.float32) for d in res.program.inputs}
    _, stats = VM(res.program).run(x)
    assert abs(res.estimate / stats.total_cycles - 1) <= WHOLE_MODEL_TOLERANCE


def test_tokens_route_load_after_store_through_compute() -> None:
    ins = [Insn(Opcode.STORE, dict(dram=0, sram=0, n0=64, n1=1, n2=1), "a"),
           Insn(Opcode.LOAD, dict(dram=0, sram=128, n0=64, n1=1, n2=1), "b")]
    out = assign_tokens(ins)
    assert [i.op for i in out] == [Opcode.STORE, Opcode.NOP, Opcode.LOAD]
    assert out[0].fields.get("push_prev") and out[1].fields.get("pop_next")
    assert out[1].fields.get("push_prev") and out[2].fields.get("pop_next")


def test_tokens_only_where_needed() -> None:
    load = dict(dram=0, n0=64, n1=1, n2=1)
    ins = [Insn(Opcode.LOAD, {**load, "sram": 0}, "x"),
           Insn(Opcode.LOAD, {**load, "sram": 64}, "x"),
           Insn(Opcode.LUT, dict(src=64, dst=256, count=64, table=512), "x"),
           Insn(Opcode.LUT, dict(src=0, dst=320, count=64, table=512), "x")]
    out = assign_tokens(ins)
    # the first LUT waits for the second LOAD, which implies the first: one token in all
    assert not out[0].fields.get("push_next") and out[1].fields.get("push_next")
    assert out[2].fields.get("pop_prev") and not out[3].fields.get("pop_prev")


def test_double_buffering_overlaps_loads_and_compute() -> None:
    res = compile_program(quantise(CASES["conv_wide"]()), TARGETS["tiny"]())
    _, stats = VM(res.program).run({d.name: np.zeros(d.shape, np.float32)
                                    for d in res.program.inputs})
    assert stats.total_cycles < stats.busy["load"] + stats.busy["compute"] + stats.busy["store"]


def test_layouts() -> None:
    shape = (1, 64, 8, 20)
    t = L.transposed(L.NHWC, (3, 0, 1, 2), (20, 1, 64, 8))  # NHWC [H][W][C] seen as [W,1,C,H]
    assert [d for d in L.mem_shape((20, 1, 64, 8), t) if d != 1] == [8, 20, 64]
    assert not L.is_rowmajor(t, (20, 1, 64, 8))
    assert L.periodic((1, 64, 1, 1), shape, L.NHWC) and not L.periodic((1, 64, 1, 1), shape, ())
    assert L.concat_view(shape, L.NHWC, 1) == (160, 1)
    assert L.byte_strides(shape, L.NHWC, 1) == (10240, 1, 1280, 64)
    dims = copy_plan((20, 1, 64, 8), t, (), 1)  # the CRNN bridge: W and C merge, one COPY
    assert dims == [(1280, 1, 8), (8, 1280, 1)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5000), st.integers(0, 20), st.integers(0, 8)),
                min_size=1, max_size=25))
def test_offsets_never_overlap_live_storages(items: list[tuple[int, int, int]]) -> None:
    ss = [(Storage(f"s{i}", size, "temp"), size, a, a + n) for i, (size, a, n) in
          enumerate(items)]
    offs = assign_offsets(ss)
    for i, (s, size, a0, a1) in enumerate(ss):
        for t, size2, b0, b1 in ss[i + 1:]:
            if a0 <= b1 and b0 <= a1:
                assert offs[s] + size <= offs[t] or offs[t] + size2 <= offs[s]


def test_unsupported_op_is_named() -> None:
    b = Builder()
    x = b.input("x", TensorType(DType.F32, (1, 2, 4, 4)))
    q = b.op("quantize", x, scale=0.1, zp=0)
    p = b.op("resize", q, sizes=(1, 2, 8, 8), scales=(1.0, 1.0, 2.0, 2.0), name="Resize_7")
    b.output(b.op("dequantize", p, scale=0.1, zp=0))
    with pytest.raises(UnsupportedOpError, match="resize 'Resize_7'.*cannot run on the NPU"):
        lower(b.graph)
