"""DC-preserving conv weight rounding (compiler/quant/rounding.py): properties of the codes,
the quantiser's grid recovered exactly, the pass option and the CLI flag."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocrc.compiler.errors import PassError
from ocrc.compiler.ir import Builder, DType, Graph, TensorType, run
from ocrc.compiler.passes import PassContext, run_passes
from ocrc.compiler.pipeline import build_pipeline
from ocrc.compiler.quant import calibrate, prepare, quantize_graph
from ocrc.compiler.quant.qparams import quantize_weights
from ocrc.compiler.quant.rounding import dc_round, dc_rounding, dc_weights


def grid(w: np.ndarray) -> np.ndarray:
    amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1).astype(np.float64)
    return np.where(amax > 0, amax / 127.0, 1.0).reshape(-1, 1, 1, 1)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 4), st.sampled_from([(3, 3), (5, 5), (1, 3)]),
       st.integers(0, 2**31 - 1), st.floats(-0.5, 0.5))
def test_codes_keep_slice_sums(m: int, c: int, k: tuple[int, int], seed: int,
                               bias: float) -> None:
    w = (np.random.default_rng(seed).standard_normal((m, c, *k)) + bias).astype(np.float32)
    q = dc_round(w)
    r = np.asarray(w, np.float64) / grid(w)
    near = np.clip(np.rint(r), -127, 127)
    assert np.abs(q - near).max() <= 1  # one code from nearest at most
    assert np.abs(q.astype(int)).max() <= 127
    # each (output, input) slice sums to the rounded real sum (reachable here: no saturation)
    np.testing.assert_array_equal(q.sum(axis=(2, 3)), np.rint(r.sum(axis=(2, 3))))
    # the channel's largest tap keeps +-127, so quantize_weights recovers q from q * s exactly
    wq = (q.astype(np.float64) * grid(w)).astype(np.float32)
    q2, _ = quantize_weights(wq)
    np.testing.assert_array_equal(q2, q)


def test_nearest_already_exact_is_unchanged() -> None:
    w = np.array([[[[127.0, -3.0], [2.0, 1.0]]]], np.float32)  # integer codes: sums exact
    np.testing.assert_array_equal(dc_round(w), w.astype(np.int8))


def block() -> Graph:
    """3x3 depthwise conv with near-zero-sum kernels, then a 1x1 conv (left alone)."""
    rng = np.random.default_rng(2)
    w1 = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    w1 -= w1.mean(axis=(2, 3), keepdims=True)
    b = Builder()
    x = b.input("x", TensorType(DType.F32, (1, 4, 8, 8)))
    c1 = b.op("conv", x, b.const(w1, "w1"), group=4, pads=(1, 1, 1, 1), out_name="c1")
    w2 = rng.standard_normal((3, 4, 1, 1)).astype(np.float32)
    b.output(b.op("conv", c1, b.const(w2, "w2"), out_name="y"))
    return b.graph


def flat_samples(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": (1.0 + 0.01 * rng.standard_normal((1, 4, 8, 8))).astype(np.float32)}
            for _ in range(n)]


def test_flat_input_error_shrinks() -> None:
    """On a near-constant input the int8 model's error is the kernels' DC error: DC-preserving
    rounding reduces it; only the 3x3 weights change."""
    g = prepare(block())
    assert set(dc_weights(g)) == {"w1"}
    errs = {}
    for name, fg in (("nearest", g), ("dc", dc_rounding(g))):
        q = quantize_graph(fg, calibrate(fg, flat_samples(4), progress=False)).graph
        errs[name] = np.mean([np.abs(run(g, s)["y"] - run(q, s)["y"]).mean()
                              for s in flat_samples(3, seed=5)])
    assert errs["dc"] < errs["nearest"]


def test_pass_option_and_exclusive_with_gptq() -> None:
    ctx = PassContext(options={"calibration": flat_samples(4)})
    out = run_passes(block(), build_pipeline("quantize{dc_rounding=true}"), ctx)
    assert any(n.op.name == "qconv" for n in out.nodes)
    with pytest.raises(PassError, match="gptq and dc_rounding"):
        run_passes(block(), build_pipeline("quantize{dc_rounding=true,gptq=true}"),
                   PassContext(options={"calibration": flat_samples(4)}))
