"""Data-movement ops with static attributes: reshape, transpose, concat, split, slice, pad,
expand, tile, gather.

Every shape-like argument is an attribute resolved at import (shapes are static), so these ops
never compute shapes at run time. Slice keeps ONNX's start/end clamping rules, so an imported
Slice needs no rewriting of its indices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ocrc.compiler.ir.opdef import AttrDef, Attrs, defop
from ocrc.compiler.ir.types import DType, TensorType


def _one(types: Sequence[TensorType | None]) -> TensorType:
    x = types[0]
    assert x is not None
    return x


def normalize_axis(axis: int, rank: int) -> int:
    """`axis` in [-rank, rank) as a non-negative index; ValueError otherwise."""
    if not -rank <= axis < rank:
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank


# --- reshape / transpose ----------------------------------------------------------------------
def _infer_reshape(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x, shape = _one(types), tuple(attrs["shape"])
    if min(shape, default=0) < 0 or int(np.prod(shape, dtype=np.int64)) != x.size:
        raise ValueError(f"cannot reshape {x} to {list(shape)}")
    return [TensorType(x.dtype, shape)]


RESHAPE = defop("reshape", ("x",), _infer_reshape,
                lambda xs, a: [np.reshape(xs[0], a["shape"])],
                "View x with the static target `shape` (no 0 or -1: resolved at import).",
                attrs={"shape": AttrDef("ints")}, traits=("layout",))


def _infer_transpose(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x, perm = _one(types), tuple(attrs["perm"])
    if sorted(perm) != list(range(x.rank)):
        raise ValueError(f"perm {list(perm)} is not a permutation of {x.rank} axes")
    return [TensorType(x.dtype, tuple(x.shape[p] for p in perm))]


TRANSPOSE = defop("transpose", ("x",), _infer_transpose,
                  lambda xs, a: [np.asarray(np.transpose(xs[0], a["perm"]), order="C")],
                  "Permute the axes: output axis i is input axis perm[i].",
                  attrs={"perm": AttrDef("ints")}, traits=("layout",))


# --- concat / split ---------------------------------------------------------------------------
def _infer_concat(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    ts = [t for t in types if t is not None]
    if not ts:
        raise ValueError("concat needs at least one operand")
    ax = normalize_axis(attrs["axis"], ts[0].rank)
    for t in ts[1:]:
        if t.dtype != ts[0].dtype or t.rank != ts[0].rank or any(
                a != b for i, (a, b) in enumerate(zip(t.shape, ts[0].shape)) if i != ax):
            raise ValueError(f"concat operands {ts[0]} and {t} differ off axis {ax}")
    shape = list(ts[0].shape)
    shape[ax] = sum(t.shape[ax] for t in ts)
    return [TensorType(ts[0].dtype, tuple(shape))]


CONCAT = defop("concat", ("xs*",), _infer_concat,
               lambda xs, a: [np.concatenate(xs, axis=a["axis"])],
               "Join the operands along `axis`.", attrs={"axis": AttrDef("int")})


def _infer_split(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x = _one(types)
    ax, sizes = normalize_axis(attrs["axis"], x.rank), attrs["sizes"]
    if sum(sizes) != x.shape[ax] or min(sizes, default=0) < 0:
        raise ValueError(f"split sizes {list(sizes)} do not add up to dim {ax} of {x}")
    return [TensorType(x.dtype, x.shape[:ax] + (s,) + x.shape[ax + 1:]) for s in sizes]


def _ref_split(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = xs[0]
    assert x is not None
    cuts = np.cumsum(attrs["sizes"])[:-1]
    return [np.asarray(p, order="C") for p in np.split(x, cuts, axis=attrs["axis"])]


SPLIT = defop("split", ("x",), _infer_split, _ref_split,
              "Cut x along `axis` into pieces of the given `sizes` (one result per size).",
              attrs={"axis": AttrDef("int", 0), "sizes": AttrDef("ints")},
              num_outputs=lambda a: len(a["sizes"]))


# --- slice ------------------------------------------------------------------------------------
def slice_bounds(dim: int, start: int, end: int, step: int) -> slice:
    """ONNX Slice's clamping of (start, end) for one axis, as a Python slice."""
    if step == 0:
        raise ValueError("slice step 0")
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
    start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return slice(start, end if end >= 0 else None, step)


def _slices(shape: tuple[int, ...], attrs: Attrs) -> tuple[slice, ...]:
    starts, ends = attrs["starts"], attrs["ends"]
    axes = attrs["axes"] or tuple(range(len(starts)))
    steps = attrs["steps"] or (1,) * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ValueError("slice starts, ends, axes and steps differ in length")
    out = [slice(None)] * len(shape)
    seen = set()
    for s, e, ax, st in zip(starts, ends, axes, steps):
        ax = normalize_axis(ax, len(shape))
        if ax in seen:
            raise ValueError(f"slice axis {ax} given twice")
        seen.add(ax)
        out[ax] = slice_bounds(shape[ax], s, e, st)
    return tuple(out)


def _infer_slice(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x = _one(types)
    sl = _slices(x.shape, attrs)
    return [TensorType(x.dtype, tuple(len(range(*s.indices(d))) for s, d in zip(sl, x.shape)))]


SLICE = defop("slice", ("x",), _infer_slice,
              lambda xs, a: [np.asarray(xs[0][_slices(xs[0].shape, a)], order="C")],
              "Static strided slice with ONNX semantics (negative indices count from the end, "
              "out-of-range ones clamp); empty `axes`/`steps` mean 0.. and 1.",
              attrs={"starts": AttrDef("ints"), "ends": AttrDef("ints"),
                     "axes": AttrDef("ints", ()), "steps": AttrDef("ints", ())})


# --- pad --------------------------------------------------------------------------------------
PAD_MODES = ("constant", "reflect", "edge", "wrap")


def _infer_pad(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x, pads = _one(types), attrs["pads"]
    if len(pads) != 2 * x.rank:
        raise ValueError(f"pad needs {2 * x.rank} pads for {x}, got {list(pads)}")
    if attrs["mode"] not in PAD_MODES:
        raise ValueError(f"pad mode {attrs['mode']!r} is not one of {', '.join(PAD_MODES)}")
    shape = tuple(d + pads[i] + pads[i + x.rank] for i, d in enumerate(x.shape))
    if min(shape, default=0) < 0:
        raise ValueError(f"pads {list(pads)} crop more than {x} holds")
    return [TensorType(x.dtype, shape)]


def _ref_pad(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x, pads = xs[0], attrs["pads"]
    assert x is not None
    r = x.ndim
    # Negative pads crop first (ONNX allows them), then the positive ones pad.
    crop = tuple(slice(max(-pads[i], 0), d - max(-pads[i + r], 0)) for i, d in enumerate(x.shape))
    x = x[crop]
    width = [(max(pads[i], 0), max(pads[i + r], 0)) for i in range(r)]
    mode = attrs["mode"]
    if mode == "constant":
        return [np.pad(x, width, constant_values=np.asarray(attrs["value"]).astype(x.dtype))]
    if mode == "reflect" and any(d < 2 for d, (lo, hi) in zip(x.shape, width) if lo or hi):
        raise ValueError("reflect padding needs at least 2 elements on padded axes")
    return [np.pad(x, width, mode=mode)]


PAD = defop("pad", ("x",), _infer_pad, _ref_pad,
            "Pad (or crop, for negative values) every axis; pads = [begin_0.., end_0..] (ONNX "
            "order); mode constant (with `value`), reflect, edge or wrap.",
            attrs={"pads": AttrDef("ints"), "mode": AttrDef("str", "constant"),
                   "value": AttrDef("float", 0.0)})


# --- expand / tile / gather -------------------------------------------------------------------
def _infer_expand(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x = _one(types)
    try:
        shape = np.broadcast_shapes(x.shape, tuple(attrs["shape"]))
    except ValueError:
        raise ValueError(f"{x} does not broadcast to {list(attrs['shape'])}") from None
    return [TensorType(x.dtype, tuple(int(d) for d in shape))]


EXPAND = defop("expand", ("x",), _infer_expand,
               lambda xs, a: [np.array(np.broadcast_to(
                   xs[0], np.broadcast_shapes(xs[0].shape, tuple(a["shape"]))))],
               "Broadcast x against `shape` (ONNX Expand: the result has the broadcast shape).",
               attrs={"shape": AttrDef("ints")})


def _infer_tile(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x, reps = _one(types), attrs["repeats"]
    if len(reps) != x.rank or min(reps, default=0) < 0:
        raise ValueError(f"tile needs {x.rank} non-negative repeats, got {list(reps)}")
    return [TensorType(x.dtype, tuple(d * r for d, r in zip(x.shape, reps)))]


TILE = defop("tile", ("x",), _infer_tile, lambda xs, a: [np.tile(xs[0], a["repeats"])],
             "Repeat x `repeats[i]` times along each axis i.",
             attrs={"repeats": AttrDef("ints")})


def _infer_gather(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x, idx = types
    assert x is not None and idx is not None
    if idx.dtype not in (DType.I32, DType.I64):
        raise ValueError(f"gather indices must be i32 or i64, got {idx}")
    ax = normalize_axis(attrs["axis"], x.rank)
    return [TensorType(x.dtype, x.shape[:ax] + idx.shape + x.shape[ax + 1:])]


def _ref_gather(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x, idx = xs
    assert x is not None and idx is not None
    ax = attrs["axis"] % x.ndim
    if idx.size and (idx.min() < -x.shape[ax] or idx.max() >= x.shape[ax]):
        raise ValueError(f"gather index out of range for axis {ax} of size {x.shape[ax]}")
    return [np.take(x, np.where(idx < 0, idx + x.shape[ax], idx), axis=ax)]


GATHER = defop("gather", ("x", "indices"), _infer_gather, _ref_gather,
               "Select entries of x along `axis` (ONNX Gather; negative indices count from "
               "the end).", attrs={"axis": AttrDef("int", 0)})
