"""Reductions over static axes: reduce_mean, reduce_sum, reduce_max, reduce_min.

One table, `REDUCTIONS`, holds the numpy function of each; the ops share type inference.
`axes` are non-negative, sorted and unique (the importer resolves ONNX's negative axes and its
"empty means every axis"), so equal reductions print the same. An axis of size 0 reduces to
ONNX's empty-set values (`_identity`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ocrc.compiler.ir.opdef import AttrDef, Attrs, defop
from ocrc.compiler.ir.types import TensorType

# name -> (numpy reduction, float inputs only, what it computes, the ONNX op)
REDUCTIONS: dict[str, tuple[Callable[..., np.ndarray], bool, str, str]] = {
    "reduce_mean": (np.mean, True, "Mean", "ReduceMean"),
    "reduce_sum": (np.sum, False, "Sum", "ReduceSum"),
    "reduce_max": (np.max, False, "Maximum", "ReduceMax"),
    "reduce_min": (np.min, False, "Minimum", "ReduceMin"),
}


def _infer(float_only: bool):  # type: ignore[no-untyped-def]
    def infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
        x = types[0]
        assert x is not None
        axes, keep = tuple(attrs["axes"]), attrs["keepdims"]
        if not axes or list(axes) != sorted(set(axes)) or not 0 <= axes[0] <= axes[-1] < x.rank:
            raise ValueError(f"axes {list(axes)} must be sorted, unique and in [0, {x.rank})")
        if keep not in (0, 1):
            raise ValueError(f"keepdims must be 0 or 1, got {keep}")
        if float_only and not x.dtype.is_float:
            raise ValueError(f"needs a float input, got {x.dtype.value}")
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape)) if keep else \
            tuple(d for i, d in enumerate(x.shape) if i not in axes)
        return [TensorType(x.dtype, shape)]
    return infer


def _identity(fn: Callable[..., np.ndarray], dtype: np.dtype) -> object:
    """What ONNX reduces an empty set to: the sum 0, the maximum the type's lowest value (-inf
    for floats), the minimum its highest; the mean is NaN (0 / 0)."""
    if fn is np.max or fn is np.min:
        low = fn is np.max
        if dtype.kind == "f":
            return -np.inf if low else np.inf
        if dtype.kind == "b":
            return not low
        info = np.iinfo(dtype)
        return info.min if low else info.max
    return None


def _ref(fn: Callable[..., np.ndarray]):  # type: ignore[no-untyped-def]
    def ref(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
        x = xs[0]
        assert x is not None
        axes, keep = tuple(attrs["axes"]), bool(attrs["keepdims"])
        initial = _identity(fn, x.dtype) if any(x.shape[a] == 0 for a in axes) else None
        with np.errstate(invalid="ignore", divide="ignore"):  # the mean of nothing is NaN
            y = fn(x, axis=axes, keepdims=keep) if initial is None else \
                fn(x, axis=axes, keepdims=keep, initial=initial)
        return [np.asarray(y).astype(x.dtype, copy=False)]
    return ref


REDUCE_OPS = {
    name: defop(name, ("x",), _infer(float_only), _ref(fn),
                f"{what} of x over the static `axes` (ONNX {onnx}); keepdims 1 keeps them "
                "as axes of size 1.",
                attrs={"axes": AttrDef("ints"), "keepdims": AttrDef("int", 1)},
                traits=("reduce",))
    for name, (fn, float_only, what, onnx) in REDUCTIONS.items()
}
REDUCE_MEAN = REDUCE_OPS["reduce_mean"]
