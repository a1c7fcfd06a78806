"""The rewrite driver: program-order traversal, fixpoint, DCE, output names, determinism,
the input graph left untouched, CSE, and the loud failure of a pattern that never settles."""

from __future__ import annotations

import numpy as np
import pytest

from ocrc.compiler.errors import PassError
from ocrc.compiler.ir import Builder, DType, Graph, Node, TensorType, graph_text, run, verify
from ocrc.compiler.rewrite import (
    Rewriter,
    apply_patterns,
    eliminate_common_subexpressions,
    fold_constants,
)

F32 = DType.F32


def chain() -> Graph:
    b = Builder()
    x = b.input("x", TensorType(F32, (2, 3)))
    y = b.op("relu", x, out_name="r")
    z = b.op("tanh", y, out_name="t")
    b.output(b.op("sigmoid", z, out_name="out"))
    return b.graph


def tanh_to_relu(rw: Rewriter, n: Node) -> object:
    return rw.emit("relu", n.inputs) if n.op.name == "tanh" else None


def drop_relu_of_relu(rw: Rewriter, n: Node) -> object:
    if n.op.name == "relu" and rw.op_of(n.inputs[0], "relu") is not None:
        return n.inputs[0]
    return None


def test_fixpoint_chains_rewrites_and_removes_dead_nodes() -> None:
    g = chain()
    before = graph_text(g)
    out = apply_patterns(g, [tanh_to_relu, drop_relu_of_relu])
    verify(out)
    assert [n.op.name for n in out.nodes] == ["relu", "sigmoid"]
    assert graph_text(g) == before, "the input graph must not change"
    x = {"x": np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)}
    want = 1 / (1 + np.exp(-np.maximum(x["x"], 0)))  # tanh became relu, relu(relu) = relu
    np.testing.assert_allclose(run(out, x)["out"], want, rtol=1e-6)


def test_output_keeps_its_name_when_replaced_by_an_existing_value() -> None:
    b = Builder()
    x = b.input("x", TensorType(F32, (4,)))
    r = b.op("relu", x, out_name="inner")
    b.output(b.op("relu", r, out_name="result"))
    out = apply_patterns(b.graph, [drop_relu_of_relu])
    assert [v.name for v in out.outputs] == ["result"]
    assert len(out.nodes) == 1
    assert "inner" not in graph_text(out)


def test_output_that_is_a_graph_input_is_left_alone() -> None:
    b = Builder()
    x = b.input("x", TensorType(F32, (4,)))
    b.output(b.op("relu", x, out_name="y"))

    def to_input(rw: Rewriter, n: Node) -> object:
        return n.inputs[0] if n.op.name == "relu" else None

    out = apply_patterns(b.graph, [to_input])
    assert [v.name for v in out.outputs] == ["y"] and len(out.nodes) == 1


def test_deterministic_text() -> None:
    texts = {graph_text(apply_patterns(chain(), [tanh_to_relu, drop_relu_of_relu]))
             for _ in range(3)}
    assert len(texts) == 1


def test_pattern_that_never_settles_fails_loudly() -> None:
    def flip(rw: Rewriter, n: Node) -> object:
        if n.op.name in ("relu", "tanh"):
            return rw.emit("tanh" if n.op.name == "relu" else "relu", n.inputs)
        return None

    with pytest.raises(PassError, match="did not converge: pattern flip keeps firing"):
        apply_patterns(chain(), [flip])


def test_pattern_returning_a_wrong_type_is_a_bug() -> None:
    def bad(rw: Rewriter, n: Node) -> object:
        return rw.const(np.zeros(3)) if n.op.name == "tanh" else None

    with pytest.raises(AssertionError, match=r"f32\[2,3\] by f32\[3\]"):
        apply_patterns(chain(), [bad])


def test_constant_folding_and_cse() -> None:
    b = Builder()
    x = b.input("x", TensorType(F32, (3,)))
    c1 = b.op("add", b.const(np.ones(3)), b.const(np.full(3, 2.0)))
    c2 = b.const(np.full(3, 3.0))
    y1 = b.op("mul", x, c1)
    y2 = b.op("mul", x, c2)
    b.output(b.op("add", y1, y2, out_name="y"))
    folded = apply_patterns(b.graph, [fold_constants])
    merged = eliminate_common_subexpressions(folded)
    verify(merged)
    assert [n.op.name for n in merged.nodes] == ["const", "mul", "add"]
    xin = {"x": np.arange(3, dtype=np.float32)}
    np.testing.assert_array_equal(run(b.graph, xin)["y"], run(merged, xin)["y"])


def test_cse_compares_arrays_exactly_beyond_the_fingerprint() -> None:
    big = np.zeros(100_000, np.float32)
    other = big.copy()
    other[1] = 1.0  # not among the sampled elements
    b = Builder()
    x = b.input("x", TensorType(F32, (100_000,)))
    y = b.op("add", b.op("add", x, b.const(big)), b.const(other), out_name="y")
    b.output(y)
    out = eliminate_common_subexpressions(b.graph)
    assert sum(n.op.name == "const" for n in out.nodes) == 2
