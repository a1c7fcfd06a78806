"""onnxruntime's own int8 quantisation (quantize_static, QDQ, per channel): the baseline
ocrc's int8 is compared against. The quantised models are cached next to the data sets.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.ocr.datasets import load_dataset
from benchmarks.ocr.harness import calibration_inputs
from benchmarks.ocr.tasks import OcrTask
from ocrc.frontend.zoo import cache_dir, fetch_model, file_lock

log = logging.getLogger(__name__)

QDQ_PER_CHANNEL_OPSET = 13


def quantize_with_ort(model: Path, inputs: Sequence[np.ndarray], out: Path) -> Path:
    """quantize_static(model) -> `out`: QDQ format, int8 activations (per tensor) and int8
    weights (per channel), MinMax calibration over `inputs`. Written atomically."""
    import onnx
    import onnx.version_converter
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod,
                                          QuantFormat, QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not inputs:
        raise ValueError("quantize_with_ort: the calibration set is empty")
    proto = onnx.load(str(model))
    inits = {t.name for t in proto.graph.initializer}
    (name,) = [i.name for i in proto.graph.input if i.name not in inits]
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if opset < QDQ_PER_CHANNEL_OPSET:
        # Per-channel DequantizeLinear needs the `axis` attribute, added in opset 13; both
        # real recognisers are opset 12, so lift them first (no op they use changes meaning).
        proto = onnx.version_converter.convert_version(proto, QDQ_PER_CHANNEL_OPSET)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{name: x} for x in inputs])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".quant-", dir=out.parent) as tmp:
        staged = Path(tmp) / out.name
        lifted, prepped = Path(tmp) / "fp32.onnx", Path(tmp) / "fp32-prep.onnx"
        onnx.save(proto, str(lifted))
        # ORT's recommended pre-processing: shape inference and its graph optimisations, which
        # turn paddle2onnx's Constant-node weights into initializers and fold BatchNorm into
        # Conv. Without it, PP-OCRv2's weights are quantised as activations (0% accuracy).
        quant_pre_process(str(lifted), str(prepped), skip_symbolic_shape=True)
        quantize_static(str(prepped), str(staged), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
        os.replace(staged, out)
    return out


def ort_int8_model(task: OcrTask, calib: str = "calib-clean") -> Path:
    """The task's model quantised by onnxruntime on data set `calib` (cached)."""
    import onnxruntime

    out = (cache_dir() / "derived" /
           f"{task.model}-{task.name}-ort{onnxruntime.__version__}-int8-{calib}.onnx")
    if out.is_file():
        return out
    with file_lock(out.with_name(f".{out.name}.lock")):
        if not out.is_file():
            log.info("quantising %s with onnxruntime on %s", task.model, calib)
            inputs = calibration_inputs(task, load_dataset(calib))
            quantize_with_ort(fetch_model(task.model), inputs, out)
    return out
