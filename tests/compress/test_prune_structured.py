"""prune-structured: coupled channel groups, equality with a reference that zeroes the removed
filters (compensate=none), slicing through concat / depthwise / the CNN-to-RNN reshape, bad
specs. Mean replacement: tests/compress/test_prune_mean.py."""

from __future__ import annotations

import numpy as np
import pytest
from ocrc.compiler.compress.groups import analyse
from ocrc.compiler.errors import PassError
from ocrc.compiler.ir import interp
from ocrc.compiler.ir.graph import Builder, Graph, Node
from ocrc.compiler.ir.types import DType, TensorType
from ocrc.compiler.ir.verify import verify
from ocrc.compiler.passes import PassContext, parse_pipeline, run_passes

from tests.compress.tiny import inputs, tiny_crnn


def _zeroed_reference(g: Graph, rows) -> Graph:
    """g with the removed filters' weight rows and bias entries set to zero."""
    drop = {layer: list(js) for r in rows for layer, js in r.filters}
    new = {}
    for n in g.nodes:
        if n.name in drop:
            for k in (1, 2):
                a = g.const_value(n.inputs[k]).copy()
                a[drop[n.name]] = 0
                new[n.inputs[k]] = a
    nodes = [Node(n.op, n.inputs, {"value": new[n.outputs[0]]}, n.outputs, n.name)
             if n.op.name == "const" and n.outputs[0] in new else n for n in g.nodes]
    return Graph(g.inputs, nodes, g.outputs, g.name)


@pytest.mark.parametrize("criterion", ["l1", "gm", "entropy", "std"])
def test_equals_the_zeroed_reference(criterion: str) -> None:
    g = tiny_crnn()
    ctx = PassContext(options={"calibration": inputs(n=2)})
    out = run_passes(g, parse_pipeline(
        f"prune-structured{{sparsity=0.25,criterion={criterion},compensate=none}}"), ctx)
    verify(out)
    rows = ctx.options["reports"]["prune-structured"]
    assert [(r.layers, r.channels, r.removed) for r in rows] == [
        (("conv0", "conv2"), 16, 4), (("conv1",), 32, 8), (("conv3",), 8, 2)]
    assert [n.outputs[0].type.shape[1] for n in out.nodes if n.op.name == "conv"] == \
        [12, 24, 12, 6]
    lstm = next(n for n in out.nodes if n.op.name == "lstm")
    assert lstm.inputs[1].type.shape == (2, 64, 24)  # 6 channels x 4 rows of the reshape
    ref = _zeroed_reference(g, rows)
    for x in inputs(n=2):
        np.testing.assert_allclose(interp.run(out, x)["logits"], interp.run(ref, x)["logits"],
                                   rtol=1e-5, atol=1e-5)


def _branchy() -> Graph:
    """conv -> depthwise conv; concat with a second conv; a 1x1 conv consumes the concat."""
    rng = np.random.default_rng(0)
    b = Builder()
    x = b.input("x", TensorType(DType.F32, (1, 3, 6, 6)))
    w = lambda *s: b.const(rng.standard_normal(s).astype(np.float32))
    a = b.op("conv", x, w(8, 3, 3, 3), w(8), name="a", pads=(1, 1, 1, 1), act="relu")
    d = b.op("conv", a, w(8, 1, 3, 3), w(8), name="dw", pads=(1, 1, 1, 1), group=8)
    c = b.op("conv", x, w(4, 3, 1, 1), w(4), name="c", act="relu")
    cat = b.op("concat", d, c, axis=1)
    y = b.op("conv", cat, w(5, 12, 1, 1), w(5), name="y")
    b.output(y)
    return b.graph


def test_depthwise_and_concat_follow_their_channels() -> None:
    g = _branchy()
    ch = analyse(g)
    assert [len(grp) for grp in ch.groups()] == [1] * 12  # 'y' is the output: pinned
    ctx = PassContext()
    out = run_passes(g, parse_pipeline("prune-structured{sparsity=0.5}"), ctx)
    verify(out)
    shapes = {n.name: n.outputs[0].type.shape[1] for n in out.nodes if n.op.name == "conv"}
    assert shapes == {"a": 4, "dw": 4, "c": 2, "y": 5}
    assert next(n for n in out.nodes if n.name == "dw").attr("group") == 4


def test_layers_option_and_multiple() -> None:
    ctx = PassContext()
    run_passes(tiny_crnn(), parse_pipeline("prune-structured{layers=conv1:0.5,multiple=8}"),
               ctx)
    rows = {r.layers: r.removed for r in ctx.options["reports"]["prune-structured"]}
    assert rows == {("conv0", "conv2"): 0, ("conv1",): 16, ("conv3",): 0}


@pytest.mark.parametrize("text,match", [
    ("prune-structured{sparsity=1.5}", "sparsity=1.5 must be in"),
    ("prune-structured{sparsity=0.5,criterion=random}", "criterion='random'"),
    ("prune-structured{layers=nope:0.5}", "no filter layer 'nope'"),
    ("prune-structured{sparsity=0.5,criterion=entropy}", "needs calibration data"),
    ("prune-structured{sparsity=0.5,compensate=mean}", "needs calibration data"),
    ("prune-structured{sparsity=0.5,compensate=median}", "compensate='median'"),
])
def test_bad_specs(text: str, match: str) -> None:
    with pytest.raises(PassError, match=match):
        run_passes(tiny_crnn(), parse_pipeline(text), PassContext())
