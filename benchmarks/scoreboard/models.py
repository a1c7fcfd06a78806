"""What the scoreboard runs: the models (the real recognisers from the zoo and the demo CRNNs of
the compression study), their data sets and calibration sets, the ocrc compression variants, and
how many images each kind of run sees in the full run and in the `--quick` smoke run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from ocrc.compiler.quant.mixed import DEFAULT_THRESHOLD
from ocrc.frontend.bundled import BundledModel, bundled_model, ctc_greedy, preprocess
from ocrc.frontend.zoo import cache_dir, fetch_model
from PIL import Image

from benchmarks.ocr.tasks import OcrTask, ddddocr_task, ppocr_rec_task

STUDY_JSON = Path(__file__).resolve().parents[1] / "train" / "compression_study.json"
# Tags of the compression study (benchmarks/train) in table order, and the two shipped ones.
CRNN_TAGS = ("dense", "mag20", "mag50", "mag62_5", "mag78", "struct50", "struct62_5",
             "struct78", "nm2_4")
CRNN_SHIPPED = {"dense": "crnn_dense", "mag78": "crnn_sparse78"}
CRNN_QUICK = ("dense", "mag78")


@dataclass(frozen=True)
class Compression:
    """One ocrc compression variant: float passes run after the float pipeline, before
    `quantize`. `auto` is a compress-auto pass text: it is run once on the reference width
    and the per-layer settings it picks become `passes` for every width. `moments`: the passes
    read ctx.options['channel_moments'], pooled over the calibration inputs of every width
    (benchmarks/ocr/shapes.py), so that every width prunes the same filters."""

    name: str
    passes: str = ""
    auto: str = ""
    int16: str = "none"  # mixed precision (quantize{int16=...}): none, auto, all
    int16_threshold: float = DEFAULT_THRESHOLD  # auto: int16 where single-mode SQNR is below
    moments: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """One model on the scoreboard."""

    key: str
    label: str
    family: str  # "real" (zoo models) or "crnn" (the compression study)
    path: Callable[[], Path]
    task: Callable[[], OcrTask]
    datasets: tuple[tuple[str, str], ...]  # (evaluation set, its calibration set)
    ref_width: int  # per-preset NPU numbers and CPU latency are measured at this input width
    compressions: tuple[Compression, ...] = ()  # on the first data set only
    sparsity: float = 0.0  # crnn: weight sparsity of the trained model
    method: str = ""  # crnn: how it was compressed in training
    quant_method: str = "minmax"  # activation ranges of ocrc int8 (docs/quantization.md §5)
    equalize: bool = False  # cross-layer equalisation before calibration
    gptq: bool = False  # GPTQ int8 weight rounding before calibration (compiler/quant/gptq.py)
    gptq_center: bool = True  # centred GPTQ (PP-OCRv2 rec); plain does better on ddddocr
    bias_correction: bool = False  # sequential bias correction (compiler/quant/bias_correction.py)


def quantize_text(spec: ModelSpec) -> str:
    """The `quantize{...}` pass options of the spec's ocrc int8 calibration."""
    opts = [f"method={spec.quant_method}"]
    opts += [f"{o}=true" for o, on in (("equalize", spec.equalize), ("gptq", spec.gptq)) if on]
    opts += ["gptq_center=false"] if spec.gptq and not spec.gptq_center else []
    opts += ["bias_correction=true"] if spec.bias_correction else []
    return f"quantize{{{','.join(opts)}}}"


@dataclass(frozen=True)
class Limits:
    """How many images each kind of run sees (None: the whole data set)."""

    images: int | None = None  # onnxruntime fp32 and int8
    vm_images: int | None = None  # ocrc int8 through the VM (accuracy)
    variant_images: int | None = None  # ... for the compression variants (None: vm_images)
    float_images: int | None = 100  # ocrc float through the reference interpreter
    golden_images: int = 4  # VM outputs compared with the golden int8 interpreter
    calib_images: int | None = None  # of the 32-image calibration sets


@dataclass(frozen=True)
class Config:
    """A scoreboard run: models, presets, limits per model family or key, latency runs."""

    name: str
    models: tuple[str, ...]
    presets: tuple[str, ...] = ("npu-lite", "npu", "npu-large")
    default_preset: str = "npu"
    limits: dict[str, Limits] = field(default_factory=dict)
    latency_runs: int = 100
    vm_runs: int = 5  # warm VM runs at the reference input (median wall time)
    compressions: bool = True

    def limits_for(self, spec: ModelSpec) -> Limits:
        return self.limits.get(spec.key) or self.limits.get(spec.family) or Limits()


# --- the real recognisers -----------------------------------------------------------------------
# 25% of the conv backbone's filters, ranked by the standard deviation of their feature maps,
# each removed channel replaced by its least-squares fit on the kept ones (docs/passes.md).
STRUCTURED = Compression(
    "int8 + 25% structured filters (conv backbone, std + least-squares, calibrated)",
    "prune-structured{sparsity=0.25,criterion=std,compensate=lsq}", moments=True)
DDDDOCR_COMPRESSIONS = (
    Compression("int8 + low-rank Gemm (energy 0.90)", "lowrank{energy=0.9,ops=dense}"),
    Compression("int8 + 50% unstructured (LSTM + Gemm)", "prune{sparsity=0.5,ops=dense+lstm}"),
    Compression("int8 + 78% unstructured (LSTM + Gemm)", "prune{sparsity=0.78,ops=dense+lstm}"),
    Compression("int8 + 2:4 (LSTM + Gemm)", "prune{nm=2:4,ops=dense+lstm}"),
    STRUCTURED,
    Compression("int8 + auto (budget 1 point, LSTM + Gemm)",
                auto="compress-auto{budget=1,ops=dense+lstm}"),
    Compression("int8/int16 mixed (auto < 30 dB)", int16="auto"),
    Compression("int8/int16 mixed (auto < 36 dB)", int16="auto", int16_threshold=36.0),
)
PPOCR_COMPRESSIONS = (
    Compression("int8 + 50% unstructured (LSTM + FC)", "prune{sparsity=0.5,ops=dense+lstm}"),
    STRUCTURED,
    Compression("int8/int16 mixed (auto < 30 dB)", int16="auto"),
)

REAL: dict[str, ModelSpec] = {
    "ddddocr": ModelSpec(
        "ddddocr", "ddddocr common.onnx", "real", lambda: fetch_model("ddddocr-common"),
        ddddocr_task, (("clean", "calib-clean"), ("captcha", "calib-captcha")), 160,
        DDDDOCR_COMPRESSIONS, quant_method="mse", equalize=True, gptq=True,
        gptq_center=False,  # plain GPTQ: 97.3% vs 96.0% centred (docs/quantization.md §6)
        bias_correction=True),  # sequential: 97.3% -> 98.0% (benchmarks/RESULTS.md)
    "ppocr-v2-rec": ModelSpec(
        "ppocr-v2-rec", "PP-OCRv2 rec", "real", lambda: fetch_model("ppocr-v2-rec"),
        ppocr_rec_task, (("clean", "calib-clean"),), 320, PPOCR_COMPRESSIONS,
        quant_method="mse", equalize=True, gptq=True,  # centred GPTQ: 58.0% -> 68.3% agreement
        bias_correction=True),  # sequential: 69.0% -> 80.7% (benchmarks/RESULTS.md)
}


# --- the demo CRNNs of the compression study ----------------------------------------------------
def crnn_task(model: BundledModel, name: str) -> OcrTask:
    """The bundled models' preprocessing (height 32, white padding to a multiple of 4) and
    greedy CTC over their charset, as an OcrTask."""
    def pre(image: Image.Image) -> np.ndarray:
        return preprocess(model, [image])

    def decode(out: np.ndarray) -> list[str]:
        return [ctc_greedy(out[:, n:n + 1], model.charset) for n in range(out.shape[1])]

    return OcrTask(name, name, pre, decode)


def crnn_path(tag: str) -> Path:
    """The study's ONNX file of `tag`: shipped in frontend/models, else the training cache."""
    if tag in CRNN_SHIPPED:
        return bundled_model(CRNN_SHIPPED[tag]).path
    return cache_dir() / "train" / f"crnn-{tag}.onnx"


def crnn_specs(tags: tuple[str, ...] = CRNN_TAGS) -> dict[str, ModelSpec]:
    """One spec per study model whose ONNX file exists (the non-shipped ones exist only after
    `python -m benchmarks.train` ran on this machine)."""
    study = json.loads(STUDY_JSON.read_text())["models"] if STUDY_JSON.is_file() else {}
    meta = bundled_model("crnn_dense").meta
    out = {}
    for tag in tags:
        path = crnn_path(tag)
        if not path.is_file():
            continue
        info = study.get(tag, {})
        model = BundledModel(path, meta)
        out[f"crnn-{tag}"] = ModelSpec(
            f"crnn-{tag}", f"demo CRNN {tag}", "crnn", lambda p=path: p,
            lambda m=model, t=tag: crnn_task(m, f"crnn-{t}"), (("clean", "calib-clean"),), 128,
            sparsity=float(info.get("sparsity", 0.0)), method=str(info.get("method", tag)))
    return out


def crnn_weights_removed(tag: str) -> float:
    """Fraction of the dense model's weights a study model no longer has (zeros or removed)."""
    if not STUDY_JSON.is_file():
        return 0.0
    models = json.loads(STUDY_JSON.read_text())["models"]
    dense, this = models.get("dense", {}), models.get(tag, {})
    if not dense or not this:
        return 0.0
    return 1.0 - (this["weights"] - this["zero_weights"]) / dense["weights"]


# --- the two configurations ---------------------------------------------------------------------
FULL = Config(
    "full", ("ddddocr", "ppocr-v2-rec", *(f"crnn-{t}" for t in CRNN_TAGS)),
    limits={"real": Limits(float_images=100),
            "ppocr-v2-rec": Limits(vm_images=100, float_images=50),
            "crnn": Limits(float_images=100)})
QUICK = Config(
    "quick", ("ddddocr", "ppocr-v2-rec", *(f"crnn-{t}" for t in CRNN_QUICK)),
    limits={"real": Limits(images=12, vm_images=12, float_images=3, golden_images=2,
                           calib_images=6),
            "ppocr-v2-rec": Limits(images=6, vm_images=3, float_images=2, golden_images=1,
                                   calib_images=3),
            "crnn": Limits(images=20, vm_images=20, float_images=5, golden_images=2,
                           calib_images=8)},
    latency_runs=20, vm_runs=2)
# ddddocr's quick run: one unstructured variant and the calibrated structured one (the variant
# whose passes read statistics of the calibration inputs of every width).
QUICK_COMPRESSIONS = {"ddddocr": (DDDDOCR_COMPRESSIONS[2], STRUCTURED), "ppocr-v2-rec": ()}


def specs_for(cfg: Config) -> list[ModelSpec]:
    """The specs of cfg.models that are available, in cfg order (quick: fewer compressions)."""
    available = {**REAL, **crnn_specs()}
    out = []
    for key in cfg.models:
        spec = available.get(key)
        if spec is None:
            continue
        if not cfg.compressions:
            spec = replace(spec, compressions=())
        elif cfg.name == "quick" and key in QUICK_COMPRESSIONS:
            spec = replace(spec, compressions=QUICK_COMPRESSIONS[key])
        out.append(spec)
    return out
