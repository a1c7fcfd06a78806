"""Neural-network ops: conv and dense with a fused epilogue, matmul, batch norm, affine, pools.

Epilogue of `conv` and `dense` (what fusion passes fold into them, one definition):
    y = act(op(x, w) + b + res)
`b` (bias per output channel) and `res` (a residual tensor of the output's shape) are optional
operands; `act`/`act_params` name an activation of ACTIVATIONS, "prelu" (operand `slope`) or
"none". Layouts are ONNX's: NCHW activations, OIHW conv weights, dense weights [N, K].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ocrc.compiler.ir.opdef import AttrDef, Attrs, defop
from ocrc.compiler.ir.ops.elementwise import apply_activation
from ocrc.compiler.ir.types import TensorType

COL_BLOCK_BYTES = 1 << 23  # im2col block size of the reference conv
EPILOGUE_ATTRS = {"act": AttrDef("str", "none"), "act_params": AttrDef("floats", ())}
WINDOW_ATTRS = {
    "strides": AttrDef("ints", (1, 1)),
    "pads": AttrDef("ints", (0, 0, 0, 0)),  # ONNX order: top, left, bottom, right
    "dilations": AttrDef("ints", (1, 1)),
}


def window_out(size: int, k: int, stride: int, pad_lo: int, pad_hi: int, dil: int = 1,
               ceil: bool = False) -> int:
    """Output length of a sliding window (ONNX Conv/Pool rules, incl. ceil_mode)."""
    span = size + pad_lo + pad_hi - dil * (k - 1) - 1
    if span < 0:
        raise ValueError(f"window {k} (dilation {dil}) is larger than the padded input {size}")
    n = -(-span // stride) + 1 if ceil else span // stride + 1
    if ceil and (n - 1) * stride >= size + pad_lo:  # last window must start inside the input
        n -= 1
    return n


def _check_window(attrs: Attrs) -> None:
    for key, n in (("strides", 2), ("pads", 4), ("dilations", 2)):
        if key in attrs and len(attrs[key]) != n:
            raise ValueError(f"attr '{key}' needs {n} ints, got {list(attrs[key])}")
    if min(attrs["strides"]) < 1 or min(attrs["dilations"]) < 1 or min(attrs["pads"]) < 0:
        raise ValueError("strides and dilations must be >= 1 and pads >= 0")


def _epilogue(y: np.ndarray, b: np.ndarray | None, res: np.ndarray | None,
              slope: np.ndarray | None, attrs: Attrs, channel_axis: int) -> np.ndarray:
    if b is not None:
        shape = [1] * y.ndim
        shape[channel_axis] = -1
        y = y + b.reshape(shape)
    if res is not None:
        y = y + res
    return apply_activation(y.astype(np.float32, copy=False), attrs["act"], attrs["act_params"],
                            slope)


def _check_epilogue(out: TensorType, b: TensorType | None, res: TensorType | None,
                    n_channels: int) -> None:
    if b is not None and b.shape != (n_channels,):
        raise ValueError(f"bias must be [{n_channels}], got {list(b.shape)}")
    if res is not None and res.shape != out.shape:
        raise ValueError(f"residual must be {list(out.shape)}, got {list(res.shape)}")


# --- conv ------------------------------------------------------------------------------------
def _infer_conv(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x, w, b, res = (list(types) + [None] * 5)[:4]
    assert x is not None and w is not None
    if x.rank != 4 or w.rank != 4:
        raise ValueError(f"conv needs 4-D x and w, got {x} and {w}")
    _check_window(attrs)
    g = attrs["group"]
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    if g < 1 or c != cg * g or m % g:
        raise ValueError(f"group {g}: x has {c} channels, w is {list(w.shape)}")
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = attrs["strides"], attrs["pads"], attrs["dilations"]
    out = TensorType(x.dtype, (n, m, window_out(h, kh, sh, pt, pb, dh),
                               window_out(wd, kw, sw, pl, pr, dw)))
    _check_epilogue(out, b, res, m)
    return [out]


def conv2d(x: np.ndarray, w: np.ndarray, strides: Sequence[int], pads: Sequence[int],
           dilations: Sequence[int], group: int, pad_value: float = 0.0) -> np.ndarray:
    """Grouped 2-D convolution by im2col and one matmul per group."""
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = strides, pads, dilations
    m, cg, kh, kw = w.shape
    # Accumulate in float64 (then round once): the oracle is then independent of BLAS
    # blocking, so identical weights give identical channels, as the light models require.
    acc = np.float64 if x.dtype.kind == "f" else x.dtype
    xp = np.pad(x.astype(acc), ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=pad_value)
    win = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    win = win[:, :, ::sh, ::sw, ::dh, ::dw]  # [N, C, OH, OW, KH, KW]
    n, _, oh, ow = win.shape[:4]
    mg = m // group
    y = np.empty((n, oh, ow, m), acc)
    # Blocks of output rows keep each im2col matrix near COL_BLOCK_BYTES (cache-sized).
    rows = max(1, COL_BLOCK_BYTES // max(1, n * ow * cg * kh * kw * np.dtype(acc).itemsize))
    for gi in range(group):
        wg = w[gi * mg:(gi + 1) * mg].reshape(mg, -1).T.astype(acc)
        for r in range(0, oh, rows):
            cols = win[:, gi * cg:(gi + 1) * cg, r:r + rows].transpose(0, 2, 3, 1, 4, 5)
            nr = cols.shape[1]
            y[:, r:r + nr, :, gi * mg:(gi + 1) * mg] = (
                cols.reshape(n * nr * ow, -1) @ wg).reshape(n, nr, ow, mg)
    return y.transpose(0, 3, 1, 2).astype(x.dtype)


def _ref_conv(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x, w, b, res, slope = (list(xs) + [None] * 5)[:5]
    assert x is not None and w is not None
    y = conv2d(x, w, attrs["strides"], attrs["pads"], attrs["dilations"], attrs["group"])
    return [_epilogue(y, b, res, slope, attrs, 1)]


CONV = defop(
    "conv", ("x", "w", "b?", "res?", "slope?"), _infer_conv, _ref_conv,
    "2-D convolution, NCHW x OIHW, grouped/depthwise/dilated; epilogue act(y + b + res).",
    attrs={**WINDOW_ATTRS, "group": AttrDef("int", 1), **EPILOGUE_ATTRS},
    traits=("mac", "epilogue"),
)


# --- dense -----------------------------------------------------------------------------------
def _infer_dense(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x, w, b, res = (list(types) + [None] * 5)[:4]
    assert x is not None and w is not None
    if w.rank != 2 or x.rank < 1 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"dense needs x[..., K] and w[N, K], got {x} and {w}")
    out = TensorType(x.dtype, x.shape[:-1] + (w.shape[0],))
    _check_epilogue(out, b, res, w.shape[0])
    return [out]


def _ref_dense(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x, w, b, res, slope = (list(xs) + [None] * 5)[:5]
    assert x is not None and w is not None
    return [_epilogue(np.matmul(x, w.T), b, res, slope, attrs, -1)]


DENSE = defop(
    "dense", ("x", "w", "b?", "res?", "slope?"), _infer_dense, _ref_dense,
    "Fully connected: y = act(x @ w.T + b + res), x[..., K], w[N, K] (ONNX Gemm, transB=1).",
    attrs=dict(EPILOGUE_ATTRS), traits=("mac", "epilogue"),
)


def _infer_matmul(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    a, b = types
    assert a is not None and b is not None
    try:
        shape = np.matmul(np.empty(a.shape, np.int8), np.empty(b.shape, np.int8)).shape
    except ValueError:
        raise ValueError(f"matmul shapes {list(a.shape)} and {list(b.shape)} mismatch") from None
    return [TensorType(a.dtype, tuple(int(d) for d in shape))]


MATMUL = defop("matmul", ("a", "b"), _infer_matmul,
               lambda xs, a: [np.matmul(xs[0], xs[1])],
               "numpy/ONNX MatMul (batched, broadcasting) of two tensors.", traits=("mac",))


# --- normalisation ---------------------------------------------------------------------------
def _infer_channelwise(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x = types[0]
    assert x is not None and x.rank >= 2
    for p in types[1:]:
        if p is not None and p.shape != (x.shape[1],):
            raise ValueError(f"per-channel operand must be [{x.shape[1]}], got {list(p.shape)}")
    return [x]


def _per_channel(p: np.ndarray, ndim: int) -> np.ndarray:
    return p.reshape((1, -1) + (1,) * (ndim - 2))


def _ref_batch_norm(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x, scale, bias, mean, var = xs
    assert x is not None and scale is not None and bias is not None
    assert mean is not None and var is not None
    inv = scale / np.sqrt(var + np.float32(attrs["epsilon"]))
    y = (x - _per_channel(mean, x.ndim)) * _per_channel(inv, x.ndim) + _per_channel(bias, x.ndim)
    return [y.astype(x.dtype)]


BATCH_NORM = defop(
    "batch_norm", ("x", "scale", "bias", "mean", "var"), _infer_channelwise, _ref_batch_norm,
    "Inference batch normalisation over axis 1: (x - mean) / sqrt(var + eps) * scale + bias.",
    attrs={"epsilon": AttrDef("float", 1e-5)},
)


def _ref_affine(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x, scale, shift = xs
    assert x is not None and scale is not None and shift is not None
    return [(x * _per_channel(scale, x.ndim) + _per_channel(shift, x.ndim)).astype(x.dtype)]


AFFINE = defop("affine", ("x", "scale", "shift"), _infer_channelwise, _ref_affine,
               "Per-channel (axis 1) x * scale + shift: a batch norm that could not be folded.")


# --- conv_transpose --------------------------------------------------------------------------
def _infer_conv_transpose(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x, w, b, res = (list(types) + [None] * 5)[:4]
    assert x is not None and w is not None
    if x.rank != 4 or w.rank != 4:
        raise ValueError(f"conv_transpose needs 4-D x and w, got {x} and {w}")
    _check_window(attrs)
    g, op = attrs["group"], attrs["output_padding"]
    n, c, h, wd = x.shape
    cw, mg, kh, kw = w.shape
    if g < 1 or c != cw or c % g:
        raise ValueError(f"group {g}: x has {c} channels, w is {list(w.shape)}")
    if len(op) != 2 or min(op) < 0:
        raise ValueError(f"attr 'output_padding' needs 2 ints >= 0, got {list(op)}")
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = attrs["strides"], attrs["pads"], attrs["dilations"]
    oh = sh * (h - 1) + op[0] + (kh - 1) * dh + 1 - pt - pb
    ow = sw * (wd - 1) + op[1] + (kw - 1) * dw + 1 - pl - pr
    if oh < 1 or ow < 1:
        raise ValueError(f"pads {list(attrs['pads'])} leave an empty output")
    out = TensorType(x.dtype, (n, mg * g, oh, ow))
    _check_epilogue(out, b, res, mg * g)
    return [out]


def conv_transpose2d(x: np.ndarray, w: np.ndarray, strides: Sequence[int],
                     pads: Sequence[int], dilations: Sequence[int], group: int,
                     output_padding: Sequence[int]) -> np.ndarray:
    """Transposed (fractionally strided) 2-D convolution, ONNX ConvTranspose semantics:
    every input pixel scatters w[c, m] times itself into a stride-spaced output grid."""
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = strides, pads, dilations
    n, c, h, wd = x.shape
    _, mg, kh, kw = w.shape
    cg = c // group
    hf = sh * (h - 1) + output_padding[0] + (kh - 1) * dh + 1
    wf = sw * (wd - 1) + output_padding[1] + (kw - 1) * dw + 1
    y = np.zeros((n, mg * group, hf, wf), np.float32)
    for gi in range(group):
        xg = x[:, gi * cg:(gi + 1) * cg]
        cols = np.tensordot(w[gi * cg:(gi + 1) * cg], xg, axes=([0], [1]))  # [mg,KH,KW,N,H,W]
        cols = cols.transpose(3, 0, 1, 2, 4, 5)
        for i in range(kh):
            for j in range(kw):
                y[:, gi * mg:(gi + 1) * mg, i * dh:i * dh + (h - 1) * sh + 1:sh,
                  j * dw:j * dw + (wd - 1) * sw + 1:sw] += cols[:, :, i, j]
    return np.asarray(y[:, :, pt:hf - pb, pl:wf - pr], order="C")


def _ref_conv_transpose(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x, w, b, res, slope = (list(xs) + [None] * 5)[:5]
    assert x is not None and w is not None
    y = conv_transpose2d(x, w, attrs["strides"], attrs["pads"], attrs["dilations"],
                         attrs["group"], attrs["output_padding"])
    return [_epilogue(y.astype(x.dtype), b, res, slope, attrs, 1)]


CONV_TRANSPOSE = defop(
    "conv_transpose", ("x", "w", "b?", "res?", "slope?"), _infer_conv_transpose,
    _ref_conv_transpose,
    "Transposed 2-D convolution (ONNX ConvTranspose), x NCHW, w [C, M/group, KH, KW]; pads "
    "crop the full output, output_padding extends it at the bottom/right; epilogue as conv.",
    attrs={**WINDOW_ATTRS, "group": AttrDef("int", 1),
           "output_padding": AttrDef("ints", (0, 0)), **EPILOGUE_ATTRS},
    traits=("mac", "epilogue"),
)
