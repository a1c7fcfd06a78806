"""The scoreboard's markdown: the `## Scoreboard` section of benchmarks/RESULTS.md (accuracy and
size, NPU per preset, CPU latency, the compiled compression study beside the literature) and the
header at the top of RESULTS.md (command, date, machine, run time, links to the plots).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ocrc.runtime.fileio import atomic_write_text

from benchmarks.ocr.report import RESULTS_MD, markdown_table
from benchmarks.ocr.shapes import BC_SAMPLES, GPTQ_SAMPLES
from benchmarks.scoreboard.evaluate import (
    OCRC_FLOAT,
    OCRC_INT8,
    ORT_FP32,
    ORT_INT8,
    ModelResult,
    PerfRow,
)
from benchmarks.scoreboard.models import REAL, Config, quantize_text

SECTION = "Scoreboard"
HEADER_START = "<!-- scoreboard header: written by benchmarks/run.py -->"
HEADER_END = "<!-- end of scoreboard header -->"
# The CRNN compression study we reproduce: latency (ms) at each sparsity, and its size claim.
LITERATURE_MS = {0.0: 55.1, 0.2: 53.3, 0.5: 48.6, 0.625: 45.2, 0.78: 38.7}
LITERATURE_SIZE = (15.87, 3.13)  # MB float -> MB compressed (5.07x), under 3 points lost


def pct(x: float | None, digits: int = 1) -> str:
    return "" if x is None else f"{100 * x:.{digits}f}%"


def kib(n: int | None) -> str:
    return "" if n is None else f"{n / 1024:,.0f}"


def _perf(r: ModelResult, variant: str, preset: str) -> PerfRow | None:
    return next((p for p in r.perf if p.variant == variant and p.preset == preset), None)


def accuracy_table(results: Sequence[ModelResult]) -> str:
    head = ["model", "data set", "variant", "n", "accuracy", "CER", "agreement with fp32",
            "bytes", "compact int8 weights", "MMAC", "NPU ms (npu, mean)", "VM = golden"]
    rows = []
    for r in results:
        for a in r.accuracy:
            rows.append([r.label, a.dataset, a.variant, a.n, pct(a.accuracy), pct(a.cer, 2),
                         pct(a.agreement), f"{a.nbytes:,} ({a.bytes_kind})",
                         "" if a.compact_bytes is None else f"{a.compact_bytes:,}",
                         f"{a.macs / 1e6:,.1f}",
                         "" if a.npu_ms is None else f"{a.npu_ms:.3f}", a.golden])
    return markdown_table(head, rows)


def npu_table(results: Sequence[ModelResult], cfg: Config) -> str:
    head = ["model", "variant", "input", "MMAC (VM)", "program KiB (npu)"]
    head += [f"{p}: ms / MAC util" for p in cfg.presets]
    head += [f"cycles ({cfg.default_preset})", f"DRAM KiB rd/wr ({cfg.default_preset})",
             f"VM wall ms ({cfg.default_preset})"]
    rows = []
    for r in results:
        variants = list(dict.fromkeys(p.variant for p in r.perf))
        for v in variants:
            d = _perf(r, v, cfg.default_preset)
            any_p = d or next(p for p in r.perf if p.variant == v)
            row: list[object] = [r.label, v, any_p.shape, f"{any_p.macs / 1e6:,.1f}",
                                 kib(d.program_bytes) if d else ""]
            for preset in cfg.presets:
                p = _perf(r, v, preset)
                row.append(f"{p.latency_ms:.3f} / {pct(p.utilisation)}" if p else "")
            row += [f"{d.cycles:,}" if d else "",
                    f"{kib(d.dram_read)} / {kib(d.dram_written)}" if d else "",
                    f"{d.vm_wall_ms:.1f}" if d else ""]
            rows.append(row)
    return markdown_table(head, rows)


def cpu_table(results: Sequence[ModelResult], cfg: Config) -> str:
    head = ["model", "input", "onnxruntime fp32 ms (median / min)",
            "onnxruntime int8 QDQ ms (median / min)",
            f"ocrc int8 VM wall ms ({cfg.default_preset})", "VM / onnxruntime fp32"]
    rows = []
    for r in results:
        fp = next((c for c in r.cpu if c.variant == ORT_FP32), None)
        q = next((c for c in r.cpu if c.variant == ORT_INT8), None)
        vm = _perf(r, OCRC_INT8, cfg.default_preset)
        if fp is None:
            continue
        rows.append([r.label, fp.shape, f"{fp.median_ms:.2f} / {fp.min_ms:.2f}",
                     f"{q.median_ms:.2f} / {q.min_ms:.2f}" if q else "",
                     f"{vm.vm_wall_ms:.1f}" if vm else "",
                     f"{vm.vm_wall_ms / fp.median_ms:.1f}x" if vm else ""])
    return markdown_table(head, rows)


def _acc(r: ModelResult, variant: str) -> float | None:
    return next((a.accuracy for a in r.accuracy if a.variant == variant), None)


def crnn_table(results: Sequence[ModelResult], cfg: Config) -> str:
    """The compression study compiled: one row per trained model, the literature beside."""
    crnn = [r for r in results if r.family == "crnn"]
    dense = next((r for r in crnn if r.key == "crnn-dense"), None)
    if not crnn:
        return ""
    d_fp32 = _acc(dense, ORT_FP32) if dense else None
    d_npu = _perf(dense, OCRC_INT8, cfg.default_preset) if dense else None
    head = ["model", "compression (training)", "weights removed", "fp32 accuracy",
            "ocrc int8 accuracy", "points vs dense fp32", "float bytes", ".npu bytes",
            "compact int8 bytes", "float / compact"]
    head += [f"{p} ms" for p in cfg.presets]
    head += [f"speed-up vs dense ({cfg.default_preset})", "literature ms (speed-up)"]
    rows = []
    for r in crnn:
        a = next((x for x in r.accuracy if x.variant == OCRC_INT8), None)
        fp32 = _acc(r, ORT_FP32)
        lit = LITERATURE_MS.get(round(r.weights_removed, 3)) if r.key.startswith("crnn-mag") \
            or r.key == "crnn-dense" else None
        npu = _perf(r, OCRC_INT8, cfg.default_preset)
        row: list[object] = [
            r.key.removeprefix("crnn-"), r.method, pct(r.weights_removed), pct(fp32),
            pct(a.accuracy) if a else "",
            f"{100 * (a.accuracy - d_fp32):+.1f}" if a and d_fp32 is not None else "",
            f"{r.float_bytes:,}", f"{a.nbytes:,}" if a else "",
            f"{a.compact_bytes:,}" if a and a.compact_bytes else "",
            f"{r.float_bytes / a.compact_bytes:.1f}x" if a and a.compact_bytes else ""]
        for preset in cfg.presets:
            p = _perf(r, OCRC_INT8, preset)
            row.append(f"{p.latency_ms:.3f}" if p else "")
        row.append(f"{d_npu.cycles / npu.cycles:.2f}x" if npu and d_npu else "")
        row.append(f"{lit} ({LITERATURE_MS[0.0] / lit:.2f}x)" if lit else "")
        rows.append(row)
    return markdown_table(head, rows)


def npu_stores_compact(results: Sequence[ModelResult]) -> bool:
    """Whether some compressed variant's .npu file is clearly smaller than its model's plain
    int8 program (the backend stores the compact weight formats)."""
    for r in results:
        base = next((a for a in r.accuracy if a.variant == OCRC_INT8), None)
        for a in r.accuracy:
            if base and a.bytes_kind == base.bytes_kind and a.variant != OCRC_INT8 \
                    and a.dataset == base.dataset and a.nbytes < 0.95 * base.nbytes:
                return True
    crnn = {r.key: r for r in results if r.family == "crnn"}
    dense = crnn.get("crnn-dense")
    rows = [next((a for a in r.accuracy if a.variant == OCRC_INT8), None) for r in crnn.values()]
    d = next((a for a in dense.accuracy if a.variant == OCRC_INT8), None) if dense else None
    return bool(d) and any(a is not None and a.nbytes < 0.95 * d.nbytes for a in rows)


def section_body(results: Sequence[ModelResult], cfg: Config, command: str, seconds: float,
                 limits_text: str) -> str:
    """The `## Scoreboard` section."""
    notes = []
    for r in results:
        for a in r.accuracy:
            if a.passes and a.variant != OCRC_INT8:
                notes.append(f"- {r.label}, {a.variant}: `{a.passes}`")
        notes += [f"- {r.label}: {n}" for n in r.notes]
    times = ", ".join(f"{r.label} {r.seconds:.0f} s" for r in results)
    crnn = crnn_table(results, cfg)
    real = [f"{REAL[r.key].label} `{quantize_text(REAL[r.key])}`" for r in results
            if r.key in REAL]
    variants = (
        f"Variants: **{ORT_FP32}** and **{ORT_INT8}** (`quantize_static`, per-channel, the "
        "same calibration images; its LSTM stays float) on one CPU thread; **"
        f"{OCRC_FLOAT}**: ocrc's reference interpreter on the optimised float IR; **"
        f"{OCRC_INT8}**: every conv, the LSTM and the Gemm in integers, compiled for the NPU "
        f"and run in the VM on the `{cfg.default_preset}` preset; the VM's outputs are compared "
        "bit for bit with the golden int8 interpreter of the quantised IR on the first images "
        "of each set (column *VM = golden*); **int8 + ...**: a compression pass on the float "
        "graph before quantisation (pipelines below). The structured variant ranks the conv "
        "backbone's filters by the standard deviation of their feature maps and replaces each "
        "removed channel by its least-squares fit on the kept channels of the same value "
        "(`criterion=std,compensate=lsq`), from channel means and covariances pooled over the "
        "calibration images of every input width, so that every width prunes the same "
        "filters. Calibration: `calib-clean` for the clean "
        "set, `calib-captcha` for the captcha set (32 images each, other seeds), for ocrc and "
        "onnxruntime alike.")
    widths = (
        "Input widths: ddddocr keeps the aspect ratio (height 64, int(w*64/h)); the clean "
        "set's widths fall on 64..256 in steps of 32 and the captcha set's are all 170. The "
        "IR is static, so ocrc compiles one program per distinct width (nothing is padded) "
        "and caches it in the ocrc cache under a hash of the model file, the input shape, the "
        "compression passes, the calibration inputs (and the channel moments the passes read "
        "from them), the target and the ocrc sources. "
        "PP-OCRv2 rec runs at its fixed 3x32x320 (resized and zero-padded as upstream). The "
        "demo CRNNs read height 32, white-padded to a multiple of 4, as trained. ocrc int8 "
        f"calibration: {'; '.join([*real, 'the demo CRNNs `quantize` (min-max)'])}. "
        "MSE-optimal activation ranges after cross-layer equalisation are the best all-int8 "
        "activation setting of the Quantisation section; GPTQ weight rounding "
        "(compiler/quant/gptq.py: error-feedback choice of each int8 weight code, same format) "
        "is on for both: centred (each layer's mean error into its bias) on PP-OCRv2 rec, "
        "plain on ddddocr, as that section measured best. "
        f"The scoreboard computes GPTQ's weights once, from {GPTQ_SAMPLES} calibration images "
        "of the most common input width, as the Quantisation section does, and uses them at "
        "every width; pruned weights stay zero. Sequential bias correction "
        "(compiler/quant/bias_correction.py: each conv/dense bias absorbs its output's mean "
        "per-channel error, layer by layer on the corrected model) is on for both, its "
        f"corrections measured once on {BC_SAMPLES} calibration images of the most common width "
        "and applied at every width.")
    columns = (
        f"Images per run: {limits_text}. *bytes*: the model file for onnxruntime and ocrc "
        "float, the `.npu` program (instructions, weights, I/O descriptors) at the reference "
        f"input on `{cfg.default_preset}` for ocrc int8. *compact int8 weights*: the int8 "
        "weights in the smallest stream format of `runtime/weightcodec.py` (dense, bitmask, "
        "csr) plus every other constant: what the compression passes save"
        + ("" if npu_stores_compact(results) else
           " (the `.npu` files of this run store weights dense, so pruning does not shrink "
           "them)") + ". *MMAC*: dense math of the (compressed) float graph at the reference "
        "input.")
    npu_note = (
        "Latency at the preset's clock from the VM's cycle count; MAC utilisation = useful "
        "MACs / (cycles x array size); VM wall = the whole VM call (quantise, execute, "
        "statistics, dequantise), median of warm runs on this machine, timed after the "
        "evaluation with nothing else of the run going on.")
    head = (f"Command: `{command}` ({seconds / 60:.1f} min in all; per model, summed over "
            f"its work units: {times}).")
    parts = [
        head, "", variants, "", widths, "", columns, "",
        "### Accuracy and size", "", accuracy_table(results),
        "### NPU, per preset (reference input)", "", npu_note, "", npu_table(results, cfg),
        "### CPU latency (reference input, one thread, measured in the same run)", "",
        cpu_table(results, cfg),
    ]
    if crnn:
        crnn_note = (
            "The models trained and pruned by `benchmarks/train` (see *CRNN compression study "
            "(training)*), each calibrated and compiled for the NPU. *points vs dense fp32*: "
            "ocrc int8 accuracy minus the dense model's onnxruntime fp32 accuracy. Literature: "
            f"{LITERATURE_SIZE[0]} MB -> {LITERATURE_SIZE[1]} MB "
            f"({LITERATURE_SIZE[0] / LITERATURE_SIZE[1]:.2f}x) with under 3 points lost; "
            "latency 55.1 ms dense to 38.7 ms at 78% (1.42x).")
        parts += ["### The compression study, compiled (demo CRNNs, clean set)", "", crnn_note,
                  "", crnn]
    if notes:
        parts += ["Compression pipelines and notes:", "", *notes, ""]
    return "\n".join(parts)


def write_header(text: str, path: Path = RESULTS_MD) -> None:
    """Put `text` between the header markers at the top of RESULTS.md (before the first `## `
    section), and make sure a `## Scoreboard` section follows it; other text is kept."""
    old = path.read_text(encoding="utf-8") if path.exists() else "# ocrc benchmark results\n"
    block = f"{HEADER_START}\n{text.strip()}\n{HEADER_END}\n"
    if HEADER_START in old and HEADER_END in old:
        start = old.index(HEADER_START)
        end = old.index(HEADER_END) + len(HEADER_END)
        new = old[:start] + block.rstrip("\n") + old[end:]
    else:
        lines = old.splitlines(keepends=True)
        at = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
        new = "".join(lines[:at]).rstrip("\n") + "\n\n" + block + "\n" + "".join(lines[at:])
    if f"\n## {SECTION}\n" not in new:
        end = new.index(HEADER_END) + len(HEADER_END)
        new = (new[:end] + f"\n\n## {SECTION}\n\n(filled by `python benchmarks/run.py`)\n\n"
               + new[end:].lstrip("\n"))
    atomic_write_text(path, new)
