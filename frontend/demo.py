"""A small CRNN-shaped ONNX model built from a seed: the bundled default model of `ocrc demo`
until the trained demo CRNN lands (benchmarks issue). Conv-BN-ReLU backbone with max pools, the
CNN-to-RNN bridge (transpose + reshape), a bidirectional LSTM and a dense CTC head, written the
way exporters write them, so it exercises the same importer paths as ddddocr and PP-OCR."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DEMO_CLASSES = 37  # CTC blank + [0-9a-z]
DEMO_HEIGHT = 32


def build_demo_crnn(seed: int = 0, width: int | None = None, hidden: int = 32,
                    channels: tuple[int, ...] = (16, 32, 48)) -> onnx.ModelProto:
    """A seeded CRNN: input [1, 1, 32, W] (W symbolic 'width' unless given), output
    [T, 1, DEMO_CLASSES] with T = W / 4."""
    rng = np.random.default_rng(seed)
    inits: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def init(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    x, cin = "image", 1
    for i, cout in enumerate(channels):
        w = rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2.0 / (9 * cin))
        nodes.append(helper.make_node("Conv", [x, init(f"conv{i}.w", w)], [f"c{i}"],
                                      name=f"Conv_{i}", pads=[1, 1, 1, 1]))
        bn = [rng.uniform(0.5, 1.5, cout), rng.normal(0, 0.1, cout), rng.normal(0, 0.1, cout),
              rng.uniform(0.5, 1.5, cout)]
        nodes.append(helper.make_node(
            "BatchNormalization", [f"c{i}"] + [init(f"bn{i}.{k}", a) for k, a in
                                               zip(("scale", "bias", "mean", "var"), bn)],
            [f"n{i}"], name=f"BatchNormalization_{i}", epsilon=1e-5))
        nodes.append(helper.make_node("Relu", [f"n{i}"], [f"r{i}"], name=f"Relu_{i}"))
        # Pool height every stage, width in the first two: [1, C, 32, W] -> [1, C, 4, W/4].
        k = [2, 2] if i < 2 else [2, 1]
        nodes.append(helper.make_node("MaxPool", [f"r{i}"], [f"p{i}"], name=f"MaxPool_{i}",
                                      kernel_shape=k, strides=k))
        x, cin = f"p{i}", cout
    feat = cin * (DEMO_HEIGHT // 8)
    # Bridge: [1, C, H, T] -> [T, 1, C*H], the way PyTorch exports permute + reshape.
    nodes.append(helper.make_node("Transpose", [x], ["bt"], name="Transpose_0", perm=[3, 0, 1, 2]))
    nodes.append(helper.make_node("Shape", ["bt"], ["bshape"], name="Shape_0"))
    nodes.append(helper.make_node("Gather", ["bshape", init_i64(inits, "zero", [0])], ["tlen"],
                                  name="Gather_0", axis=0))
    nodes.append(helper.make_node("Concat", ["tlen", init_i64(inits, "rest", [1, feat])],
                                  ["bdims"], name="Concat_0", axis=0))
    nodes.append(helper.make_node("Reshape", ["bt", "bdims"], ["seq"], name="Reshape_0"))
    h = hidden
    w_ih = rng.standard_normal((2, 4 * h, feat)) / np.sqrt(feat)
    w_hh = rng.standard_normal((2, 4 * h, h)) / np.sqrt(h)
    b = rng.normal(0, 0.1, (2, 8 * h))
    nodes.append(helper.make_node(
        "LSTM", ["seq", init("lstm.W", w_ih), init("lstm.R", w_hh), init("lstm.B", b)],
        ["lstm_y", "", ""], name="LSTM_0", hidden_size=h, direction="bidirectional"))
    # Y [T, 2, 1, H] -> [T, 1, 2, H] -> [T, 1, 2H]
    nodes.append(helper.make_node("Transpose", ["lstm_y"], ["yt"], name="Transpose_1",
                                  perm=[0, 2, 1, 3]))
    nodes.append(helper.make_node("Reshape", ["yt", init_i64(inits, "yshape", [0, 0, 2 * h])],
                                  ["yr"], name="Reshape_1"))
    wc = rng.standard_normal((2 * h, DEMO_CLASSES)) / np.sqrt(2 * h)
    nodes.append(helper.make_node("MatMul", ["yr", init("head.w", wc)], ["logits0"],
                                  name="MatMul_0"))
    nodes.append(helper.make_node("Add", ["logits0", init("head.b", rng.normal(0, 0.1,
                                                                               DEMO_CLASSES))],
                                  ["logits"], name="Add_0"))
    wdim: int | str = width if width is not None else "width"
    tdim: int | str = width // 4 if width is not None else "T"
    graph = helper.make_graph(
        nodes, "demo_crnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, DEMO_HEIGHT, wdim])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [tdim, 1, DEMO_CLASSES])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="ocrc-demo")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def init_i64(inits: list[TensorProto], name: str, values: list[int]) -> str:
    inits.append(numpy_helper.from_array(np.asarray(values, np.int64), name))
    return name
