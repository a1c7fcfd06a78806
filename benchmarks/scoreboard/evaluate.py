"""Every variant of one model on its data sets: onnxruntime fp32 and int8 (QDQ), ocrc float (the
reference interpreter of the optimised IR), ocrc int8 (the VM, checked bit for bit against the
golden int8 interpreter) and ocrc int8 with each compression variant. Produces plain result
records (accuracy rows, per-preset NPU rows, CPU latency rows, per-layer rows) for the tables
and plots.
"""

from __future__ import annotations

import collections
import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ocrc.compiler.compress.storage import other_const_bytes, storage_report
from ocrc.frontend.zoo import cache_dir, file_lock
from ocrc.runtime.errors import OcrcError

from benchmarks.ocr.datasets import Sample, load_dataset
from benchmarks.ocr.harness import OrtRecognizer
from benchmarks.ocr.metrics import accuracy, agreement, cer
from benchmarks.ocr.ort_quant import ort_int8_model, quantize_with_ort
from benchmarks.ocr.tasks import OcrTask
from benchmarks.scoreboard.engine import OcrcModel, arrays_digest, file_digest, graph_macs
from benchmarks.scoreboard.models import Compression, Config, ModelSpec, crnn_weights_removed

log = logging.getLogger(__name__)
Loader = Callable[[str], list[Sample]]
ORT_FP32, ORT_INT8 = "onnxruntime fp32", "onnxruntime int8 QDQ"
OCRC_FLOAT, OCRC_INT8 = "ocrc float (interpreter)", "ocrc int8"


@dataclass
class AccuracyRow:
    model: str
    dataset: str
    variant: str
    n: int
    accuracy: float
    cer: float
    agreement: float  # with onnxruntime fp32 on the same images
    nbytes: int  # the model file, or the .npu program at the reference input (default preset)
    bytes_kind: str
    compact_bytes: int | None  # int8 weights in their smallest stream format + other consts
    macs: int  # dense math at the reference input
    npu_ms: float | None = None  # mean NPU latency over the n images (default preset)
    golden: str = ""  # "k/k": images whose VM outputs equal the golden interpreter's exactly
    seconds: float = 0.0
    passes: str = ""
    preds: list[str] = field(default_factory=list, repr=False)


@dataclass
class PerfRow:
    model: str
    variant: str
    shape: str
    preset: str
    cycles: int
    latency_ms: float
    utilisation: float
    macs: int  # counted by the VM
    dram_read: int
    dram_written: int
    program_bytes: int
    n_insns: int
    vm_wall_ms: float  # median of warm runs of the whole VM call (timing.py)
    program: str = ""  # the cached .npu file (for the timing pass)


@dataclass
class CpuRow:
    model: str
    variant: str
    shape: str
    median_ms: float
    min_ms: float
    runs: int


@dataclass
class LayerRow:
    model: str
    preset: str
    name: str
    cycles: int
    macs: int
    utilisation: float
    dram_read: int
    dram_written: int
    mac_cycles: int
    dma_cycles: int
    vector_cycles: int
    bound: str


@dataclass
class ModelResult:
    key: str
    label: str
    family: str
    sparsity: float
    method: str
    float_bytes: int
    weights_removed: float = 0.0
    accuracy: list[AccuracyRow] = field(default_factory=list)
    perf: list[PerfRow] = field(default_factory=list)
    cpu: list[CpuRow] = field(default_factory=list)
    layers: list[LayerRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def shape_text(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


def reference_input(spec: ModelSpec, task: OcrTask, load: Loader, ds: str,
                    xs: Sequence[np.ndarray]) -> np.ndarray:
    """The first input of the reference width in the whole data set (so that a limited run
    measures the same input as a full one), else the first of the most common width of xs."""
    for s in load(ds):
        x = task.preprocess(s.image)
        if x.shape[-1] == spec.ref_width:
            return x
    common = collections.Counter(x.shape[-1] for x in xs).most_common(1)[0][0]
    return next(x for x in xs if x.shape[-1] == common)


def ort_int8_path(spec: ModelSpec, task: OcrTask, path: Path, calib_name: str,
                  calib: Sequence[np.ndarray]) -> Path:
    """onnxruntime's QDQ model (cached): the zoo models share the baselines' cache entry."""
    if spec.family == "real":
        return ort_int8_model(task, calib_name)
    import onnxruntime

    out = (cache_dir() / "derived" / f"{spec.key}-{file_digest(path)[:12]}-ort"
           f"{onnxruntime.__version__}-int8-{arrays_digest(calib)[:12]}.onnx")
    with file_lock(out.with_name(f".{out.name}.lock")):
        if not out.is_file():
            quantize_with_ort(path, list(calib), out)
    return out


BASELINES = "baselines"  # the unit running onnxruntime fp32/int8 and ocrc float


@dataclass(frozen=True)
class Unit:
    """One independent piece of a model's evaluation: the baselines or one int8 variant
    (a Compression name) on one data set (an index into spec.datasets)."""

    model: str
    dataset: int
    variant: str


def units_for(spec: ModelSpec) -> list[Unit]:
    """The units of one model: per data set the baselines and ocrc int8, and on the first
    data set every compression variant."""
    out = []
    for i in range(len(spec.datasets)):
        out += [Unit(spec.key, i, BASELINES), Unit(spec.key, i, OCRC_INT8)]
        if i == 0:
            out += [Unit(spec.key, 0, c.name) for c in spec.compressions]
    return out


class UnitRun:
    """The evaluation of one Unit (see run_unit)."""

    def __init__(self, spec: ModelSpec, cfg: Config, unit: Unit, load: Loader) -> None:
        self.spec, self.cfg, self.unit, self.load = spec, cfg, unit, load
        self.lim = cfg.limits_for(spec)
        self.task = spec.task()
        self.path = spec.path()
        self.res = new_result(spec, self.path)
        self.ds, self.calib_name = spec.datasets[unit.dataset]
        samples = load(self.ds)[:self.lim.images]
        self.xs = [self.task.preprocess(s.image) for s in samples]
        self.labels = [s.text for s in samples]
        self.calib = [self.task.preprocess(s.image)
                      for s in load(self.calib_name)[:self.lim.calib_images]]
        self.ref = reference_input(spec, self.task, load, self.ds, self.xs)
        self.base = OcrcModel(self.path, name=spec.key, method=spec.quant_method,
                              equalize=spec.equalize, gptq=spec.gptq,
                              gptq_center=spec.gptq_center,
                              bias_correction=spec.bias_correction)

    def row(self, variant: str, preds: list[str], nbytes: int, kind: str, macs: int,
            **kw: object) -> AccuracyRow:
        n = len(preds)
        r = AccuracyRow(self.spec.key, self.ds, variant, n, accuracy(preds, self.labels[:n]),
                        cer(preds, self.labels[:n]), 0.0, nbytes, kind, None, macs,
                        preds=preds, **kw)  # type: ignore[arg-type]
        self.res.accuracy.append(r)
        log.info("%s / %s / %s: n=%d accuracy %.1f%%", self.spec.key, self.ds, variant, n,
                 100 * r.accuracy)
        return r

    def decode(self, fn: Callable[[np.ndarray], np.ndarray], xs: Sequence[np.ndarray]
               ) -> list[str]:
        return [self.task.decode(fn(x))[0] for x in xs]

    def run(self) -> ModelResult:
        t0 = time.perf_counter()
        u = self.unit
        try:
            if u.variant == BASELINES:
                self.baselines()
            else:
                self.int8_variant(self.compression(u.variant))
        except Exception as exc:  # noqa: BLE001 - one variant must not sink the run
            log.error("%s / %s / %s failed:\n%s", self.spec.key, self.ds, u.variant,
                      traceback.format_exc())
            self.res.notes.append(f"{u.variant} on {self.ds} failed: {type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else ''}")
        self.res.seconds = time.perf_counter() - t0
        log.info("%s / %s / %s: %.0f s", self.spec.key, self.ds, u.variant, self.res.seconds)
        return self.res

    def compression(self, name: str) -> Compression:
        if name == OCRC_INT8:
            return Compression(OCRC_INT8)
        for c in self.spec.compressions:
            if c.name == name:
                return c
        raise KeyError(f"{self.spec.key}: no compression variant {name!r}")

    def baselines(self) -> None:
        """onnxruntime fp32 and int8, and ocrc's float interpreter."""
        t0 = time.perf_counter()
        macs = graph_macs(self.base.float_graph(self.ref.shape))
        fp32 = OrtRecognizer(self.path, threads=1)
        self.row(ORT_FP32, self.decode(fp32, self.xs), self.res.float_bytes, "ONNX", macs,
                 seconds=time.perf_counter() - t0)
        t0 = time.perf_counter()
        try:
            q_path = ort_int8_path(self.spec, self.task, self.path, self.calib_name, self.calib)
            self.row(ORT_INT8, self.decode(OrtRecognizer(q_path, threads=1), self.xs),
                     q_path.stat().st_size, "QDQ ONNX", macs, seconds=time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's quantiser may refuse a model
            self.res.notes.append(f"onnxruntime int8 on {self.ds} failed: "
                                  f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
        t0 = time.perf_counter()
        self.row(OCRC_FLOAT, self.decode(self.base.run_float, self.xs[:self.lim.float_images]),
                 self.res.float_bytes, "ONNX", macs, seconds=time.perf_counter() - t0)

    def variant_model(self, comp: Compression) -> OcrcModel:
        if not comp.passes and not comp.auto and comp.int16 == "none":
            return self.base
        passes = comp.passes
        if comp.auto:
            passes = self.base.resolve_auto(comp.auto, self.ref.shape, self.calib)
            log.info("%s: %s chose %s", self.spec.key, comp.auto, passes)
        return OcrcModel(self.path, passes=passes, name=self.spec.key,
                         method=self.spec.quant_method, equalize=self.spec.equalize,
                         int16=comp.int16, gptq=self.spec.gptq, moments=comp.moments,
                         gptq_center=self.spec.gptq_center,
                         int16_threshold=comp.int16_threshold,
                         bias_correction=self.spec.bias_correction)

    @staticmethod
    def int16_text(m: OcrcModel) -> str:
        """The quantize options of a mixed-precision variant and what they chose."""
        if m.int16 == "none":
            return ""
        opts = f"int16={m.int16}"
        if m.int16 == "auto":
            opts += f",int16_threshold={m.int16_threshold:g}"
        return f"quantize{{{opts}}}: {m.plan.summary()}"

    def int8_variant(self, comp: Compression) -> None:
        """Calibrate, compile per input width, read the data set in the VM on the default
        preset, check the golden interpreter on the first images, run every preset at the
        reference input (first data set only)."""
        t0 = time.perf_counter()
        m = self.variant_model(comp)
        m.calibrate(self.calib)
        preset = self.cfg.default_preset
        preds, lat, same, checked = [], [], 0, 0
        n = self.lim.vm_images
        if comp.name != OCRC_INT8 and self.lim.variant_images is not None:
            n = self.lim.variant_images if n is None else min(n, self.lim.variant_images)
        for i, x in enumerate(self.xs[:n]):
            outs, stats, _ = m.run_vm(x, preset)
            preds.append(self.task.decode(outs[m.output_name(x.shape)])[0])
            lat.append(stats.latency_s)
            if i < self.lim.golden_images:
                gold = m.run_golden(x)
                checked += 1
                same += all(k in outs and np.array_equal(outs[k], v) for k, v in gold.items())
        q = m.quant_graph(self.ref.shape)
        row = self.row(comp.name, preds, m.program_bytes(self.ref.shape, preset),
                       ".npu program", graph_macs(m.float_graph(self.ref.shape)),
                       npu_ms=1e3 * float(np.mean(lat)), golden=f"{same}/{checked}",
                       passes=m.passes or self.int16_text(m))
        row.compact_bytes = sum(r.nbytes for r in storage_report(q)) + other_const_bytes(q)
        if same != checked:
            self.res.notes.append(f"{comp.name} on {self.ds}: the VM differs from the golden "
                                  f"interpreter on {checked - same} of {checked} images")
        if self.unit.dataset == 0:
            self.presets(m, comp.name)
        row.seconds = time.perf_counter() - t0
        log.info("%s: %d program(s) compiled in %.0f s, %d from the cache", comp.name,
                 m.compiled, m.compile_seconds, m.cache_hits)

    def presets(self, m: OcrcModel, variant: str) -> None:
        """Cycles, latency and utilisation of every preset at the reference input (the VM's
        wall time is measured later, alone: see timing.py); per-layer rows for the plain int8
        model on the default preset."""
        for preset in self.cfg.presets:
            try:
                _, stats, _ = m.run_vm(self.ref, preset)
            except OcrcError as exc:  # e.g. a layer that does not fit a small preset's SRAM
                self.res.notes.append(f"{variant} on {preset}: {type(exc).__name__}: "
                                      f"{str(exc).splitlines()[0]}")
                continue
            prog = m.program(self.ref.shape, preset)
            self.res.perf.append(PerfRow(
                self.spec.key, variant, shape_text(self.ref.shape), preset, stats.total_cycles,
                1e3 * stats.latency_s, stats.mac_utilisation, stats.macs, stats.dram_read,
                stats.dram_written, len(prog.to_bytes()), prog.n_insns, 0.0,
                str(m.program_path(self.ref.shape, preset))))
            if variant == OCRC_INT8 and preset == self.cfg.default_preset:
                self.res.layers = [LayerRow(
                    self.spec.key, preset, s.name, s.cycles, s.macs, s.utilisation, s.dram_read,
                    s.dram_written, s.mac_cycles, s.dma_cycles, s.vector_cycles, s.bound)
                    for s in stats.layers]


def new_result(spec: ModelSpec, path: Path) -> ModelResult:
    tag = spec.key.removeprefix("crnn-")
    return ModelResult(spec.key, spec.label, spec.family, spec.sparsity, spec.method,
                       path.stat().st_size,
                       crnn_weights_removed(tag) if spec.family == "crnn" else 0.0)


def run_unit(spec: ModelSpec, cfg: Config, unit: Unit, load: Loader = load_dataset
             ) -> ModelResult:
    """One unit's rows (agreement with fp32 is filled in by `merge`)."""
    return UnitRun(spec, cfg, unit, load).run()


def merge(spec: ModelSpec, parts: Sequence[ModelResult]) -> ModelResult:
    """The units' results as one ModelResult: rows in data-set and variant order, agreement
    with the onnxruntime fp32 predictions of the same data set."""
    res = new_result(spec, spec.path())
    order = {n: i for i, n in enumerate([ORT_FP32, ORT_INT8, OCRC_FLOAT, OCRC_INT8] +
                                        [c.name for c in spec.compressions])}
    sets = {ds: i for i, (ds, _) in enumerate(spec.datasets)}
    for p in parts:
        res.accuracy += p.accuracy
        res.perf += p.perf
        res.cpu += p.cpu
        res.layers = res.layers or p.layers
        res.notes += p.notes
        res.seconds += p.seconds
    res.accuracy.sort(key=lambda a: (sets.get(a.dataset, 99), order.get(a.variant, 99)))
    res.perf.sort(key=lambda r: order.get(r.variant, 99))
    for a in res.accuracy:
        ref = next((r for r in res.accuracy if r.dataset == a.dataset and r.variant == ORT_FP32),
                   None)
        if ref is not None:
            a.agreement = agreement(a.preds, ref.preds[:a.n])
    return res


def evaluate_model(spec: ModelSpec, cfg: Config, load: Loader = load_dataset) -> ModelResult:
    """Every unit of `spec` in this process, merged (see the module doc); no timing."""
    return merge(spec, [run_unit(spec, cfg, u, load) for u in units_for(spec)])


def result_from_dict(d: dict[str, object]) -> ModelResult:
    """A ModelResult back from its dataclasses.asdict form (the run's JSON)."""
    d = dict(d)
    for key, cls in (("accuracy", AccuracyRow), ("perf", PerfRow), ("cpu", CpuRow),
                     ("layers", LayerRow)):
        d[key] = [cls(**x) for x in d.get(key, [])]  # type: ignore[attr-defined, arg-type]
    return ModelResult(**d)  # type: ignore[arg-type]
