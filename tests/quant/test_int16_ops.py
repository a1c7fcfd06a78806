"""int16 activations (docs/quantization.md §8): the qmath primitives (hypothesis: bounds, the
15-bit multiplier, exact identity rescales, the interpolated table) and every op's i16 form
against exact real arithmetic within the stated LSB bounds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocrc.compiler.ir import OPS, Builder, DType, TensorType
from ocrc.compiler.ir.ops.nn import conv2d
from ocrc.compiler.quant.qparams import QParams, build_lut, multiplier
from ocrc.runtime import qmath

WIDE = qmath.WIDE_MULT_BITS
HALF_LSB = 0.5 + 2.0**-12  # one rounding plus the Q31 multiplier's error (values < 2**16)
seeds = st.integers(0, 2**31 - 1)
I16 = (qmath.INT16_MIN, qmath.INT16_MAX)


def ref(op: str, xs: list[np.ndarray | None], **attrs: object) -> np.ndarray:
    return OPS[op].ref(xs, OPS[op].with_defaults(attrs))[0]


def within(y: np.ndarray, exact: np.ndarray, bound: float, lo: int, hi: int) -> None:
    """|y - exact| <= bound where exact is inside (lo, hi), saturation outside."""
    inside = (exact > lo + 0.5) & (exact < hi - 0.5)
    assert np.all(np.abs(y.astype(np.float64) - exact)[inside] <= bound)
    assert np.all(y[exact <= lo - 0.5] == lo) and np.all(y[exact >= hi + 0.5] == hi)


# --- qmath primitives ---------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.floats(2.0**-46, 2.0**13))
def test_wide_multiplier_format_and_error(real: float) -> None:
    mult, n = qmath.quantize_multiplier(real, WIDE)
    assert 2**(WIDE - 1) <= mult < 2**WIDE and 1 <= n <= qmath.MAX_SHIFT
    assert abs(mult * 2.0**-n - real) <= real * 2.0**-WIDE


@settings(max_examples=300, deadline=None)
@given(st.integers(-(2**qmath.WIDE_ACC_BITS) + 1, 2**qmath.WIDE_ACC_BITS - 1),
       st.integers(2**(WIDE - 1), 2**WIDE - 1), st.integers(1, qmath.MAX_SHIFT))
def test_wide_mul_round_shift_is_exact_round_half_up(acc: int, mult: int, n: int) -> None:
    """|acc| < 2**47, mult < 2**15: int64 never overflows; the result is floor(acc*M + 1/2)."""
    got = qmath.mul_round_shift(np.array([acc], np.int64), np.int64(mult), np.int64(n))[0]
    assert int(got) == (acc * mult + (1 << (n - 1))) >> n  # Python ints: the exact value
    assert abs(acc * mult) + (1 << (n - 1)) < 2**63


@settings(max_examples=100, deadline=None)
@given(st.integers(-(2**qmath.WIDE_ACC_BITS) + 1, 2**qmath.WIDE_ACC_BITS - 1))
def test_identity_rescales_are_exact(x: int) -> None:
    mult, n = qmath.quantize_multiplier(1.0, WIDE)
    assert (mult, n) == (2**(WIDE - 1), WIDE - 1)
    assert qmath.mul_round_shift(np.int64(x), np.int64(mult), np.int64(n)) == x
    m31, n31 = qmath.quantize_multiplier(1.0)
    v = np.arange(qmath.INT16_MIN, qmath.INT16_MAX + 1, 7, dtype=np.int64)
    assert np.array_equal(qmath.rescale_ref(v, 0, m31, n31, 0, *I16), v)


@settings(max_examples=60, deadline=None)
@given(seeds)
def test_lut16_interpolates_between_entries(seed: int) -> None:
    rng = np.random.default_rng(seed)
    knots = np.clip(np.cumsum(rng.integers(-300, 300, qmath.LUT16_KNOTS)), *I16)
    table = qmath.lut16_table(knots).astype(np.int64)  # the whole range, 128-code segments
    x = np.concatenate([rng.integers(*I16, 500, endpoint=True), [-32768, 32767]])
    y = qmath.lut16_ref(x.astype(np.int64), table, *I16)
    u = x + 32768
    i, f = u >> 7, u & 127
    lo, hi = np.minimum(table[i], table[i + 1]), np.maximum(table[i], table[i + 1])
    assert np.all((lo <= y) & (y <= hi))
    exact = table[i] + (table[i + 1] - table[i]) * f / 128.0
    assert np.all(np.abs(y - exact) <= 0.5)
    codes = np.arange(512) * 128 - 32768  # the table's own codes are returned exactly
    assert np.array_equal(qmath.lut16_ref(codes, table, *I16), table[:512])


@settings(max_examples=60, deadline=None)
@given(seeds, st.integers(0, 7), st.integers(-32768, 32767), st.integers(-2**31, 2**31 - 1),
       st.integers(-2**31, 2**31 - 1))
def test_lut16_window_and_extrapolation(seed: int, k: int, x0: int, sl: int, sh: int) -> None:
    """Inside the window [x0, x0 + 512 * 2**k) the knots are 2**k codes apart; below and above
    it the Q16 slopes continue from the end knots; the result is clamped to its type."""
    rng = np.random.default_rng(seed)
    knots = rng.integers(-20000, 20000, qmath.LUT16_KNOTS)
    table = qmath.lut16_table(knots, x0, k, sl, sh).astype(np.int64)
    assert qmath.lut16_word(table[-4], table[-3]) == sl
    assert qmath.lut16_word(table[-2], table[-1]) == sh
    x = np.arange(*I16, 13, dtype=np.int64)
    y = qmath.lut16_ref(x, table, -128, 127)
    d, w = x - x0, 512 << k
    i = np.clip(d >> k, 0, 511)
    inside = knots[i] + (knots[i + 1] - knots[i]) * (d - (i << k)) / 2.0**k
    want = np.where(d < 0, knots[0] + d * sl / 65536.0,
                    np.where(d >= w, knots[512] + (d - w) * sh / 65536.0, inside))
    assert np.all(np.abs(y - np.clip(want, -128, 127)) <= 0.5)


# --- the ops ------------------------------------------------------------------------------
def _mults(reals: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = [multiplier(r, "t", bits) for r in reals]
    return (np.array([p[0] for p in pairs], np.int32), np.array([p[1] for p in pairs], np.int32))


@settings(max_examples=30, deadline=None)
@given(seeds, st.sampled_from([8, 16]), st.floats(2.0**-12, 2.0**-6))
def test_qconv_int16_input_wide_accumulator(seed: int, y_bits: int, m: float) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(*I16, (1, 4, 5, 6), endpoint=True).astype(np.int16)
    w = rng.integers(-127, 128, (3, 4, 3, 3)).astype(np.int8)
    bias = rng.integers(-2**38, 2**38, 3).astype(np.int64)
    m = m * (2.0**-8 if y_bits == 8 else 1.0)
    mult, shift = _mults(m * rng.uniform(0.5, 2.0, 3), WIDE)
    lo, hi = (-128, 127) if y_bits == 8 else I16
    y = ref("qconv", [x, w, bias, mult, shift], pads=(1, 1, 1, 1), y_bits=y_bits, lo=lo, hi=hi)
    assert y.dtype == (np.int8 if y_bits == 8 else np.int16)
    acc = conv2d(x.astype(np.float64), w.astype(np.float64), (1, 1), (1, 1, 1, 1), (1, 1), 1)
    acc = acc + bias.reshape(1, -1, 1, 1)
    within(y, acc * (mult * 2.0**-shift).reshape(1, -1, 1, 1), 0.5 + 1e-9, lo, hi)


def test_qconv_int16_input_needs_wide_operands() -> None:
    b = Builder()
    x = b.input("x", TensorType(DType.I16, (1, 2, 4, 4)))
    w = b.const(np.ones((2, 2, 1, 1), np.int8))
    ones = b.const(np.full(2, 1 << 30, np.int32))
    with pytest.raises(ValueError, match="bias .int16 input. must be i64"):
        b.op("qconv", x, w, b.const(np.zeros(2, np.int32)), ones, b.const(np.ones(2, np.int32)))
    with pytest.raises(ValueError, match="symmetric"):
        b.op("qconv", x, w, b.const(np.zeros(2, np.int64)), ones, b.const(np.ones(2, np.int32)),
             x_zp=3)
    with pytest.raises(ValueError, match="below 2\\*\\*15"):
        ref("qconv", [np.zeros((1, 2, 4, 4), np.int16), np.ones((2, 2, 1, 1), np.int8),
                      np.zeros(2, np.int64), np.full(2, 1 << 30, np.int32),
                      np.full(2, 31, np.int32)])


@settings(max_examples=30, deadline=None)
@given(seeds, st.integers(-128, 127), st.floats(2.0**-4, 2.0**4))
def test_qdense_int8_input_int16_result(seed: int, zx: int, m: float) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (3, 17)).astype(np.int8)
    w = rng.integers(-127, 128, (5, 17)).astype(np.int8)
    bias = rng.integers(-2**20, 2**20, 5).astype(np.int32)
    mult, shift = _mults(np.full(5, m * 2.0**-4), qmath.MULT_BITS)
    y = ref("qdense", [x, w, bias, mult, shift], x_zp=zx, y_bits=16, lo=I16[0], hi=I16[1])
    acc = (x.astype(np.float64) - zx) @ w.T.astype(np.float64) + bias
    within(y, acc * mult[0] * 2.0**-shift[0], 0.5 + 2.0**-10 * 8, *I16)


@pytest.mark.parametrize("y_bits", [8, 16])
def test_lut_int16_input_sigmoid_within_interpolation_bound(y_bits: int) -> None:
    qin, qout = QParams(8.0 / 32767, 0, 16), (QParams(1 / 255, -128) if y_bits == 8
                                               else QParams(1 / 32767, 0, 16))
    table = build_lut(lambda v: 1 / (1 + np.exp(-v.astype(np.float64))), qin, qout)
    assert table.shape == (qmath.LUT16_SIZE,) and table.dtype == np.int16
    x = np.arange(*I16, dtype=np.int16)
    y = ref("lut", [x, table], y_bits=y_bits)
    real = 1 / (1 + np.exp(-qin.scale * x.astype(np.float64)))
    # entries and result rounded (1/2 LSB each) + interpolation h**2/8 * max|sigmoid''| (0.1)
    h = 128 * qin.scale
    bound = 1.0 + h * h / 8 * 0.1 / qout.scale
    assert np.max(np.abs(qout.dequantize(y) - real)) / qout.scale <= bound


def test_lut_int8_input_int16_table_and_per_channel_int16() -> None:
    qin8, qout = QParams(0.05, 3), QParams(1 / 32767, 0, 16)
    table = build_lut(np.tanh, qin8, qout)
    assert table.shape == (256,) and table.dtype == np.int16
    x = np.arange(-128, 128, dtype=np.int8)
    assert np.array_equal(ref("lut", [x, table], y_bits=16), table)
    qin = QParams(4.0 / 32767, 0, 16)
    tables = np.stack([build_lut(lambda v, k=k: np.tanh(k * v), qin, qout) for k in (1, 2)])
    xs = np.random.default_rng(0).integers(*I16, (1, 2, 3, 5)).astype(np.int16)
    y = ref("lut", [xs, tables], y_bits=16)
    for c in range(2):
        assert np.array_equal(y[:, c], qmath.lut16_ref(xs[:, c].astype(np.int64),
                                                       tables[c].astype(np.int64), *I16))


@settings(max_examples=40, deadline=None)
@given(seeds, st.floats(2.0**-6, 2.0**6), st.floats(2.0**-6, 2.0**6), st.integers(-128, 127))
def test_qadd_qmul_rescale_mixed_types(seed: int, ra: float, rb: float, zb: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(*I16, (4, 8), endpoint=True).astype(np.int16)
    b = rng.integers(-128, 128, (1, 8)).astype(np.int8)
    ra, rb = ra * 2.0**-4, rb * 2**4  # int16 a with a small ratio, int8 b with a large one
    ma, sa = multiplier(ra * 2**8, "a")
    mb, sb = multiplier(rb * 2**8, "b")
    y = ref("qadd", [a, b], a_mult=ma, a_shift=sa, b_zp=zb, b_mult=mb, b_shift=sb, y_bits=16,
            lo=I16[0], hi=I16[1])
    exact = a * (ma * 2.0**(-sa - 8)) + (b.astype(np.float64) - zb) * (mb * 2.0**(-sb - 8))
    within(y, exact, 0.5 + 2 * 2.0**-9 + 2.0**-10, *I16)
    m, s = multiplier(ra * 2.0**-8, "m")
    y = ref("qmul", [a, b], b_zp=zb, mult=m, shift=s, y_bits=16, lo=I16[0], hi=I16[1])
    within(y, a * (b.astype(np.float64) - zb) * (m * 2.0**-s), HALF_LSB, *I16)
    m, s = multiplier(ra, "r")
    y = ref("rescale", [a], mult=m, shift=s, y_zp=5)  # int16 -> int8
    within(y, a * (m * 2.0**-s) + 5, HALF_LSB, -128, 127)


def test_qconcat_pools_and_movement_int16() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(*I16, (1, 2, 4, 4)).astype(np.int16)
    b = rng.integers(-128, 128, (1, 3, 4, 4)).astype(np.int8)
    m1, s1 = multiplier(1.0, "1")
    m2, s2 = multiplier(200.0, "2")
    y = ref("qconcat", [a, b], axis=1, x_zps=[0, 7], mults=[m1, m2], shifts=[s1, s2],
            y_bits=16)
    assert y.dtype == np.int16 and np.array_equal(y[:, :2], a)
    assert np.array_equal(y[:, 2:], np.clip((b.astype(np.int64) - 7) * 200, *I16))
    mx = ref("qmax_pool", [a], kernel_shape=(2, 2), strides=(2, 2), lo=I16[0], hi=I16[1])
    assert mx.dtype == np.int16
    assert np.array_equal(mx, a.reshape(1, 2, 2, 2, 2, 2).max(axis=(3, 5)))
    mult, shift = qmath.avgpool_multipliers(1.0, 16)
    avg = ref("qavg_pool", [a, mult.astype(np.int32), shift.astype(np.int32)],
              kernel_shape=(4, 4), y_bits=16, lo=I16[0], hi=I16[1])
    exact = a.astype(np.float64).mean(axis=(2, 3), keepdims=True)
    assert avg.dtype == np.int16 and np.all(np.abs(avg - exact) <= HALF_LSB)
    bld = Builder()
    x = bld.input("x", TensorType(DType.I16, (1, 2, 4, 4)))
    assert bld.op("reshape", x, shape=(1, 32)).type == TensorType(DType.I16, (1, 32))
    q = bld.op("quantize", bld.input("f", TensorType(DType.F32, (3,))), scale=0.5, bits=16)
    assert q.type.dtype == DType.I16
    assert np.array_equal(ref("quantize", [np.array([1e9, -0.75, 0.25], np.float32)],
                              scale=0.5, bits=16), [32767, -2, 0])


def test_lut16_knots_are_fitted_unbiased() -> None:
    """hardswish over int16: the least-squares knots leave no mean error (the chord through
    sampled knots reads the convex x(x+3)/6 high everywhere on [-3, 3]) and a smaller RMS."""
    def hswish(v: np.ndarray) -> np.ndarray:
        v = v.astype(np.float64)
        return v * np.clip(v + 3, 0, 6) / 6

    qin = qout = QParams(44.0 / 32767, 0, 16)
    x = np.arange(*I16, dtype=np.int16)
    real = hswish(qin.scale * x.astype(np.float64)) / qout.scale
    fitted = ref("lut", [x, build_lut(hswish, qin, qout)], y_bits=16) - real
    knots = np.arange(qmath.LUT16_KNOTS) * 128 - 32768
    sampled = qmath.lut16_table(np.clip(np.rint(hswish(qin.scale * knots) / qout.scale), *I16))
    chord = ref("lut", [x, sampled], y_bits=16) - real
    curved = np.abs(qin.scale * x) < 3
    assert chord[curved].mean() > 0.5  # the chord's bias, h**2 / 12 * f'' = 0.61 codes
    assert abs(fitted[curved].mean()) < 0.2
    assert np.sqrt(np.mean(fitted ** 2)) < 0.8 * np.sqrt(np.mean(chord ** 2))
