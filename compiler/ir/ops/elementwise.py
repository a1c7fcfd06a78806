"""Constants, elementwise binary ops with numpy broadcasting, activations, casts, sqrt, softmax.

The activation functions live in one table, `ACTIVATIONS`; both the standalone activation ops
and the fused epilogues of conv/dense (attrs `act`, `act_params`) apply them through
`apply_activation`, so a fused and an unfused graph compute the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ocrc.compiler.ir.opdef import AttrDef, Attrs, defop, same_as_first
from ocrc.compiler.ir.types import DType, TensorType


# --- const -------------------------------------------------------------------------------
def _infer_const(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    return [TensorType.of(attrs["value"])]


CONST = defop(
    "const", (), _infer_const, lambda xs, a: [a["value"]],
    "A constant tensor; `value` is printed inline (<= 16 elements) or as @symbol (side .npz).",
    attrs={"value": AttrDef("tensor")}, traits=("const",),
)


# --- binary elementwise --------------------------------------------------------------------
def broadcast_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(int(d) for d in np.broadcast_shapes(a, b))
    except ValueError:
        raise ValueError(f"shapes {list(a)} and {list(b)} do not broadcast") from None


def _infer_binary(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    a, b = types
    assert a is not None and b is not None
    if a.dtype != b.dtype:
        raise ValueError(f"operand dtypes differ: {a.dtype.value} and {b.dtype.value}")
    return [TensorType(a.dtype, broadcast_shape(a.shape, b.shape))]


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]):  # type: ignore[no-untyped-def]
    def ref(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
        a, b = xs
        assert a is not None and b is not None
        return [np.asarray(fn(a, b)).astype(a.dtype, copy=False)]
    return ref


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu":  # ONNX integer Div truncates toward zero
        return np.trunc(np.true_divide(a, b)).astype(a.dtype)
    return np.true_divide(a, b)


def _pow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN / inf, as ONNX Pow gives them
        return np.power(a, b)


_BIN = dict(inputs=("a", "b"), infer=_infer_binary)
ADD = defop("add", ref=_binary(np.add), doc="a + b with numpy broadcasting.",
            traits=("binary", "commutative"), **_BIN)  # type: ignore[arg-type]
SUB = defop("sub", ref=_binary(np.subtract), doc="a - b with numpy broadcasting.",
            traits=("binary",), **_BIN)  # type: ignore[arg-type]
MUL = defop("mul", ref=_binary(np.multiply), doc="a * b with numpy broadcasting.",
            traits=("binary", "commutative"), **_BIN)  # type: ignore[arg-type]
DIV = defop("div", ref=_binary(_div), doc="a / b with numpy broadcasting (ints truncate).",
            traits=("binary",), **_BIN)  # type: ignore[arg-type]
MAX = defop("max", ref=_binary(np.maximum), doc="Elementwise maximum, broadcasting.",
            traits=("binary", "commutative"), **_BIN)  # type: ignore[arg-type]
MIN = defop("min", ref=_binary(np.minimum), doc="Elementwise minimum, broadcasting.",
            traits=("binary", "commutative"), **_BIN)  # type: ignore[arg-type]
POW = defop("pow", ref=_binary(_pow), doc="a ** b with numpy broadcasting (ONNX Pow).",
            traits=("binary",), **_BIN)  # type: ignore[arg-type]


# --- activations ---------------------------------------------------------------------------
def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign so exp never overflows.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype)


@dataclass(frozen=True)
class Activation:
    """An activation function: named float parameters and the numpy function."""

    params: tuple[tuple[str, float | None], ...]  # (name, default) in act_params order
    fn: Callable[..., np.ndarray]
    doc: str


ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation((), lambda x: np.maximum(x, 0).astype(x.dtype), "max(x, 0)"),
    "clip": Activation((("min", None), ("max", None)),
                       lambda x, lo, hi: np.clip(x, lo, hi).astype(x.dtype), "min(max(x, min), max)"),
    "leaky_relu": Activation((("alpha", 0.01),),
                             lambda x, a: np.where(x >= 0, x, x * np.float32(a)).astype(x.dtype),
                             "x if x >= 0 else alpha * x"),
    "sigmoid": Activation((), _sigmoid, "1 / (1 + exp(-x))"),
    "tanh": Activation((), lambda x: np.tanh(x), "tanh(x)"),
    "hard_sigmoid": Activation(
        (("alpha", 0.2), ("beta", 0.5)),
        lambda x, a, b: np.clip(x * np.float32(a) + np.float32(b), 0, 1).astype(x.dtype),
        "max(0, min(1, alpha * x + beta))"),
    "hard_swish": Activation(
        (), lambda x: (x * np.clip(x * np.float32(1 / 6) + np.float32(0.5), 0, 1)).astype(x.dtype),
        "x * max(0, min(1, x / 6 + 1 / 2))"),
    "silu": Activation((), lambda x: (x * _sigmoid(x)).astype(x.dtype), "x * sigmoid(x)"),
}


def apply_activation(x: np.ndarray, act: str, params: Sequence[float] = (),
                     slope: np.ndarray | None = None) -> np.ndarray:
    """Apply activation `act` ("none", a key of ACTIVATIONS, or "prelu" with `slope`)."""
    if act == "none":
        return x
    if act == "prelu":
        assert slope is not None, "prelu needs a slope operand"
        return np.where(x >= 0, x, x * slope).astype(x.dtype)
    return ACTIVATIONS[act].fn(x, *params)


def _unary_ref(name: str):  # type: ignore[no-untyped-def]
    act = ACTIVATIONS[name]

    def ref(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
        x = xs[0]
        assert x is not None
        return [act.fn(x, *(attrs[p] for p, _ in act.params))]
    return ref


ACTIVATION_OPS = {
    name: defop(name, ("x",), same_as_first, _unary_ref(name), f"Activation: {a.doc}.",
                attrs={p: AttrDef("float", d) for p, d in a.params}, traits=("activation",))
    for name, a in ACTIVATIONS.items()
}
RELU, SIGMOID, TANH = ACTIVATION_OPS["relu"], ACTIVATION_OPS["sigmoid"], ACTIVATION_OPS["tanh"]
CLIP, HARD_SIGMOID = ACTIVATION_OPS["clip"], ACTIVATION_OPS["hard_sigmoid"]


def _prelu_ref(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x, slope = xs
    assert x is not None and slope is not None
    return [apply_activation(x, "prelu", slope=slope)]


def _infer_prelu(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x, s = types
    assert x is not None and s is not None
    if broadcast_shape(x.shape, s.shape) != x.shape:
        raise ValueError(f"prelu slope {list(s.shape)} does not broadcast to {list(x.shape)}")
    return [x]


PRELU = defop("prelu", ("x", "slope"), _infer_prelu, _prelu_ref,
              "Activation: x if x >= 0 else slope * x (slope broadcasts to x).",
              traits=("activation",))


def fused_activation_params(act: str, params: Sequence[float]) -> str | None:
    """Why (act, params) is not a valid fused epilogue, or None when it is."""
    if act in ("none", "prelu"):
        return None if not params else f"act '{act}' takes no act_params"
    if act not in ACTIVATIONS:
        return f"unknown act '{act}' (expected none, prelu or one of {sorted(ACTIVATIONS)})"
    n = len(ACTIVATIONS[act].params)
    return None if len(params) == n else f"act '{act}' needs {n} act_params, got {len(params)}"


# --- misc unary ----------------------------------------------------------------------------
def _infer_cast(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    assert types[0] is not None
    return [TensorType(DType(attrs["to"]), types[0].shape)]


CAST = defop("cast", ("x",), _infer_cast,
             lambda xs, a: [np.asarray(xs[0]).astype(DType(a["to"]).np)],
             "Convert the element type (`to` is a dtype spelling such as \"f32\").",
             attrs={"to": AttrDef("str")})


def _infer_float_unary(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x = types[0]
    assert x is not None
    if not x.dtype.is_float:
        raise ValueError(f"needs a float input, got {x.dtype.value}")
    return [x]


# Not an activation: it is not fused into a conv's epilogue nor made a table, so a graph
# with sqrt stays float (LayerNorm's denominator, PP-OCRv4 rec).
def _sqrt_ref(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    with np.errstate(invalid="ignore"):  # NaN below 0, as ONNX Sqrt
        return [np.sqrt(xs[0])]


SQRT = defop("sqrt", ("x",), _infer_float_unary, _sqrt_ref,
             "sqrt(x) (ONNX Sqrt; NaN below 0).")


def _softmax_ref(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = xs[0]
    assert x is not None
    ax = attrs["axis"]
    e = np.exp(x - np.max(x, axis=ax, keepdims=True))
    return [(e / np.sum(e, axis=ax, keepdims=True)).astype(x.dtype)]


SOFTMAX = defop("softmax", ("x",), same_as_first, _softmax_ref,
                "exp(x) / sum(exp(x)) along `axis` (ONNX opset >= 13 semantics).",
                attrs={"axis": AttrDef("int", -1)})
