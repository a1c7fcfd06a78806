"""The float pipeline on the real OCR models and onnx's light models: node counts and fusion
(issue 3's acceptance), the interpreter's numbers after every pass, and onnxruntime's outputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from ocrc.compiler.ir import Graph, Node, run
from ocrc.compiler.passes import PassContext, run_passes
from ocrc.compiler.pipeline import build_pipeline
from ocrc.frontend import import_onnx, zoo
from tests.passes.helpers import CompareEachPass, assert_close, op_counts

pytestmark = pytest.mark.models
ORT_RTOL = 1e-4  # issue 3: within 1e-4 relative (of the output's largest magnitude)
RANDOM_LIMIT = 30_000_000  # constant elements; above it the random-weight twin is skipped


def input_name(path: Path) -> str:
    m = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    return next(i.name for i in m.graph.input if i.name not in inits)


def ort_outputs(path: Path, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # the models declare output shapes ORT warns about
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)


def check_against_ort(path: Path, shape: tuple[int, ...], seed: int = 0) -> Graph:
    """Import at `shape`, run the float pipeline, compare interp(after) with onnxruntime."""
    name = input_name(path)
    g = import_onnx(path, {name: shape})
    out = run_passes(g, build_pipeline("float"))
    x = {name: np.random.default_rng(seed).random(shape, dtype=np.float32)}
    got = run(out, x)
    want = dict(zip(got, ort_outputs(path, x)))
    assert_close(got, want, ORT_RTOL, f"{path.name} vs onnxruntime")
    return out


def check_each_pass(g: Graph, inputs: dict[str, np.ndarray]) -> list[tuple[str, float]]:
    check = CompareEachPass(run(g, inputs), inputs)
    run_passes(g, build_pipeline("float"), PassContext(instruments=[check]))
    return check.errors


def test_ddddocr_common(real_model: Callable[[str], Path]) -> None:
    path = real_model("ddddocr-common")
    out = check_against_ort(path, (1, 1, 64, 160))
    counts = op_counts(out)
    assert out.count_ops() <= 30, dict(counts)
    convs = [n for n in out.nodes if n.op.name == "conv"]
    assert sum(n.attr("act") == "silu" for n in convs) == 11
    assert sum(n.operand("res") is not None for n in convs) == 8
    assert not {"sigmoid", "mul", "add", "silu"} & set(counts), dict(counts)


def test_ddddocr_common_each_pass(real_model: Callable[[str], Path]) -> None:
    path = real_model("ddddocr-common")
    name = input_name(path)
    g = import_onnx(path, {name: (1, 1, 64, 48)})  # narrow: the per-pass runs stay fast
    check_each_pass(g, {name: np.random.default_rng(1).random((1, 1, 64, 48), np.float32)})


def test_ppocr_v2_rec(real_model: Callable[[str], Path]) -> None:
    path = real_model("ppocr-v2-rec")
    out = check_against_ort(path, (1, 3, 32, 320))
    counts = op_counts(out)
    for gone in ("batch_norm", "affine", "clip", "div", "add", "hard_sigmoid", "hard_swish",
                 "relu"):
        assert gone not in counts, dict(counts)
    acts = [n.attr("act") for n in out.nodes if n.op.name == "conv"]
    assert acts.count("hard_swish") == 27 and acts.count("hard_sigmoid") == 2
    name = input_name(path)
    g = import_onnx(path, {name: (1, 3, 32, 320)})
    check_each_pass(g, {name: np.random.default_rng(2).random((1, 3, 32, 320), np.float32)})


def test_ppocr_v4_rec(real_model: Callable[[str], Path]) -> None:
    """PP-OCRv4 rec: LCNet with hardswish and learnable affine blocks, a transformer neck
    (LayerNorm as ReduceMean/Sub/Pow/Sqrt/Div, attention MatMuls, Softmax, Swish)."""
    path = real_model("ppocr-v4-rec")
    out = check_against_ort(path, (1, 3, 48, 320))
    counts = op_counts(out)
    for gone in ("batch_norm", "clip", "hard_swish", "hard_sigmoid", "sigmoid"):
        assert gone not in counts, dict(counts)
    assert counts["reduce_mean"] == 10 and counts["sqrt"] == 5 and counts["softmax"] == 3
    # 12 of its 28 learnable affine blocks (a * hardswish(conv) + b) fold into the 1x1 conv
    # after them; the 16 before padded depthwise convs or a squeeze-excite stay a mul and an add
    assert out.count_ops() <= 159 and counts["mul"] <= 21, dict(counts)
    acts = [n.attr("act") for n in out.nodes if n.op.name in ("conv", "dense")]
    assert acts.count("hard_swish") >= 27 and "silu" in acts, acts
    name = input_name(path)
    g = import_onnx(path, {name: (1, 3, 48, 96)})  # narrow: the per-pass runs stay fast
    check_each_pass(g, {name: np.random.default_rng(3).random((1, 3, 48, 96), np.float32)})


def randomized(g: Graph, seed: int) -> Graph:
    """`g` with every float constant of 2+ elements replaced by seeded random values (He-scaled
    weights, positive per-channel parameters), so that passes are tested on real numbers."""
    rng = np.random.default_rng(seed)
    nodes: list[Node] = []
    for n in g.nodes:
        v = n.attrs.get("value") if n.op.name == "const" else None
        if v is not None and v.dtype.kind == "f" and v.size > 1:
            fan = int(np.prod(v.shape[1:])) if v.ndim > 1 else 0
            new = (rng.standard_normal(v.shape) * np.sqrt(2 / fan) if fan
                   else rng.uniform(0.5, 1.5, v.shape))
            n = Node(n.op, n.inputs, {"value": new.astype(v.dtype)}, n.outputs, n.name)
        nodes.append(n)
    return Graph(list(g.inputs), nodes, list(g.outputs), g.name)


@pytest.mark.parametrize("name", zoo.LIGHT_MODELS)
def test_light_models(name: str) -> None:
    case = zoo.light_model_case(name)
    g = import_onnx(case.path, {k: v.shape for k, v in case.inputs.items()})
    inputs = {v.name: a for v, a in zip(g.inputs, case.inputs.values())}  # names sanitised
    out = run_passes(g, build_pipeline("float"))
    assert not {"batch_norm"} & set(op_counts(out))
    rtol, atol = zoo.light_model_tolerance(name)
    for got, want in zip(run(out, inputs).values(), case.expected.values()):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    # Their weights are constant (0.02 everywhere): check the passes on random ones too, except
    # on the three plain conv/pool/FC nets whose 60-140 M FC weights would dominate the suite.
    if sum(n.attrs["value"].size for n in g.nodes if n.op.name == "const") > RANDOM_LIMIT:
        return
    rg = randomized(g, seed=3)
    assert_close(run(run_passes(rg, build_pipeline("float")), inputs), run(rg, inputs), 1e-4,
                 f"{name} with random weights")

