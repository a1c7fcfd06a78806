"""The composite reference functions of qmath against float math (within 1 LSB) and exact
edge cases (rounding halves, saturation)."""

from __future__ import annotations

import numpy as np
import pytest
from ocrc.runtime import qmath as q

RNG_SEED = 0


def _mult(real: float) -> tuple[int, int]:
    return q.quantize_multiplier(real)


def test_mul_round_shift_halves_round_up() -> None:
    x = np.array([1, 3, -1, -3, 5], np.int64)
    # x * 0.5: 0.5 -> 1, 1.5 -> 2, -0.5 -> 0, -1.5 -> -1, 2.5 -> 3 (half toward +inf)
    assert q.mul_round_shift(x, 1 << 30, 31).tolist() == [1, 2, 0, -1, 3]


def test_rescale_ref_float_and_saturation() -> None:
    rng = np.random.default_rng(RNG_SEED)
    x = rng.integers(-128, 128, 1000).astype(np.int64)
    m, n = _mult(0.37)
    y = q.rescale_ref(x, 5, m, n, -3, -128, 127)
    want = np.clip(np.round((x - 5) * 0.37) - 3, -128, 127)
    assert np.max(np.abs(y - want)) <= 1
    m, n = _mult(4.0)
    assert q.rescale_ref(np.array([100, -100]), 0, m, n, 0, -128, 127).tolist() == [127, -128]


@pytest.mark.parametrize("frac", [q.ADD8_FRAC_BITS, q.ADD_FRAC_BITS])
def test_add_ref(frac: int) -> None:
    rng = np.random.default_rng(RNG_SEED)
    xa, xb = (rng.integers(-128, 128, 2000).astype(np.int64) for _ in range(2))
    sa, sb, sy = 0.02, 0.05, 0.06
    ma, na = _mult(sa / sy * 2**frac)
    mb, nb = _mult(sb / sy * 2**frac)
    y = q.add_ref(xa, 3, ma, na, xb, -7, mb, nb, 2, -128, 127, frac)
    exact = ((xa - 3) * sa + (xb + 7) * sb) / sy + 2
    want = np.clip(np.floor(exact + 0.5), -128, 127)  # half up, as mul_round_shift
    assert np.max(np.abs(y - want)) <= 1
    # away from the rounding boundaries (by more than the operands' 2**-frac) it is exact
    clear = np.abs(exact - np.floor(exact) - 0.5) > 2.0**-frac * 4
    assert np.array_equal(y[clear], want[clear])
    # identity scales: exact integer addition, saturating
    one = _mult(2.0**frac)
    got = q.add_ref(np.array([100, -100, 3]), 0, *one, np.array([100, -100, 4]), 0, *one, 0,
                    -128, 127, frac)
    assert got.tolist() == [127, -128, 7]


def test_add_frac_bits() -> None:
    assert q.add_frac_bits(False) == q.ADD8_FRAC_BITS == 16
    assert q.add_frac_bits(True) == q.ADD_FRAC_BITS == 8


def test_mul_ref() -> None:
    rng = np.random.default_rng(RNG_SEED)
    xa, xb = (rng.integers(-128, 128, 2000).astype(np.int64) for _ in range(2))
    sa, sb, sy = 0.03, 0.04, 0.1
    m, n = _mult(sa * sb / sy)
    y = q.mul_ref(xa, 1, xb, -2, m, n, 4, -128, 127)
    want = np.clip(np.round((xa - 1) * sa * (xb + 2) * sb / sy) + 4, -128, 127)
    assert np.max(np.abs(y - want)) <= 1


def test_lut_ref() -> None:
    table = np.arange(256, dtype=np.int64) - 128
    x = np.array([-128, 0, 127], np.int64)
    assert q.lut_ref(x, table[::-1]).tolist() == [127, -1, -128]


def test_int16_cell_ops() -> None:
    a = np.array([16384, -16384, 32767, -32768], np.int64)  # Q0.15: 0.5, -0.5, ~1, -1
    b = np.array([16384, 16384, 32767, -32768], np.int64)
    # Q0.15 * Q0.15 >> 15: 0.25, -0.25, ~1, saturates at +1
    assert q.mul16_ref(a, b, 1, 15, q.INT16_MIN, q.INT16_MAX).tolist() == [
        8192, -8192, 32766, 32767]
    assert q.mul16_ref(a, b, 1, 15, -100, 100, 3).tolist() == [100, -100, 100, 100]
    assert q.add16_ref(np.array([30000, -30000]), np.array([30000, -30000]), q.INT16_MIN,
                       q.INT16_MAX).tolist() == [32767, -32768]
    assert q.add_shift_ref(np.array([384, -384]), np.array([0, 0]), 8, -128, 127).tolist() == [
        2, -1]  # 1.5 -> 2, -1.5 -> -1
    m, n = _mult(1 / 256)
    assert q.requantize16_ref(np.array([2**31 - 1, 256 * 300]), m, n).tolist() == [32767, 300]


def test_quantize_dequantize() -> None:
    x = np.array([0.5, 1.5, 2.5, -0.5, 1000.0], np.float32)
    assert q.quantize_ref(x, 1.0, 0).tolist() == [0, 2, 2, 0, 127]  # half to even
    assert q.dequantize_ref(np.array([3, -1]), 0.5, 1).tolist() == [1.0, -1.0]


def _float_conv(x, w, b, stride, pads, dil, group):  # type: ignore[no-untyped-def]
    n, _cin, h, wd = x.shape
    cout, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    ho = (h + pads[0] + pads[2] - dil[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (wd + pads[1] + pads[3] - dil[1] * (kw - 1) - 1) // stride[1] + 1
    y = np.zeros((n, cout, ho, wo))
    ng = cout // group
    for c in range(cout):
        g = c // ng
        for i in range(ho):
            for j in range(wo):
                patch = xp[0, g * cg:(g + 1) * cg, i * stride[0]:i * stride[0] + dil[0] * (kh - 1)
                           + 1:dil[0], j * stride[1]:j * stride[1] + dil[1] * (kw - 1) + 1:dil[1]]
                y[0, c, i, j] = (patch * w[c]).sum() + b[c]
    return y


@pytest.mark.parametrize("stride,pads,dil,group", [
    ((1, 1), (1, 1, 1, 1), (1, 1), 1), ((2, 1), (0, 1, 2, 0), (1, 2), 2),
    ((1, 1), (1, 1, 1, 1), (1, 1), 4)])
def test_conv_ref_against_float(stride, pads, dil, group) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(RNG_SEED)
    x = rng.integers(-128, 128, (1, 4, 7, 9))
    w = rng.integers(-127, 128, (8, 4 // group, 3, 3))
    b = rng.integers(-1000, 1000, 8)
    zx = 7
    acc = q.conv_ref(x, w, b, None, None, zx, 0, 0, 0, stride, pads, dil, group, requant=False)
    want = _float_conv((x - zx).astype(float), w.astype(float), b, stride, pads, dil, group)
    assert np.array_equal(acc, want.astype(np.int64))
    sc = rng.uniform(1e-4, 1e-3, 8)
    mult, n = zip(*(_mult(s) for s in sc))
    y = q.conv_ref(x, w, b, mult, n, zx, -4, -128, 127, stride, pads, dil, group)
    fy = np.clip(np.round(want * sc.reshape(1, -1, 1, 1)) - 4, -128, 127)
    assert np.max(np.abs(y - fy)) <= 1


def test_dense_ref() -> None:
    rng = np.random.default_rng(RNG_SEED)
    x = rng.integers(-128, 128, (3, 50))
    w = rng.integers(-127, 128, (6, 50))
    b = rng.integers(-100, 100, 6)
    acc = q.dense_ref(x, w, b, None, None, -3, 0, 0, 0, requant=False)
    assert np.array_equal(acc, (x + 3) @ w.T + b)


def test_pools() -> None:
    x = np.array([[[[1, -5, 3], [7, 2, -8]]]], np.int64)  # NCHW 1x1x2x3
    y = q.maxpool_ref(x, (2, 2), (1, 1), (1, 1, 0, 0))
    assert y.tolist() == [[[[1, 1, 3], [7, 7, 3]]]]  # padding never wins
    assert q.maxpool_ref(x, (2, 2), (1, 1), (0, 0, 0, 0), lo=0, hi=5).tolist() == [[[[5, 3]]]]
    mult, n = q.avgpool_multipliers(1.0, 4)
    y = q.avgpool_ref(x, (2, 2), (1, 1), (1, 1, 0, 0), 0, 0, mult, n)
    # windows: [1] -> 1, [1,-5] -> -2, [-5,3] -> -1, [1,7] -> 4, [1,-5,7,2] -> 1.25, [-5,3,2,-8]
    assert y.tolist() == [[[[1, -2, -1], [4, 1, -2]]]]
    y = q.avgpool_ref(x, (2, 2), (1, 1), (1, 1, 0, 0), 0, 0, mult, n, count_include_pad=True)
    assert y[0, 0, 0, 0] == 0  # 1/4 = 0.25 -> 0
