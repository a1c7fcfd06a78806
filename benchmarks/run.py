"""The one command that regenerates the scoreboard: fetches the real models (zoo), generates the
seeded data sets, runs every model through every variant (onnxruntime fp32 and int8, ocrc float,
ocrc int8 in the VM with a bit-exact check against the golden interpreter, ocrc int8 with the
compression variants), and writes the `## Scoreboard` section and the header of
benchmarks/RESULTS.md and the plots in benchmarks/plots/.

    python benchmarks/run.py            # the full run (15-30 minutes on 2 cores)
    python benchmarks/run.py --quick    # a few-minute smoke run; writes nothing in the repo
    python -m benchmarks.run [--models ddddocr,crnn-dense] [--no-write] [--replot]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import os

# One BLAS/OpenMP thread per process, set before numpy loads: the CPU latencies are one-thread
# numbers (onnxruntime is told so too), the worker processes already fill the cores, and on a
# loaded machine multi-threaded BLAS made the VM's calls 10-30x slower (measured here).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import datetime
import json
import logging
import platform
import time
from dataclasses import asdict, replace

from ocrc.frontend.zoo import fetch_model

from benchmarks.ocr.datasets import DATASETS, load_dataset
from benchmarks.ocr.report import write_section
from benchmarks.scoreboard.evaluate import ModelResult, result_from_dict
from benchmarks.scoreboard.models import FULL, QUICK, Config, ModelSpec, specs_for
from benchmarks.scoreboard.plots import PLOTS, make_plots
from benchmarks.scoreboard.runner import LOG_FORMAT, run_all
from benchmarks.scoreboard.tables import SECTION, section_body, write_header

log = logging.getLogger("benchmarks.run")
HERE = Path(__file__).resolve().parent
PLOTS_DIR = HERE / "plots"
OUT_DIR = HERE / "out"  # not committed
PLOT_TITLES = {"accuracy": "accuracy vs compression", "latency": "latency vs sparsity",
               "layers": "per-layer cycles, ddddocr on npu", "roofline": "roofline on npu"}


def machine() -> str:
    """CPU model, cores and the versions that matter, in one line."""
    import numba
    import numpy
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                       cpu)
    except OSError:
        pass
    blas = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    return (f"{cpu}, {os.cpu_count()} cores (shared with other jobs; BLAS threads per process: "
            f"{blas}), {platform.system()} "
            f"{platform.machine()}, Python {platform.python_version()}, numpy "
            f"{numpy.__version__}, onnxruntime {onnxruntime.__version__}, numba "
            f"{numba.__version__}")


def limits_text(cfg: Config, specs: list[ModelSpec]) -> str:
    parts = []
    for s in specs:
        lim = cfg.limits_for(s)
        if s.family == "crnn" and any(p.startswith("demo CRNN") for p in parts):
            continue
        label = "demo CRNNs" if s.family == "crnn" else s.label

        def n(v: int | None) -> str:
            return "all" if v is None else str(v)

        parts.append(f"{label}: onnxruntime {n(lim.images)}, VM {n(lim.vm_images)}, ocrc float "
                     f"{n(lim.float_images)} (the first images of each set), golden check "
                     f"{lim.golden_images}, calibration {n(lim.calib_images)}")
    return "; ".join(parts)


def header_text(command: str, seconds: float, plots: dict[str, Path], finished: str) -> str:
    links = " · ".join(f"[{PLOT_TITLES[k]}](plots/{PLOTS[k]})" for k in PLOTS if k in plots)
    return (f"**Scoreboard**: `{command}` regenerates the `{SECTION}` section below and the "
            f"plots (it fetches the models, generates the data sets and runs every variant). "
            f"Last run: {finished}, {seconds / 60:.1f} min, on {machine()}.\n\nPlots: {links}.\n\n"
            "The other sections are written by their own scripts; each states its command.")


def prepare_inputs(specs: list[ModelSpec]) -> None:
    """Fetch the zoo models and generate the data sets up front (cached afterwards)."""
    if any(s.family == "real" for s in specs):
        for name in ("ddddocr-common", "ppocr-v2-rec"):
            fetch_model(name)
    for name in DATASETS:
        load_dataset(name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/run.py",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="a few-minute smoke run on a few images (writes only benchmarks/out/)")
    ap.add_argument("--models", help="comma list of model keys (default: all of the run)")
    ap.add_argument("--no-compression", action="store_true",
                    help="skip the ocrc compression variants")
    ap.add_argument("--no-write", action="store_true",
                    help="do not touch RESULTS.md or benchmarks/plots/")
    ap.add_argument("--write", action="store_true",
                    help="with --quick: write RESULTS.md and benchmarks/plots/ anyway")
    ap.add_argument("--replot", action="store_true",
                    help="redraw the plots and tables from the last run's JSON only")
    ap.add_argument("-j", "--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="worker processes for the evaluation (default: %(default)s); the "
                         "timing pass always runs alone")
    ap.add_argument("-v", "--verbose", action="store_true", help="log ocrc's own progress too")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, datefmt="%H:%M:%S")
    if not args.verbose:
        logging.getLogger("ocrc").setLevel(logging.WARNING)
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)
    cfg = QUICK if args.quick else FULL
    if args.models:
        cfg = replace(cfg, models=tuple(args.models.split(",")))
    if args.no_compression:
        cfg = replace(cfg, compressions=False)
    write = (args.write or not args.quick) and not args.no_write
    plots_dir = PLOTS_DIR if write else OUT_DIR / f"plots-{cfg.name}"
    json_path = OUT_DIR / f"scoreboard-{cfg.name}.json"
    command = "python benchmarks/run.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:]))

    t0 = time.perf_counter()
    specs = specs_for(cfg)
    results: list[ModelResult]
    if args.replot:
        saved = json.loads(json_path.read_text())
        results = [result_from_dict(d) for d in saved["results"]]
        seconds, command = saved["seconds"], saved["command"]
        finished = saved.get("finished", "")
    else:
        missing = sorted(set(cfg.models) - {s.key for s in specs})
        if missing:
            log.warning("not available (the training cache has no such model?): %s",
                        ", ".join(missing))
        prepare_inputs(specs)
        results = run_all(cfg, specs, jobs=args.jobs)
        seconds = time.perf_counter() - t0
        finished = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"command": command, "seconds": seconds,
                                         "finished": finished,
                                         "results": [asdict(r) for r in results]}, indent=1))
    plots = make_plots(results, cfg, plots_dir)
    body = section_body(results, cfg, command, seconds, limits_text(cfg, specs))
    header = header_text(command, seconds, plots, finished)
    print(body)
    if write:
        write_header(header)
        write_section(SECTION, body)
    # The markdown too, beside the results (to re-apply it to another copy of RESULTS.md).
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / f"scoreboard-{cfg.name}-markdown.json").write_text(
        json.dumps({"header": header, "section": body}))
    log.info("plots in %s; results JSON %s", plots_dir, json_path)
    log.info("done in %.1f min", (time.perf_counter() - t0) / 60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
