"""ONNX converters for data-movement, shape and constant ops (one function per ONNX op, named
like it, as in onnx_ops.py).

Shapes are static in ocrc, so Shape and Size become constants and every shape argument
(Reshape's shape, Slice's starts, Pad's pads, ...) must be a constant once the graph's
constants are folded; a shape computed from data is reported as unsupported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from onnx import helper

from ocrc.compiler.ir.graph import Value
from ocrc.compiler.ir.ops.tensor import normalize_axis
from ocrc.compiler.ir.types import DType
from ocrc.frontend.onnx_builder import OnnxBuilder as B

V = Value | None


def onnx_dtype(b: B | None, elem_type: int) -> DType:
    """The IR dtype of an ONNX TensorProto element type; UnsupportedOpError if there is none."""
    try:
        return DType.from_np(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        name = helper.tensor_dtype_to_string(elem_type) if elem_type else "undefined"
        msg = f"element type {name}"
        if b is None:
            raise ValueError(msg) from None
        raise b.unsupported(msg) from None


def _axes(b: B, axes_in: V, axes_attr: Sequence[int] | None) -> list[int] | None:
    if b.opset >= 13 and axes_in is not None:
        return b.ints_of(axes_in, "axes")
    return list(axes_attr) if axes_attr is not None else None


# --- reshapes ---------------------------------------------------------------------------------
def Reshape(b: B, x: Value, shape: Value, *, allowzero: int = 0) -> Value:
    target = b.ints_of(shape, "target shape")
    dims = [x.type.shape[i] if d == 0 and not allowzero else d for i, d in enumerate(target)]
    if dims.count(-1) > 1:
        raise b.invalid(f"target shape {target} has more than one -1")
    if -1 in dims:
        known = int(np.prod([d for d in dims if d != -1]))
        if known == 0 or x.type.size % known:
            raise b.invalid(f"cannot reshape {x.type} to {target}")
        dims[dims.index(-1)] = x.type.size // known
    return b.reshape(x, dims)


def Flatten(b: B, x: Value, *, axis: int = 1) -> Value:
    shape = x.type.shape
    ax = axis + len(shape) if axis < 0 else axis
    return b.reshape(x, (int(np.prod(shape[:ax])), int(np.prod(shape[ax:]))))


def Squeeze(b: B, x: Value, axes_in: V = None, *, axes: Sequence[int] | None = None) -> Value:
    shape, ax = x.type.shape, _axes(b, axes_in, axes)
    drop = {normalize_axis(a, len(shape)) for a in ax} if ax else \
        {i for i, d in enumerate(shape) if d == 1}
    if any(shape[a] != 1 for a in drop):
        raise b.invalid(f"cannot squeeze axes {sorted(drop)} of {x.type}")
    return b.reshape(x, [d for i, d in enumerate(shape) if i not in drop])


def Unsqueeze(b: B, x: Value, axes_in: V = None, *, axes: Sequence[int] | None = None) -> Value:
    ax = _axes(b, axes_in, axes) or []
    rank = x.type.rank + len(ax)
    new = sorted(normalize_axis(a, rank) for a in ax)
    dims = iter(x.type.shape)
    return b.reshape(x, [1 if i in new else next(dims) for i in range(rank)])


def Transpose(b: B, x: Value, *, perm: Sequence[int] | None = None) -> Value:
    return b.transpose(x, perm if perm is not None else range(x.type.rank - 1, -1, -1))


def Identity(b: B, x: Value) -> Value:
    return x


def Dropout(b: B, x: Value, ratio: V = None, training_mode: V = None, *,
            ratio_attr: float = 0.5, seed: int = 0, is_test: int = 1) -> Any:
    if training_mode is not None and bool(b.need_const(training_mode, "training_mode")):
        raise b.unsupported("training_mode=True")
    if b.n_outputs > 1:  # the mask of an inference Dropout keeps everything
        return x, b.const(np.ones(x.type.shape, bool))
    return x


# --- joins and cuts ---------------------------------------------------------------------------
def Concat(b: B, *xs: Value, axis: int) -> Value:
    xs = tuple(x for x in xs if x.type.size or len(xs) == 1)  # ONNX allows empty operands
    return xs[0] if len(xs) == 1 else b.op("concat", *xs, axis=axis)


def Split(b: B, x: Value, split_in: V = None, *, axis: int = 0,
          split: Sequence[int] | None = None, num_outputs: int | None = None) -> tuple[Value, ...]:
    ax = normalize_axis(axis, x.type.rank)
    dim, n = x.type.shape[ax], b.n_outputs
    sizes = b.ints_of(split_in, "split") if split_in is not None else split
    if not sizes:
        if num_outputs is not None:  # opset 18: the last chunk may be smaller
            chunk = -(-dim // num_outputs)
            sizes = [min(chunk, dim - i * chunk) for i in range(num_outputs)]
        elif dim % n:
            raise b.invalid(f"dim {ax} of {x.type} does not split into {n} equal parts")
        else:
            sizes = [dim // n] * n
    return b.emit("split", (x,), {"axis": ax, "sizes": tuple(sizes)})


def Slice(b: B, x: Value, starts_in: V = None, ends_in: V = None, axes_in: V = None,
          steps_in: V = None, *, starts: Sequence[int] | None = None,
          ends: Sequence[int] | None = None, axes: Sequence[int] | None = None) -> Value:
    if b.opset >= 10:
        starts, ends = b.ints_of(starts_in, "starts"), b.ints_of(ends_in, "ends")
        axes = b.ints_of(axes_in, "axes") if axes_in is not None else None
        steps = b.ints_of(steps_in, "steps") if steps_in is not None else None
    else:
        steps = None
    assert starts is not None and ends is not None
    axes = list(axes) if axes is not None else list(range(len(starts)))
    # INT64 sentinels (INT_MAX meaning "to the end") are kept: the op clamps like ONNX does.
    return b.op("slice", x, starts=starts, ends=ends, axes=axes,
                steps=steps if steps is not None else [1] * len(starts))


def Pad(b: B, x: Value, pads_in: V = None, value_in: V = None, axes_in: V = None, *,
        mode: str = "constant", pads: Sequence[int] | None = None, value: float = 0.0) -> Value:
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise b.unsupported(f"mode={mode!r}")
    rank = x.type.rank
    if b.opset >= 11:
        pads = b.ints_of(pads_in, "pads")
        cv = b.value_of(value_in)
        if value_in is not None and cv is None:
            raise b.unsupported("a non-constant constant_value")
        value = float(cv.reshape(-1)[0]) if cv is not None and cv.size else 0.0
        if axes_in is not None:
            ax = [normalize_axis(a, rank) for a in b.ints_of(axes_in, "axes")]
            full = [0] * (2 * rank)
            for i, a in enumerate(ax):
                full[a], full[a + rank] = pads[i], pads[i + len(ax)]
            pads = full
    assert pads is not None
    return b.op("pad", x, pads=list(pads), mode=mode, value=value)


def Tile(b: B, x: Value, repeats: Value) -> Value:
    return b.op("tile", x, repeats=b.ints_of(repeats, "repeats"))


def Expand(b: B, x: Value, shape: Value) -> Value:
    return b.op("expand", x, shape=b.ints_of(shape, "shape"))


def Gather(b: B, x: Value, indices: Value, *, axis: int = 0) -> Value:
    return b.op("gather", x, indices, axis=axis)


# --- shapes and constants ---------------------------------------------------------------------
def Shape(b: B, x: Value, *, start: int = 0, end: int | None = None) -> Value:
    return b.const(np.array(x.type.shape[start:end], np.int64))


def Size(b: B, x: Value) -> Value:
    return b.const(np.array(x.type.size, np.int64))


def _tensor_attr(b: B, t: Any) -> np.ndarray:
    from onnx import numpy_helper
    onnx_dtype(b, t.data_type)
    return numpy_helper.to_array(t)


def ConstantOfShape(b: B, shape: Value, *, value: Any = None) -> Value:
    fill = _tensor_attr(b, value) if value is not None else np.zeros(1, np.float32)
    return b.const(np.full(b.ints_of(shape, "shape"), fill.reshape(-1)[0], fill.dtype))


def Constant(b: B, *, value: Any = None, value_float: float | None = None,
             value_floats: Sequence[float] | None = None, value_int: int | None = None,
             value_ints: Sequence[int] | None = None, sparse_value: Any = None,
             value_string: Any = None, value_strings: Any = None) -> Value:
    if value is not None:
        return b.const(_tensor_attr(b, value))
    if value_float is not None:
        return b.const(np.array(value_float, np.float32))
    if value_floats is not None:
        return b.const(np.array(value_floats, np.float32))
    if value_int is not None:
        return b.const(np.array(value_int, np.int64))
    if value_ints is not None:
        return b.const(np.array(value_ints, np.int64))
    raise b.unsupported("a sparse or string constant")


def Range(b: B, start: Value, limit: Value, delta: Value) -> Value:
    s, lim, d = (b.need_const(v, "bound") for v in (start, limit, delta))
    n = max(int(np.ceil((lim - s) / d)), 0)
    return b.const((s + np.arange(n) * d).astype(s.dtype))


def Cast(b: B, x: Value, *, to: int, saturate: int = 1, round_mode: str = "up") -> Value:
    dt = onnx_dtype(b, to)
    return x if dt == x.type.dtype else b.op("cast", x, to=dt.value)


def CastLike(b: B, x: Value, like: Value, *, saturate: int = 1,
             round_mode: str = "up") -> Value:
    dt = like.type.dtype
    return x if dt == x.type.dtype else b.op("cast", x, to=dt.value)


# --- resizing ---------------------------------------------------------------------------------
def _resize(b: B, x: Value, scales: list[float] | None, sizes: list[int] | None,
            roi: list[float], **attrs: Any) -> Value:
    shape = x.type.shape
    if sizes is not None:
        scales = [s / d for s, d in zip(sizes, shape)]
    else:
        assert scales is not None
        lo_hi = (zip(roi[:len(shape)], roi[len(shape):]) if roi else [(0.0, 1.0)] * len(shape))
        sizes = [int(np.floor(d * (hi - lo) * s)) for d, s, (lo, hi) in zip(shape, scales, lo_hi)]
    return b.op("resize", x, sizes=sizes, scales=scales, roi=roi, **attrs)


def Upsample(b: B, x: Value, scales_in: V = None, *, mode: str = "nearest",
             scales: Sequence[float] | None = None) -> Value:
    if b.opset >= 9:
        scales = [float(s) for s in b.need_const(scales_in, "scales").reshape(-1)]
    if mode not in ("nearest", "linear", "bilinear"):
        raise b.unsupported(f"mode={mode!r}")
    assert scales is not None
    return _resize(b, x, list(scales), None, [], mode="linear" if "linear" in mode else mode,
                   coordinate_transformation_mode="asymmetric", nearest_mode="floor")


def Resize(b: B, x: Value, roi_in: V = None, scales_in: V = None, sizes_in: V = None, *,
           antialias: int = 0, axes: Sequence[int] | None = None,
           coordinate_transformation_mode: str = "half_pixel", cubic_coeff_a: float = -0.75,
           exclude_outside: int = 0, extrapolation_value: float = 0.0,
           keep_aspect_ratio_policy: str = "stretch", mode: str = "nearest",
           nearest_mode: str = "round_prefer_floor") -> Value:
    if b.opset < 11:  # Resize-10 is Upsample-9
        return Upsample(b, x, roi_in, mode=mode)
    if antialias:
        raise b.unsupported("antialias=1")
    if mode not in ("nearest", "linear", "cubic"):
        raise b.unsupported(f"mode={mode!r}")
    rank = x.type.rank
    ax = [normalize_axis(a, rank) for a in axes] if axes else list(range(rank))

    def full(vals: list[Any], fill: Any) -> list[Any]:
        out = list(fill)
        for a, v in zip(ax, vals):
            out[a] = v
        return out
    sv, zv = b.value_of(scales_in), b.value_of(sizes_in)
    if (scales_in is not None and sv is None) or (sizes_in is not None and zv is None):
        raise b.unsupported("non-constant scales or sizes")
    roi: list[float] = []
    if coordinate_transformation_mode == "tf_crop_and_resize":
        r = [float(v) for v in b.need_const(roi_in, "roi").reshape(-1)]
        roi = full(r[:len(ax)], [0.0] * rank) + full(r[len(ax):], [1.0] * rank)
    common = dict(mode=mode, coordinate_transformation_mode=coordinate_transformation_mode,
                  nearest_mode=nearest_mode, cubic_coeff_a=cubic_coeff_a,
                  exclude_outside=exclude_outside, extrapolation_value=extrapolation_value)
    if zv is not None and zv.size:
        sizes = [int(v) for v in zv.reshape(-1)]
        if keep_aspect_ratio_policy != "stretch":
            pick = min if keep_aspect_ratio_policy == "not_larger" else max
            s = pick(z / x.type.shape[a] for a, z in zip(ax, sizes))
            sizes = [int(np.floor(x.type.shape[a] * s + 0.5)) for a in ax]
            scale_list = full([s] * len(ax), [1.0] * rank)
            return b.op("resize", x, sizes=full(sizes, x.type.shape), scales=scale_list,
                        roi=roi, **common)
        return _resize(b, x, None, full(sizes, x.type.shape), roi, **common)
    if sv is None or not sv.size:
        raise b.invalid("Resize needs scales or sizes")
    return _resize(b, x, full([float(v) for v in sv.reshape(-1)], [1.0] * rank), None, roi,
                   **common)


# Folded only: logic and comparisons that exporters use in shape computations. They have no IR
# op; on a tensor that is not a constant they are unsupported.
def _fold_only(fn: Any, n_in: int) -> Any:
    def convert(b: B, *xs: Value) -> Value:
        arrays = [b.need_const(x, "input (ocrc folds this op only on constants)")
                  for x in xs[:n_in]]
        return b.const(np.asarray(fn(*arrays)))
    return convert


Equal = _fold_only(np.equal, 2)
Less = _fold_only(np.less, 2)
Greater = _fold_only(np.greater, 2)
Not = _fold_only(np.logical_not, 1)
And = _fold_only(np.logical_and, 2)
Or = _fold_only(np.logical_or, 2)
Where = _fold_only(np.where, 3)
