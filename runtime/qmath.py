"""Integer arithmetic primitives shared by the golden int8 interpreter and the VM.

This module is the single home of every rounding and saturation rule of the quantised
arithmetic (docs/quantization.md). The reference semantics of the quantised IR ops call these
functions on numpy arrays; the VM compiles the very same functions with numba (they use only
operations that both numpy and numba's nopython mode support), so the two cannot drift apart. `register_jitable` keeps them plain Python functions that jitted
code can call.

Conventions: all intermediate values are int64; a real multiplier M > 0 is represented as
    M = mult * 2**-n,   mult in [2**30, 2**31),   n in [1, 62]
and applied with round-half-up (toward +inf) by an arithmetic right shift.
"""

from __future__ import annotations

import math

import numpy as np
from numba.extending import register_jitable
from ocrc.runtime.errors import OcrcError

INT8_MIN, INT8_MAX = -128, 127
INT16_MIN, INT16_MAX = -32768, 32767
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
MULT_BITS = 31  # mult is a Q31 fixed-point mantissa in [2**30, 2**31)
MAX_SHIFT = 62  # |x| < 2**31 and mult < 2**31 keep x * mult + 2**61 inside int64
# int16 activations (docs/quantization.md §8): a MAC with an int16 input accumulates in a wide
# accumulator, |acc| < 2**WIDE_ACC_BITS, and its requantisation multiplier has a 15-bit mantissa
# in [2**14, 2**15), so |acc * mult| < 2**62 and adding the rounding term 2**61 stays in int64.
WIDE_MULT_BITS = 15
WIDE_ACC_BITS = 47
WIDE_BIAS_MAX = 2**40  # |bias| bound of wide accumulators (|sum| < 2**37 for K <= 32768)
# int16-input tables (docs §8): 513 knots T[0..512] over a window of 512 segments of 2**k input
# codes starting at code x0, then a header: x0, k, and the slopes (output codes per input code,
# Q16 int32 as (hi, lo) int16 words) that extrapolate below and above the window.
LUT16_KNOTS = 513
LUT16_SIZE = LUT16_KNOTS + 6  # entries per table: the knots, x0, k, slope_lo (2), slope_hi (2)
LUT16_FRAC = 7  # log2 of the longest segment (k <= 7: the window then spans all 65536 codes)
LUT16_SLOPE_FRAC = 16  # fraction bits of the extrapolation slopes


def quantize_multiplier(real: float, bits: int = MULT_BITS) -> tuple[int, int]:
    """Return (mult, n) with real ~= mult * 2**-n, mult in [2**(bits-1), 2**bits), n in [1, 62].

    bits = MULT_BITS (31) for int32 accumulators, WIDE_MULT_BITS (15) for wide ones. real == 0
    gives (0, 1). The relative representation error is below 2**-bits. Raises OcrcError if real
    is negative, not finite, or outside [2**(bits-63), 2**(bits-1)).
    """
    if not math.isfinite(real) or real < 0:
        raise OcrcError(f"quantize_multiplier: multiplier must be finite and >= 0, got {real!r}")
    if real == 0.0:
        return 0, 1
    mant, exp = math.frexp(real)  # real = mant * 2**exp, mant in [0.5, 1)
    mult = round(mant * (1 << bits))
    if mult == 1 << bits:  # mantissa rounded up to 1.0
        mult //= 2
        exp += 1
    n = bits - exp
    if not 1 <= n <= MAX_SHIFT:
        raise OcrcError(
            f"quantize_multiplier: multiplier {real!r} is outside the representable range "
            f"[2**-{MAX_SHIFT - bits}, 2**{bits - 1}]"
        )
    return int(mult), int(n)


def multiplier_value(mult: int, n: int) -> float:
    """The real number that (mult, n) represents."""
    return mult * 2.0**-n


@register_jitable
def mul_round_shift(x, mult, n):  # type: ignore[no-untyped-def]
    """(x * mult + 2**(n-1)) >> n in int64: multiply by mult * 2**-n, rounding half up.

    Works elementwise on numpy int64 arrays and on int64 scalars, in Python and under numba.
    Preconditions (checked by the callers that build (mult, n)): |x| < 2**31, 0 <= mult < 2**31,
    1 <= n <= 62, so nothing overflows.
    """
    return (x * mult + (np.int64(1) << (n - 1))) >> n


@register_jitable
def clamp(x, lo, hi):  # type: ignore[no-untyped-def]
    """Saturate x to [lo, hi] (elementwise)."""
    return np.minimum(np.maximum(x, lo), hi)


@register_jitable
def requantize(acc, mult, n, zp, lo, hi):  # type: ignore[no-untyped-def]
    """int32 accumulator -> output integer: clamp(mul_round_shift(acc, mult, n) + zp, lo, hi).

    lo/hi carry both the output type's range and a fused relu/relu6 clamp. mult and n may be
    per-channel arrays broadcast against acc.
    """
    return clamp(mul_round_shift(acc, mult, n) + zp, lo, hi)


@register_jitable
def div_round(a, b):  # type: ignore[no-untyped-def]
    """a / b for int64 a and positive int64 b, rounded half away from zero (average pooling)."""
    q = (np.abs(a) + b // 2) // b
    return np.where(a < 0, -q, q)


# ---- composite reference functions (the contract between the quantiser and the VM) ----
# Each takes int64 numpy arrays (or scalars) and returns int64; the caller casts to the storage
# type. The elementwise ones are register_jitable: the VM calls these very functions.

# Extra fraction bits carried by the add multipliers, ma = s_a/s_y * 2**frac (docs §3 qadd):
ADD8_FRAC_BITS = 16  # an int8 qadd (the ADD instruction; int64 inside): rounding within 2**-16 LSB
ADD_FRAC_BITS = 8  # an add through int32 intermediates: int16 operands or result, LSTM gate sums


def add_frac_bits(wide: bool) -> int:
    """The fraction bits of a qadd: ADD8_FRAC_BITS when its operands and result are all int8,
    else (an int16 operand or result: RESCALE to int32 and IADD) ADD_FRAC_BITS."""
    return ADD_FRAC_BITS if wide else ADD8_FRAC_BITS


@register_jitable
def rescale_ref(x, zx, mult, n, zy, lo, hi):  # type: ignore[no-untyped-def]
    """Requantise int8/int16 -> int8/int16: clamp(mul_round_shift(x - zx, mult, n) + zy, lo, hi).

    Used for concat inputs, scale changes and int16 -> int8 before a table lookup.
    """
    return clamp(mul_round_shift(x - zx, mult, n) + zy, lo, hi)


@register_jitable
def add_ref(xa, za, ma, na, xb, zb, mb, nb, zy, lo, hi, frac):  # type: ignore[no-untyped-def]
    """Quantised addition. (ma, na) and (mb, nb) represent s_a/s_y * 2**frac and
    s_b/s_y * 2**frac (frac = add_frac_bits(...)):
        ta = mul_round_shift(xa - za, ma, na); tb = mul_round_shift(xb - zb, mb, nb)
        y  = clamp(mul_round_shift(ta + tb, 1, frac) + zy, lo, hi)
    """
    ta = mul_round_shift(xa - za, ma, na)
    tb = mul_round_shift(xb - zb, mb, nb)
    return clamp(mul_round_shift(ta + tb, 1, frac) + zy, lo, hi)


@register_jitable
def mul_ref(xa, za, xb, zb, mult, n, zy, lo, hi):  # type: ignore[no-untyped-def]
    """Quantised multiplication, (mult, n) ~ s_a*s_b/s_y:
    y = clamp(mul_round_shift((xa - za)*(xb - zb), mult, n) + zy, lo, hi)."""
    return clamp(mul_round_shift((xa - za) * (xb - zb), mult, n) + zy, lo, hi)


@register_jitable
def lut_ref(x, table):  # type: ignore[no-untyped-def]
    """Table activation on int8: y = table[x + 128] (table has 256 entries)."""
    return table[x + 128]


@register_jitable
def mul16_ref(a, b, mult, n, lo, hi, zy=0):  # type: ignore[no-untyped-def]
    """Fixed-point product for the LSTM cell (int16/int8 operands, no zero points):
    y = clamp(mul_round_shift(a*b, mult, n) + zy, lo, hi). |a*b| < 2**31 as mul_round_shift
    requires. With zy it is also rescale_ref(a*b, 0, mult, n, zy, lo, hi) (the LSTM's h)."""
    return clamp(mul_round_shift(a * b, mult, n) + zy, lo, hi)


@register_jitable
def add16_ref(a, b, lo, hi):  # type: ignore[no-untyped-def]
    """Saturating integer addition (LSTM cell state): clamp(a + b, lo, hi)."""
    return clamp(a + b, lo, hi)


@register_jitable
def add_shift_ref(a, b, n, lo, hi):  # type: ignore[no-untyped-def]
    """Sum with a rounding right shift (LSTM gate pre-activation from two rescaled int32
    projections): clamp(mul_round_shift(a + b, 1, n), lo, hi), n >= 1."""
    return clamp(mul_round_shift(a + b, 1, n), lo, hi)


@register_jitable
def lut16_interp(t0, t1, f):  # type: ignore[no-untyped-def]
    """t0 + mul_round_shift((t1 - t0) * f, 1, 7): the entry t0 = T[i] moved toward the next
    entry t1 = T[i + 1] by f/128 (f in [0, 127]), rounded half up; lies between t0 and t1."""
    return t0 + mul_round_shift((t1 - t0) * f, 1, LUT16_FRAC)


@register_jitable
def lut16_word(hi, lo):  # type: ignore[no-untyped-def]
    """The int32 stored as two int16 table entries: hi * 65536 + (lo as unsigned)."""
    return (hi << 16) | (lo & 0xFFFF)


@register_jitable
def lut16_ref(x, table, lo, hi):  # type: ignore[no-untyped-def]
    """Windowed, interpolated table activation on int16 (docs §8). With the header of the
    LUT16_SIZE-entry table T: x0 = T[513], k = clamp(T[514], 0, 7), the Q16 slopes
    sl = word(T[515], T[516]) and sh = word(T[517], T[518]); d = x - x0, w = 512 << k:
        0 <= d < w:  i = d >> k,  y = T[i] + mul_round_shift((T[i+1] - T[i]) * (f << (7 - k)), 1, 7)
                     (f = d - (i << k), the position in the segment)
        d < 0:       y = T[0]   + mul_round_shift(d * sl, 1, 16)
        d >= w:      y = T[512] + mul_round_shift((d - w) * sh, 1, 16)
    then clamp(y, lo, hi) (the result type's range). x0 = -32768, k = 7 is a plain table of
    512 segments of 128 codes over all 65536 codes (no extrapolation)."""
    k = min(max(table[LUT16_KNOTS + 1], 0), LUT16_FRAC)
    d = x - table[LUT16_KNOTS]
    w = np.int64(512) << k
    i = np.minimum(np.maximum(d >> k, 0), 511)
    inside = lut16_interp(table[i], table[i + 1], (d - (i << k)) << (LUT16_FRAC - k))
    half = np.int64(1) << (LUT16_SLOPE_FRAC - 1)
    below = table[0] + ((d * lut16_word(table[LUT16_KNOTS + 2], table[LUT16_KNOTS + 3]) + half)
                        >> LUT16_SLOPE_FRAC)
    above = table[LUT16_KNOTS - 1] + (((d - w) * lut16_word(table[LUT16_KNOTS + 4],
                                                            table[LUT16_KNOTS + 5]) + half)
                                      >> LUT16_SLOPE_FRAC)
    y = inside + (d < 0) * (below - inside) + (d >= w) * (above - inside)
    return clamp(y, lo, hi)


def lut16_table(knots: np.ndarray, x0: int = INT16_MIN, k: int = LUT16_FRAC, slope_lo: int = 0,
                slope_hi: int = 0) -> np.ndarray:
    """An int16 table of LUT16_SIZE entries: 513 knots, then the header (lut16_ref)."""
    words = []
    for s in (slope_lo, slope_hi):
        s = int(np.clip(s, INT32_MIN, INT32_MAX))
        words += [s >> 16, ((s & 0xFFFF) ^ 0x8000) - 0x8000]
    head = np.array([x0, k, *words], np.int64)
    return np.concatenate([np.asarray(knots, np.int64), head]).astype(np.int16)


def requantize16_ref(acc: np.ndarray, mult: np.ndarray | int, n: np.ndarray | int,
                     zy: int = 0) -> np.ndarray:
    """int32 -> int16: requantize(acc, mult, n, zy, INT16_MIN, INT16_MAX)."""
    return requantize(np.asarray(acc, np.int64), mult, n, zy, INT16_MIN, INT16_MAX)


def quantize_ref(x: np.ndarray, scale: float, zp: int, lo: int = INT8_MIN,
                 hi: int = INT8_MAX) -> np.ndarray:
    """float -> int: clamp(round_half_even(x / scale) + zp, lo, hi) (the program inputs), x /
    scale in float32 as ONNX QuantizeLinear divides (onnxruntime's kernel too: on inputs on a
    255-level grid such as (p/255 - 0.5)/0.5, x / scale lands on ties, and float64 would
    round a fifth of them the other way)."""
    with np.errstate(over="ignore"):  # +-inf saturates like any large value
        r = np.clip(np.asarray(x, np.float32) / np.float32(scale), lo - zp - 1, hi - zp + 1)
    return np.clip(np.rint(r).astype(np.int64) + zp, lo, hi)


def dequantize_ref(q: np.ndarray, scale: float, zp: int) -> np.ndarray:
    """int -> float32: float32(q - zp) * float32(scale) (the program outputs; ONNX
    DequantizeLinear)."""
    return (np.asarray(q, np.int64) - zp).astype(np.float32) * np.float32(scale)


def _pad_nchw(x: np.ndarray, pads: tuple[int, int, int, int], value: int) -> np.ndarray:
    pt, pl, pb, pr = pads
    return np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=value)


def _windows(xp: np.ndarray, kh: int, kw: int, strides: tuple[int, int],
             dil: tuple[int, int], ho: int, wo: int) -> np.ndarray:
    """[N, C, ho, wo, kh, kw] view of the windows of a padded NCHW tensor."""
    sh, sw = strides
    dh, dw = dil
    n, c = xp.shape[:2]
    s = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, (n, c, ho, wo, kh, kw), (s[0], s[1], s[2] * sh, s[3] * sw, s[2] * dh, s[3] * dw),
        writeable=False)


def conv_ref(x: np.ndarray, w: np.ndarray, bias: np.ndarray, mult: np.ndarray, n: np.ndarray,
             zx: int, zy: int, lo: int, hi: int, strides: tuple[int, int] = (1, 1),
             pads: tuple[int, int, int, int] = (0, 0, 0, 0), dilations: tuple[int, int] = (1, 1),
             group: int = 1, requant: bool = True) -> np.ndarray:
    """Quantised conv, NCHW int8 x, OIHW int8 w (symmetric), int32 bias, per-channel (mult, n):
        acc[c] = bias[c] + sum_k w[c, k] * (x[k] - zx)   (padding is x = zx, contributing 0)
        y      = requantize(acc, mult[c], n[c], zy, lo, hi)     (int64 result; acc if not requant)
    pads are ONNX order (top, left, bottom, right). Plain numpy (exact int64 via float64 GEMM
    chunks); the VM's kernel is tested bit-exact against it.
    """
    x = np.asarray(x, np.int64)
    w = np.asarray(w, np.int64)
    nb, _, h, wd = x.shape
    cout, cg, kh, kw = w.shape
    ho = (h + pads[0] + pads[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    wo = (wd + pads[1] + pads[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    xp = _pad_nchw(x - zx, pads, 0)
    win = _windows(xp, kh, kw, strides, dilations, ho, wo)  # [N, Cin, ho, wo, kh, kw]
    ng = cout // group
    acc = np.empty((nb, cout, ho, wo), np.int64)
    for g in range(group):
        cols = win[:, g * cg:(g + 1) * cg].transpose(0, 2, 3, 1, 4, 5).reshape(nb * ho * wo, -1)
        wg = w[g * ng:(g + 1) * ng].reshape(ng, -1)
        # |x - zx| <= 2**16 and |w| <= 2**7: each product < 2**23, so float64 sums are exact
        # for K < 2**30.
        part = np.rint(cols.astype(np.float64) @ wg.T.astype(np.float64)).astype(np.int64)
        acc[:, g * ng:(g + 1) * ng] = part.reshape(nb, ho, wo, ng).transpose(0, 3, 1, 2)
    acc += np.asarray(bias, np.int64).reshape(1, -1, 1, 1)
    if not requant:
        return acc
    shape = (1, -1, 1, 1)
    return requantize(acc, np.asarray(mult, np.int64).reshape(shape),
                      np.asarray(n, np.int64).reshape(shape), zy, lo, hi)


def dense_ref(x: np.ndarray, w: np.ndarray, bias: np.ndarray, mult: np.ndarray, n: np.ndarray,
              zx: int, zy: int, lo: int, hi: int, requant: bool = True) -> np.ndarray:
    """Quantised dense layer: x[..., K] int8, w[N, K] int8, acc = bias + (x - zx) @ w.T,
    y = requantize(acc, mult[c], n[c], zy, lo, hi) (int64; the raw acc if not requant)."""
    x = np.asarray(x, np.int64)
    w = np.asarray(w, np.int64)
    acc = np.rint((x - zx).astype(np.float64) @ w.T.astype(np.float64)).astype(np.int64)
    acc += np.asarray(bias, np.int64)
    if not requant:
        return acc
    return requantize(acc, np.asarray(mult, np.int64), np.asarray(n, np.int64), zy, lo, hi)


def maxpool_ref(x: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int],
                pads: tuple[int, int, int, int], lo: int = INT8_MIN,
                hi: int = INT8_MAX) -> np.ndarray:
    """Max pool on int8 NCHW (ONNX pads order): padding never wins; then clamp(., lo, hi)."""
    x = np.asarray(x, np.int64)
    ho = (x.shape[2] + pads[0] + pads[2] - kernel[0]) // strides[0] + 1
    wo = (x.shape[3] + pads[1] + pads[3] - kernel[1]) // strides[1] + 1
    xp = _pad_nchw(x, pads, np.iinfo(np.int64).min)
    win = _windows(xp, kernel[0], kernel[1], strides, (1, 1), ho, wo)
    return clamp(win.max(axis=(4, 5)), lo, hi)


def avgpool_multipliers(ratio: float, area: int) -> tuple[np.ndarray, np.ndarray]:
    """The per-count multiplier table of average pooling: entry c in [1, area] represents
    ratio / c, with ratio = s_x / s_y (entry 0 is unused and (0, 1)). Returns int64 (mult, n)."""
    mult = np.zeros(area + 1, np.int64)
    n = np.ones(area + 1, np.int64)
    for c in range(1, area + 1):
        mult[c], n[c] = quantize_multiplier(ratio / c)
    return mult, n


def avgpool_ref(x: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int],
                pads: tuple[int, int, int, int], zx: int, zy: int, mult: np.ndarray,
                n: np.ndarray, count_include_pad: bool = False, lo: int = INT8_MIN,
                hi: int = INT8_MAX) -> np.ndarray:
    """Average pool on int8 NCHW: s = sum of (x - zx) over the valid window elements;
    c = their number (kernel area if count_include_pad); y = clamp(mul_round_shift(s, mult[c],
    n[c]) + zy, lo, hi) with (mult, n) from avgpool_multipliers."""
    x = np.asarray(x, np.int64)
    kh, kw = kernel
    ho = (x.shape[2] + pads[0] + pads[2] - kh) // strides[0] + 1
    wo = (x.shape[3] + pads[1] + pads[3] - kw) // strides[1] + 1
    s = _windows(_pad_nchw(x - zx, pads, 0), kh, kw, strides, (1, 1), ho, wo).sum(axis=(4, 5))
    ones = np.ones((1, 1) + x.shape[2:], np.int64)
    cnt = _windows(_pad_nchw(ones, pads, 0), kh, kw, strides, (1, 1), ho, wo).sum(axis=(4, 5))
    if count_include_pad:
        cnt = np.full_like(cnt, kh * kw)
    mult = np.asarray(mult, np.int64)
    n = np.asarray(n, np.int64)
    return clamp(mul_round_shift(s, mult[cnt], n[cnt]) + zy, lo, hi)
