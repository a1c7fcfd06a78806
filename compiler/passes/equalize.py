"""`equalize`: cross-layer equalisation as a float pass (docs/quantization.md §6).

The float graph is prepared (`prepare`: activations that are not clamps split out of conv
epilogues, so that conv -> activation -> conv pairs are visible), then each pair's channels are
rescaled from their ranges on calibration data: conv A's output channel c divided by s_c, conv
B's input channel c multiplied by s_c, a non-homogeneous activation f becoming
mul(s) -> f -> mul(1/s), which `quantize` turns into one per-channel table. The graph computes
the same function (up to float rounding), so the interpreter checks it like any float pass.

`equalize` followed by `quantize` is `quantize{equalize=true}`: run it last among the float
passes (a later float pass may fold the per-channel muls back into the convs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ocrc.compiler.errors import PassError
from ocrc.compiler.ir.graph import Graph
from ocrc.compiler.passes.base import Pass, PassContext, register
from ocrc.compiler.passes.quantize import calibration_data, equalize_prepared
from ocrc.compiler.quant.calibrate import CalibTable
from ocrc.compiler.quant.quantizer import prepare


@register
@dataclass(frozen=True)
class Equalize(Pass):
    """Cross-layer equalisation of conv -> [activation] -> conv pairs from calibration data
    (the context's, or `calib=DIR|FILE.npz|synthetic:N`). Pre: a float graph. Post: the
    prepared float graph with equalised weights and per-channel activation scalings; the same
    function."""

    name: ClassVar[str] = "equalize"
    calib: str = ""

    def run(self, g: Graph, ctx: PassContext) -> Graph:
        prepared = prepare(g)
        data = calibration_data(self.name, self.calib, prepared, ctx)
        if isinstance(data, CalibTable):
            raise PassError("equalize: needs calibration samples, not a ready calibration table")
        return equalize_prepared(prepared, list(data))
