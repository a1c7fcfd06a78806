"""The ONNX importer on small seeded models built in-test: each converter against onnxruntime,
shape folding, removal of Identity/Dropout, and every error message of bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from ocrc.compiler.errors import OnnxImportError, UnsupportedOpError
from ocrc.compiler.ir import graph_text, parse_graph, print_graph, run
from ocrc.frontend import import_onnx

RTOL = ATOL = 1e-5


def make_model(op: str, inputs: dict[str, tuple[int, ...]], attrs: dict[str, Any] | None = None,
               consts: dict[str, np.ndarray] | None = None, n_out: int = 1, opset: int = 13,
               order: list[str] | None = None) -> onnx.ModelProto:
    """One `op` node; runtime inputs (f32) and initializers, wired in `order` ('' = absent)."""
    consts = consts or {}
    names = order if order is not None else [*inputs, *consts]
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, name=f"{op}_node", **(attrs or {}))
    graph = helper.make_graph(
        [node], "t",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs],
        [numpy_helper.from_array(v, k) for k, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=8)


def check_against_ort(model: onnx.ModelProto, seed: int = 0, reference: bool = False) -> None:
    """ocrc's import + interpreter against onnxruntime (or, for what onnxruntime lacks, onnx's
    reference evaluator), plus the text round trip."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {vi.name: rng.standard_normal([d.dim_value for d in
                                           vi.type.tensor_type.shape.dim]).astype(np.float32)
             for vi in model.graph.input if vi.name not in inits}
    g = import_onnx(model)
    ours = [run(g, feeds)[v.name] for v in g.outputs]
    if reference:
        expected = ReferenceEvaluator(model).run(None, feeds)
    else:
        sess = ort.InferenceSession(model.SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        expected = sess.run(None, feeds)
    for a, r in zip(ours, expected):
        np.testing.assert_allclose(a, r, rtol=RTOL, atol=ATOL)
    text, blobs = print_graph(g)
    assert print_graph(parse_graph(text, blobs))[0] == text


def w(*shape: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


X = {"x": (1, 4, 9, 11)}
CASES: list[tuple[str, onnx.ModelProto]] = [
    ("conv_same_upper_strided", make_model("Conv", X, dict(auto_pad="SAME_UPPER", strides=[2, 2]),
                                           {"w": w(6, 4, 3, 3), "b": w(6)})),
    ("conv_same_lower_even_kernel", make_model("Conv", X, dict(auto_pad="SAME_LOWER",
                                                               strides=[2, 2]),
                                               {"w": w(6, 4, 4, 2)})),
    ("conv_dilated", make_model("Conv", X, dict(dilations=[2, 3], pads=[2, 1, 0, 3]),
                                {"w": w(6, 4, 3, 2)})),
    ("conv_depthwise_pads", make_model("Conv", X, dict(group=4, pads=[0, 1, 2, 1]),
                                       {"w": w(8, 1, 3, 3)})),
    ("conv_1d", make_model("Conv", {"x": (1, 3, 10)}, dict(pads=[1, 2], strides=[2]),
                           {"w": w(5, 3, 3)})),
    ("conv_transpose_output_shape", make_model(
        "ConvTranspose", X, dict(strides=[2, 2], output_shape=[19, 23]), {"w": w(4, 3, 3, 3)})),
    ("conv_transpose_grouped", make_model(
        "ConvTranspose", X, dict(strides=[2, 3], pads=[1, 0, 0, 1], group=2,
                                 output_padding=[1, 2]), {"w": w(4, 3, 2, 3), "b": w(6)})),
    ("max_pool_ceil", make_model("MaxPool", X, dict(kernel_shape=[3, 3], strides=[2, 2],
                                                    ceil_mode=1, pads=[1, 0, 1, 1]))),
    ("avg_pool_count_pad", make_model("AveragePool", X, dict(kernel_shape=[3, 2], pads=[1, 1, 1, 1],
                                                             count_include_pad=1))),
    ("avg_pool_exclude_pad_ceil", make_model("AveragePool", X, dict(
        kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1, pads=[1, 1, 0, 0]), opset=19)),
    ("global_avg_pool", make_model("GlobalAveragePool", X)),
    ("lrn", make_model("LRN", X, dict(size=3, alpha=1e-3, beta=0.7, bias=2.0))),
    ("batch_norm", make_model("BatchNormalization", X, dict(epsilon=1e-3), {
        "s": w(4), "b": w(4, seed=2), "m": w(4, seed=3), "v": np.abs(w(4, seed=4)) + 0.5})),
    ("gemm_trans_alpha_beta", make_model("Gemm", {"a": (5, 3)}, dict(
        transA=1, alpha=0.5, beta=2.0), {"b": w(5, 7), "c": w(7)})),
    ("gemm_matrix_c", make_model("Gemm", {"a": (3, 5)}, dict(transB=1), {"b": w(7, 5),
                                                                     "c": w(3, 7)})),
    ("gemm_runtime_b", make_model("Gemm", {"a": (3, 5), "b": (5, 4)}, dict(alpha=2.0))),
    ("matmul_batched", make_model("MatMul", {"a": (2, 3, 5)}, None, {"b": w(5, 4)})),
    ("softmax_opset11_coerced", make_model("Softmax", {"x": (2, 3, 4)}, dict(axis=1), opset=11)),
    ("softmax_opset13", make_model("Softmax", {"x": (2, 3, 4)}, dict(axis=1))),
    ("sum3", make_model("Sum", {"a": (2, 3), "b": (3,), "c": (2, 1)})),
    ("max3", make_model("Max", {"a": (2, 3), "b": (3,), "c": (2, 1)})),
    ("clip_opset6", make_model("Clip", {"x": (3, 4)}, dict(min=-0.5, max=0.7), opset=6 + 1)),
    ("clip_opset11_max_only", make_model("Clip", {"x": (3, 4)}, None, {"hi": np.float32(0.3)},
                                         opset=11, order=["x", "", "hi"])),
    ("hard_swish", make_model("HardSwish", {"x": (3, 4)}, opset=14)),
    ("hard_sigmoid", make_model("HardSigmoid", {"x": (3, 4)}, dict(alpha=0.3, beta=0.4))),
    ("leaky_relu", make_model("LeakyRelu", {"x": (3, 4)}, dict(alpha=0.2))),
    ("prelu_channel", make_model("PRelu", X, None, {"s": w(4, 1, 1)})),
    ("pad_reflect", make_model("Pad", X, dict(mode="reflect"),
                               {"p": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)})),
    ("pad_edge_negative", make_model("Pad", X, dict(mode="edge"),
                                     {"p": np.array([0, 0, -1, 2, 0, 0, 2, -3], np.int64)})),
    ("pad_constant_opset2_attr", make_model("Pad", X, dict(pads=[0, 0, 1, 1, 0, 0, 1, 1],
                                                           value=1.5), opset=10)),
    ("slice_negative_step", make_model("Slice", X, None, {
        "s": np.array([-1, 8], np.int64), "e": np.array([-100, 1], np.int64),
        "a": np.array([3, 2], np.int64), "st": np.array([-2, -3], np.int64)})),
    ("split_uneven", make_model("Split", X, dict(axis=3), {"sp": np.array([2, 4, 5], np.int64)},
                                n_out=3)),
    ("split_num_outputs", make_model("Split", X, dict(axis=3, num_outputs=3), n_out=3, opset=18)),
    ("resize_nearest_half_pixel", make_model("Resize", X, dict(mode="nearest"), {
        "s": np.array([1, 1, 2.0, 1.5], np.float32)}, order=["x", "", "s"])),
    ("resize_linear_align_corners", make_model("Resize", X, dict(
        mode="linear", coordinate_transformation_mode="align_corners"),
        {"z": np.array([1, 4, 5, 17], np.int64)}, order=["x", "", "", "z"])),
    ("resize_nearest_asym_floor", make_model("Resize", X, dict(
        mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        {"s": np.array([1, 1, 3.0, 2.0], np.float32)}, order=["x", "", "s"])),
    ("resize_cubic", make_model("Resize", X, dict(mode="cubic"), {
        "s": np.array([1, 1, 1.5, 0.7], np.float32)}, order=["x", "", "s"])),
    ("upsample_opset9", make_model("Upsample", X, dict(mode="nearest"),
                                   {"s": np.array([1, 1, 2, 2], np.float32)}, opset=9)),
    ("transpose_default", make_model("Transpose", X)),
    ("flatten_axis2", make_model("Flatten", X, dict(axis=2))),
    ("squeeze_unsqueeze_opset11", make_model("Unsqueeze", {"x": (3, 4)}, dict(axes=[0, 3]),
                                             opset=11)),
    ("tile", make_model("Tile", {"x": (2, 3)}, None, {"r": np.array([2, 1], np.int64)})),
    ("expand", make_model("Expand", {"x": (3, 1)}, None, {"s": np.array([2, 3, 4], np.int64)})),
    # LayerNorm as exporters write it (PP-OCRv4 rec): ReduceMean, Sub, Pow, Sqrt, Div
    ("reduce_mean_axes_attr", make_model("ReduceMean", X, dict(axes=[-1]))),
    ("reduce_mean_axes_input_drop", make_model("ReduceMean", X, dict(keepdims=0),
                                               {"a": np.array([3, 1], np.int64)}, opset=18)),
    ("reduce_mean_every_axis", make_model("ReduceMean", X, dict(keepdims=0))),
    ("reduce_sum_axes_input", make_model("ReduceSum", X, None, {"a": np.array([2], np.int64)})),
    ("reduce_sum_noop_with_empty_axes", make_model("ReduceSum", X,
                                                   dict(noop_with_empty_axes=1))),
    ("reduce_max_opset11", make_model("ReduceMax", X, dict(axes=[0, 2]), opset=11)),
    ("reduce_min_opset18", make_model("ReduceMin", X, dict(keepdims=0),
                                      {"a": np.array([-2], np.int64)}, opset=18)),
    ("sqrt", make_model("Sqrt", {"x": (3, 4)})),  # NaN below 0 on both sides
    ("pow_tensors", make_model("Pow", {"a": (2, 3), "b": (3,)})),
    ("pow_int64_exponent", make_model("Pow", X, None, {"e": np.array(2, np.int64)})),
    ("pow_half", make_model("Pow", X, None, {"e": np.array(0.5, np.float32)})),
]


def _lstm_model(direction: str, layout: int = 0, states: bool = False) -> onnx.ModelProto:
    t, bsz, i, h = 5, 2, 3, 4
    d = 2 if direction == "bidirectional" else 1
    consts = {"W": w(d, 4 * h, i), "R": w(d, 4 * h, h, seed=2), "B": w(d, 8 * h, seed=3)}
    order = ["x", "W", "R", "B"]
    if states:
        shape = (bsz, d, h) if layout else (d, bsz, h)
        consts |= {"h0": w(*shape, seed=4), "c0": w(*shape, seed=5)}
        order += ["", "h0", "c0"]
    x = (bsz, t, i) if layout else (t, bsz, i)
    return make_model("LSTM", {"x": x}, dict(direction=direction, hidden_size=h, layout=layout),
                      consts, n_out=3, opset=14, order=order)


CASES += [
    ("lstm_forward", _lstm_model("forward")),
    ("lstm_reverse_states", _lstm_model("reverse", states=True)),
    ("lstm_bidirectional_states", _lstm_model("bidirectional", states=True)),
]


@pytest.mark.parametrize("name,model", CASES, ids=[c[0] for c in CASES])
def test_converter_matches_onnxruntime(name: str, model: onnx.ModelProto) -> None:
    check_against_ort(model)


def test_lstm_batch_major_matches_the_onnx_reference() -> None:
    # onnxruntime has no layout=1 LSTM
    check_against_ort(_lstm_model("bidirectional", layout=1, states=True), reference=True)


def _shape_folding_model() -> onnx.ModelProto:
    """x -> Reshape(x, Concat(Shape(x)[0], -1)) -> Identity -> Dropout: the ddddocr pattern."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Constant", [], ["i0"], value=numpy_helper.from_array(np.array(0))),
        helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
        helper.make_node("Concat", ["n1", "m1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["r"]),
        helper.make_node("Identity", ["r"], ["i"]),
        helper.make_node("Dropout", ["i"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "fold", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "wrong"])],
        [numpy_helper.from_array(np.array([0], np.int64), "ax"),
         numpy_helper.from_array(np.array([-1], np.int64), "m1")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_shape_computations_fold_and_identity_dropout_vanish() -> None:
    g = import_onnx(_shape_folding_model(), {"x": [2, 3, 4]})
    assert [n.op.name for n in g.nodes] == ["reshape"]
    assert g.outputs[0].type.shape == (2, 12)  # inferred, not the declared [1, wrong]
    assert "loc(\"Reshape_5\")" in graph_text(g) or g.nodes[0].name


EXPORTED = [c for c in CASES if c[0].startswith(("reduce_", "sqrt", "pow_"))]


@pytest.mark.parametrize("name,model", EXPORTED, ids=[c[0] for c in EXPORTED])
def test_reductions_sqrt_and_pow_export_to_onnx(name: str, model: onnx.ModelProto) -> None:
    """Imported, written back by `export_onnx` (`-t onnx`), run by onnxruntime: the
    interpreter's numbers, NaN where the original has them."""
    from ocrc.compiler.export_onnx import export_onnx

    g = import_onnx(model)
    rng = np.random.default_rng(4)
    feeds = {v.name: rng.standard_normal(v.type.shape).astype(np.float32) for v in g.inputs}
    want = [run(g, feeds)[v.name] for v in g.outputs]
    sess = ort.InferenceSession(export_onnx(g).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    for a, r in zip(sess.run(None, feeds), want):
        assert a.shape == r.shape
        np.testing.assert_allclose(a, r, rtol=RTOL, atol=ATOL)


def test_reduce_axes_must_be_distinct() -> None:
    with pytest.raises(OnnxImportError, match=r"ReduceMean_node.*axes \[1, -3\] are not "
                       r"distinct axes of a rank-4 input"):
        import_onnx(make_model("ReduceMean", X, dict(axes=[1, -3])))


def test_node_names_and_value_names_come_from_onnx() -> None:
    g = import_onnx(make_model("Relu", {"x": (2, 3)}))
    assert g.nodes[0].name == "Relu_node" and g.outputs[0].name == "y0"


# --- errors ---------------------------------------------------------------------------------
def test_unsupported_ops_are_listed_all_at_once() -> None:
    nodes = [helper.make_node("Foo", ["x"], ["a"], name="f1"),
             helper.make_node("Relu", ["a"], ["b"], name="r"),
             helper.make_node("Bar", ["b"], ["y"], name="b2", domain="com.example")]
    graph = helper.make_graph(nodes, "u", [helper.make_tensor_value_info("x", 1, [2])],
                              [helper.make_tensor_value_info("y", 1, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("com.example", 2)])
    with pytest.raises(UnsupportedOpError, match=r"2 unsupported ONNX node\(s\): 'f1' Foo "
                       r"\(domain ai.onnx, opset 13\); 'b2' Bar \(domain com.example, opset 2\)"):
        import_onnx(model)


@pytest.mark.parametrize("model,message", [
    (make_model("LSTM", {"x": (2, 1, 3)}, dict(hidden_size=2, clip=3.0),
                {"W": w(1, 8, 3), "R": w(1, 8, 2)}, n_out=1),
     r"node 'LSTM_node' \(LSTM, opset 13\): clip=3.0 is not supported"),
    (make_model("Resize", X, dict(antialias=1), {"s": np.array([1, 1, .5, .5], np.float32)},
                order=["x", "", "s"], opset=18),
     r"Resize_node.*antialias=1 is not supported"),
    (make_model("Conv", {"x": (1, 1, 3, 3, 3)}, None, {"w": w(1, 1, 1, 1, 1)}),
     r"3-D convolution \(input f32\[1,1,3,3,3\]\) is not supported"),
    (make_model("MaxPool", X, dict(kernel_shape=[2, 2]), n_out=2),
     r"the Indices output is not supported"),
    (make_model("Relu", {"x": (2,)}, dict(foo=1)), r"attribute 'foo' = 1 is not supported"),
    (make_model("Reshape", {"x": (2, 3), "s": (2,)}), r"a non-constant target shape is not "
                                                      r"supported"),
])
def test_unsupported_attribute_values_name_node_op_and_value(model: onnx.ModelProto,
                                                             message: str) -> None:
    with pytest.raises(UnsupportedOpError, match=message):
        import_onnx(model)


def test_symbolic_dims_need_input_shape_and_wrong_shapes_say_what_is_expected() -> None:
    model = _shape_folding_model()
    with pytest.raises(OnnxImportError, match=r"input 'x' dim 0 is symbolic \('N'\); bind it "
                       r"with --input-shape x=N,3,4 \(the model declares x \[N, 3, 4\]\)"):
        import_onnx(model)
    with pytest.raises(OnnxImportError, match=r"--input-shape x=2,5,4: dim 1 is 5, but the model "
                       r"fixes it to 3 \(x \[N, 3, 4\]\)"):
        import_onnx(model, {"x": [2, 5, 4]})
    with pytest.raises(OnnxImportError, match=r"--input-shape x=2,3 has 2 dims, the model "
                       r"expects 3: x \[N, 3, 4\]"):
        import_onnx(model, {"x": [2, 3]})
    with pytest.raises(OnnxImportError, match=r"--input-shape names 'y', which is not an input "
                       r"of the model; its inputs are: x \[N, 3, 4\]"):
        import_onnx(model, {"y": [1]})


def test_not_onnx_truncated_and_missing_files_get_one_line(tmp_path: Any) -> None:
    good = tmp_path / "m.onnx"
    onnx.save(_shape_folding_model(), good)
    (tmp_path / "cut.onnx").write_bytes(good.read_bytes()[:40])
    (tmp_path / "text.onnx").write_text("hello, world\n" * 10)
    (tmp_path / "empty.onnx").write_bytes(b"")
    for name in ("cut.onnx", "text.onnx", "empty.onnx"):
        with pytest.raises(OnnxImportError, match=r"not an ONNX model or truncated") as e:
            import_onnx(tmp_path / name)
        assert "\n" not in str(e.value)
    with pytest.raises(OnnxImportError, match=r"no such file"):
        import_onnx(tmp_path / "missing.onnx")


def test_opsets_outside_the_range_are_rejected() -> None:
    with pytest.raises(UnsupportedOpError, match=r"opset 6 is not supported \(ocrc imports "
                       r"opsets 7 to 21\)"):
        import_onnx(make_model("Relu", {"x": (2,)}, opset=6))
    # Conv-22 only added element types: imported. Cast-24 changed more: rejected.
    import_onnx(make_model("Conv", X, None, {"w": w(2, 4, 1, 1)}, opset=22))
    with pytest.raises(UnsupportedOpError, match=r"'Cast_node' Cast-24 \(domain ai.onnx, "
                       r"opset 24; ocrc knows opsets 7 to 21\)"):
        import_onnx(make_model("Cast", {"x": (2,)}, dict(to=TensorProto.INT32), opset=24))
