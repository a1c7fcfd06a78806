"""The quantised ops' integer semantics against exact real arithmetic, within the LSB bounds
docs/quantization.md states (hypothesis), plus type checks and the text round trip."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocrc.compiler.errors import IRVerifyError
from ocrc.compiler.ir import OPS, Builder, DType, TensorType, parse_graph, print_graph, verify
from ocrc.compiler.ir.ops.nn import conv2d
from ocrc.compiler.quant.qparams import QParams, build_lut, multiplier
from ocrc.runtime import qmath

# Rounding once (0.5 LSB) plus the Q31 multiplier's relative error on values below 2**16.
HALF_LSB = 0.5 + 2.0**-12
# qadd: the final rounding plus two operand roundings at 2**-9 LSB each.
ADD_LSB = 0.5 + 2 * 2.0**-(qmath.ADD8_FRAC_BITS + 1) + 2.0**-12

seeds = st.integers(0, 2**31 - 1)
zps = st.integers(-128, 127)
ratios = st.floats(2.0**-12, 4.0)


def ref(op: str, xs: list[np.ndarray | None], **attrs: object) -> np.ndarray:
    return OPS[op].ref(xs, OPS[op].with_defaults(attrs))[0]


def unclamped(y: np.ndarray, exact: np.ndarray, bound: float) -> None:
    inside = (exact > -127.5) & (exact < 126.5)
    assert np.all(np.abs(y.astype(np.float64) - exact)[inside] <= bound)
    assert np.all(y[exact <= -128.5] == -128) and np.all(y[exact >= 127.5] == 127)


@settings(max_examples=40, deadline=None)
@given(seeds, zps, zps, st.floats(2.0**-10, 2.0**-4), st.sampled_from([1, 2]))
def test_qconv_is_the_rounded_exact_conv(seed: int, zx: int, zy: int, m: float,
                                         group: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (1, 4, 5, 6)).astype(np.int8)
    w = rng.integers(-127, 128, (4, 4 // group, 3, 3)).astype(np.int8)
    bias = rng.integers(-5000, 5000, 4).astype(np.int32)
    reals = m * rng.uniform(0.5, 2.0, 4)
    pairs = [multiplier(r, "test") for r in reals]
    mult = np.array([p[0] for p in pairs], np.int32)
    shift = np.array([p[1] for p in pairs], np.int32)
    y = ref("qconv", [x, w, bias, mult, shift], x_zp=zx, y_zp=zy, pads=(1, 0, 1, 2),
            strides=(1, 2), group=group)
    acc = conv2d((x.astype(np.float64) - zx), w.astype(np.float64), (1, 2), (1, 0, 1, 2),
                 (1, 1), group) + bias.reshape(1, -1, 1, 1)
    exact = acc * (mult * 2.0**-shift).reshape(1, -1, 1, 1) + zy
    unclamped(y, exact, HALF_LSB)


@settings(max_examples=40, deadline=None)
@given(seeds, zps, zps, ratios)
def test_qdense_is_the_rounded_exact_product(seed: int, zx: int, zy: int, m: float) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (3, 17)).astype(np.int8)
    w = rng.integers(-127, 128, (5, 17)).astype(np.int8)
    bias = rng.integers(-2**20, 2**20, 5).astype(np.int32)
    mult, shift = np.array([multiplier(m * 2.0**-8, "t")] * 5, np.int32).T
    y = ref("qdense", [x, w, bias, mult, shift], x_zp=zx, y_zp=zy, lo=-128, hi=127)
    acc = (x.astype(np.float64) - zx) @ w.T.astype(np.float64) + bias
    unclamped(y, acc * mult[0] * 2.0**-shift[0] + zy, HALF_LSB)


@settings(max_examples=60, deadline=None)
@given(seeds, zps, zps, zps, ratios, ratios)
def test_qadd_within_its_bound(seed: int, za: int, zb: int, zy: int, ra: float,
                               rb: float) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (4, 8)).astype(np.int8)
    b = rng.integers(-128, 128, (1, 8)).astype(np.int8)  # broadcasts
    frac = qmath.ADD8_FRAC_BITS  # all-int8 qadd
    ma, sa = multiplier(ra * 2**frac, "a")
    mb, sb = multiplier(rb * 2**frac, "b")
    y = ref("qadd", [a, b], a_zp=za, a_mult=ma, a_shift=sa, b_zp=zb, b_mult=mb, b_shift=sb,
            y_zp=zy)
    exact = (ma * 2.0**-sa * (a.astype(np.float64) - za)
             + mb * 2.0**-sb * (b.astype(np.float64) - zb)) / 2**frac + zy
    unclamped(y, exact, ADD_LSB)


@settings(max_examples=60, deadline=None)
@given(seeds, zps, zps, zps, st.floats(2.0**-16, 2.0**-6))
def test_qmul_and_rescale_round_once(seed: int, za: int, zb: int, zy: int, r: float) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (3, 1, 4)).astype(np.int8)
    b = rng.integers(-128, 128, (1, 5, 4)).astype(np.int8)
    m, s = multiplier(r, "m")
    y = ref("qmul", [a, b], a_zp=za, b_zp=zb, mult=m, shift=s, y_zp=zy)
    exact = (a.astype(np.float64) - za) * (b.astype(np.float64) - zb) * m * 2.0**-s + zy
    unclamped(y, exact, HALF_LSB)
    m, s = multiplier(r * 2**8, "r")
    y = ref("rescale", [a], x_zp=za, y_zp=zy, mult=m, shift=s)
    unclamped(y, (a.astype(np.float64) - za) * m * 2.0**-s + zy, HALF_LSB)


def test_rounding_is_half_up() -> None:
    a = np.array([[-3, -1, 1, 3]], np.int8)  # times 0.5: -1.5, -0.5, 0.5, 1.5
    y = ref("rescale", [a], mult=2**30, shift=31)
    assert y.tolist() == [[-1, 0, 1, 2]]


def test_lut_and_its_construction() -> None:
    qin, qout = QParams(0.05, 10), QParams(1 / 255, -128)
    table = build_lut(lambda v: 1 / (1 + np.exp(-v)), qin, qout)
    x = np.arange(-128, 128, dtype=np.int8).reshape(16, 16)
    y = ref("lut", [x, table])
    assert np.array_equal(y.reshape(-1), table)
    real = 1 / (1 + np.exp(-qin.scale * (np.arange(-128, 128) - qin.zp)))
    assert np.all(np.abs(qout.dequantize(table) - real) <= qout.scale / 2 + 1e-7)


@settings(max_examples=30, deadline=None)
@given(seeds, zps, zps)
def test_pools(seed: int, zx: int, zy: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (1, 3, 6, 7)).astype(np.int8)
    y = ref("qmax_pool", [x], kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1))
    f = OPS["max_pool"].ref([x.astype(np.float32)], OPS["max_pool"].with_defaults(
        {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)}))[0]
    assert np.array_equal(y, f.astype(np.int8))
    ratio = 0.9
    m = np.array([0] + [multiplier(ratio / c, "p")[0] for c in range(1, 43)], np.int32)
    s = np.array([1] + [multiplier(ratio / c, "p")[1] for c in range(1, 43)], np.int32)
    y = ref("qavg_pool", [x, m, s], kernel_shape=(6, 7), x_zp=zx, y_zp=zy)
    exact = ratio * (x.astype(np.float64) - zx).mean(axis=(2, 3), keepdims=True) + zy
    unclamped(y, exact, HALF_LSB)


def test_qconcat_rescales_each_operand() -> None:
    a = np.array([[1, -5]], np.int8)
    b = np.array([[100, -100]], np.int8)
    m, s = multiplier(0.5, "c")
    y = ref("qconcat", [a, b], axis=1, x_zps=(0, 0), mults=(2**30, m), shifts=(30, s), y_zp=3)
    assert y.tolist() == [[4, -2, 53, -47]]


def test_quantize_dequantize_edges() -> None:
    x = np.linspace(-1, 2, 50, dtype=np.float32)
    q = ref("quantize", [x], scale=3 / 255, zp=-43)
    assert q.dtype == np.int8
    assert np.all(np.abs(ref("dequantize", [q], scale=3 / 255, zp=-43) - x) <= 1.5 / 255 + 1e-6)


def test_types_and_limits_are_checked() -> None:
    b = Builder()
    x = b.input("x", TensorType(DType.I8, (1, 40000)))
    w = b.const(np.zeros((2, 40000), np.int8))
    z = b.const(np.zeros(2, np.int32))
    with pytest.raises(ValueError, match="MAX_K"):
        b.op("qdense", x, w, z, z, z)
    x2 = b.input("x2", TensorType(DType.I8, (1, 4)))
    with pytest.raises(ValueError, match="bias must be i32"):
        b.op("qdense", x2, b.const(np.zeros((2, 4), np.int8)),
             b.const(np.zeros(2, np.int8)), z, z)
    with pytest.raises(ValueError, match="clamp"):
        b.op("rescale", x2, mult=2**30, shift=30, lo=5, hi=1)
    with pytest.raises(ValueError, match="table"):
        b.op("lut", x2, b.const(np.zeros(255, np.int8)))


def test_text_round_trip_of_quantised_ops(quantized_demo: object) -> None:
    g = quantized_demo.graph  # type: ignore[attr-defined]
    text, blobs = print_graph(g)
    assert {"qconv", "qdense", "lut", "qadd", "qmul", "qmax_pool", "qavg_pool", "qlstm",
            "quantize", "dequantize", "qconcat"} <= {n.op.name for n in g.nodes}
    g2 = parse_graph(text, blobs)
    verify(g2)
    assert print_graph(g2)[0] == text


def test_verifier_rejects_a_misplaced_value_type() -> None:
    b = Builder()
    x = b.input("x", TensorType(DType.I8, (2, 3)))
    with pytest.raises((ValueError, IRVerifyError)):
        b.op("qadd", x, b.const(np.zeros((2, 3), np.float32)), a_mult=1, a_shift=1, b_mult=1,
             b_shift=1)
    assert qmath.add_frac_bits(False) == 16 and qmath.add_frac_bits(True) == 8
