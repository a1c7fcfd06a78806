"""The real OCR recognisers through the backend (marked `models`: they need the fetched
packages): compile for the default NPU, run on the VM, bit-exact with the interpreter."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ocrc.compiler.pipeline import optimize
from ocrc.frontend.onnx_import import import_onnx
from ocrc.runtime.target import load_target
from tests.backend.helpers import check_exact, quantise


@pytest.mark.models
@pytest.mark.parametrize("name,shapes", [
    ("ddddocr-common", {"input1": (1, 1, 64, 160)}),
    ("ppocr-v2-rec", {"x": (1, 3, 32, 320)}),
])
def test_real_model_bit_exact(name: str, shapes: dict, real_model: Callable[[str], Path]) -> None:
    qg = quantise(optimize(import_onnx(real_model(name), shapes)))
    res, stats = check_exact(qg, load_target("npu"))
    assert res.program.n_insns > 1000 and stats.macs > 5e8
    assert abs(res.estimate / stats.total_cycles - 1) < 0.10


@pytest.mark.models
def test_ddddocr_int16_bit_exact(real_model: Callable[[str], Path]) -> None:
    """ddddocr with every activation but the LSTM's in int16: bit-exact on the VM, and the
    int16 MACs at the target's int16 rate make it slower than int8."""
    g = optimize(import_onnx(real_model("ddddocr-common"), {"input1": (1, 1, 64, 160)}))
    res, stats = check_exact(quantise(g, int16="all"), load_target("npu"))
    assert abs(res.estimate / stats.total_cycles - 1) < 0.10
    assert stats.total_cycles > 6_000_000  # int8: ~6.6 M cycles
