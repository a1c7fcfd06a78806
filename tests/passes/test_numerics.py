"""Pass-level differential tests: the interpreter's outputs before and after every pass (alone
and inside the float pipeline) on a graph that uses every rewritten spelling, and on the seeded
demo CRNN through the ONNX importer; plus what the float pipeline must leave behind."""

from __future__ import annotations

import numpy as np
import pytest

from ocrc.compiler.ir import graph_text, run, verify
from ocrc.compiler.passes import PassContext, run_passes
from ocrc.compiler.pipeline import build_pipeline

from tests.passes.helpers import RTOL, CompareEachPass, assert_close, op_counts, pattern_zoo


FLOAT_PASSES = sorted({p.name for p in build_pipeline("float")})  # the lossless ones


@pytest.mark.parametrize("name", FLOAT_PASSES)
def test_each_pass_alone_keeps_the_numbers(name: str) -> None:
    g, inputs = pattern_zoo()
    ref = run(g, inputs)
    text = graph_text(g)
    check = CompareEachPass(ref, inputs)
    out = run_passes(g, build_pipeline(name), PassContext(instruments=[check]))
    verify(out)
    assert graph_text(g) == text, f"{name} changed its input graph"
    assert out.count_ops() <= g.count_ops()


def test_float_pipeline_fuses_everything_and_keeps_the_numbers() -> None:
    g, inputs = pattern_zoo()
    ref = run(g, inputs)
    check = CompareEachPass(ref, inputs)
    out = run_passes(g, build_pipeline("float"), PassContext(instruments=[check]))
    assert len(check.errors) == len(build_pipeline("float"))
    counts = op_counts(out)
    # What must be gone: every BN, pad, spelled activation, sub/div and matmul.
    for gone in ("batch_norm", "affine", "pad", "sigmoid", "clip", "div", "sub", "matmul",
                 "relu", "leaky_relu", "hard_sigmoid", "add"):
        assert gone not in counts, f"{gone} left: {dict(counts)}\n{graph_text(out)}"
    convs = {n.attr("act") for n in out.nodes if n.op.name in ("conv", "conv_transpose")}
    assert convs >= {"hard_swish", "silu", "relu", "hard_sigmoid", "leaky_relu"}
    assert any(n.operand("res") is not None for n in out.nodes if n.op.name == "conv")
    # The bridge keeps one reshape and one transpose; the SE block's gating stays a mul.
    assert counts == {"conv": 6, "conv_transpose": 1, "global_avg_pool": 1, "mul": 1,
                      "max_pool": 1, "avg_pool": 1, "reshape": 1, "transpose": 1, "dense": 1,
                      "softmax": 1}, dict(counts)
    final = run(out, inputs)
    assert_close(final, ref, RTOL, "float pipeline")


def test_same_input_gives_byte_identical_output() -> None:
    texts = {graph_text(run_passes(pattern_zoo()[0], build_pipeline("float")))
             for _ in range(2)}
    assert len(texts) == 1


def test_demo_crnn_through_the_importer() -> None:
    from ocrc.frontend import import_onnx
    from ocrc.frontend.demo import build_demo_crnn

    g = import_onnx(build_demo_crnn(seed=3, width=48))
    inputs = {v.name: np.random.default_rng(0).random(v.type.shape, dtype=np.float32)
              for v in g.inputs}
    ref = run(g, inputs)
    check = CompareEachPass(ref, inputs)
    out = run_passes(g, build_pipeline("float"), PassContext(instruments=[check]))
    counts = op_counts(out)
    assert "batch_norm" not in counts and "relu" not in counts, dict(counts)
    assert all(n.attr("act") == "relu" for n in out.nodes if n.op.name == "conv")
