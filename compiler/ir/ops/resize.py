"""`resize` with ONNX Resize semantics and static sizes: nearest (four rounding modes),
linear and cubic, every coordinate transformation mode of opset 11-21.

Interpolation is separable, so the reference resizes one axis at a time: each output index
maps to a source coordinate, then to a few taps (1 nearest, 2 linear, 4 cubic) with weights;
taps outside the input clamp to the edge (exclude_outside drops them instead).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ocrc.compiler.ir.opdef import AttrDef, Attrs, defop
from ocrc.compiler.ir.types import TensorType

RESIZE_MODES = ("nearest", "linear", "cubic")
COORD_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
               "asymmetric", "tf_crop_and_resize")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _infer_resize(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x = types[0]
    assert x is not None
    sizes, scales = tuple(attrs["sizes"]), attrs["scales"]
    if len(sizes) != x.rank or len(scales) != x.rank or min(scales) <= 0:
        raise ValueError(f"resize needs {x.rank} sizes and positive scales, got {list(sizes)}"
                         f" and {list(scales)}")
    for key, allowed in (("mode", RESIZE_MODES), ("coordinate_transformation_mode", COORD_MODES),
                         ("nearest_mode", NEAREST_MODES)):
        if attrs[key] not in allowed:
            raise ValueError(f"{key} {attrs[key]!r} is not one of {', '.join(allowed)}")
    if attrs["coordinate_transformation_mode"] == "tf_crop_and_resize" and \
            len(attrs["roi"]) != 2 * x.rank:
        raise ValueError(f"tf_crop_and_resize needs a roi of {2 * x.rank} floats")
    return [TensorType(x.dtype, sizes)]


def source_coords(n_in: int, n_out: int, scale: float, mode: str,
                  roi: tuple[float, float]) -> np.ndarray:
    """The source coordinate of every output index along one axis (ONNX formulas; like
    ONNX's reference they use the unrounded output length scale * n_in)."""
    y = np.arange(n_out, dtype=np.float64)
    out_f = scale * n_in
    if mode == "align_corners":
        return np.zeros(n_out) if out_f == 1 else y * (n_in - 1) / (out_f - 1)
    if mode == "asymmetric":
        return y / scale
    if mode == "tf_crop_and_resize":
        lo, hi = roi
        if out_f == 1:
            return np.full(n_out, (hi - lo) * (n_in - 1) / 2 + lo * (n_in - 1))
        return y * (hi - lo) * (n_in - 1) / (out_f - 1) + lo * (n_in - 1)
    if mode == "pytorch_half_pixel":
        return np.full(n_out, -0.5) if out_f == 1 else (y + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        offset = n_in / 2 * (1 - n_out / (scale * n_in))
        return offset + (y + 0.5) / scale - 0.5
    return (y + 0.5) / scale - 0.5  # half_pixel


def _cubic_weights(r: np.ndarray, a: float) -> np.ndarray:
    """Keys cubic convolution weights of taps x0-1, x0, x0+1, x0+2 for fraction r."""
    def near(t: np.ndarray) -> np.ndarray:  # |t| <= 1
        return ((a + 2) * t - (a + 3)) * t * t + 1

    def far(t: np.ndarray) -> np.ndarray:  # 1 < |t| < 2
        return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.stack([far(r + 1), near(r), near(1 - r), far(2 - r)], axis=-1)


def axis_taps(n_in: int, x: np.ndarray, attrs: Attrs) -> tuple[np.ndarray, np.ndarray]:
    """(indices [n_out, taps], weights [n_out, taps]) of one axis for source coords x."""
    x0 = np.floor(x)
    r = x - x0
    mode = attrs["mode"]
    if mode == "nearest":
        nm = attrs["nearest_mode"]
        up = {"round_prefer_floor": r > 0.5, "round_prefer_ceil": r >= 0.5,
              "floor": np.zeros_like(r, bool), "ceil": r > 0}[nm]
        idx = (x0 + up)[:, None]
        w = np.ones_like(idx)
    elif mode == "linear":
        idx = x0[:, None] + np.arange(2)
        w = np.stack([1 - r, r], axis=-1)
    else:
        idx = x0[:, None] + np.arange(-1, 3)
        w = _cubic_weights(r, attrs["cubic_coeff_a"])
    idx = idx.astype(np.int64)
    if attrs["exclude_outside"]:
        w = np.where((idx < 0) | (idx >= n_in), 0.0, w)
        s = w.sum(axis=-1, keepdims=True)
        w = w / np.where(s == 0, 1.0, s)
    return np.clip(idx, 0, n_in - 1), w


def _ref_resize(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = xs[0]
    assert x is not None
    ctm = attrs["coordinate_transformation_mode"]
    y = x.astype(np.float64) if attrs["mode"] != "nearest" else x
    outside = np.zeros(attrs["sizes"], bool)
    rank = x.ndim
    for ax in range(rank):
        n_in, n_out, scale = x.shape[ax], attrs["sizes"][ax], attrs["scales"][ax]
        if n_in == n_out and scale == 1.0 and ctm != "tf_crop_and_resize":
            continue
        roi = attrs["roi"]
        coords = source_coords(n_in, n_out, scale, ctm,
                               (roi[ax], roi[ax + rank]) if roi else (0.0, 1.0))
        idx, w = axis_taps(n_in, coords, attrs)
        taps = np.take(y, idx, axis=ax)  # the tap axis lands right after `ax`
        if attrs["mode"] == "nearest":
            y = np.squeeze(taps, axis=ax + 1)
        else:
            y = np.sum(taps * w.reshape((1,) * ax + w.shape + (1,) * (rank - ax - 1)),
                       axis=ax + 1)
        if ctm == "tf_crop_and_resize":
            bad = (coords < 0) | (coords > n_in - 1)
            outside |= bad.reshape((1,) * ax + (n_out,) + (1,) * (rank - ax - 1))
    if outside.any():
        y = np.where(outside, attrs["extrapolation_value"], y)
    return [np.asarray(y.astype(x.dtype), order="C")]


RESIZE = defop(
    "resize", ("x",), _infer_resize, _ref_resize,
    "ONNX Resize with static output `sizes` and per-axis `scales` (used by the coordinate "
    "transformation): mode nearest/linear/cubic, every coordinate_transformation_mode and "
    "nearest_mode; `roi` (starts then ends) only for tf_crop_and_resize.",
    attrs={"sizes": AttrDef("ints"), "scales": AttrDef("floats"),
           "mode": AttrDef("str", "nearest"),
           "coordinate_transformation_mode": AttrDef("str", "half_pixel"),
           "nearest_mode": AttrDef("str", "round_prefer_floor"),
           "cubic_coeff_a": AttrDef("float", -0.75), "exclude_outside": AttrDef("int", 0),
           "extrapolation_value": AttrDef("float", 0.0), "roi": AttrDef("floats", ())},
)
