"""Helpers of benchmarks/compression.py: width batching, the RESULTS.md section, channel
moments merged over widths for the calibrated structured row."""

from __future__ import annotations

import numpy as np
from ocrc.compiler.ir import interp
from ocrc.compiler.ir.graph import Builder, Graph
from ocrc.compiler.ir.types import DType, TensorType
from ocrc.compiler.passes import PassContext, parse_pipeline, run_passes

from benchmarks.compression import ROWS, Result, batches, calibration_moments, section


def test_batches_group_by_width_and_pad_singletons() -> None:
    xs = [np.full((1, 1, 2, w), i, np.float32) for i, w in enumerate([4, 8, 4, 6, 4])]
    out = batches(xs, size=2)
    assert [(idx, a.shape) for idx, a in out] == [([0, 2], (2, 1, 2, 4)), ([4], (2, 1, 2, 4)),
                                                  ([3], (2, 1, 2, 6)), ([1], (2, 1, 2, 8))]
    assert (out[1][1] == 4).all()  # the singleton is duplicated


def test_section_lists_every_row() -> None:
    rs = [Result(r.name, r.float_passes, weight_bytes=1000, macs=10**6) for r in ROWS]
    text = section(rs, 90.0, 300, 60.0)
    assert all(r.name in text for r in ROWS) and "54,088,400" in text


class _TwoConvs:
    """A stand-in for benchmarks.compression.Model: conv 3x3 (relu) -> conv 1x1 at any width."""

    name = "x"

    def graph(self, n: int, width: int) -> Graph:
        rng = np.random.default_rng(0)
        b = Builder()
        x = b.input("x", TensorType(DType.F32, (max(n, 2), 2, 4, width)))
        a = b.op("conv", x, b.const(rng.standard_normal((8, 2, 3, 3)).astype(np.float32)),
                 b.const(rng.standard_normal(8).astype(np.float32)), name="a",
                 pads=(1, 1, 1, 1), act="relu", out_name="va")
        y = b.op("conv", a, b.const(rng.standard_normal((3, 8, 1, 1)).astype(np.float32)),
                 None, name="y", out_name="y")
        b.output(y)
        return b.graph


def test_calibration_moments_merge_widths_and_prune_every_width_alike() -> None:
    """The benchmark's channel moments pool the calibration images of every width (a singleton
    width counts twice: `batches` duplicates it), and with them every width's graph loses the
    same filters."""
    rng = np.random.default_rng(1)
    calib = [rng.standard_normal((1, 2, 4, w)).astype(np.float32) for w in (5, 5, 7)]
    model = _TwoConvs()
    got = calibration_moments(model, calib)
    maps = []  # va of every image, [channels, positions]
    for x in calib + calib[2:]:
        seen: dict[str, np.ndarray] = {}
        interp.run(model.graph(2, x.shape[3]), {"x": np.concatenate([x, x])},
                   lambda n, outs: seen.update({v.name: o for v, o in zip(n.outputs, outs)}))
        maps.append(seen["va"][:1].transpose(1, 0, 2, 3).reshape(8, -1))
    m = np.concatenate(maps, axis=1).astype(np.float64)
    mean, cov = got["va"]
    np.testing.assert_allclose(mean, m.mean(1), rtol=1e-6)
    np.testing.assert_allclose(cov, np.cov(m, bias=True), rtol=1e-6, atol=1e-9)
    spec = "prune-structured{sparsity=0.25,criterion=std,compensate=lsq}"
    filters = []
    for w in (5, 7):
        ctx = PassContext(options={"channel_moments": got})  # no calibration samples
        run_passes(model.graph(2, w), parse_pipeline(spec), ctx)
        filters.append(ctx.options["reports"]["prune-structured"][0].filters)
    assert filters[0] == filters[1] and len(filters[0][0][1]) == 2
