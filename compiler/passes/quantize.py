"""`quantize`: float IR -> the int8 IR of docs/quantization.md (the golden int8 model).

Calibration data come from the PassContext (`ctx.options["calibration"]`: an iterable of input
dicts or a ready CalibTable; the CLI's `--calib` fills it) or from the `calib` option (a
directory of .npy files, an .npz, or `synthetic:N` for N seeded standard-normal samples, meant
for tests). The pass prepares, calibrates, rewrites, then checks `verify_quantized`. It leaves
the QuantResult and the prepared float graph in `ctx.options` for reports and exporters, and
writes the per-layer report when `ctx.options["quant_report"]` names a file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ocrc.compiler.errors import PassError
from ocrc.compiler.ir.graph import Graph
from ocrc.compiler.passes.base import Pass, PassContext, register
from ocrc.compiler.quant.calibrate import CalibTable, calibrate, load_calibration_set
from ocrc.compiler.quant.bias_correction import bias_correct
from ocrc.compiler.quant.checks import verify_quantized
from ocrc.compiler.quant.equalize import channel_absmax, equalize
from ocrc.compiler.quant.gptq import gptq
from ocrc.compiler.quant.mixed import DEFAULT_RATE, DEFAULT_THRESHOLD, parse_int16, select_int16
from ocrc.compiler.quant.observers import DEFAULT_PERCENTILE, METHODS
from ocrc.compiler.quant.layer_methods import parse_layer_methods, resolve_layer_methods
from ocrc.compiler.quant.quantizer import QuantResult, prepare, quantize_graph
from ocrc.compiler.quant.report import quant_report

log = logging.getLogger(__name__)
REPORT_SAMPLES = 8  # calibration samples the --quant-report compares on
EQ_SAMPLES = 16  # calibration samples for equalisation statistics and bias correction


def synthetic_samples(g: Graph, n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """n seeded standard-normal input dicts for `g` (tests and IR-level experiments)."""
    rng = np.random.default_rng(seed)
    return [{v.name: rng.standard_normal(v.type.shape).astype(v.type.dtype.np)
             for v in g.inputs} for _ in range(n)]


@register
@dataclass(frozen=True)
class Quantize(Pass):
    """Rewrite a float graph into int8 ops with explicit scales, zero points, multipliers and
    tables. Pre: conv/dense epilogues hold only activations of ACTIVATIONS (fused prelu is
    rejected). Post: `verify_quantized` holds; a trailing softmax stays float after the output
    dequantize. Fails with QuantizeError naming a layer it cannot represent."""

    name: ClassVar[str] = "quantize"
    method: str = "minmax"  # activation ranges: minmax, percentile, entropy, mse
    percentile: float = DEFAULT_PERCENTILE
    # per-layer range methods over `method`: 'LAYER:METHOD+LAYER:METHOD' (layer or value names)
    layer_methods: str = ""
    calib: str = ""
    equalize: bool = False  # cross-layer equalisation with per-channel tables (helps PP-OCR)
    bias_correction: bool = False  # sequential empirical per-channel bias correction
    gptq: bool = False  # error-feedback (GPTQ) rounding of the int8 weights
    gptq_center: bool = True  # centred GPTQ, the mean error into the bias (compiler/quant/gptq.py)
    # Mixed precision (docs/quantization.md §8): none, all, auto or LAYER+LAYER; auto promotes
    # the layers whose single-mode SQNR is below int16_threshold dB, cheapest first, while the
    # MAC cycles stay within 1 + int16_budget times the all-int8 ones (costed at int16_rate).
    int16: str = "none"
    int16_threshold: float = DEFAULT_THRESHOLD
    int16_budget: float = float("inf")
    int16_rate: float = DEFAULT_RATE

    def run(self, g: Graph, ctx: PassContext) -> Graph:
        if self.method not in METHODS:
            raise PassError(f"quantize: method {self.method!r} is not one of "
                            f"{', '.join(METHODS)}")
        parse_int16(self.int16)  # a bad spec fails before calibration
        prepared = prepare(g)
        methods = parse_layer_methods(self.layer_methods)
        resolve_layer_methods(prepared, methods)  # so does an unknown layer name
        data = calibration_data(self.name, self.calib, prepared, ctx)
        samples = None if isinstance(data, CalibTable) else list(data)
        if (self.equalize or self.bias_correction or self.gptq) and samples is None:
            raise PassError("quantize: equalize/bias_correction/gptq need calibration samples, "
                            "not a ready calibration table")
        if self.equalize and samples is not None:
            prepared = equalize_prepared(prepared, samples)
        reference = prepared  # what the report compares with (float-equivalent to g)
        if self.gptq and samples is not None:
            prepared = gptq(prepared, samples[:EQ_SAMPLES], center=self.gptq_center)
        if samples is None:
            table = data
        else:
            table = calibrate(prepared, samples, progress=bool(ctx.options.get("progress", True)))
        plan = select_int16(prepared, table, self.int16,
                            samples[:REPORT_SAMPLES] if samples is not None else None,
                            self.method, self.percentile, self.int16_threshold,
                            self.int16_budget, self.int16_rate, methods)
        if plan.values:
            log.info("quantize: %s", plan.summary())
        ctx.options["int16_plan"] = plan
        res = quantize_graph(prepared, table, self.method, self.percentile, plan.values,
                             methods)
        if self.bias_correction and samples is not None:
            res = bias_correct(prepared, res, samples[:EQ_SAMPLES])
        verify_quantized(res.graph)
        ctx.options["quant_result"] = res
        ctx.options["quant_float_graph"] = prepared
        ctx.options["quant_reference_graph"] = reference
        write_report(ctx, res, samples)
        return res.graph


def calibration_data(who: str, calib: str, prepared: Graph, ctx: PassContext) -> Any:
    """The calibration data of a pass: its `calib` option (a directory of .npy files, an .npz,
    or `synthetic:N`) if set, else the context's (`ctx.options['calibration']`: input dicts or
    a ready CalibTable). No data is a PassError naming the pass."""
    data: Any = ctx.options.get("calibration")
    if calib:
        if calib.startswith("synthetic:"):
            try:
                n = int(calib.split(":", 1)[1])
            except ValueError:
                n = 0
            if n < 1:
                raise PassError(f"{who}: calib={calib!r} needs a count >= 1")
            data = synthetic_samples(prepared, n)
        else:
            data = load_calibration_set(Path(calib), prepared)
    if data is None:
        raise PassError(f"{who}: no calibration data; pass --calib DIR|FILE.npz (or the pass "
                        "option calib=...)")
    return data


def equalize_prepared(prepared: Graph, samples: list[dict[str, np.ndarray]]) -> Graph:
    """Cross-layer equalisation of a prepared float graph from the channel ranges of the first
    EQ_SAMPLES samples (compiler/quant/equalize.py)."""
    return equalize(prepared, channel_absmax(prepared, samples[:EQ_SAMPLES]))


def write_report(ctx: PassContext, res: QuantResult,
                 samples: list[dict[str, np.ndarray]] | None) -> None:
    """The per-layer report of `res` against the context's reference float graph, written
    when `ctx.options['quant_report']` names a file (the CLI's --quant-report)."""
    report = ctx.options.get("quant_report")
    if not report:
        return
    if samples is None:
        raise PassError("quantize: --quant-report needs calibration samples, not a ready "
                        "calibration table")
    rep = quant_report(ctx.options["quant_reference_graph"], res, samples[:REPORT_SAMPLES])
    rep.write(report)
    ctx.options["quant_report_table"] = rep
    log.info("per-layer quantisation report written to %s", report)
