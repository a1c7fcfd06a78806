"""`prepare`'s decomposition on onnx's light models: inception_v1 (LRN) and inception_v2 (batch
norms that stay `affine`: with the shipped constant weights CSE merges identical convs, so their
batch norms cannot fold). Weights randomised after `optimize` (the shipped ones are all 0.02 and
make every channel equal), inputs scaled to 0..255 so that LRN's denominator is far from its bias.
"""

from __future__ import annotations

import numpy as np
import pytest
from ocrc.compiler.backend.codegen import compile_program
from ocrc.compiler.backend.host import run_program
from ocrc.compiler.ir import Graph, run
from ocrc.compiler.pipeline import optimize
from ocrc.compiler.quant import calibrate, prepare, quantize_graph
from ocrc.frontend import import_onnx, zoo
from ocrc.runtime.target import load_target

from tests.passes.helpers import assert_close
from tests.passes.test_passes_on_models import randomized

GAIN = 255.0


def logits(g: Graph) -> Graph:
    """`g` without its trailing softmax (random weights saturate it; compare the logits)."""
    last = g.nodes[-1]
    if last.op.name != "softmax":
        return g
    return Graph(list(g.inputs), list(g.nodes[:-1]), [last.inputs[0]], g.name)


@pytest.mark.parametrize("name,op", [("inception_v1", "lrn"), ("inception_v2", "affine")])
def test_light_model_decomposed_quantised_bit_exact(name: str, op: str) -> None:
    case = zoo.light_model_case(name)
    g = optimize(import_onnx(case.path, {k: v.shape for k, v in case.inputs.items()}))
    g = logits(randomized(g, seed=3))
    assert op in {n.op.name for n in g.nodes}
    p = prepare(g)
    assert not {"affine", "lrn"} & {n.op.name for n in p.nodes}
    rng = np.random.default_rng(4)
    xs = [{v.name: (GAIN * rng.random(v.type.shape)).astype(np.float32) for v in g.inputs}
          for _ in range(3)]
    assert_close(run(p, xs[0]), run(g, xs[0]), 1e-4, f"{name} decomposed")
    qg = quantize_graph(p, calibrate(p, xs[1:], progress=False)).graph
    (f,), (q,) = run(p, xs[0]).values(), run(qg, xs[0]).values()
    sqnr = 10 * np.log10(np.sum(f.astype(np.float64) ** 2) / np.sum((q - f) ** 2))
    assert sqnr > 20.0, f"{name}: int8 SQNR {sqnr:.1f} dB"
    raw, _ = run_program(compile_program(qg, load_target("npu"), name).program, xs[0])
    for out, want in run(qg, xs[0]).items():
        np.testing.assert_array_equal(raw[out], want, err_msg=f"{name} output {out} on npu")


def test_prepared_values_have_distinct_names() -> None:
    """Calibration keys ranges by value name: the lrn steps must not share one (unnamed) range."""
    case = zoo.light_model_case("inception_v1")
    p = prepare(optimize(import_onnx(case.path, {k: v.shape for k, v in case.inputs.items()})))
    names = [v.name for n in p.nodes if n.op.name != "const" for v in n.outputs]
    assert all(names) and len(set(names)) == len(names)
