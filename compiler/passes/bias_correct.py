"""`bias-correct`: sequential empirical bias correction as a pass on the int8 graph
(docs/quantization.md §6).

In graph order, each qconv/qdense int32 bias absorbs its output's mean per-channel error
against the float model on calibration data, measured on the int8 model whose earlier layers
are already corrected (compiler/quant/bias_correction.py). The float model and the
quantisation parameters come from the `quantize` pass earlier in the same pipeline
(ctx.options['quant_result'], ['quant_float_graph']); `quantize` followed by `bias-correct` is
`quantize{bias_correction=true}`. Only bias constants change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ocrc.compiler.errors import PassError
from ocrc.compiler.ir.graph import Graph
from ocrc.compiler.passes.base import Pass, PassContext, register
from ocrc.compiler.passes.quantize import EQ_SAMPLES, calibration_data, write_report
from ocrc.compiler.quant.bias_correction import bias_correct
from ocrc.compiler.quant.calibrate import CalibTable
from ocrc.compiler.quant.checks import verify_quantized


@register
@dataclass(frozen=True)
class BiasCorrect(Pass):
    """Correct the int8 biases of the graph `quantize` produced earlier in this pipeline from
    calibration data (the context's, or `calib=DIR|FILE.npz|synthetic:N`). Pre: the input is
    that pass's result (not a graph read from a file or changed since). Post: the same graph
    with corrected qconv/qdense biases; `verify_quantized` holds."""

    name: ClassVar[str] = "bias-correct"
    calib: str = ""

    def run(self, g: Graph, ctx: PassContext) -> Graph:
        res, fg = ctx.options.get("quant_result"), ctx.options.get("quant_float_graph")
        if res is None or fg is None or res.graph is not g:
            raise PassError("bias-correct: needs the int8 graph of a `quantize` pass earlier in "
                            "the same pipeline, unchanged since (e.g. -p 'quantize,bias-correct')")
        data = calibration_data(self.name, self.calib, fg, ctx)
        if isinstance(data, CalibTable):
            raise PassError("bias-correct: needs calibration samples, not a ready calibration "
                            "table")
        samples = list(data)
        res = bias_correct(fg, res, samples[:EQ_SAMPLES])
        verify_quantized(res.graph)
        ctx.options["quant_result"] = res
        write_report(ctx, res, samples)
        return res.graph
