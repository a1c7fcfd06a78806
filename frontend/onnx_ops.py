"""ONNX converters for compute ops: one function per ONNX op, named exactly like it (tinygrad
T8, STYLE R13), taking the builder, the node's inputs (None for an absent optional one) and
its attributes as keyword arguments with ONNX's defaults.

A converter returns the IR value(s) of the node's outputs. An attribute value or input form
ocrc does not implement raises UnsupportedOpError through `b.unsupported`, never a silent
approximation. Data-movement and shape ops live in onnx_tensor_ops.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ocrc.compiler.ir.graph import Value
from ocrc.frontend.onnx_builder import OnnxBuilder as B

V = Value | None


# --- helpers ----------------------------------------------------------------------------------
def _spatial_2d(b: B, x: Value, what: str) -> int:
    """Number of spatial axes of NC... input x: 1 or 2 (1-D is imported as H=1)."""
    n = x.type.rank - 2
    if n not in (1, 2):
        raise b.unsupported(f"{n}-D {what} (input {x.type})")
    return n


def _as_2d(values: Sequence[int] | None, n: int, default: int) -> list[int]:
    """Per-axis attribute values of a 1-D or 2-D window as the 2-D list (H first)."""
    vals = list(values) if values else [default] * n
    return vals if n == 2 else [default, vals[0]]


def _pads_2d(pads: Sequence[int] | None, n: int) -> list[int]:
    p = list(pads) if pads else [0] * (2 * n)
    return p if n == 2 else [0, p[0], 0, p[1]]


def _auto_pads(b: B, auto_pad: str, sizes: Sequence[int], kernel: Sequence[int],
               strides: Sequence[int], dilations: Sequence[int], pads: list[int]) -> list[int]:
    """Explicit [top, left, bottom, right] pads for ONNX auto_pad."""
    if auto_pad in ("NOTSET", ""):
        return pads
    if auto_pad == "VALID":
        return [0, 0, 0, 0]
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise b.unsupported(f"auto_pad={auto_pad!r}")
    lo, hi = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        lo.append(small if auto_pad == "SAME_UPPER" else big)
        hi.append(big if auto_pad == "SAME_UPPER" else small)
    return lo + hi


def _lift(b: B, x: Value, n: int) -> Value:
    """A 1-D NCL tensor as NC1L (2-D ops run on it); 2-D stays."""
    return x if n == 2 else b.reshape(x, x.type.shape[:2] + (1,) + x.type.shape[2:])


def _drop(b: B, y: Value, n: int) -> Value:
    return y if n == 2 else b.reshape(y, y.type.shape[:2] + y.type.shape[3:])


# --- convolution ------------------------------------------------------------------------------
def Conv(b: B, x: Value, w: Value, bias: V = None, *, auto_pad: str = "NOTSET",
         dilations: Sequence[int] | None = None, group: int = 1,
         kernel_shape: Sequence[int] | None = None, pads: Sequence[int] | None = None,
         strides: Sequence[int] | None = None) -> Value:
    n = _spatial_2d(b, x, "convolution")
    x2, w2 = _lift(b, x, n), _lift(b, w, n)
    kernel = list(w2.type.shape[2:])
    s, d = _as_2d(strides, n, 1), _as_2d(dilations, n, 1)
    p = _auto_pads(b, auto_pad, x2.type.shape[2:], kernel, s, d, _pads_2d(pads, n))
    y = b.op("conv", x2, w2, bias, strides=s, pads=p, dilations=d, group=group)
    return _drop(b, y, n)


def ConvTranspose(b: B, x: Value, w: Value, bias: V = None, *, auto_pad: str = "NOTSET",
                  dilations: Sequence[int] | None = None, group: int = 1,
                  kernel_shape: Sequence[int] | None = None,
                  output_padding: Sequence[int] | None = None,
                  output_shape: Sequence[int] | None = None, pads: Sequence[int] | None = None,
                  strides: Sequence[int] | None = None) -> Value:
    n = _spatial_2d(b, x, "transposed convolution")
    x2, w2 = _lift(b, x, n), _lift(b, w, n)
    kernel, sizes = list(w2.type.shape[2:]), list(x2.type.shape[2:])
    s, d = _as_2d(strides, n, 1), _as_2d(dilations, n, 1)
    op = _as_2d(output_padding, n, 0)
    p = _pads_2d(pads, n)
    if output_shape or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        # output_shape lists the spatial dims (some exporters write N and C too: keep the tail)
        want = ([1] * (2 - n) + list(output_shape)[-n:] if output_shape
                else [i * st for i, st in zip(sizes, s)])
        p = [0, 0, 0, 0]
        for i in range(2):
            total = s[i] * (sizes[i] - 1) + op[i] + (kernel[i] - 1) * d[i] + 1 - want[i]
            if total < 0:  # a larger requested output grows at the end, like output_padding
                op[i], total = op[i] - total, 0
            small, big = total // 2, total - total // 2
            upper = auto_pad == "SAME_UPPER"
            p[i], p[i + 2] = (small, big) if upper else (big, small)
    elif auto_pad not in ("NOTSET", "", "VALID"):
        raise b.unsupported(f"auto_pad={auto_pad!r}")
    y = b.op("conv_transpose", x2, w2, bias, strides=s, pads=p, dilations=d, group=group,
             output_padding=op)
    return _drop(b, y, n)


def Gemm(b: B, a: Value, bm: Value, c: V = None, *, alpha: float = 1.0, beta: float = 1.0,
         transA: int = 0, transB: int = 0) -> Value:
    if a.type.rank != 2 or bm.type.rank != 2:
        raise b.invalid(f"Gemm needs 2-D operands, got {a.type} and {bm.type}")
    if transA:
        a = b.transpose(a, (1, 0))
    wv = b.value_of(bm)
    dt = bm.type.dtype.np
    if wv is not None:  # w[N, K] with alpha folded in
        w = b.const((wv if transB else wv.T) * np.asarray(alpha, dt) if alpha != 1 else
                    (wv if transB else wv.T), name=bm.name)
    else:
        w = bm if transB else b.transpose(bm, (1, 0))
    n_out = w.type.shape[0]
    bias = None
    cv = b.value_of(c) if beta != 0 else None
    if cv is not None and cv.size in (1, n_out) and (cv.ndim < 2 or cv.shape[0] == 1):
        bias = b.const(np.broadcast_to(cv.reshape(-1) * np.asarray(beta, dt), (n_out,)))
    y = b.op("dense", a, w, bias)
    if wv is None and alpha != 1:
        y = b.op("mul", y, b.const(np.asarray(alpha, dt)))
    if c is not None and beta != 0 and bias is None:
        cc = c if beta == 1 else b.op("mul", c, b.const(np.asarray(beta, dt)))
        y = b.op("add", y, cc)
    return y


def MatMul(b: B, a: Value, bm: Value) -> Value:
    return b.op("matmul", a, bm)


def BatchNormalization(b: B, x: Value, scale: Value, bias: Value, mean: Value, var: Value, *,
                       epsilon: float = 1e-5, momentum: float = 0.9, spatial: int = 1,
                       training_mode: int = 0, is_test: int = 1) -> Value:
    if training_mode:
        raise b.unsupported("training_mode=1")
    if not spatial:
        raise b.unsupported("spatial=0")
    if b.n_outputs > 1:
        raise b.unsupported("the training outputs (running mean/var)")
    return b.op("batch_norm", x, scale, bias, mean, var, epsilon=epsilon)


# --- pooling ----------------------------------------------------------------------------------
def _pool(b: B, op: str, x: Value, kernel_shape: Sequence[int], auto_pad: str,
          strides: Sequence[int] | None, pads: Sequence[int] | None,
          dilations: Sequence[int] | None, ceil_mode: int, **extra: int) -> Value:
    n = _spatial_2d(b, x, "pooling")
    x2 = _lift(b, x, n)
    k, s, d = _as_2d(kernel_shape, n, 1), _as_2d(strides, n, 1), _as_2d(dilations, n, 1)
    p = _auto_pads(b, auto_pad, x2.type.shape[2:], k, s, d, _pads_2d(pads, n))
    y = b.op(op, x2, kernel_shape=k, strides=s, pads=p, dilations=d, ceil_mode=ceil_mode,
             **extra)
    return _drop(b, y, n)


def MaxPool(b: B, x: Value, *, kernel_shape: Sequence[int], auto_pad: str = "NOTSET",
            ceil_mode: int = 0, dilations: Sequence[int] | None = None,
            pads: Sequence[int] | None = None, storage_order: int = 0,
            strides: Sequence[int] | None = None) -> Value:
    if b.n_outputs > 1:
        raise b.unsupported("the Indices output")
    return _pool(b, "max_pool", x, kernel_shape, auto_pad, strides, pads, dilations, ceil_mode)


def AveragePool(b: B, x: Value, *, kernel_shape: Sequence[int], auto_pad: str = "NOTSET",
                ceil_mode: int = 0, count_include_pad: int = 0,
                dilations: Sequence[int] | None = None, pads: Sequence[int] | None = None,
                strides: Sequence[int] | None = None) -> Value:
    return _pool(b, "avg_pool", x, kernel_shape, auto_pad, strides, pads, dilations, ceil_mode,
                 count_include_pad=count_include_pad)


def GlobalAveragePool(b: B, x: Value) -> Value:
    return b.op("global_avg_pool", x)


def GlobalMaxPool(b: B, x: Value) -> Value:
    return b.op("global_max_pool", x)


def LRN(b: B, x: Value, *, size: int, alpha: float = 1e-4, beta: float = 0.75,
        bias: float = 1.0) -> Value:
    return b.op("lrn", x, size=size, alpha=alpha, beta=beta, bias=bias)


# --- recurrent --------------------------------------------------------------------------------
def LSTM(b: B, x: Value, w: Value, r: Value, bias: V = None, sequence_lens: V = None,
         initial_h: V = None, initial_c: V = None, p: V = None, *,
         activation_alpha: Sequence[float] | None = None,
         activation_beta: Sequence[float] | None = None,
         activations: Sequence[str] | None = None, clip: float | None = None,
         direction: str = "forward", hidden_size: int | None = None, input_forget: int = 0,
         layout: int = 0) -> tuple[Value, ...]:
    dirs = 2 if direction == "bidirectional" else 1
    if direction not in ("forward", "reverse", "bidirectional"):
        raise b.unsupported(f"direction={direction!r}")
    if activations and [a.lower() for a in activations] != ["sigmoid", "tanh", "tanh"] * dirs:
        raise b.unsupported(f"activations={list(activations)}")
    if clip is not None:
        raise b.unsupported(f"clip={clip}")
    if input_forget:
        raise b.unsupported("input_forget=1")
    if layout not in (0, 1):
        raise b.unsupported(f"layout={layout}")
    hs = hidden_size if hidden_size is not None else r.type.shape[-1]
    if layout == 1:  # batch-major: run the time-major op between transposes
        x = b.transpose(x, (1, 0, 2))
        initial_h = b.transpose(initial_h, (1, 0, 2)) if initial_h is not None else None
        initial_c = b.transpose(initial_c, (1, 0, 2)) if initial_c is not None else None
    if sequence_lens is not None:
        lens = b.need_const(sequence_lens, "sequence_lens")
        if np.any(lens != x.type.shape[0]):
            raise b.unsupported(f"sequence_lens={lens.tolist()} shorter than the sequence "
                                f"({x.type.shape[0]})")
    y, yh, yc = b.emit("lstm", (x, w, r, bias, initial_h, initial_c, p),
                       {"hidden_size": hs, "direction": direction})
    if layout == 1:
        y = b.transpose(y, (2, 0, 1, 3))
        yh, yc = b.transpose(yh, (1, 0, 2)), b.transpose(yc, (1, 0, 2))
    return y, yh, yc


# --- elementwise ------------------------------------------------------------------------------
def Add(b: B, x: Value, y: Value) -> Value:
    return b.op("add", x, y)


def Sub(b: B, x: Value, y: Value) -> Value:
    return b.op("sub", x, y)


def Mul(b: B, x: Value, y: Value) -> Value:
    return b.op("mul", x, y)


def Div(b: B, x: Value, y: Value) -> Value:
    return b.op("div", x, y)


def Pow(b: B, x: Value, y: Value) -> Value:
    # ONNX lets the exponent have another numeric type; a constant one is cast to x's type
    # (exact for the integer and float exponents exporters write), a tensor one is not.
    if y.type.dtype != x.type.dtype:
        yc = b.value_of(y)
        if yc is None or not x.type.dtype.is_float:
            raise b.unsupported(f"a {y.type.dtype.value} exponent of a {x.type.dtype.value} base")
        y = b.const(yc.astype(x.type.dtype.np))
    return b.op("pow", x, y)


def Sqrt(b: B, x: Value) -> Value:
    return _float_act(b, "sqrt", x)


def _reduce(b: B, op: str, x: Value, axes_in: V, axes: Sequence[int] | None, keepdims: int,
            noop_with_empty_axes: int) -> Value:
    """ONNX Reduce*: axes from the attribute (ReduceSum before opset 13, the others before 18)
    or the input; none means every axis, or no reduction with noop_with_empty_axes."""
    if axes_in is not None:
        ax = b.ints_of(axes_in, "axes")
    else:
        ax = list(axes) if axes is not None else []
    rank = x.type.rank
    if not ax:
        if noop_with_empty_axes:
            return x
        ax = list(range(rank))
    if any(not -rank <= a < rank for a in ax) or len({a % rank for a in ax}) != len(ax):
        raise b.invalid(f"axes {ax} are not distinct axes of a rank-{rank} input")
    if keepdims not in (0, 1):
        raise b.invalid(f"keepdims={keepdims} (expected 0 or 1)")
    return b.op(op, x, axes=sorted(a % rank for a in ax), keepdims=keepdims)


def ReduceMean(b: B, x: Value, axes_in: V = None, *, axes: Sequence[int] | None = None,
               keepdims: int = 1, noop_with_empty_axes: int = 0) -> Value:
    if not x.type.dtype.is_float:
        raise b.unsupported(f"a {x.type.dtype.value} input")
    return _reduce(b, "reduce_mean", x, axes_in, axes, keepdims, noop_with_empty_axes)


def ReduceSum(b: B, x: Value, axes_in: V = None, *, axes: Sequence[int] | None = None,
              keepdims: int = 1, noop_with_empty_axes: int = 0) -> Value:
    return _reduce(b, "reduce_sum", x, axes_in, axes, keepdims, noop_with_empty_axes)


def ReduceMax(b: B, x: Value, axes_in: V = None, *, axes: Sequence[int] | None = None,
              keepdims: int = 1, noop_with_empty_axes: int = 0) -> Value:
    return _reduce(b, "reduce_max", x, axes_in, axes, keepdims, noop_with_empty_axes)


def ReduceMin(b: B, x: Value, axes_in: V = None, *, axes: Sequence[int] | None = None,
              keepdims: int = 1, noop_with_empty_axes: int = 0) -> Value:
    return _reduce(b, "reduce_min", x, axes_in, axes, keepdims, noop_with_empty_axes)


def _chain(b: B, op: str, xs: Sequence[Value]) -> Value:
    acc = xs[0]
    for x in xs[1:]:
        acc = b.op(op, acc, x)
    return acc


def Sum(b: B, *xs: Value) -> Value:
    return _chain(b, "add", xs)


def Max(b: B, *xs: Value) -> Value:
    return _chain(b, "max", xs)


def Min(b: B, *xs: Value) -> Value:
    return _chain(b, "min", xs)


def _float_act(b: B, op: str, x: Value, **attrs: float) -> Value:
    if not x.type.dtype.is_float:
        raise b.unsupported(f"a {x.type.dtype.value} input")
    return b.op(op, x, **attrs)


def Relu(b: B, x: Value) -> Value:
    return b.op("relu", x)


def Sigmoid(b: B, x: Value) -> Value:
    return _float_act(b, "sigmoid", x)


def Tanh(b: B, x: Value) -> Value:
    return _float_act(b, "tanh", x)


def HardSwish(b: B, x: Value) -> Value:
    return _float_act(b, "hard_swish", x)


def LeakyRelu(b: B, x: Value, *, alpha: float = 0.01) -> Value:
    return _float_act(b, "leaky_relu", x, alpha=alpha)


def HardSigmoid(b: B, x: Value, *, alpha: float = 0.2, beta: float = 0.5) -> Value:
    return _float_act(b, "hard_sigmoid", x, alpha=alpha, beta=beta)


def PRelu(b: B, x: Value, slope: Value) -> Value:
    return b.op("prelu", x, slope)


def Clip(b: B, x: Value, lo: V = None, hi: V = None, *, min: float | None = None,
         max: float | None = None) -> Value:
    if b.opset >= 11:
        lo_v = b.need_const(lo, "min") if lo is not None else None
        hi_v = b.need_const(hi, "max") if hi is not None else None
        min, max = (float(lo_v) if lo_v is not None else None,
                    float(hi_v) if hi_v is not None else None)
    return b.op("clip", x, min=-np.inf if min is None else min,
                max=np.inf if max is None else max)


def Softmax(b: B, x: Value, *, axis: int | None = None) -> Value:
    if not x.type.dtype.is_float:
        raise b.unsupported(f"a {x.type.dtype.value} input")
    rank = x.type.rank
    if b.opset >= 13:
        return b.op("softmax", x, axis=(-1 if axis is None else axis) % rank)
    # Before opset 13 Softmax normalises over all the axes from `axis` on (a 2-D coercion).
    ax = (1 if axis is None else axis) % rank
    shape = x.type.shape
    if all(d == 1 for d in shape[ax + 1:]):
        return b.op("softmax", x, axis=ax)
    flat = b.reshape(x, (int(np.prod(shape[:ax])), int(np.prod(shape[ax:]))))
    return b.reshape(b.op("softmax", flat, axis=1), shape)
