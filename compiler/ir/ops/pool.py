"""Pooling and local normalisation: max_pool, avg_pool (2-D, NCHW), global pools, lrn.

Window geometry (strides, pads in ONNX order top/left/bottom/right, dilations, ceil_mode) follows
ONNX and is shared with conv through `window_out`. With ceil_mode a last partial window may
hang over the bottom/right padding; it only ever sees real or padded elements (the overhang is
excluded from both the max and the average's divisor).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ocrc.compiler.ir.opdef import AttrDef, Attrs, defop
from ocrc.compiler.ir.ops.nn import window_out
from ocrc.compiler.ir.types import TensorType

POOL_ATTRS = {
    "kernel_shape": AttrDef("ints"),
    "strides": AttrDef("ints", (1, 1)),
    "pads": AttrDef("ints", (0, 0, 0, 0)),
    "dilations": AttrDef("ints", (1, 1)),
    "ceil_mode": AttrDef("int", 0),
}


def _pool_geometry(x: TensorType, attrs: Attrs) -> tuple[int, int]:
    if x.rank != 4:
        raise ValueError(f"2-D pooling needs a 4-D NCHW input, got {x}")
    for key, n in (("kernel_shape", 2), ("strides", 2), ("pads", 4), ("dilations", 2)):
        if len(attrs[key]) != n:
            raise ValueError(f"attr '{key}' needs {n} ints, got {list(attrs[key])}")
    (kh, kw), (sh, sw) = attrs["kernel_shape"], attrs["strides"]
    (pt, pl, pb, pr), (dh, dw) = attrs["pads"], attrs["dilations"]
    if min(kh, kw, sh, sw, dh, dw) < 1 or min(pt, pl, pb, pr) < 0:
        raise ValueError("kernel, strides and dilations must be >= 1 and pads >= 0")
    ceil = bool(attrs["ceil_mode"])
    return (window_out(x.shape[2], kh, sh, pt, pb, dh, ceil),
            window_out(x.shape[3], kw, sw, pl, pr, dw, ceil))


def _infer_pool(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x = types[0]
    assert x is not None
    oh, ow = _pool_geometry(x, attrs)
    return [TensorType(x.dtype, x.shape[:2] + (oh, ow))]


def _windows(xp: np.ndarray, attrs: Attrs, oh: int, ow: int) -> np.ndarray:
    """[N, C, OH, OW, KH, KW] view of the padded input."""
    (kh, kw), (sh, sw), (dh, dw) = attrs["kernel_shape"], attrs["strides"], attrs["dilations"]
    win = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    return win[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :oh, :ow]


def _pad_widths(x: np.ndarray, attrs: Attrs, oh: int, ow: int) -> tuple[tuple[int, int], ...]:
    """Explicit pads plus the ceil_mode overhang at the bottom/right."""
    (kh, kw), (sh, sw), (dh, dw) = attrs["kernel_shape"], attrs["strides"], attrs["dilations"]
    pt, pl, pb, pr = attrs["pads"]
    eh = max(0, (oh - 1) * sh + (kh - 1) * dh + 1 - (x.shape[2] + pt + pb))
    ew = max(0, (ow - 1) * sw + (kw - 1) * dw + 1 - (x.shape[3] + pl + pr))
    return ((0, 0), (0, 0), (pt, pb + eh), (pl, pr + ew))


def _lowest(dtype: np.dtype) -> float | int:
    return -np.inf if dtype.kind == "f" else int(np.iinfo(dtype).min)


def _ref_max_pool(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = xs[0]
    assert x is not None
    oh, ow = _pool_geometry(TensorType.of(x), attrs)
    xp = np.pad(x, _pad_widths(x, attrs, oh, ow), constant_values=_lowest(x.dtype))
    return [np.asarray(_windows(xp, attrs, oh, ow).max(axis=(4, 5)), order="C")]


def _ref_avg_pool(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = xs[0]
    assert x is not None
    oh, ow = _pool_geometry(TensorType.of(x), attrs)
    widths = _pad_widths(x, attrs, oh, ow)
    xp = np.pad(x, widths)
    total = _windows(xp, attrs, oh, ow).sum(axis=(4, 5), dtype=np.float64)
    # The divisor counts real elements, plus the explicit pads when count_include_pad; never
    # the ceil_mode overhang.
    ones = np.ones((1, 1) + x.shape[2:], np.float64)
    pt, pl, pb, pr = attrs["pads"]
    if attrs["count_include_pad"]:
        ones = np.pad(ones, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=1.0)
        extra = ((0, 0), (0, 0), (0, widths[2][1] - pb), (0, widths[3][1] - pr))
    else:
        extra = widths
    count = _windows(np.pad(ones, extra), attrs, oh, ow).sum(axis=(4, 5))
    return [(total / count).astype(x.dtype)]


MAX_POOL = defop("max_pool", ("x",), _infer_pool, _ref_max_pool,
                 "2-D max pooling over NCHW (ONNX MaxPool; padding never wins the max).",
                 attrs=dict(POOL_ATTRS), traits=("pool",))
AVG_POOL = defop("avg_pool", ("x",), _infer_pool, _ref_avg_pool,
                 "2-D average pooling over NCHW (ONNX AveragePool; count_include_pad chooses "
                 "whether explicit pads count in the divisor).",
                 attrs={**POOL_ATTRS, "count_include_pad": AttrDef("int", 0)}, traits=("pool",))


# --- global pools -----------------------------------------------------------------------------
def _infer_global(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x = types[0]
    assert x is not None
    if x.rank < 3:
        raise ValueError(f"global pooling needs N, C and spatial axes, got {x}")
    return [TensorType(x.dtype, x.shape[:2] + (1,) * (x.rank - 2))]


def _spatial(x: np.ndarray) -> tuple[int, ...]:
    return tuple(range(2, x.ndim))


GLOBAL_AVG_POOL = defop(
    "global_avg_pool", ("x",), _infer_global,
    lambda xs, a: [xs[0].mean(axis=_spatial(xs[0]), keepdims=True, dtype=np.float64)
                   .astype(xs[0].dtype)],
    "Mean over every spatial axis (axes 2..), kept as size-1 axes.", traits=("pool",))
GLOBAL_MAX_POOL = defop(
    "global_max_pool", ("x",), _infer_global,
    lambda xs, a: [xs[0].max(axis=_spatial(xs[0]), keepdims=True)],
    "Maximum over every spatial axis (axes 2..), kept as size-1 axes.", traits=("pool",))


# --- local response normalisation -------------------------------------------------------------
def _infer_lrn(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x = types[0]
    assert x is not None
    if x.rank < 3 or attrs["size"] < 1:
        raise ValueError(f"lrn needs an input with channels (axis 1) and size >= 1, got {x}")
    return [x]


def _ref_lrn(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = xs[0]
    assert x is not None
    size = attrs["size"]
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = np.pad(x.astype(np.float64) ** 2, [(0, 0), (lo, hi)] + [(0, 0)] * (x.ndim - 2))
    ssum = sliding_window_view(sq, size, axis=1).sum(axis=-1)
    den = (attrs["bias"] + attrs["alpha"] / size * ssum) ** attrs["beta"]
    return [(x / den).astype(x.dtype)]


LRN = defop("lrn", ("x",), _infer_lrn, _ref_lrn,
            "Local response normalisation across channels (ONNX LRN): "
            "x / (bias + alpha / size * sum of x^2 over `size` neighbouring channels)^beta.",
            attrs={"size": AttrDef("int"), "alpha": AttrDef("float", 1e-4),
                   "beta": AttrDef("float", 0.75), "bias": AttrDef("float", 1.0)})
