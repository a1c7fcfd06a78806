"""The timing pass of the scoreboard, run alone after the evaluation (which may use several
processes): onnxruntime fp32 and int8 latency on this CPU (one thread) and the VM's wall time
per inference, all at each model's reference input, so that no other work of the run competes.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from ocrc.compiler.backend.host import run_program
from ocrc.runtime.program import load_program
from ocrc.runtime.vm import VM

from benchmarks.ocr.datasets import load_dataset
from benchmarks.ocr.harness import OrtRecognizer, measure_latency
from benchmarks.scoreboard.evaluate import (
    ORT_FP32,
    ORT_INT8,
    CpuRow,
    Loader,
    ModelResult,
    ort_int8_path,
    reference_input,
    shape_text,
)
from benchmarks.scoreboard.models import Config, ModelSpec

log = logging.getLogger(__name__)


def time_model(spec: ModelSpec, cfg: Config, res: ModelResult,
               load: Loader = load_dataset) -> None:
    """Fill res.cpu and the vm_wall_ms of res.perf (first data set's reference input)."""
    task, path = spec.task(), spec.path()
    ds, calib_name = spec.datasets[0]
    lim = cfg.limits_for(spec)
    xs = [task.preprocess(s.image) for s in load(ds)[:lim.images]]
    ref = reference_input(spec, task, load, ds, xs)
    fp32 = OrtRecognizer(path, threads=1)
    recs: list[tuple[str, OrtRecognizer]] = [(ORT_FP32, fp32)]
    try:
        calib = [task.preprocess(s.image) for s in load(calib_name)[:lim.calib_images]]
        recs.append((ORT_INT8, OrtRecognizer(ort_int8_path(spec, task, path, calib_name,
                                                           calib), threads=1)))
    except Exception:  # noqa: BLE001 - the evaluation already noted the failure
        log.warning("%s: no onnxruntime int8 model to time", spec.key)
    res.cpu = []
    for variant, rec in recs:
        lat = measure_latency(rec, ref, runs=cfg.latency_runs)
        res.cpu.append(CpuRow(spec.key, variant, shape_text(ref.shape), lat.median_ms,
                              lat.min_ms, lat.runs))
    name = fp32.input_name
    for row in res.perf:
        if not row.program:
            continue
        vm = VM(load_program(row.program))
        run_program(vm.program, {name: ref}, vm=vm)  # warm-up: numba, first touch
        walls = []
        for _ in range(max(1, cfg.vm_runs)):
            t0 = time.perf_counter()
            run_program(vm.program, {name: ref}, vm=vm)
            walls.append(time.perf_counter() - t0)
        row.vm_wall_ms = 1e3 * float(np.median(walls))
    log.info("%s: timed onnxruntime and %d programs", spec.key, len(res.perf))
