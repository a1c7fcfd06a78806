"""Compression of ddddocr common.onnx: int8 alone and with low-rank, unstructured, 2:4,
structured and automatic (budgeted) compression; writes the `## Compression` section of
benchmarks/RESULTS.md.

    python -m benchmarks.compression [--limit N] [--rows K,...] [--quant METHOD[+eq]]
                                     [--json OUT.json] [--reuse|--from-json FILE.json]

Every number comes from ocrc's reference interpreter: the float graph for fp32 and the float
compressed variants, the golden int8 interpreter for the int8 rows. Images are grouped by
input width (the clean set has 7) and run in batches (the model's batch dimension is made
symbolic); calibration tables of all widths are merged so that every width is quantised alike.
Auto rows: per-layer settings chosen on a held-out tuning set (clean images of another seed)
against the float model, then evaluated like the other rows on the clean set.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from ocrc.compiler.compress import sensitivity
from ocrc.compiler.compress.metrics import custom_metric, get_metric
from ocrc.compiler.compress.sites import weight_sites
from ocrc.compiler.compress.stats import input_grams
from ocrc.compiler.compress.storage import other_const_bytes, storage_report
from ocrc.compiler.ir import interp
from ocrc.compiler.ir.graph import Graph
from ocrc.compiler.ir.ops.counts import node_macs
from ocrc.compiler.passes import PassContext, parse_pipeline, run_passes
from ocrc.compiler.pipeline import optimize
from ocrc.compiler.quant.calibrate import CalibTable, calibrate
from ocrc.compiler.quant.equalize import channel_absmax, equalize
from ocrc.compiler.quant.observers import METHODS
from ocrc.compiler.quant.quantizer import prepare, quantize_graph
from ocrc.frontend.onnx_import import import_onnx
from ocrc.frontend.zoo import fetch_model

from benchmarks.ocr.datasets import load_dataset, load_samples
from benchmarks.ocr.metrics import accuracy, agreement
from benchmarks.ocr.report import markdown_table, write_section
from benchmarks.ocr.shapes import pooled_channel_moments
from benchmarks.ocr.tasks import ddddocr_task

log = logging.getLogger("benchmarks.compression")
ONNX_BYTES = 54_088_400  # common.onnx as shipped (float32)
BATCH = 24
TUNE = ("clean", 100, 301)  # the held-out tuning set of the auto rows: kind, n, seed
MAC_WIDTH = 160  # MACs are reported for this input width (T = 20)
AUTO_OPS = "dense+lstm"
QUANT = "mse+eq"  # the scoreboard's int8 setting for ddddocr (benchmarks/run.py)


@dataclass(frozen=True)
class QuantSetting:
    """How the int8 rows are quantised: METHOD[+eq] (activation ranges, cross-layer
    equalisation first)."""

    method: str = "minmax"
    equalize: bool = False

    @classmethod
    def parse(cls, text: str) -> QuantSetting:
        method, *flags = text.split("+")
        if method not in METHODS or any(f != "eq" for f in flags):
            raise SystemExit(f"--quant {text!r}: expected METHOD[+eq], METHOD one of "
                             f"{', '.join(METHODS)}")
        return cls(method, "eq" in flags)

    def describe(self) -> str:
        return f"{self.method} ranges" + (", cross-layer equalised" if self.equalize else "")


@dataclass(frozen=True)
class Row:
    name: str
    float_passes: str  # compression pipeline on the float graph ("" = none)
    int8_passes: str = ""  # after quantize (weight sharing)
    auto_budget: float | None = None  # choose float_passes on the tuning set
    auto_metric: str = "agreement"  # the budget's unit: agreement with fp32, or accuracy
    grams: bool = False  # the passes read calibration input statistics (lowrank whiten=true)
    moments: bool = False  # ... channel moments (prune-structured criterion=std, compensate=lsq)


ROWS = [
    Row("int8", ""),
    Row("int8 + low-rank Gemm (energy 0.90)", "lowrank{energy=0.9,ops=dense}"),
    Row("int8 + 50% unstructured (LSTM + Gemm)", "prune{sparsity=0.5,ops=dense+lstm}"),
    Row("int8 + 78% unstructured (LSTM + Gemm)", "prune{sparsity=0.78,ops=dense+lstm}"),
    Row("int8 + 2:4 (LSTM + Gemm)", "prune{nm=2:4,ops=dense+lstm}"),
    Row("int8 + 25% structured filters (conv backbone)", "prune-structured{sparsity=0.25}"),
    Row("int8 + 25% structured filters (conv backbone, std + least-squares, calibrated)",
        "prune-structured{sparsity=0.25,criterion=std,compensate=lsq}", moments=True),
    Row("int8 + low-rank LSTM R (rank 128, whitened)",
        "lowrank{layers=LSTM_79.R:128,whiten=true}", grams=True),
    Row("int8 + low-rank Gemm (energy 0.90) + LSTM R (rank 128, whitened)",
        "lowrank{energy=0.9,ops=dense},lowrank{layers=LSTM_79.R:128,whiten=true}", grams=True),
    Row("int8 + low-rank Gemm (energy 0.90) + LSTM W and R (rank 128, whitened)",
        "lowrank{energy=0.9,ops=dense},lowrank{layers=LSTM_79.W:128;LSTM_79.R:128,whiten=true}",
        grams=True),
    Row("int8 + auto (budget 1 point)", "", auto_budget=1.0),
    Row("int8 + auto (budget 3 points)", "", auto_budget=3.0),
    Row("int8 + auto (budget 1 point of tuning-set accuracy)", "", auto_budget=1.0,
        auto_metric="accuracy"),
    Row("int8 + auto (budget 1) + 16-centroid sharing (all but the Gemm) + Huffman", "",
        "share-weights{centroids=16,exclude=Gemm_97}", auto_budget=1.0),
]


@dataclass
class Result:
    name: str
    pipeline: str
    weight_bytes: int = 0
    other_bytes: int = 0
    macs: int = 0
    macs_nonzero: int = 0
    float_accuracy: float = 0.0
    float_agreement: float = 0.0
    accuracy: float = 0.0
    agreement: float = 0.0
    seconds: float = 0.0
    formats: dict[str, str] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.other_bytes


class Model:
    """common.onnx with a symbolic batch, imported once per (batch, width)."""

    def __init__(self) -> None:
        self.proto = onnx.load(fetch_model("ddddocr-common"))
        self.proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
        self.name = self.proto.graph.input[0].name
        self._graphs: dict[tuple[int, int], Graph] = {}

    def graph(self, n: int, width: int) -> Graph:
        key = (max(n, 2), width)  # batch >= 2: one graph structure for every group
        if key not in self._graphs:
            self._graphs[key] = optimize(import_onnx(self.proto, {self.name: [key[0], 1, 64,
                                                                               width]}))
        return self._graphs[key]


def batches(xs: Sequence[np.ndarray], size: int = BATCH) -> list[tuple[list[int], np.ndarray]]:
    """Indices and stacked inputs, grouped by width, at most `size` per batch (>= 2: a single
    image is duplicated and its copy ignored)."""
    by_w: dict[int, list[int]] = {}
    for i, x in enumerate(xs):
        by_w.setdefault(x.shape[3], []).append(i)
    out = []
    for w in sorted(by_w):
        idx = by_w[w]
        for k in range(0, len(idx), size):
            part = idx[k:k + size]
            arr = np.concatenate([xs[i] for i in part] + ([xs[part[0]]] if len(part) == 1 else []))
            out.append((part, arr))
    return out


def run_batches(model: Model, xs: Sequence[np.ndarray], make: dict, build) -> list[np.ndarray]:
    """Outputs [T, 1, C] per image; `build(graph)` turns the float graph into what runs."""
    outs: list[np.ndarray | None] = [None] * len(xs)
    for part, arr in batches(xs):
        key = (arr.shape[0], arr.shape[3])
        if key not in make:
            make[key] = build(model.graph(*key))
        res = interp.run(make[key], {model.name: arr})
        y = next(iter(res.values()))
        for j, i in enumerate(part):
            outs[i] = y[:, j:j + 1]
    return outs  # type: ignore[return-value]


def macs_of(model: Model, passes: str, stats: dict | None = None) -> tuple[int, int]:
    """Dense and nonzero-weight MACs per image at width MAC_WIDTH (`stats`: calibration
    statistics for the passes' ctx.options)."""
    g = model.graph(2, MAC_WIDTH)
    ctx = PassContext(options=dict(stats or {}))
    g = run_passes(g, parse_pipeline(passes), ctx) if passes else g
    dense = nonzero = 0
    for n in g.nodes:
        m = node_macs(n) // 2
        dense += m
        ws = [g.const_value(v) for v in n.inputs[1:3] if v is not None] if n.op.name in \
            ("conv", "dense", "lstm", "matmul") else []
        ws = [w for w in ws if w is not None and w.ndim >= 2]
        if ws:
            density = sum(float(np.count_nonzero(w)) for w in ws) / sum(w.size for w in ws)
            nonzero += int(m * density)
        else:
            nonzero += m
    return dense, nonzero


def accuracy_metric(task, parts: Sequence[Sequence[int]], labels: Sequence[str]):
    """Accuracy (%) on the labelled tuning set as a sensitivity metric (a user metric of
    the Python API): `parts[k]` are the images of the k-th batch of outputs."""
    def fn(outs) -> float:
        preds: dict[int, str] = {}
        for part, o in zip(parts, outs):
            for j, i in enumerate(part):
                preds[i] = task.decode(o[0][:, j:j + 1])[0]
        return 100 * accuracy([preds[i] for i in range(len(labels))], labels)
    return custom_metric("accuracy", fn)


def choose_auto(model: Model, task, budget: float, metric_name: str = "agreement") -> str:
    """The compress-auto choice for `budget` points of agreement with the float model (or of
    accuracy) on the tuning set."""
    samples = load_samples(*TUNE)
    tune = [task.preprocess(s.image) for s in samples]
    work, parts = [], []
    for part, arr in batches(tune, 50):
        work.append((model.graph(arr.shape[0], arr.shape[3]), [{model.name: arr}]))
        parts.append(part)
    ref = work[0][0]
    sites = weight_sites(ref, AUTO_OPS.split("+"))
    cands = sensitivity.candidates(ref, sites, (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95),
                                   (0.95, 0.9, 0.8), ("2:4",), multiple=32)
    metric = (accuracy_metric(task, parts, [s.text for s in samples])
              if metric_name == "accuracy" else get_metric(metric_name))
    sweeps = choose_auto.__dict__.setdefault("sweeps", {})
    if metric_name not in sweeps:
        sweeps[metric_name] = sensitivity.sweep(work, cands, metric, progress=True)
    sw = sweeps[metric_name]
    pick, loss = sensitivity.choose(work, sw, metric, budget, steps=12, progress=True)
    log.info("auto budget %g: %s (tuning loss %.2f)", budget, sensitivity.settings_pipeline(pick),
             loss)
    return sensitivity.settings_pipeline(pick)


def evaluate_row(model: Model, task, row: Row, passes: str, images: Sequence[np.ndarray],
                 labels: Sequence[str], fp32: Sequence[str], calib: Sequence[np.ndarray],
                 quant: QuantSetting = QuantSetting(), stats: dict | None = None) -> Result:
    """`stats`: calibration statistics merged over every width, given to the passes as
    ctx.options (input_grams, channel_moments)."""
    t0 = time.time()
    res = Result(row.name, ",".join(p for p in (passes, row.int8_passes) if p))

    done: dict[int, Graph] = {}

    def compress(g: Graph) -> Graph:
        if id(g) not in done:  # the base graphs live as long as the Model
            ctx = PassContext(options=dict(stats or {}), verify_each=False)
            done[id(g)] = run_passes(g, parse_pipeline(passes), ctx) if passes else g
        return done[id(g)]

    fouts = run_batches(model, images, {}, compress)
    fpreds = [task.decode(o)[0] for o in fouts]
    res.float_accuracy = 100 * accuracy(fpreds, labels)
    res.float_agreement = 100 * agreement(fpreds, fp32)
    # One calibration table (and one set of equalisation statistics) over every width, so
    # that every width is quantised alike.
    absmax: dict[str, np.ndarray] = {}
    calib_batches = batches(calib)
    if quant.equalize:
        for _, arr in calib_batches:
            prepared = prepare(compress(model.graph(arr.shape[0], arr.shape[3])))
            channel_absmax(prepared, [{model.name: arr}], absmax)

    def float_graph(g: Graph) -> Graph:
        prepared = prepare(compress(g))
        return equalize(prepared, absmax) if quant.equalize else prepared

    table = CalibTable()
    for _, arr in calib_batches:
        calibrate(float_graph(model.graph(arr.shape[0], arr.shape[3])), [{model.name: arr}],
                  table, progress=False)
    books: dict = {}

    def quantise(g: Graph) -> Graph:
        q = quantize_graph(float_graph(g), table, quant.method).graph
        if row.int8_passes:
            ctx = PassContext(options={"progress": False}, verify_each=False)
            q = run_passes(q, parse_pipeline(row.int8_passes), ctx)
            books.update(ctx.options.get("codebooks", {}))
        return q

    made: dict = {}
    qouts = run_batches(model, images, made, quantise)
    preds = [task.decode(o)[0] for o in qouts]
    res.accuracy = 100 * accuracy(preds, labels)
    res.agreement = 100 * agreement(preds, fp32)
    q = made.get((BATCH, MAC_WIDTH)) or next(iter(made.values()))
    rows = storage_report(q, huffman=bool(row.int8_passes), codebooks=books or None)
    res.weight_bytes = sum(r.nbytes for r in rows)
    res.other_bytes = other_const_bytes(q)
    res.formats = {r.layer: f"{r.fmt} {r.sparsity:.2f} {r.dense}->{r.nbytes}" for r in rows}
    res.macs, res.macs_nonzero = macs_of(model, passes, stats)
    res.seconds = time.time() - t0
    return res


def calibration_grams(model: Model, calib: Sequence[np.ndarray],
                      ops: Sequence[str] = ("dense", "lstm")) -> dict[str, np.ndarray]:
    """Input Gram matrices by layer over the calibration images of every width (what
    `lowrank{whiten=true}` and `prune{criterion=activation}` read from ctx.options)."""
    grams: dict[str, np.ndarray] = {}
    for _, arr in batches(calib):
        g = model.graph(arr.shape[0], arr.shape[3])
        for k, v in input_grams(g, weight_sites(g, ops), [{model.name: arr}]).items():
            grams[k] = grams.get(k, 0) + v
    return grams


def calibration_moments(model: Model, calib: Sequence[np.ndarray]
                        ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Channel means and covariances by value name over the calibration images of every width
    (what `prune-structured{criterion=std,compensate=lsq}` reads from
    ctx.options['channel_moments']): every width loses the same filters."""
    return pooled_channel_moments((model.graph(arr.shape[0], arr.shape[3]), [{model.name: arr}])
                                  for _, arr in batches(calib))


SVD_RANKS = (352, 192, 128, 64)  # 352: energy 0.90 rounded to the 32-wide MAC array


def svd_study(model: Model, task, images: Sequence[np.ndarray], labels: Sequence[str],
              fp32: Sequence[str], calib: Sequence[np.ndarray]) -> str:
    """Plain vs data-aware (whitened) SVD of the Gemm at equal ranks, float model."""
    grams = calibration_grams(model, calib, ("dense",))
    body = []
    for r in SVD_RANKS:
        cells: list[object] = [r]
        for whiten in (False, True):
            text = f"lowrank{{layers=Gemm_97:{r},multiple=1,whiten={str(whiten).lower()}}}"
            outs = run_batches(model, images, {}, lambda g, t=text: run_passes(
                g, parse_pipeline(t), PassContext(options={"input_grams": grams},
                                                  verify_each=False)))
            preds = [task.decode(o)[0] for o in outs]
            cells += [f"{100 * accuracy(preds, labels):.1f}", f"{100 * agreement(preds, fp32):.1f}"]
        body.append(cells)
        log.info("svd study rank %d: %s", r, cells)
    head = ["Gemm rank", "plain: accuracy %", "plain: agreement %", "whitened: accuracy %",
            "whitened: agreement %"]
    return ("Gemm_97 (1024 -> 8210) split at equal ranks, float model, clean set; whitened: the "
            "SVD of W L with L the Cholesky factor of the Gemm input's Gram matrix over the 32 "
            "calibration images (`lowrank{whiten=true}`).\n\n" + markdown_table(head, body))


def section(results: Sequence[Result], fp32_acc: float, n: int, seconds: float,
            quant: str = QUANT) -> str:
    head = ["setting", "weight bytes", "x vs 54,088,400 B float", "MACs (dense)",
            "MACs (nonzero weights)", "accuracy %", "points lost vs fp32",
            "agreement with fp32 %", "float-only: accuracy % / agreement %"]
    body = []
    for r in results:
        body.append([r.name, f"{r.total_bytes:,}", f"{ONNX_BYTES / max(r.total_bytes, 1):.2f}",
                     f"{r.macs / 1e6:.1f} M", f"{r.macs_nonzero / 1e6:.1f} M",
                     f"{r.accuracy:.1f}", f"{fp32_acc - r.accuracy:.1f}", f"{r.agreement:.1f}",
                     f"{r.float_accuracy:.1f} / {r.float_agreement:.1f}"])
    pipes = "\n".join(f"- {r.name}: `{r.pipeline or '(none)'}`" for r in results)
    return (f"ddddocr `common.onnx` on the clean set ({n} images), fp32 accuracy {fp32_acc:.1f}% "
            f"(ocrc float interpreter). Weight bytes: the int8 weight streams in the smallest "
            f"format of `runtime/weightcodec.py` per layer (dense, bitmask, csr; codebook + "
            f"Huffman where shared) plus every other constant (int32 biases, multipliers, "
            f"tables) raw. MACs per image at width {MAC_WIDTH}. int8 numbers from the golden "
            f"int8 interpreter; int8 calibration: {QuantSetting.parse(quant).describe()} "
            f"(32 calibration images). Generated by `python -m benchmarks.compression"
            f"{'' if quant == QUANT else ' --quant ' + quant}` (about {seconds / 60:.0f} min on "
            f"2 shared cores).\n\n" + markdown_table(head, body) +
            "\nPipelines (auto rows: chosen on a held-out tuning set of 100 clean images of "
            "another seed against the float model: each layer's settings measured alone, then "
            "per layer the setting minimising agreement loss + price x bytes (relative logit "
            "error breaking ties), the price raised by bisection while the joint agreement "
            "loss of all choices stays within the budget):\n\n" + pipes + "\n\n"
            "No fine-tuning anywhere (the literature's 5.07x at under 3 points was fine-tuned). "
            "The int8 row is the quantiser as it stands; every compressed "
            "row inherits its loss, and the float-only column isolates what compression alone "
            "costs. The auto budgets are in points of agreement of the float model on the "
            "tuning set (the accuracy row: points of accuracy against the tuning set's labels, "
            "which 100 images measure only to a few points), so the int8 rows lose the int8 "
            "loss on top. The first structured row ranks filters by their weights' l1 norm "
            "without calibration data, so nothing replaces the removed channels "
            "(`compensate=none`); "
            "the calibrated one ranks them by the standard deviation of their feature maps and "
            "replaces each removed channel by its least-squares fit on the kept channels of "
            "the same value (`criterion=std,compensate=lsq`), from channel means and "
            "covariances merged over the 32 calibration images of every width "
            "(ctx.options['channel_moments']), so every width prunes the same filters.\n")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=0, help="use only the first N clean images")
    ap.add_argument("--rows", default="", help="comma-separated row numbers (default: all)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    ap.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    ap.add_argument("--reuse", type=Path, metavar="FILE.json",
                    help="results of an earlier --json run: rows not in --rows are taken from it")
    ap.add_argument("--from-json", type=Path, metavar="FILE.json",
                    help="only rewrite the section from the results of an earlier --json run")
    ap.add_argument("--quant", default=QUANT, metavar="METHOD[+eq]",
                    help=f"int8 calibration of every row (default {QUANT})")
    ap.add_argument("--svd-study", action="store_true",
                    help="also compare plain and data-aware SVD (section 'Compression: SVD')")
    args = ap.parse_args(argv)
    quant = QuantSetting.parse(args.quant)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    t0 = time.time()
    if args.from_json:
        data = json.loads(args.from_json.read_text())
        results = [Result(**r) for r in data["results"]]
        write_section("Compression", section(results, data["fp32"], data["n"], data["seconds"],
                                             data.get("quant", QUANT)))
        return 0
    task = ddddocr_task()
    model = Model()
    clean = load_dataset("clean")[:args.limit or None]
    images = [task.preprocess(s.image) for s in clean]
    labels = [s.text for s in clean]
    calib = [task.preprocess(s.image) for s in load_dataset("calib-clean")]
    fp32 = [task.decode(o)[0] for o in run_batches(model, images, {}, lambda g: g)]
    fp32_acc = 100 * accuracy(fp32, labels)
    log.info("fp32: accuracy %.1f%% on %d images", fp32_acc, len(images))
    if args.svd_study:
        text = svd_study(model, task, images, labels, fp32, calib)
        if not args.no_write:
            write_section("Compression: plain vs data-aware SVD", text)
    if args.rows == "none":
        return 0
    pick = [int(k) for k in args.rows.split(",") if k] or list(range(len(ROWS)))
    old = {}
    if args.reuse:
        data = json.loads(args.reuse.read_text())
        old = {r["name"]: r for r in (data["results"] if isinstance(data, dict) else data)}
    results = []
    for k, row in enumerate(ROWS):
        if k not in pick and row.name in old:
            results.append(Result(**old[row.name]))
    stats: dict = {}
    if any(ROWS[k].grams for k in pick):
        stats["input_grams"] = calibration_grams(model, calib)
    if any(ROWS[k].moments for k in pick):
        stats["channel_moments"] = calibration_moments(model, calib)
    for k in pick:
        row = ROWS[k]
        passes = row.float_passes
        if row.auto_budget is not None:
            passes = choose_auto(model, task, row.auto_budget, row.auto_metric)
        wanted = {"input_grams": row.grams, "channel_moments": row.moments}
        res = evaluate_row(model, task, row, passes, images, labels, fp32, calib, quant,
                           {name: s for name, s in stats.items() if wanted[name]})
        log.info("%s: %s", row.name, json.dumps(asdict(res)))
        results.append(res)
        results.sort(key=lambda r: [x.name for x in ROWS].index(r.name))
        if args.json:
            args.json.write_text(json.dumps({"fp32": fp32_acc, "n": len(images),
                                             "quant": args.quant,
                                             "seconds": time.time() - t0,
                                             "results": [asdict(r) for r in results]}, indent=1))
    if not args.no_write:
        write_section("Compression", section(results, fp32_acc, len(images), time.time() - t0,
                                             args.quant))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
