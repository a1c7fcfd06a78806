"""Compile-time construction of quantisation constants (docs/quantization.md §1-§4).

Activation (scale, zero point) from a calibrated range, per-channel symmetric int8 weights,
int32 biases, (mult, shift) pairs through `qmath.quantize_multiplier`, and the lookup tables
of `lut` and `qlstm`. Float64 here is fine: these numbers become constants of the int8 IR;
the run-time arithmetic is integer only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.linalg import solve_banded

from ocrc.compiler.ir.ops.quant import BIAS_MAX
from ocrc.runtime import qmath
from ocrc.runtime.errors import OcrcError

ADD_FRAC = qmath.ADD_FRAC_BITS


class QuantizeError(OcrcError):
    """A layer or tensor the int8 quantiser cannot represent (names the layer)."""


@dataclass(frozen=True)
class QParams:
    """Parameters of one activation tensor: real = scale * (q - zp); bits 8 (int8, affine) or
    16 (int16, symmetric: zp 0; docs §8)."""

    scale: float
    zp: int
    bits: int = 8

    @property
    def qmin(self) -> int:
        return qmath.INT8_MIN if self.bits == 8 else qmath.INT16_MIN

    @property
    def qmax(self) -> int:
        return qmath.INT8_MAX if self.bits == 8 else qmath.INT16_MAX

    @property
    def np_dtype(self) -> type:
        return np.int8 if self.bits == 8 else np.int16

    def quantize(self, x: np.ndarray) -> np.ndarray:
        return qmath.quantize_ref(x, self.scale, self.zp, self.qmin,
                                  self.qmax).astype(self.np_dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return qmath.dequantize_ref(q, self.scale, self.zp)

    def real_range(self) -> tuple[float, float]:
        """The real values of the smallest and largest code."""
        return self.scale * (self.qmin - self.zp), self.scale * (self.qmax - self.zp)

    def clamp_of(self, lo: float | None, hi: float | None) -> tuple[int, int]:
        """The integer clamp [lo_q, hi_q] of a real clamp [lo, hi] (None: unbounded)."""
        qlo = self.qmin if lo is None else max(self.qmin, self.zp + int(np.rint(lo / self.scale)))
        qhi = self.qmax if hi is None else min(self.qmax, self.zp + int(np.rint(hi / self.scale)))
        return qlo, max(qlo, qhi)


def qparams_from_range(lo: float, hi: float, bits: int = 8) -> QParams:
    """Asymmetric int8 parameters covering [min(lo, 0), max(hi, 0)] (0 exactly representable);
    bits = 16: symmetric int16 parameters (zp 0, scale max(|lo|, |hi|) / 32767)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise QuantizeError(f"cannot quantise a non-finite range [{lo}, {hi}]")
    if bits == 16:
        return QParams(float(np.float32(max(-lo, hi, 1e-8) / qmath.INT16_MAX)), 0, 16)
    if hi - lo < 1e-8:  # an all-zero tensor: any scale represents it
        return QParams(1e-8 / 255, 0)
    scale = (hi - lo) / 255.0
    zp = int(np.clip(np.rint(-128.0 - lo / scale), qmath.INT8_MIN, qmath.INT8_MAX))
    return QParams(float(np.float32(scale)), zp)


def symmetric_qparams(amax: float) -> QParams:
    """Symmetric int8 parameters (zp 0) covering [-amax, amax]."""
    return QParams(float(np.float32(max(float(amax), 1e-8) / 127.0)), 0)


def quantize_weights(w: np.ndarray, axis: int = 0,
                     min_scale: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel symmetric int8: (w_q in [-127, 127], scales[c]); an all-zero channel gets 1.
    `min_scale` floors the scales (a near-zero channel would otherwise need a multiplier or a
    bias outside their representable ranges)."""
    w = np.asarray(w, np.float64)
    red = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.max(np.abs(w), axis=red) if red else np.abs(w)
    scale = np.maximum(np.where(amax > 0, amax / 127.0, 1.0), min_scale)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def quantize_bias(b: np.ndarray | None, acc_scale: np.ndarray, n: int,
                  wide: bool = False) -> np.ndarray:
    """int32 bias at the accumulator scale s_x * s_w[c], saturated to +-2**30 (docs §3); wide
    (an int16 input): int64, saturated to +-2**40 (docs §8)."""
    bound, dtype = (qmath.WIDE_BIAS_MAX, np.int64) if wide else (BIAS_MAX, np.int32)
    if b is None:
        return np.zeros(n, dtype)
    q = np.rint(np.asarray(b, np.float64) / acc_scale)
    return np.clip(q, -bound, bound).astype(dtype)


def multiplier(real: float, where: str, bits: int = qmath.MULT_BITS) -> tuple[int, int]:
    """(mult, shift) for a positive real multiplier (a `bits`-bit mantissa); QuantizeError
    naming `where` if it does not fit the representable range."""
    try:
        return qmath.quantize_multiplier(float(real), bits)
    except OcrcError as e:
        raise QuantizeError(f"{where}: {e}") from None


def multipliers(reals: np.ndarray, where: str,
                bits: int = qmath.MULT_BITS) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised `multiplier`: int32 arrays (mult, shift)."""
    pairs = [multiplier(r, where, bits) for r in np.asarray(reals, np.float64).reshape(-1)]
    mult = np.array([p[0] for p in pairs], np.int32).reshape(np.shape(reals))
    shift = np.array([p[1] for p in pairs], np.int32).reshape(np.shape(reals))
    return mult, shift


def build_lut(fn: Callable[[np.ndarray], np.ndarray], qin: QParams, qout: QParams) -> np.ndarray:
    """The table of y = fn(x). An int8 input gives 256 entries (codes -128..127) of the
    output's type, table[i] = quantize(fn(dequantize(code i))): exact at every code. An int16
    input gives a windowed int16 table of 513 knots (qmath.lut16_ref, docs §8), fitted by
    least squares over all 65536 input codes (`_lut16_fit`)."""
    if qin.bits == 16:
        return _lut16_fit(fn, qin, qout)
    q = np.arange(-128, 128, dtype=np.int64)
    table = np.clip(np.rint(_out_codes(fn, qin.scale * (q - qin.zp), qout)), qout.qmin,
                    qout.qmax)
    return table.astype(np.int16 if qout.bits == 16 else np.int8)


def _out_codes(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
               qout: QParams) -> np.ndarray:
    """fn(x) in (unrounded, unclamped) output codes."""
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):  # pow(0, -b) = inf
        y = np.asarray(fn(x.astype(np.float32)), np.float64)
    return np.nan_to_num(y / qout.scale, nan=0.0, posinf=1e9, neginf=-1e9) + qout.zp


LUT16_TOL = 0.5  # the whole-range table is kept when it is within this many output codes
LUT16_MASS = 0.999  # a window is tried where it can hold this fraction of the curvature


def _lut16_fit(fn: Callable[[np.ndarray], np.ndarray], qin: QParams,
               qout: QParams) -> np.ndarray:
    """The int16 table (qmath.lut16_ref) of fn: a window (x0, k) and its 513 knots fitted by
    least squares over all 65536 input codes c to fn(x_c) / s_y + zp_y (clamped to the result
    range), with linear extrapolation outside the window.

    Fitted, not sampled at the knots: sampling leaves the chord's one-signed error on every
    convex or concave stretch (a bias: hardswish's x(x+3)/6 is read high by h^2/12 f'' on
    average, h the segment length in x), which PP-OCRv2 rec's noise-amplifying backbone turns
    into string errors (int16 everywhere kept 59% of fp32's strings with sampled knots and 93%
    with fitted ones, 100 clean images). Windowed: the plain table (512 segments of 128 codes
    over all 65536) is kept when its largest error is within LUT16_TOL codes; otherwise a
    window of 512 segments of 2**k codes, k < 7, is placed where it holds the most curvature
    (second differences), for the two shortest segment lengths whose windows hold LUT16_MASS of
    it (else the longest), and the fit with the least RMS error over all codes is taken (the
    largest error would favour windows whose extrapolated tails are worse on average: SiLU's). A
    hardswish whose input range is +-1973 (a channel of PP-OCRv2 rec) bends within +-50 codes
    of 0, all inside one of the plain table's segments; a window of 1-code segments reads it
    exactly and extrapolates the straight parts."""
    c = np.arange(-32768, 32768, dtype=np.int64)
    y = np.clip(_out_codes(fn, qin.scale * (c - qin.zp), qout), qout.qmin, qout.qmax)
    top_err, err, best = _lut16_window(y, c, -32768, qmath.LUT16_FRAC, qout)
    if top_err <= LUT16_TOL:
        return best
    # Curvature: second differences over 8 codes (64 times those over 1 code), below 0.05 codes
    # taken as fn's float32 rounding (|y| < 2**15 codes: 2**-9 each).
    d2 = np.zeros(len(y))
    d2[8:-8] = np.abs(y[16:] - 2 * y[8:-8] + y[:-16])
    d2[d2 < 0.05] = 0.0
    cum = np.concatenate([[0.0], np.cumsum(d2)])
    windows = []  # (k, start) holding the most curvature, for the segment lengths that can
    for k in range(qmath.LUT16_FRAC):  # hold nearly all of it (else the widest)
        w = 512 << k
        n = len(c) - w + 1  # window starts j: codes j..j+w-1
        mass = cum[w:w + n] - cum[:n]
        top = np.flatnonzero(mass >= mass.max() * (1 - 1e-9))
        windows.append((k, int(top[len(top) // 2]) - 32768, mass.max() >= LUT16_MASS * cum[-1]))
    held = [kw for kw in windows if kw[2]][:2] or windows[-1:]
    for k, x0, _ in held:
        _, e, table = _lut16_window(y, c, x0, k, qout)
        if e < err:
            err, best = e, table
    return best


def _lut16_window(y: np.ndarray, c: np.ndarray, x0: int, k: int,
                  qout: QParams) -> tuple[float, float, np.ndarray]:
    """(largest and RMS error in output codes, table) of the least-squares table with window
    (x0, k): tridiagonal normal equations (each code inside the window weighs on its two knots,
    one below it on T[0] and one above it on T[512], through the tails' own Q16 slopes)."""
    w = 512 << k
    d = c - x0
    lo, hi = d < 0, d >= w
    mid = ~(lo | hi)
    slopes = []
    for m, edge in ((lo, 0), (hi, w)):  # least-squares slope of each tail through its edge
        t = (d[m] - edge).astype(np.float64)
        y_edge = y[x0 + edge + 32768] if m.any() else 0.0
        den = float(t @ t)
        s = float((y[m] - y_edge) @ t) / den if den > 0 else 0.0
        slopes.append(int(np.clip(np.rint(s * 2**qmath.LUT16_SLOPE_FRAC), -2**31, 2**31 - 1)))
    n = qmath.LUT16_KNOTS
    i = d[mid] >> k
    f = (d[mid] - (i << k)) / (1 << k)
    ym = y[mid]
    diag = np.bincount(i, (1 - f) ** 2, n) + np.bincount(i + 1, f * f, n) + 1e-6
    off = np.bincount(i, (1 - f) * f, n)[:n - 1]
    rhs = np.bincount(i, (1 - f) * ym, n) + np.bincount(i + 1, f * ym, n)
    scale = 2.0**-qmath.LUT16_SLOPE_FRAC
    diag[0] += lo.sum()
    rhs[0] += float((y[lo] - d[lo] * slopes[0] * scale).sum())
    diag[-1] += hi.sum()
    rhs[-1] += float((y[hi] - (d[hi] - w) * slopes[1] * scale).sum())
    bands = np.zeros((3, n))
    bands[0, 1:], bands[1], bands[2, :-1] = off, diag, off
    knots = np.clip(np.rint(solve_banded((1, 1), bands, rhs)), qout.qmin, qout.qmax)
    table = qmath.lut16_table(knots, x0, k, *slopes)
    e = qmath.lut16_ref(c, table.astype(np.int64), qout.qmin, qout.qmax) - y
    return float(np.abs(e).max()), float(np.sqrt(np.mean(e * e))), table


def gate_table(fn: Callable[[np.ndarray], np.ndarray], scale: float) -> np.ndarray:
    """A Q0.15 int16 LSTM table: T[i] = clamp(rint(32768 * fn(scale * (i - 128))), +-32767)."""
    x = scale * np.arange(-128, 128, dtype=np.float64)
    return np.clip(np.rint(32768.0 * fn(x)), -32767, 32767).astype(np.int16)


def sigmoid64(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, np.float64)))
