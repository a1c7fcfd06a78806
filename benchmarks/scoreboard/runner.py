"""Runs a scoreboard configuration: every unit of every model (in a pool of worker processes when
jobs > 1, largest units first), the units merged per model, then the timing pass alone in this
process so that CPU and VM wall times are not disturbed by the rest of the run.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import os
from collections.abc import Sequence
from functools import partial

from benchmarks.ocr.datasets import load_dataset
from benchmarks.scoreboard.evaluate import (
    BASELINES,
    Loader,
    ModelResult,
    Unit,
    merge,
    run_unit,
    units_for,
)
from benchmarks.scoreboard.models import Config, ModelSpec, specs_for
from benchmarks.scoreboard.timing import time_model

log = logging.getLogger(__name__)
# One BLAS thread per worker: the workers already fill the cores.
SINGLE_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
LOG_FORMAT = "%(asctime)s %(processName)s %(name)s: %(message)s"


def _init_worker(level: int) -> None:
    import onnxruntime

    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt="%H:%M:%S")
    logging.getLogger("ocrc").setLevel(max(level, logging.WARNING))
    onnxruntime.set_default_logger_severity(3)


def _work(cfg: Config, unit: Unit) -> ModelResult:
    spec = next(s for s in specs_for(cfg) if s.key == unit.model)
    return run_unit(spec, cfg, unit)


def _cost(spec: ModelSpec, unit: Unit) -> tuple[int, int]:
    """Sort key: real models before the small CRNNs, int8 variants before baselines."""
    return (spec.family != "real", unit.variant == BASELINES)


def run_all(cfg: Config, specs: Sequence[ModelSpec], jobs: int = 1,
            load: Loader = load_dataset) -> list[ModelResult]:
    """Evaluate and time every model of `specs`. With jobs > 1 the units run in spawned
    worker processes, which look their spec up by key in specs_for(cfg) and read the
    data sets with load_dataset; jobs == 1 runs everything here with `load`."""
    by_key = {s.key: s for s in specs}
    units = sorted((u for s in specs for u in units_for(s)),
                   key=lambda u: _cost(by_key[u.model], u))
    parts: dict[str, list[ModelResult]] = collections.defaultdict(list)
    if jobs <= 1:
        for u in units:
            parts[u.model].append(run_unit(by_key[u.model], cfg, u, load))
    else:
        saved = {k: os.environ.get(k) for k in SINGLE_THREAD_ENV}
        os.environ.update({k: "1" for k in SINGLE_THREAD_ENV})
        try:
            ctx = multiprocessing.get_context("spawn")
            level = logging.getLogger().getEffectiveLevel()
            pool = ctx.Pool(jobs, initializer=_init_worker, initargs=(level,))
            finished = False
            try:
                for res in pool.imap_unordered(partial(_work, cfg), units):
                    parts[res.key].append(res)
                finished = True
            finally:
                if finished:
                    pool.close()  # let the workers exit cleanly
                else:
                    pool.terminate()
                pool.join()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    results = [merge(s, parts[s.key]) for s in specs]
    for s, r in zip(specs, results):
        time_model(s, cfg, r, load)
    return results
