"""Shared by the pass tests: tolerances, an instrument that checks the interpreter's numbers
after every pass, and a graph exercising every pattern of the float pipeline."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import numpy as np

from ocrc.compiler.ir import Builder, DType, Graph, TensorType, run
from ocrc.compiler.passes import Instrument, Pass

# Float passes change rounding (folded BN weights, x / c -> x * (1/c), hard-swish spellings),
# so before/after agree within RTOL of the output's largest magnitude; structural passes
# (EXACT) must agree bit for bit.
RTOL = 1e-5
EXACT = ("fold-pad",)
F32 = DType.F32


def assert_close(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray], rtol: float,
                 what: str) -> float:
    """Every output within rtol * max|want| (exact when rtol is 0); returns the worst ratio."""
    assert list(got) == list(want), f"{what}: outputs {list(got)} != {list(want)}"
    worst = 0.0
    for name, w in want.items():
        g = got[name]
        assert g.shape == w.shape and g.dtype == w.dtype, f"{what}: {name} {g.shape} {w.shape}"
        scale = float(np.max(np.abs(w))) or 1.0
        err = float(np.max(np.abs(g.astype(np.float64) - w))) / scale if w.size else 0.0
        worst = max(worst, err)
        assert err <= rtol, f"{what}: output {name} differs by {err:.3g} (relative), > {rtol}"
    return worst


class CompareEachPass(Instrument):
    """Runs the interpreter after every pass and compares with the pipeline input's outputs."""

    def __init__(self, reference: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray],
                 rtol: float = RTOL) -> None:
        self.reference, self.inputs, self.rtol = reference, inputs, rtol
        self.previous = reference
        self.errors: list[tuple[str, float]] = []

    def after_pass(self, index: int, p: Pass, g: Graph, seconds: float) -> None:
        out = run(g, self.inputs)
        if p.name in EXACT:
            assert_close(out, self.previous, 0.0, f"after {p.spec()} (vs its input)")
        err = assert_close(out, self.reference, self.rtol, f"after {p.spec()}")
        self.errors.append((p.spec(), err))
        self.previous = out


def op_counts(g: Graph) -> Counter[str]:
    return Counter(n.op.name for n in g.nodes if n.op.name != "const")


def pattern_zoo(seed: int = 0) -> tuple[Graph, dict[str, np.ndarray]]:
    """A small CRNN-like graph using every spelling the float pipeline rewrites."""
    rng = np.random.default_rng(seed)
    b = Builder()
    x = b.input("image", TensorType(F32, (1, 3, 8, 12)))

    def w(*shape: int) -> object:
        fan = int(np.prod(shape[1:])) or 1
        return b.const((rng.standard_normal(shape) / np.sqrt(fan)).astype(np.float32))

    def bn(v: object, c: int) -> object:
        p = [rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c),
             rng.uniform(0.5, 1.5, c)]
        return b.op("batch_norm", v, *(b.const(a) for a in p), epsilon=1e-5)

    def scalar(v: float) -> object:
        return b.const(np.float32(v))

    p0 = b.op("pad", x, pads=(0, 0, 1, 1, 0, 0, 1, 1))
    c0 = bn(b.op("conv", p0, w(8, 3, 3, 3)), 8)  # pad -> conv -> BN -> hard-swish (div)
    h = b.op("div", b.op("mul", c0, b.op("clip", b.op("add", c0, scalar(3)), min=0.0, max=6.0)),
             scalar(6))
    d = bn(b.op("conv", h, w(8, 1, 3, 3), pads=(1, 1, 1, 1), group=8), 8)
    s = b.op("mul", d, b.op("sigmoid", d))  # depthwise -> BN -> SiLU
    r = b.op("conv", s, w(8, 8, 1, 1), b.const(rng.normal(0, 0.1, 8).astype(np.float32)))
    r = b.op("relu", b.op("add", s, r))  # residual, then relu
    se = b.op("global_avg_pool", r)  # squeeze-excite with an exporter's reshaped bias
    se = b.op("relu", b.op("add", b.op("conv", se, w(4, 8, 1, 1)),
                           b.op("reshape", b.const(rng.normal(0, .1, 4).astype(np.float32)),
                                shape=(1, 4, 1, 1))))
    se = b.op("hard_sigmoid", b.op("conv", se, w(8, 4, 1, 1)), alpha=float(np.float32(0.1666667)),
              beta=0.5)
    r = b.op("mul", r, se)
    m = b.op("max_pool", b.op("pad", r, pads=(0, 0, 0, 0, 0, 0, 0, 1), value=float("-inf")),
             kernel_shape=(2, 2), strides=(2, 2))  # [1, 8, 4, 6]
    a = b.op("avg_pool", b.op("pad", m, pads=(0, 0, 1, 1, 0, 0, 1, 1)), kernel_shape=(3, 3))
    t = bn(b.op("conv_transpose", a, w(8, 4, 1, 2), strides=(1, 1)), 4)  # [1, 4, 4, 7]
    t = b.op("leaky_relu", t, alpha=0.1)
    f = b.op("conv", bn(t, 4), w(6, 4, 4, 1))  # BN folded forward into an unpadded conv
    f = b.op("mul", f, b.const(rng.uniform(0.5, 2, (1, 6, 1, 1)).astype(np.float32)))
    seq = b.op("reshape", f, shape=(1, 6, 7))  # bridge: squeeze, transpose chain
    seq = b.op("transpose", b.op("transpose", seq, perm=(0, 2, 1)), perm=(1, 0, 2))  # [7,1,6]
    seq = b.op("sub", seq, scalar(0.25))
    y = b.op("matmul", b.op("reshape", seq, shape=(7, 6)), b.const(
        rng.standard_normal((6, 5)).astype(np.float32)))
    y = b.op("reshape", b.op("add", y, b.const(rng.normal(0, 1, 5).astype(np.float32))),
             shape=(7, 1, 5))
    b.output(b.op("softmax", b.op("div", y, scalar(2.0)), axis=2, out_name="probs"))
    inputs = {"image": rng.standard_normal((1, 3, 8, 12)).astype(np.float32)}
    return b.graph, inputs
