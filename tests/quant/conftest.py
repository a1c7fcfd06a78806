"""Fixtures of the quantisation tests: the demo graph (helpers.py) quantised once."""

from __future__ import annotations

import pytest

from ocrc.compiler.quant import QuantResult, calibrate, prepare, quantize_graph
from tests.quant.helpers import demo_graph, demo_samples


@pytest.fixture(scope="session")
def quantized_demo() -> QuantResult:
    g = prepare(demo_graph())
    return quantize_graph(g, calibrate(g, demo_samples(6), progress=False))
