"""A small seeded float graph with every op kind the quantiser handles, and its samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from ocrc.compiler.ir import Builder, DType, Graph, TensorType
from ocrc.frontend.demo import build_demo_crnn

HIDDEN = 6


def demo_graph(seed: int = 0) -> Graph:
    """conv-relu, conv-silu with a residual, max pool, an SE-like gate (global avg pool,
    hard_sigmoid, mul), a scalar add, concat, reshape/transpose, a bidirectional LSTM, a dense
    head and a float softmax tail."""
    rng = np.random.default_rng(seed)

    def f32(*shape: int, sc: float = 1.0) -> np.ndarray:
        return (rng.standard_normal(shape) * sc).astype(np.float32)

    b = Builder()
    x = b.input("x", TensorType(DType.F32, (1, 3, 8, 16)))
    c1 = b.op("conv", x, b.const(f32(8, 3, 3, 3, sc=0.3)), b.const(f32(8, sc=0.1)),
              pads=(1, 1, 1, 1), act="relu", out_name="c1")
    c2 = b.op("conv", c1, b.const(f32(8, 8, 3, 3, sc=0.2)), b.const(f32(8, sc=0.1)), c1,
              pads=(1, 1, 1, 1), act="silu", out_name="c2")
    p = b.op("max_pool", c2, kernel_shape=(2, 2), strides=(2, 2), out_name="p")
    gap = b.op("global_avg_pool", p, out_name="gap")
    se = b.op("mul", p, b.op("hard_sigmoid", gap, out_name="hs"), out_name="se")
    s3 = b.op("add", se, b.const(np.float32(0.5)), out_name="plus")
    cat = b.op("concat", s3, p, axis=1, out_name="cat")  # [1, 16, 4, 8]
    r = b.op("reshape", cat, shape=(1, 64, 8), out_name="rs")
    t = b.op("transpose", r, perm=(2, 0, 1), out_name="tr")  # [8, 1, 64]
    h = HIDDEN
    y, _, _ = b.emit("lstm", [t, b.const(f32(2, 4 * h, 64, sc=0.2)),
                              b.const(f32(2, 4 * h, h, sc=0.3)), b.const(f32(2, 8 * h, sc=0.1))],
                     {"hidden_size": h, "direction": "bidirectional"},
                     out_names=("Y", "Yh", "Yc"))
    y2 = b.op("reshape", y, shape=(8, 1, 2 * h), out_name="y2")
    o = b.op("dense", y2, b.const(f32(10, 2 * h, sc=0.5)), b.const(f32(10, sc=0.1)),
             out_name="logits")
    b.output(b.op("softmax", o, axis=-1, out_name="prob"))
    return b.graph


def demo_samples(n: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.random((1, 3, 8, 16)).astype(np.float32)} for _ in range(n)]


def demo_crnn_compile_args(tmp_path: Path, n_calib: int) -> list[str]:
    """`ocrc compile` arguments for the bundled demo CRNN (width 32) saved in tmp_path, int8
    with a seeded calibration .npz of n_calib samples."""
    onnx.save(build_demo_crnn(width=32), tmp_path / "demo.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", **{f"s{i}": rng.random((1, 1, 32, 32)).astype(np.float32)
                                        for i in range(n_calib)})
    return ["compile", str(tmp_path / "demo.onnx"), "--quant", "int8", "--calib",
            str(tmp_path / "calib.npz")]


LSTM_DIMS = (12, 2, 16, 16)  # T, B, I, H


def lstm_graph(direction: str, states: bool, seed: int = 0,
               dims: tuple[int, int, int, int] = LSTM_DIMS, sc: float = 0.3) -> Graph:
    """An LSTM of seeded weights on x [t, b, i], hidden size h (dims); initial states too."""
    t, b_, i, h = dims
    rng = np.random.default_rng(seed)
    d = 2 if direction == "bidirectional" else 1

    def f32(*shape: int, sc: float) -> np.ndarray:
        return (rng.standard_normal(shape) * sc).astype(np.float32)

    b = Builder()
    x = b.input("x", TensorType(DType.F32, (t, b_, i)))
    ins = [x, b.const(f32(d, 4 * h, i, sc=sc)), b.const(f32(d, 4 * h, h, sc=sc)),
           b.const(f32(d, 8 * h, sc=0.2))]
    if states:
        ins += [b.const(f32(d, b_, h, sc=0.3)), b.const(f32(d, b_, h, sc=0.5))]
    y, _, _ = b.emit("lstm", ins, {"hidden_size": h, "direction": direction},
                     out_names=("Y", "Yh", "Yc"))
    b.output(y)
    return b.graph
