"""Compression passes on the real ddddocr model (skipped when the registry is unreachable)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from ocrc.compiler.ir.verify import verify
from ocrc.compiler.passes import PassContext, parse_pipeline, run_passes
from ocrc.compiler.pipeline import optimize
from ocrc.frontend.onnx_import import import_onnx

pytestmark = pytest.mark.models


def test_ddddocr_structured_groups_and_lowrank(real_model: Callable[[str], Path]) -> None:
    g = optimize(import_onnx(real_model("ddddocr-common"), {"input1": [1, 1, 64, 64]}))
    ctx = PassContext()
    out = run_passes(g, parse_pipeline("prune-structured{sparsity=0.25}"), ctx)
    verify(out)
    spaces = {r.layers: (r.channels, r.removed) for r in ctx.options["reports"]["prune-structured"]}
    assert spaces[("Conv_0", "Conv_11", "Conv_6")] == (24, 6)  # tied by residual adds
    assert spaces[("Conv_35", "Conv_39", "Conv_44", "Conv_49")] == (64, 16)
    lstm = next(n for n in out.nodes if n.op.name == "lstm")
    assert lstm.inputs[1].type.shape == (2, 2048, 384)  # 48 channels x 8 rows of the reshape
    ctx = PassContext()
    run_passes(g, parse_pipeline("lowrank{energy=0.9,ops=dense+lstm}"), ctx)
    rows = {r.layer: r for r in ctx.options["reports"]["lowrank"]}
    assert rows["Gemm_97"].status == "split" and rows["Gemm_97"].ranks[0] % 32 == 0
    assert rows["Gemm_97"].rel_error <= (1 - 0.9) ** 0.5 + 1e-6
