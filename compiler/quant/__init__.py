"""int8 quantisation: observers, calibration, the int8 rewrite, per-layer error reports.

The arithmetic is specified in docs/quantization.md and implemented by the quantised IR ops
(compiler/ir/ops/quant.py, qlstm.py); this package builds their constants from a calibrated
float graph. Entry points: `prepare`, `calibrate`, `quantize_graph`, `quantize_model`.
"""

from __future__ import annotations

from ocrc.compiler.quant.calibrate import (CalibTable, CalibrationError, calibrate,
                                           load_calibration_set)
from ocrc.compiler.quant.qparams import QParams, QuantizeError
from ocrc.compiler.quant.quantizer import QuantResult, prepare, quantize_graph

__all__ = ["CalibTable", "CalibrationError", "calibrate", "load_calibration_set", "QParams",
           "QuantizeError", "QuantResult", "prepare", "quantize_graph"]
