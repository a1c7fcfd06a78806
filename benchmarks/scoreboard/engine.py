"""ocrc on one model and one compression variant: the float graph per input shape (the IR is
static, so each distinct input width is its own graph), calibration into one table shared by
every shape (keyed by value names; GPTQ weights and int16 values are chosen once, on the most
common calibration shape, and the channel moments that calibrated structured pruning reads are
pooled over every shape: benchmarks/ocr/shapes.py), the int8 graph, and the NPU program per
(shape, preset), cached on disk under a key of everything it depends on. Runs the float
reference interpreter, the golden int8 interpreter and the VM.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import ocrc.compiler
import onnx
from ocrc.compiler.backend.codegen import compile_program
from ocrc.compiler.backend.host import run_program
from ocrc.compiler.ir.graph import Graph
from ocrc.compiler.ir.interp import run
from ocrc.compiler.ir.ops.counts import node_macs
from ocrc.compiler.passes import PassContext, parse_pipeline, run_passes
from ocrc.compiler.pipeline import optimize
from ocrc.compiler.quant import CalibTable, calibrate, prepare, quantize_graph
from ocrc.compiler.quant.bias_correction import apply_bias_errors, measure_bias_errors
from ocrc.compiler.quant.checks import verify_quantized
from ocrc.compiler.quant.equalize import channel_absmax, equalize
from ocrc.compiler.quant.gptq import with_weights
from ocrc.compiler.quant.mixed import DEFAULT_THRESHOLD, Int16Plan, select_int16
from ocrc.frontend import import_onnx
from ocrc.frontend.zoo import cache_dir
from ocrc.runtime.program import Program, load_program
from ocrc.runtime.stats import Stats
from ocrc.runtime.target import load_target
from ocrc.runtime.vm import VM

from benchmarks.ocr.shapes import (
    BC_SAMPLES,
    INT16_SAMPLES,
    Shape,
    group_by_shape,
    most_common_shape,
    pooled_channel_moments,
    shared_gptq_weights,
)

log = logging.getLogger(__name__)
SOURCE_SUFFIXES = (".py", ".toml", ".lark")


@functools.cache
def source_digest() -> str:
    """sha256 of ocrc's own sources (compiler, runtime, frontend): a compiled program is only
    reused by the same compiler."""
    root = Path(ocrc.compiler.__file__).resolve().parent.parent
    h = hashlib.sha256()
    for pkg in ("compiler", "runtime", "frontend"):
        for p in sorted((root / pkg).rglob("*")):
            if p.suffix in SOURCE_SUFFIXES and "__pycache__" not in p.parts:
                h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


@functools.cache
def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def arrays_digest(arrays: Sequence[np.ndarray]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode() + np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def graph_macs(g: Graph) -> int:
    """Multiply-accumulates of the matrix products of `g` (dense math, zeros included)."""
    return sum(node_macs(n) for n in g.nodes)


class OcrcModel:
    """One ONNX model through ocrc with compression `passes` (pipeline text after the float
    pipeline, "" for none). Call `calibrate` before anything int8 (and, with `moments`, before
    anything float: the passes read channel moments of the calibration inputs)."""

    def __init__(self, path: Path, passes: str = "", method: str = "minmax",
                 name: str = "model", equalize: bool = False, int16: str = "none",
                 gptq: bool = False, moments: bool = False, gptq_center: bool = True,
                 int16_threshold: float = DEFAULT_THRESHOLD,
                 bias_correction: bool = False) -> None:
        self.path, self.passes, self.method, self.name = path, passes, method, name
        # The passes read ctx.options['channel_moments'] (prune-structured criterion=std,
        # compensate=lsq), pooled over the calibration inputs of every shape at calibration.
        self.moments = moments
        self.pass_options: dict[str, object] = {}
        self.moments_digest = ""
        self.equalize = equalize  # cross-layer equalisation before calibration
        self.gptq = gptq  # GPTQ int8 weight rounding before calibration (compiler/quant/gptq.py)
        self.gptq_center = gptq_center  # centred GPTQ (the mean error into the biases)
        self.gptq_w: dict[str, np.ndarray] = {}  # its weights, by name, for every shape
        self.gptq_digest = ""
        # sequential bias correction (compiler/quant/bias_correction.py): its per-layer errors,
        # measured once on the most common calibration shape, correct every shape
        self.bias_correction = bias_correction
        self.bias_errors: dict[str, np.ndarray] = {}
        self.bias_digest = ""
        self.int16 = int16  # mixed precision: quantize{int16=...} (docs/quantization.md §8)
        self.int16_threshold = int16_threshold  # auto: the single-mode SQNR bound, dB
        self.plan = Int16Plan()  # the values kept in int16, chosen at calibration
        self.absmax: dict[str, np.ndarray] = {}  # its channel statistics, over every shape
        self._prepared: dict[Shape, Graph] = {}
        self.proto = onnx.load(str(path))
        inits = {t.name for t in self.proto.graph.initializer}
        self.input = next(i.name for i in self.proto.graph.input if i.name not in inits)
        self._float: dict[Shape, Graph] = {}
        self._quant: dict[Shape, Graph] = {}
        self._programs: dict[tuple[Shape, str], Program] = {}
        self._vms: dict[tuple[Shape, str], VM] = {}
        self.table: CalibTable | None = None
        self.calib_digest = ""
        self.compile_seconds = 0.0
        self.compiled = 0  # programs compiled by this object
        self.cache_hits = 0  # programs read from the ocrc cache instead

    # --- graphs ---------------------------------------------------------------------------
    def plain_graph(self, shape: Shape) -> Graph:
        """The optimised float graph for one input shape, before the compression passes."""
        return optimize(import_onnx(self.proto, {self.input: list(shape)}))

    def float_graph(self, shape: Shape) -> Graph:
        """The optimised (and compressed) float graph for one input shape."""
        if shape not in self._float:
            g = self.plain_graph(shape)
            if self.passes:
                if self.moments and not self.pass_options:
                    raise RuntimeError(f"{self.name}: calibrate() before running {self.passes}")
                ctx = PassContext(options=dict(self.pass_options), verify_each=False)
                g = run_passes(g, parse_pipeline(self.passes), ctx)
            self._float[shape] = g
        return self._float[shape]

    def output_name(self, shape: Shape) -> str:
        return self.float_graph(shape).outputs[0].name

    def calibrate(self, inputs: Sequence[np.ndarray]) -> None:
        """One calibration table over every input shape of `inputs`."""
        if not inputs:
            raise ValueError(f"{self.name}: empty calibration set")
        table = CalibTable()
        by_shape = group_by_shape(inputs, self.input)
        self._prepared.clear()
        if self.moments:  # first: the compressed float graphs depend on them
            got = pooled_channel_moments((self.plain_graph(s), by_shape[s])
                                         for s in sorted(by_shape))
            self.pass_options = {"channel_moments": got}
            self.moments_digest = arrays_digest(
                [a for k in sorted(got) for a in (np.asarray(k.encode()), *got[k])])
            self._float.clear()
        self.absmax, self.gptq_w = {}, {}
        if self.equalize:
            for shape in sorted(by_shape):
                channel_absmax(prepare(self.float_graph(shape)), by_shape[shape], self.absmax)
        if self.gptq:
            self.gptq_w = shared_gptq_weights(self.reference_graph, by_shape,
                                              center=self.gptq_center)
        self.gptq_digest = arrays_digest([self.gptq_w[k] for k in sorted(self.gptq_w)])
        for shape in sorted(by_shape):
            calibrate(self.prepared_graph(shape), by_shape[shape], table, progress=False)
        self.table = table
        if self.int16 != "none":  # chosen once, on the most common calibration shape
            shape = most_common_shape(by_shape)
            self.plan = select_int16(self.prepared_graph(shape), table, self.int16,
                                     by_shape[shape][:INT16_SAMPLES], self.method,
                                     threshold=self.int16_threshold)
            log.info("%s: %s", self.name, self.plan.summary())
        self._quant.clear()
        self.bias_errors = {}
        if self.bias_correction:  # on the quantised graph of the plan above
            shape = most_common_shape(by_shape)
            self.bias_errors = measure_bias_errors(
                self.prepared_graph(shape),
                quantize_graph(self.prepared_graph(shape), table, self.method,
                               int16=self.plan.values), by_shape[shape][:BC_SAMPLES])
        self.bias_digest = arrays_digest([a for k in sorted(self.bias_errors)
                                          for a in (np.asarray(k.encode()), self.bias_errors[k])])
        self.calib_digest = arrays_digest(inputs)

    def reference_graph(self, shape: Shape) -> Graph:
        """The float graph prepared, and equalised if asked (float-equivalent to it)."""
        g = prepare(self.float_graph(shape))
        return equalize(g, self.absmax) if self.equalize else g

    def prepared_graph(self, shape: Shape) -> Graph:
        """The float graph the int8 one derives from: the reference graph, with gptq its
        conv and dense weights GPTQ-rounded (one set for every shape, chosen at calibration)."""
        if shape not in self._prepared:
            g = self.reference_graph(shape)
            self._prepared[shape] = with_weights(g, self.gptq_w) if self.gptq else g
        return self._prepared[shape]

    def quant_graph(self, shape: Shape) -> Graph:
        """The int8 graph (the golden model) for one input shape."""
        if self.table is None:
            raise RuntimeError(f"{self.name}: calibrate() before quantising")
        if shape not in self._quant:
            res = quantize_graph(self.prepared_graph(shape), self.table, self.method,
                                 int16=self.plan.values)
            q = apply_bias_errors(res, self.bias_errors).graph
            verify_quantized(q)
            self._quant[shape] = q
        return self._quant[shape]

    # --- programs -------------------------------------------------------------------------
    def cache_key(self, shape: Shape, preset: str) -> str:
        target = load_target(preset)
        key = {"model": file_digest(self.path), "shape": list(shape), "passes": self.passes,
               "method": self.method, "equalize": self.equalize, "int16": self.plan.values,
               "calib": self.calib_digest, "target": target.hash, "ocrc": source_digest()}
        if self.gptq:  # its weights (the keys without gptq stay as they were)
            key["gptq"] = self.gptq_digest
        if self.moments:  # the channel moments the passes read (likewise)
            key["moments"] = self.moments_digest
        if self.bias_correction:  # its corrections (likewise)
            key["bias"] = self.bias_digest
        text = json.dumps(key, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def program_path(self, shape: Shape, preset: str) -> Path:
        """Where the program of one shape and preset is cached."""
        return (cache_dir() / "programs" / f"{self.name}-{'x'.join(map(str, shape))}-{preset}-"
                f"{self.cache_key(shape, preset)}.npu")

    def program(self, shape: Shape, preset: str) -> Program:
        """The NPU program for one shape and preset, from the ocrc cache when compiled before
        by the same sources with the same model, options and calibration."""
        key = (shape, preset)
        if key in self._programs:
            return self._programs[key]
        path = self.program_path(shape, preset)
        if path.is_file():
            prog = load_program(path)
            self.cache_hits += 1
        else:
            t0 = time.perf_counter()
            prog = compile_program(self.quant_graph(shape), load_target(preset), self.name).program
            self.compile_seconds += time.perf_counter() - t0
            self.compiled += 1
            path.parent.mkdir(parents=True, exist_ok=True)
            prog.save(path)
        self._programs[key] = prog
        return prog

    def program_bytes(self, shape: Shape, preset: str) -> int:
        return len(self.program(shape, preset).to_bytes())

    def vm(self, shape: Shape, preset: str) -> VM:
        key = (shape, preset)
        if key not in self._vms:
            self._vms[key] = VM(self.program(shape, preset))
        return self._vms[key]

    # --- running --------------------------------------------------------------------------
    def run_float(self, x: np.ndarray) -> np.ndarray:
        """The reference interpreter on the float graph: the first output."""
        g = self.float_graph(x.shape)
        return run(g, {self.input: x})[g.outputs[0].name]

    def run_golden(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The golden int8 interpreter: every output by name."""
        return run(self.quant_graph(x.shape), {self.input: x})

    def run_vm(self, x: np.ndarray, preset: str) -> tuple[dict[str, np.ndarray], Stats, float]:
        """The VM (then the host tail): outputs, the VM's stats, and the wall time of the whole
        call (quantise inputs, execute, collect stats, dequantise, host tail)."""
        vm = self.vm(x.shape, preset)
        t0 = time.perf_counter()
        outs, stats = run_program(vm.program, {self.input: x}, vm=vm)
        return outs, stats, time.perf_counter() - t0

    def resolve_auto(self, auto: str, shape: Shape, inputs: Sequence[np.ndarray]) -> str:
        """Run a compress-auto pass text on the float graph of `shape` with the calibration
        inputs of that shape; the explicit per-layer pipeline it chose."""
        data = [{self.input: x} for x in inputs if x.shape == shape]
        ctx = PassContext(options={"calibration": data}, verify_each=False)
        run_passes(self.float_graph(shape), parse_pipeline(auto), ctx)
        return str(ctx.options["reports"]["compress-auto"]["pipeline"])
