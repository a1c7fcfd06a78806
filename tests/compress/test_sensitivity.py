"""Sensitivity sweeps, the cached evaluator, metrics and the greedy budget choice."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ocrc.compiler.compress import sensitivity as S
from ocrc.compiler.compress.evaluate import Evaluator
from ocrc.compiler.compress.metrics import agreement_metric, custom_metric, get_metric
from ocrc.compiler.compress.sites import weight_sites
from ocrc.compiler.errors import PassError
from ocrc.compiler.ir import interp
from ocrc.compiler.passes import PassContext, parse_pipeline, run_passes

from tests.compress.tiny import inputs, tiny_crnn


def test_evaluator_equals_full_runs() -> None:
    g = tiny_crnn()
    samples = inputs(n=2)
    variants = [run_passes(g, parse_pipeline(t), PassContext()) for t in
                ("prune{layers=fc:0.5}", "prune{layers=conv2:0.5}",
                 "lowrank{layers=fc:4,multiple=1}")]
    ev = Evaluator(g, samples)
    ev.prepare(variants)
    for v in variants:
        for s, outs in zip(samples, ev.outputs(v)):
            np.testing.assert_array_equal(outs[0], interp.run(v, s)["logits"])


def test_metrics() -> None:
    a = np.zeros((3, 2, 4), np.float32)
    a[:, 0, 1] = 1  # sequence [1] for batch 0
    a[:, 1, [2, 0, 2]] = 1  # [2, 2] for batch 1
    b = a.copy()
    b[1, 1] = 0
    b[1, 1, 2] = 1  # [2] for batch 1
    agree = agreement_metric()
    assert agree.score([[a]], [[a]]) == 100.0
    assert agree.score([[a]], [[b]]) == 50.0
    cos = get_metric("cosine")
    assert cos.score([[a]], [[a]]) == pytest.approx(100.0)
    sq = get_metric("sqnr")
    assert math.isinf(sq.score([[a]], [[a]])) and sq.loss(0, math.inf) == 0.0
    assert custom_metric("n", lambda outs: len(outs)).score([], [[a], [a]]) == 2
    with pytest.raises(PassError, match="metric 'bleu'"):
        get_metric("bleu")


def test_sweep_and_choose_respect_the_budget() -> None:
    g = tiny_crnn()
    work = [(g, inputs(n=4))]
    metric = get_metric("cosine")
    cands = S.candidates(g, weight_sites(g), int16=True, multiple=1)
    kinds = {c.kind for c in cands}
    assert {"none", "prune", "nm", "lowrank", "int8", "int16"} <= kinds
    sw = S.sweep(work, cands, metric)
    assert len(sw.results) == len(cands)
    assert all(r.loss == 0 for r in sw.results if r.setting.kind == "none")
    for budget in (0.05, 1.0):
        pick, loss = S.choose(work, sw, metric, budget)
        assert loss <= budget
        assert S.joint_loss(work, pick, metric) == pytest.approx(loss)
    tight, _ = S.choose(work, sw, metric, 0.05)
    loose, _ = S.choose(work, sw, metric, 1.0)
    assert S._bytes(sw, loose) <= S._bytes(sw, tight)
    text = S.settings_pipeline(loose)
    out = run_passes(g, parse_pipeline(text), PassContext())
    assert out is not None and text


def test_compress_auto_pass_reports_its_pipeline() -> None:
    ctx = PassContext(options={"calibration": inputs(n=4)})
    run_passes(tiny_crnn(), parse_pipeline("compress-auto{budget=0.5,metric=cosine,lowrank=true,"
                                           "nm=true,multiple=1}"), ctx)
    rep = ctx.options["reports"]["compress-auto"]
    assert rep["loss"] <= 0.5 and isinstance(rep["pipeline"], str)


@pytest.mark.parametrize("text,match", [
    ("compress-auto{metric=bleu}", "metric='bleu'"),
    ("compress-auto{prune=false}", "enable at least one"),
    ("compress-auto{sparsities=0.5+1.5}", "must be in \\(0, 1\\)"),
    ("compress-auto{budget=1}", "needs calibration data"),
])
def test_bad_specs(text: str, match: str) -> None:
    with pytest.raises(PassError, match=match):
        run_passes(tiny_crnn(), parse_pipeline(text), PassContext())
