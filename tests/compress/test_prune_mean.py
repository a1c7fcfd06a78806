"""prune-structured{compensate=mean}: the pruned graph equals a reference that replaces the
removed channels by their calibration mean (consumers without zero padding: 1x1 and valid
convs, dense, matmul, the LSTM through the CNN-to-RNN reshape; a residual and a depthwise conv
inside a coupled group), given means equal measured ones, and on a BN-folded conv chain mean
replacement beats dropping the channels. compensate=lsq restores a channel that is a linear
function of kept ones."""

from __future__ import annotations

import numpy as np
from ocrc.compiler.compress.groups import analyse
from ocrc.compiler.compress.stats import channel_means
from ocrc.compiler.ir import interp
from ocrc.compiler.ir.graph import Builder, Graph, Node
from ocrc.compiler.ir.types import DType, TensorType
from ocrc.compiler.ir.verify import verify
from ocrc.compiler.passes import PassContext, parse_pipeline, run_passes

SHAPE = (1, 4, 6, 8)


def _unpadded() -> Graph:
    """conv 3x3 -> 1x1 conv without bias (residual) -> depthwise 3x3 -> 1x1 conv -> valid 3x3
    conv -> transpose/reshape -> LSTM (no bias) -> dense; a matmul also reads the reshape."""
    rng = np.random.default_rng(3)
    b = Builder()
    x = b.input("x", TensorType(DType.F32, SHAPE))
    w = lambda *s: b.const((rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32))
    bias = lambda k: b.const(rng.uniform(0.2, 1.0, k).astype(np.float32))
    a = b.op("conv", x, w(8, 4, 3, 3), bias(8), name="a", pads=(1, 1, 1, 1), act="relu",
             out_name="va")
    c = b.op("conv", a, w(8, 8, 1, 1), None, a, name="c", act="relu", out_name="vc")
    d = b.op("conv", c, w(8, 1, 3, 3), bias(8), name="dw", pads=(1, 1, 1, 1), group=8,
             act="relu", out_name="vd")
    e = b.op("conv", d, w(6, 8, 1, 1), bias(6), name="e", act="relu", out_name="ve")
    f = b.op("conv", e, w(4, 6, 3, 3), bias(4), name="f", strides=(2, 1), act="relu",
             out_name="vf")  # [1, 4, 2, 6]
    t = b.op("transpose", f, perm=(3, 0, 1, 2), out_name="vt")  # [6, 1, 4, 2]
    r = b.op("reshape", t, shape=(6, 1, 8), out_name="vr")
    y, _, _ = b.emit("lstm", (r, w(2, 32, 8), w(2, 32, 8)),
                     {"hidden_size": 8, "direction": "bidirectional"}, name="lstm",
                     out_names=("vy",))
    yr = b.op("reshape", y, shape=(6, 1, 16), out_name="vyr")
    out = b.op("dense", yr, w(5, 16), bias(5), name="fc", out_name="logits")
    mm = b.op("matmul", r, w(8, 3), name="mm", out_name="side")
    b.output(out, mm)
    return b.graph


def _inputs(seed: int, n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal(SHAPE).astype(np.float32)} for _ in range(n)]


def _replaced_reference(g: Graph, rows, calib) -> dict:
    """For every MAC input losing channels: (axis, removed indices, calibration means)."""
    ch = analyse(g)
    by_name = {n.name: n for n in g.nodes}
    removed = [i for i, (n, j) in ch.sources.items()
               for r in rows for layer, js in r.filters if n is by_name[layer] and j in js]
    want = {}
    for n in g.nodes:
        if n.op.name in ("conv", "dense", "lstm", "matmul") and not (
                n.op.name == "conv" and n.attr("group") > 1):
            v = n.inputs[0]
            ids = ch.channel_ids(v)
            if ids is not None and np.isin(ids, removed).any():
                want[v] = 1 if n.op.name == "conv" else v.type.rank - 1
    sums = {v: 0.0 for v in want}
    for s in calib:
        def hook(n: Node, outs: list[np.ndarray]) -> None:
            for v, a in zip(n.outputs, outs):
                if v in want:
                    sums[v] = sums[v] + np.moveaxis(a, want[v], 0).reshape(
                        a.shape[want[v]], -1).mean(1) / len(calib)
        interp.run(g, s, hook)
    return {v: (want[v], np.flatnonzero(np.isin(ch.channel_ids(v), removed)), sums[v])
            for v in want}


def test_mean_equals_the_replaced_reference() -> None:
    g = _unpadded()
    calib = _inputs(1, 4)
    ctx = PassContext(options={"calibration": calib})
    out = run_passes(g, parse_pipeline("prune-structured{sparsity=0.25}"), ctx)
    verify(out)
    rows = ctx.options["reports"]["prune-structured"]
    assert [(r.layers, r.channels, r.removed) for r in rows] == [
        (("a", "c"), 8, 2), (("e",), 6, 1), (("f",), 4, 1)]
    c = next(n for n in out.nodes if n.name == "c")
    assert c.inputs[2] is not None  # the bias-less consumer got one
    lstm = next(n for n in out.nodes if n.op.name == "lstm")
    assert lstm.inputs[1].type.shape == (2, 32, 6) and lstm.inputs[3].type.shape == (2, 64)
    repl = _replaced_reference(g, rows, calib)
    assert {v.name for v in repl} == {"va", "vd", "ve", "vr"}

    def hook(n: Node, outs: list[np.ndarray]) -> None:
        for v, a in zip(n.outputs, outs):
            if v in repl:
                ax, lost, m = repl[v]
                view = np.moveaxis(a, ax, 0)
                view[lost] = m[lost].reshape((-1,) + (1,) * (a.ndim - 1))

    for x in _inputs(2, 2):
        got = interp.run(out, x)
        ref = interp.run(g, x, hook)
        for k in ("logits", "side"):
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-4, atol=1e-5)
    # The same statistics given by name (e.g. merged over input shapes) give the same graph.
    means = {v.name: m for v, m in channel_means(g, calib).items()}
    ctx2 = PassContext(options={"channel_means": means})
    out2 = run_passes(g, parse_pipeline("prune-structured{sparsity=0.25}"), ctx2)
    x = _inputs(2, 1)[0]
    np.testing.assert_allclose(interp.run(out2, x)["logits"], interp.run(out, x)["logits"],
                               rtol=1e-5, atol=1e-6)


def _bn_folded_chain() -> Graph:
    """conv 3x3 whose folded BN shift dominates (channels near-constant maps) -> relu ->
    conv 3x3 (padded: mean replacement is inexact at the border) -> conv 1x1 (the output)."""
    rng = np.random.default_rng(7)
    b = Builder()
    x = b.input("x", TensorType(DType.F32, (1, 3, 10, 10)))
    gamma = rng.uniform(0.05, 1.0, 16)  # BN scale folded into the weights
    w0 = rng.standard_normal((16, 3, 3, 3)) * 0.2 * gamma[:, None, None, None]
    b0 = rng.uniform(0.5, 2.0, 16)  # BN shift: large next to the signal
    a = b.op("conv", x, b.const(w0.astype(np.float32)), b.const(b0.astype(np.float32)),
             name="c0", pads=(1, 1, 1, 1), act="relu")
    w1 = rng.standard_normal((12, 16, 3, 3)) / 12
    h = b.op("conv", a, b.const(w1.astype(np.float32)), b.const(np.zeros(12, np.float32)),
             name="c1", pads=(1, 1, 1, 1), act="relu")
    w2 = rng.standard_normal((4, 12, 1, 1)) / 4
    y = b.op("conv", h, b.const(w2.astype(np.float32)), None, name="c2", out_name="y")
    b.output(y)
    return b.graph


def test_mean_replacement_reduces_the_error_on_a_bn_folded_chain() -> None:
    g = _bn_folded_chain()
    rng = np.random.default_rng(11)
    calib = [{"x": rng.standard_normal((1, 3, 10, 10)).astype(np.float32)} for _ in range(4)]
    test = [{"x": rng.standard_normal((1, 3, 10, 10)).astype(np.float32)} for _ in range(4)]
    err = {}
    for mode in ("none", "mean"):
        ctx = PassContext(options={"calibration": calib})
        out = run_passes(g, parse_pipeline(f"prune-structured{{sparsity=0.25,compensate={mode}}}"),
                         ctx)
        err[mode] = float(np.mean([np.abs(interp.run(out, s)["y"] - interp.run(g, s)["y"]).mean()
                                   for s in test]))
    assert err["mean"] < 0.3 * err["none"], err


def test_default_falls_back_to_none_without_matching_samples() -> None:
    g = _unpadded()
    wrong = [{"x": np.zeros((1, 4, 6, 9), np.float32)}]
    out = run_passes(g, parse_pipeline("prune-structured{sparsity=0.25}"),
                     PassContext(options={"calibration": wrong}))
    ref = run_passes(g, parse_pipeline("prune-structured{sparsity=0.25,compensate=none}"),
                     PassContext())
    x = _inputs(2, 1)[0]
    np.testing.assert_array_equal(interp.run(out, x)["logits"], interp.run(ref, x)["logits"])


def _redundant() -> Graph:
    """conv a (relu) whose filter 0 is 0.1 x filter 1 (so its map is 0.1 x map 1: the weakest
    filter, and an exact linear function of a kept channel) -> 1x1 conv -> dense."""
    rng = np.random.default_rng(5)
    b = Builder()
    x = b.input("x", TensorType(DType.F32, (1, 3, 5, 5)))
    w0 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b0 = rng.uniform(0.1, 0.5, 4).astype(np.float32)
    w0[0], b0[0] = 0.1 * w0[1], 0.1 * b0[1]
    a = b.op("conv", x, b.const(w0), b.const(b0), name="a", pads=(1, 1, 1, 1), act="relu")
    w1 = rng.standard_normal((3, 4, 1, 1)).astype(np.float32)
    y = b.op("conv", a, b.const(w1), None, name="y", out_name="y")
    b.output(y)
    return b.graph


def test_lsq_restores_a_linearly_redundant_channel() -> None:
    g = _redundant()
    rng = np.random.default_rng(6)
    calib = [{"x": rng.standard_normal((1, 3, 5, 5)).astype(np.float32)} for _ in range(4)]
    x = {"x": rng.standard_normal((1, 3, 5, 5)).astype(np.float32)}
    ref = interp.run(g, x)["y"]
    err = {}
    for mode in ("mean", "lsq"):
        ctx = PassContext(options={"calibration": calib})
        out = run_passes(g, parse_pipeline(f"prune-structured{{layers=a:0.25,compensate={mode}}}"),
                         ctx)
        verify(out)
        assert ctx.options["reports"]["prune-structured"][0].filters == (("a", (0,)),)
        err[mode] = float(np.abs(interp.run(out, x)["y"] - ref).max())
    assert err["lsq"] < 1e-2 * err["mean"], err  # not 0: the fit's small ridge


def test_std_and_lsq_from_moments_merged_over_calls_equal_calibration() -> None:
    """Moments summed over two batches of samples (as over graphs of several input shapes),
    given as channel_moments without calibration data, prune and compensate like the samples."""
    from ocrc.compiler.compress.stats import moment_sums, moments
    from ocrc.compiler.passes.prune_structured import PruneStructured

    g = _unpadded()
    calib = _inputs(1, 4)
    acc = moment_sums(g, calib[:1], PruneStructured.statistics_axes(g))
    moment_sums(g, calib[1:], PruneStructured.statistics_axes(g), acc)
    spec = "prune-structured{sparsity=0.25,criterion=std,compensate=lsq}"
    ctx = PassContext(options={"calibration": calib})
    ref = run_passes(g, parse_pipeline(spec), ctx)
    ctx2 = PassContext(options={"channel_moments": moments(acc)})
    out = run_passes(g, parse_pipeline(spec), ctx2)
    verify(out)
    assert [r.filters for r in ctx2.options["reports"]["prune-structured"]] == \
        [r.filters for r in ctx.options["reports"]["prune-structured"]]
    x = _inputs(9, 1)[0]
    np.testing.assert_allclose(interp.run(out, x)["logits"], interp.run(ref, x)["logits"],
                               rtol=1e-4, atol=1e-5)


def test_mean_from_channel_moments_equals_calibration() -> None:
    """compensate=mean (explicit, and the default) takes the means within channel_moments when
    no channel_means are given: the same graph as measuring them on the samples."""
    from ocrc.compiler.compress.stats import moment_sums, moments
    from ocrc.compiler.passes.prune_structured import PruneStructured

    g = _unpadded()
    calib = _inputs(1, 4)
    given = moments(moment_sums(g, calib, PruneStructured.statistics_axes(g)))
    ref = run_passes(g, parse_pipeline("prune-structured{sparsity=0.25,compensate=mean}"),
                     PassContext(options={"calibration": calib}))
    x = _inputs(9, 1)[0]
    for spec in ("prune-structured{sparsity=0.25,compensate=mean}",
                 "prune-structured{sparsity=0.25}"):
        out = run_passes(g, parse_pipeline(spec), PassContext(options={"channel_moments": given}))
        verify(out)
        np.testing.assert_allclose(interp.run(out, x)["logits"], interp.run(ref, x)["logits"],
                                   rtol=1e-4, atol=1e-5)
