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


def quantize_multiplier(real: float) -> tuple[int, int]:
    """Return (mult, n) with real ~= mult * 2**-n, mult in [2**30, 2**31), n in [1, 62].

    real == 0 gives (0, 1). The relative representation error is below 2**-30.
    Raises OcrcError if real is negative, not finite, or outside [2**-32, 2**30].
    """
    if not math.isfinite(real) or real < 0:
        raise OcrcError(f"quantize_multiplier: multiplier must be finite and >= 0, got {real!r}")
    if real == 0.0:
        return 0, 1
    mant, exp = math.frexp(real)  # real = mant * 2**exp, mant in [0.5, 1)
    mult = round(mant * (1 << MULT_BITS))
    if mult == 1 << MULT_BITS:  # mantissa rounded up to 1.0
        mult //= 2
        exp += 1
    n = MULT_BITS - exp
    if not 1 <= n <= MAX_SHIFT:
        raise OcrcError(
            f"quantize_multiplier: multiplier {real!r} is outside the representable range "
            f"[2**-{MAX_SHIFT - MULT_BITS}, 2**{MULT_BITS - 1}]"
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
