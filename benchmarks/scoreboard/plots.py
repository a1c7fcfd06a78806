"""The scoreboard's plots (matplotlib, PNG): accuracy vs compression, latency vs sparsity with the
literature's points, the per-layer cycle breakdown of ddddocr on the default preset, and a
roofline of every model's layers on the default preset.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display

import matplotlib.pyplot as plt
from ocrc.runtime.target import load_target

from benchmarks.scoreboard.evaluate import OCRC_INT8, ORT_FP32, ORT_INT8, ModelResult
from benchmarks.scoreboard.models import Config
from benchmarks.scoreboard.tables import LITERATURE_MS, LITERATURE_SIZE

DPI = 110
PLOTS = {
    "accuracy": "accuracy_vs_compression.png",
    "latency": "latency_vs_sparsity.png",
    "layers": "layer_cycles_ddddocr.png",
    "roofline": "roofline.png",
}
FAMILY_MARKERS = {"dense": "o", "mag": "s", "struct": "^", "nm2_4": "D"}


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    # Fixed metadata: the same numbers give the same PNG bytes (no timestamps, no version).
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return path


def _fp32(r: ModelResult, ds: str) -> float | None:
    return next((a.accuracy for a in r.accuracy if a.variant == ORT_FP32 and a.dataset == ds),
                None)


def _accuracy_points(r: ModelResult, results: Sequence[ModelResult]
                     ) -> list[tuple[str, float, float, float | None]]:
    """(label, y, ratio, hollow ratio) per int8 variant of `r` on the clean set: y in points
    against fp32 (the dense model's for the CRNNs), ratio = float bytes / int8 bytes."""
    dense = next((x for x in results if x.key == "crnn-dense"), r)
    base = _fp32(dense if r.family == "crnn" else r, "clean")
    out: list[tuple[str, float, float, float | None]] = []
    if base is None:
        return out
    for a in r.accuracy:
        if a.dataset != "clean" or a.variant in (ORT_FP32,) or a.variant.startswith("ocrc float"):
            continue
        if r.family == "crnn":
            if a.variant != OCRC_INT8:
                continue
            label = r.key.removeprefix("crnn-")
        elif a.variant == ORT_INT8:
            label = f"{r.key}: onnxruntime int8"
        else:
            label = f"{r.key}: {a.variant.removeprefix('ocrc ')}"
        ratio = r.float_bytes / (a.compact_bytes or a.nbytes)
        hollow = r.float_bytes / a.nbytes if a.compact_bytes else None
        out.append((label, 100 * (a.accuracy - base), ratio, hollow))
    return out


def accuracy_vs_compression(results: Sequence[ModelResult], out: Path) -> Path:
    """Accuracy change against the model's own fp32 vs compression (float bytes over int8
    bytes): one panel for the real models' variants, one for the demo CRNNs. Points below
    FLOOR points are drawn on the floor as triangles, labelled with their value."""
    floor = -25.0
    fig, axes = plt.subplots(1, 2, figsize=(13, 6.5))
    panels = ((axes[0], [r for r in results if r.family == "real"], "real models, clean set"),
              (axes[1], [r for r in results if r.family == "crnn"],
               "demo CRNNs (compression study), clean set"))
    colors = plt.get_cmap("tab20").colors
    markers = ("o", "s", "^", "D")
    for ax, group, title in panels:
        k = 0
        for m, r in enumerate(group):
            for label, y, ratio, hollow in _accuracy_points(r, results):
                color = colors[k % len(colors)]
                k += 1
                marker = markers[m % len(markers)] if r.family == "real" else "o"
                if y < floor:
                    ax.scatter(ratio, floor, marker="v", s=50, color=color, zorder=3,
                               label=f"{label} ({y:.0f})")
                    continue
                ax.scatter(ratio, y, marker=marker, s=40, color=color, label=label, zorder=3)
                if hollow is not None:
                    ax.scatter(hollow, y, marker=marker, s=40, facecolors="none",
                               edgecolors=[color], zorder=3)
        ax.scatter(LITERATURE_SIZE[0] / LITERATURE_SIZE[1], -3.0, marker="*", s=160,
                   color="k", label="literature: 5.07x, < 3 points lost", zorder=4)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("float ONNX bytes / int8 bytes (log)")
        ax.set_ylabel("accuracy change vs fp32 (points)")
        ax.set_title(f"{title}\nfilled: compact int8 weights, hollow: the .npu file; "
                     f"triangles: below {floor:.0f}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    return _save(fig, out)


def latency_vs_sparsity(results: Sequence[ModelResult], cfg: Config, out: Path) -> Path:
    """NPU latency of the demo CRNNs vs the fraction of weights removed, per preset, and the
    speed-up over the dense model, with the literature's points."""
    crnn = [r for r in results if r.family == "crnn"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8))
    xs = sorted(LITERATURE_MS)
    ax.plot([100 * x for x in xs], [LITERATURE_MS[x] for x in xs], "k*-", ms=10,
            label="literature (CPU/GPU, ms)")
    bx.plot([100 * x for x in xs], [LITERATURE_MS[0.0] / LITERATURE_MS[x] for x in xs], "k*-",
            ms=10, label="literature")
    dense = next((r for r in crnn if r.key == "crnn-dense"), None)
    for preset, color in zip(cfg.presets, ("tab:blue", "tab:orange", "tab:green")):
        d = next((p for p in dense.perf if p.variant == OCRC_INT8 and p.preset == preset),
                 None) if dense else None
        for fam, marker in FAMILY_MARKERS.items():
            pts = []
            for r in crnn:
                if not r.key.removeprefix("crnn-").startswith(fam) and not (
                        fam != "dense" and r.key == "crnn-dense"):
                    continue
                p = next((p for p in r.perf if p.variant == OCRC_INT8 and p.preset == preset),
                         None)
                if p is not None:
                    pts.append((100 * r.weights_removed, p.latency_ms,
                                d.cycles / p.cycles if d else 1.0))
            if fam == "dense" or len(pts) < 2:
                continue
            pts.sort()
            label = f"ocrc {preset}, {fam}"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color,
                    label=label, lw=1)
            bx.plot([p[0] for p in pts], [p[2] for p in pts], marker=marker, color=color,
                    label=label, lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("weights removed (%)")
    ax.set_ylabel("latency per image (ms, log)")
    ax.set_title("latency vs sparsity")
    bx.set_xlabel("weights removed (%)")
    bx.set_ylabel("speed-up over the dense model")
    bx.set_title("speed-up vs sparsity (literature: 1.42x at 78%)")
    ax.legend(fontsize=7, loc="lower left")
    bx.legend(fontsize=7, loc="upper left")
    for a in (ax, bx):
        a.grid(True, which="both", alpha=0.3)
    return _save(fig, out)


def layer_cycles(r: ModelResult, out: Path) -> Path:
    """Busy cycles of the MAC array, DMA and vector unit per layer (they overlap in time; the
    layer's cycles are those of its busiest unit)."""
    layers = r.layers
    fig, ax = plt.subplots(figsize=(10, 0.28 * len(layers) + 1.5))
    ys = range(len(layers))
    h = 0.27
    for k, (attr, color) in enumerate((("mac_cycles", "tab:blue"), ("dma_cycles", "tab:orange"),
                                       ("vector_cycles", "tab:green"))):
        ax.barh([y + (k - 1) * h for y in ys], [getattr(s, attr) for s in layers], h,
                color=color, label=attr.replace("_cycles", "").upper().replace("VECTOR",
                                                                                "vector"))
    ax.set_yticks(list(ys), [s.name[:48] for s in layers], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")  # the LSTM's recurrent steps dwarf the convs on a linear axis
    ax.set_xlabel("busy cycles (log)")
    preset = layers[0].preset if layers else ""
    total = sum(s.cycles for s in layers)
    ax.set_title(f"{r.label} on {preset}: per-layer busy cycles (sum of layer maxima "
                 f"{total:,})")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend()
    return _save(fig, out)


def roofline(results: Sequence[ModelResult], cfg: Config, out: Path) -> Path:
    """Achieved MACs/cycle vs MACs per DRAM byte for every layer with MACs, under the roofs of
    the default preset: min(rows * cols, DRAM bytes/cycle * intensity)."""
    target = load_target(cfg.default_preset)
    peak = target.rows * target.cols
    bw = target.dram_bw
    fig, ax = plt.subplots(figsize=(8, 5.5))
    pts_all = []
    for r in results:
        if r.family == "crnn" and r.key != "crnn-dense":
            continue  # the pruned CRNNs run the same dense program shapes
        pts = [(s.macs / max(1, s.dram_read + s.dram_written), s.macs / s.cycles)
               for s in r.layers if s.macs > 0 and s.cycles > 0]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=22, label=r.label, zorder=3)
            pts_all += pts
    lo = min([p[0] for p in pts_all] + [0.1]) / 2
    hi = max([p[0] for p in pts_all] + [10 * peak / bw]) * 2
    ridge = peak / bw
    ax.plot([lo, ridge, hi], [bw * lo, peak, peak], "k-", lw=1.5,
            label=f"roof: {peak} MAC/cycle, {bw} B/cycle")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (MACs per DRAM byte)")
    ax.set_ylabel("achieved MACs per cycle")
    ax.set_title(f"roofline of the layers on {target.name} (int8 programs, reference inputs)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out)


def make_plots(results: Sequence[ModelResult], cfg: Config, folder: Path) -> dict[str, Path]:
    """Every plot whose data the results hold, into `folder`; {kind: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {"accuracy": accuracy_vs_compression(results, folder / PLOTS["accuracy"])}
    if any(r.family == "crnn" for r in results):
        made["latency"] = latency_vs_sparsity(results, cfg, folder / PLOTS["latency"])
    dd = next((r for r in results if r.key == "ddddocr" and r.layers), None)
    if dd is None:
        dd = next((r for r in results if r.layers), None)
    if dd is not None:
        made["layers"] = layer_cycles(dd, folder / PLOTS["layers"])
    if any(r.layers for r in results):
        made["roofline"] = roofline(results, cfg, folder / PLOTS["roofline"])
    return made
