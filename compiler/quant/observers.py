"""Range observers of calibration: min-max, percentile, entropy (KL divergence), MSE.

An `Observer` accumulates the exact min/max and a 2048-bin histogram over a symmetric power-of-
two range [-R, R] that doubles (merging bin pairs exactly) when a batch exceeds it, so the
result is deterministic and independent of how the data were batched. `choose_range(method)`
then returns the clip range [lo, hi] (docs/quantization.md §5).
"""

from __future__ import annotations

import math

import numpy as np

from ocrc.runtime.errors import OcrcError

BINS = 2048
METHODS = ("minmax", "percentile", "entropy", "mse", "auto")
FIXED_METHODS = METHODS[:-1]  # what "auto" chooses from, per value
DEFAULT_PERCENTILE = 99.99


class Observer:
    """Statistics of one tensor over the calibration set."""

    def __init__(self) -> None:
        self.lo = math.inf
        self.hi = -math.inf
        self.absmax = 0.0
        self.count = 0
        self.radius = 0.0  # R: the histogram covers [-R, R]; 0 until the first non-zero data
        self.hist = np.zeros(BINS, np.int64)

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64).reshape(-1)
        if x.size == 0:
            return
        if not np.all(np.isfinite(x)):
            raise OcrcError("calibration: a tensor holds NaN or infinity")
        lo, hi = float(x.min()), float(x.max())
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        self.absmax = max(self.absmax, abs(lo), abs(hi))
        self.count += x.size
        if self.absmax == 0.0:
            self.hist[BINS // 2] += x.size
            return
        if self.radius == 0.0:
            self.radius = 2.0 ** math.ceil(math.log2(self.absmax))
        while self.absmax > self.radius:
            self._double()
        idx = np.floor((x + self.radius) * (BINS / (2 * self.radius))).astype(np.int64)
        self.hist += np.bincount(np.clip(idx, 0, BINS - 1), minlength=BINS)

    def _double(self) -> None:
        """Grow [-R, R] to [-2R, 2R]: adjacent bin pairs merge into the middle half."""
        merged = self.hist[0::2] + self.hist[1::2]
        self.hist = np.zeros(BINS, np.int64)
        self.hist[BINS // 4: BINS // 4 + BINS // 2] = merged
        self.radius *= 2

    # --- range selection -------------------------------------------------------------------
    @property
    def empty(self) -> bool:
        return self.count == 0

    def edges(self) -> np.ndarray:
        return np.linspace(-self.radius, self.radius, BINS + 1)

    def centers(self) -> np.ndarray:
        e = self.edges()
        return 0.5 * (e[:-1] + e[1:])

    def choose_range(self, method: str = "minmax",
                     percentile: float = DEFAULT_PERCENTILE) -> tuple[float, float]:
        """The clip range [lo, hi] by `method` (one of METHODS)."""
        if self.empty:
            raise OcrcError("calibration: a tensor was never observed")
        if method not in METHODS:
            raise OcrcError(f"unknown calibration method {method!r} (expected one of "
                            f"{', '.join(METHODS)})")
        if method == "minmax" or self.radius == 0.0:
            return self.lo, self.hi
        if method == "auto":
            return self.choose_range(self.auto_method(percentile), percentile)
        if method == "percentile":
            return self._percentile(percentile)
        if method == "entropy":
            t = self._kl_threshold()
            return max(self.lo, -t), min(self.hi, t)
        return self._mse()

    def auto_method(self, percentile: float = DEFAULT_PERCENTILE) -> str:
        """The method of FIXED_METHODS whose int8 range has the least expected squared
        quantisation error on this value's histogram (ties: the first in FIXED_METHODS)."""
        if self.empty or self.radius == 0.0:
            return "minmax"
        errs = [self.hist_mse(*self.choose_range(m, percentile)) for m in FIXED_METHODS]
        return FIXED_METHODS[int(np.argmin(errs))]

    def hist_mse(self, lo: float, hi: float) -> float:
        """sum_i h_i (c_i - Q(c_i))**2 over the histogram's bin centres c_i for the int8
        parameters of [lo, hi]."""
        from ocrc.compiler.quant.qparams import qparams_from_range

        h = self.hist.astype(np.float64)
        nz = h > 0
        c, h = self.centers()[nz], h[nz]
        qp = qparams_from_range(lo, hi)
        q = np.clip(np.rint(c / qp.scale) + qp.zp, -128, 127)
        return float(np.sum(h * (c - qp.scale * (q - qp.zp)) ** 2))

    def _percentile(self, p: float) -> tuple[float, float]:
        if not 50.0 < p <= 100.0:
            raise OcrcError(f"percentile must be in (50, 100], got {p}")
        cdf = np.cumsum(self.hist) / self.count
        e = self.edges()
        lo_i = int(np.searchsorted(cdf, (100.0 - p) / 100.0, side="left"))
        hi_i = int(np.searchsorted(cdf, p / 100.0, side="left"))
        lo = max(self.lo, float(e[lo_i]))
        hi = min(self.hi, float(e[min(hi_i + 1, BINS)]))
        return lo, hi

    def _kl_threshold(self, levels: int = 128) -> float:
        """TensorRT's entropy calibration on the histogram of |x|: the threshold T whose
        `levels`-level quantisation of the clipped distribution has the least KL divergence."""
        half = BINS // 2
        mag = self.hist[half:].astype(np.float64) + self.hist[:half][::-1]
        width = self.radius / half
        last = int(np.nonzero(mag)[0].max()) + 1 if mag.any() else 1
        best, best_t = math.inf, self.absmax
        for i in range(levels, max(last, levels) + 1, max(1, last // 256)):
            ref = mag[:i].copy()
            ref[i - 1] += mag[i:].sum()
            # Merge the i bins into `levels` chunks, then spread each chunk's mass evenly over
            # its non-empty bins (the quantised distribution q).
            starts = (np.arange(levels) * i) // levels
            sizes = np.diff(np.append(starts, i))
            nz = mag[:i] > 0
            sums = np.add.reduceat(mag[:i], starts)
            cnt = np.add.reduceat(nz.astype(np.float64), starts)
            q = np.repeat(np.divide(sums, cnt, out=np.zeros(levels), where=cnt > 0), sizes) * nz
            if q.sum() == 0:
                continue
            p, q = ref / ref.sum(), q / q.sum()
            mask = p > 0
            kl = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
            if kl < best:
                best, best_t = kl, i * width
        return min(best_t, self.absmax)

    def _mse(self, grid: int = 100) -> tuple[float, float]:
        """alpha * [lo, hi] minimising the histogram's expected squared quantisation error."""
        from ocrc.compiler.quant.qparams import qparams_from_range

        c = self.centers()
        h = self.hist.astype(np.float64)
        nz = h > 0
        c, h = c[nz], h[nz]
        best, best_r = math.inf, (self.lo, self.hi)
        for alpha in np.linspace(1.0, 0.05, grid):
            lo, hi = self.lo * alpha, self.hi * alpha
            qp = qparams_from_range(lo, hi)
            q = np.clip(np.rint(c / qp.scale) + qp.zp, -128, 127)
            err = float(np.sum(h * (c - qp.scale * (q - qp.zp)) ** 2))
            if err < best:
                best, best_r = err, (lo, hi)
        return best_r
