"""A tiny seeded CRNN-shaped graph (conv backbone with a residual, CNN-to-RNN reshape,
bidirectional LSTM, dense head) for the compression tests."""

from __future__ import annotations

import numpy as np
from ocrc.compiler.ir.graph import Builder, Graph, Value
from ocrc.compiler.ir.types import DType, TensorType

H, W = 8, 12
HIDDEN = 16


def tiny_crnn(seed: int = 0, classes: int = 40) -> Graph:
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    b = Builder()
    count = iter(range(100))

    def c(a: np.ndarray) -> Value:  # named like ONNX initializers
        return b.const(a, name=f"init{next(count)}")
    x = b.input("x", TensorType(DType.F32, (1, 4, H, W)))
    c0 = b.op("conv", x, c(w(16, 4, 3, 3)), c(w(16) * 0), name="conv0",
              pads=(1, 1, 1, 1), act="relu")
    c1 = b.op("conv", c0, c(w(32, 16, 3, 3)), c(w(32)), name="conv1",
              pads=(1, 1, 1, 1), act="relu")
    c2 = b.op("conv", c1, c(w(16, 32, 1, 1)), c(w(16)), c0, name="conv2")
    c3 = b.op("conv", c2, c(w(8, 16, 3, 3)), c(w(8)), name="conv3",
              pads=(1, 1, 1, 1), strides=(2, 1), act="relu")  # [1, 8, 4, 12]
    t = b.op("transpose", c3, perm=(3, 0, 1, 2))  # [12, 1, 8, 4]
    r = b.op("reshape", t, shape=(W, 1, 32))
    y, _, _ = b.emit("lstm", (r, c(w(2, 4 * HIDDEN, 32)), c(w(2, 4 * HIDDEN, HIDDEN)),
                              c(w(2, 8 * HIDDEN))),
                     {"hidden_size": HIDDEN, "direction": "bidirectional"}, name="lstm")
    f = b.op("reshape", y, shape=(W, 1, 2 * HIDDEN))
    out = b.op("dense", f, c(w(classes, 2 * HIDDEN)), c(w(classes)), name="fc",
               out_name="logits")
    b.output(out)
    return b.graph


def inputs(seed: int = 1, n: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 4, H, W)).astype(np.float32)} for _ in range(n)]
