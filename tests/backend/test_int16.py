"""int16 activations on the NPU (docs/quantization.md §8): small graphs per int16 op form (wide
conv/dense with int16 and int8 results, interpolated and int16-result tables, rescale i16<->i8,
add/mul/concat/pools with int16 operands and results, int16 input and output descriptors),
quantised by the real quantiser with chosen values in int16, compile for the NPU (and for small
targets that tile and spill) and the VM is bit-exact with the interpreter of the quantised graph.
A target without mac.int16 refuses with one line; int16 MACs cost 1/int16_rate in both cycle
models."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from ocrc.compiler.backend.codegen import compile_program
from ocrc.compiler.backend.cost import Machine
from ocrc.compiler.errors import UnsupportedOpError
from ocrc.compiler.ir import Builder, DType, Graph, Node, TensorType
from ocrc.compiler.ir.verify import verify
from ocrc.runtime.cycles import insn_cycles
from ocrc.runtime import qmath
from ocrc.runtime.isa import COL, N_COLS, Opcode
from ocrc.runtime.target import load_target

from tests.backend.helpers import TARGETS, G, check_exact, quantise, tiny_target


def quantise16(g: Graph, spec: str) -> Graph:
    return quantise(g, int16=spec)


def i16_ops(qg: Graph) -> set[str]:
    """The ops with an int16 operand or result."""
    return {n.op.name for n in qg.nodes if n.op.name != "const" and any(
        v is not None and v.type.dtype == DType.I16 for v in (*n.inputs, *n.outputs))}


def conv_chain() -> Graph:
    """conv-relu, conv-sigmoid (a table), conv, silu (a table), residual add, dense."""
    m = G((1, 3, 6, 10))
    c1 = m.conv(m.x, 8, pads=(1, 1, 1, 1), act="relu", out_name="c1")
    c2 = m.op("sigmoid", m.conv(c1, 8, pads=(1, 1, 1, 1), out_name="c2"), out_name="s2")
    c3 = m.conv(c2, 8, k=1, out_name="c3")
    s3 = m.op("silu", c3, out_name="s3")
    r = m.op("add", s3, c1, out_name="res")
    flat = m.op("reshape", r, shape=(1, 480), out_name="flat")
    return m.graph(m.op("dense", flat, m.w(12, 480, sc=0.05), m.w(12, sc=0.1), out_name="y"))


def pools_and_friends() -> Graph:
    """max/avg pools, an SE-like gate (global average pool, sigmoid, mul), a broadcast add of
    a constant, concat with a different scale, a sigmoid table."""
    m = G((1, 4, 8, 8))
    c = m.conv(m.x, 8, pads=(1, 1, 1, 1), out_name="c")
    p = m.op("max_pool", c, kernel_shape=(2, 2), strides=(2, 2), out_name="p")
    a = m.op("avg_pool", c, kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1),
             out_name="a")
    gap = m.op("global_avg_pool", p, out_name="gap")
    se = m.op("mul", p, m.op("sigmoid", gap, out_name="g"), out_name="se")
    plus = m.op("add", se, m.b.const(np.float32(0.25)), out_name="plus")
    cat = m.op("concat", plus, a, axis=1, out_name="cat")
    return m.graph(m.op("sigmoid", cat, out_name="y"))


PLANS = {
    "chain-all": (conv_chain, "all"),
    # int8 -> int16 -> int8 transitions: i8-input convs with i16 results, i16-input convs with
    # i8 results, an i8 add with an i16 operand, tables i8 -> i16 and i16 -> i8
    "chain-mixed": (conv_chain, "c2+res"),
    "pools-all": (pools_and_friends, "all"),
    "pools-mixed": (pools_and_friends, "c+plus"),
}


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("plan", sorted(PLANS))
def test_int16_graphs_bit_exact(plan: str, target: str) -> None:
    build, spec = PLANS[plan]
    qg = quantise16(build(), spec)
    assert i16_ops(qg)
    res, stats = check_exact(qg, TARGETS[target]())
    q = next(n for n in qg.nodes if n.op.name == "quantize")
    dq = next(n for n in qg.nodes if n.op.name == "dequantize")
    assert res.program.inputs[0].dtype == {8: "int8", 16: "int16"}[q.attr("bits")]
    assert res.program.outputs[0].dtype == {"i8": "int8", "i16": "int16"}[
        dq.inputs[0].type.dtype.value]  # type: ignore[union-attr]


def test_op_forms_are_covered() -> None:
    """The plans above reach every int16 op form the quantiser makes."""
    seen = set()
    for build, spec in PLANS.values():
        seen |= i16_ops(quantise16(build(), spec))
    assert seen >= {"quantize", "dequantize", "qconv", "qdense", "lut", "qadd", "qmul",
                    "qconcat", "qmax_pool", "qavg_pool"}  # rescale: test_tables_and_rescales


def tables_and_rescales() -> Graph:
    """Hand-made quantised graph: per-channel interpolated tables (i16 -> i16), an i16 -> i8
    table, an i8 -> i16 table, rescales i16 -> i8 -> i16, int16 in and out."""
    rng = np.random.default_rng(3)
    b = Builder()
    x = b.input("x", TensorType(DType.F32, (1, 5, 4, 6)))
    q = b.op("quantize", x, scale=1 / 32767, bits=16)
    t1 = b.const(np.stack([qmath.lut16_table(np.sort(rng.integers(-32768, 32768, 513)),
                                             x0, k, 3 << 15, -(1 << 14))
                           for x0, k in ((-32768, 7), (-400, 0), (0, 2), (-9000, 5), (77, 6))]))
    y = b.op("lut", q, t1, axis=1, y_bits=16)
    t2 = b.const(qmath.lut16_table(np.sort(rng.integers(-128, 128, 513)), -1000, 1, 1 << 16))
    y = b.op("lut", y, t2)
    y = b.op("rescale", y, x_zp=3, y_zp=0, mult=1 << 30, shift=22, lo=-32768, hi=32767,
             y_bits=16)
    y = b.op("rescale", y, mult=(1 << 30) + 12345, shift=38, y_zp=-5)
    t3 = b.const(rng.integers(-32768, 32768, 256).astype(np.int16))
    y = b.op("lut", y, t3, y_bits=16)
    y = b.op("dequantize", y, scale=1 / 32767)
    y.name = "y"
    b.output(y)
    verify(b.graph)
    return b.graph


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_tables_and_rescales(target: str) -> None:
    qg = tables_and_rescales()
    res, _ = check_exact(qg, TARGETS[target]())
    assert [n.op.name for n in res.lowered.nodes].count("npu.lut") == 3


def with_attrs(g: Graph, pred: Any, **attrs: Any) -> Graph:
    """g with `attrs` set on the nodes where pred(node) holds."""
    nodes = [Node(n.op, n.inputs, {**n.attrs, **attrs}, n.outputs, n.name) if pred(n) else n
             for n in g.nodes]
    return Graph(list(g.inputs), nodes, list(g.outputs), g.name)


@pytest.mark.parametrize("target", ["npu", "tiny"])
def test_fine_int16_clamp_of_a_mac(target: str) -> None:
    """An int16 MAC result clamps on the high byte in the instruction; a finer clamp (clip)
    runs as the enclosing one plus a fused RESCALE with the exact bounds."""
    qg = quantise16(conv_chain(), "all")
    qg = with_attrs(qg, lambda n: n.op.name in ("qconv", "qdense"), lo=-1000, hi=20001)
    res, _ = check_exact(qg, TARGETS[target]())
    assert any(n.op.name == "npu.rescale" and n.attr("fused") for n in res.lowered.nodes)


def test_target_without_int16_refuses() -> None:
    qg = quantise16(conv_chain(), "all")
    with pytest.raises(UnsupportedOpError, match="need a target with mac.int16; 'npu-lite' "
                       "has none"):
        compile_program(qg, load_target("npu-lite"))


def test_int16_mac_cycles_at_the_int16_rate() -> None:
    """A CONV/MATMUL with an int16 input costs 1/int16_rate times the int8 one, in the VM's
    formula and in the compiler's analytic model alike; the whole-program estimate stays close
    to the VM's count."""
    t = load_target("npu")
    m = Machine.of(t)
    for op, f in ((Opcode.CONV, dict(h=6, w=10, cin=8, cout=16, kh=3, kw=3, sh=1, sw=1, dh=1,
                                     dw=1, pt=1, pb=1, pl=1, pr=1, groups=1)),
                  (Opcode.MATMUL, dict(m=20, n=64, k=96))):
        row = np.zeros(N_COLS, np.int64)
        row[COL["opcode"]] = int(op)
        for k, v in {**f, "in_dt": 1}.items():
            row[COL[k]] = v
        wide = int(insn_cycles(row, t.vm_params(), t.vector_overheads()))
        assert wide == m.insn(op, **f, in_dt=1) == round(1 / t.int16_rate) * m.insn(op, **f)
    res, stats = check_exact(quantise16(conv_chain(), "all"), t)
    assert abs(res.estimate - stats.total_cycles) <= 0.1 * stats.total_cycles


def test_wide_layers_fit_a_small_sram() -> None:
    """An int16-input dense whose weight rows crowd the SRAM cannot split K (the wide
    accumulator): narrower column blocks fit instead; an int16 residual add needs scratch for
    a tile, not for the whole operand."""
    m = G((1, 1024))
    y = m.op("dense", m.x, m.w(8, 1024, sc=0.05), m.w(8, sc=0.1), out_name="y")
    check_exact(quantise16(m.graph(y), "all"), tiny_target(8192))
    m = G((1, 4, 32, 32))
    c = m.conv(m.x, 4, pads=(1, 1, 1, 1), out_name="c")
    r = m.op("add", m.conv(c, 4, pads=(1, 1, 1, 1), out_name="c2"), c, out_name="r")
    check_exact(quantise16(m.graph(r), "all"), tiny_target(16384))
