"""Sparse weights on the NPU: program bytes and NPU cycles with compressed weight streams and
the MAC array's sparsity modes, against the same quantised graph compiled with dense weights.
Writes the `## Sparse weights on the NPU` section of RESULTS.md.

    python -m benchmarks.sparse_weights [--rows crnn_dense,...] [--no-write]

Each row is an `ocrc` command (printed in the table); the benchmark runs the very pipeline of
that command (`ocrc demo` for the bundled CRNNs first, then its compile arguments), compiles
the quantised graph twice (compressed/sparse and dense), runs both programs on the VM, and
checks the compressed program bit-exact against the reference interpreter on one input.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ocrc.compiler.backend.codegen import CompileResult, compile_program
from ocrc.compiler.backend.host import run_program
from ocrc.compiler.backend.weights import weight_report
from ocrc.compiler.cli import build_parser
from ocrc.compiler.cli import main as ocrc_main
from ocrc.compiler.cli.cmd_compile import input_shapes
from ocrc.compiler.cli.npu_target import prepare_npu_args
from ocrc.compiler.cli.pipeline_options import run_pipeline
from ocrc.compiler.ir.interp import run
from ocrc.frontend import zoo
from ocrc.frontend.bundled import bundled_model
from ocrc.frontend.onnx_import import import_onnx
from ocrc.runtime.program import load_program
from ocrc.runtime.verify import verify

from benchmarks.ocr.report import markdown_table, write_section

DD_SHAPE = "input1=1,1,64,160"


@dataclass(frozen=True)
class Row:
    name: str
    model: str  # bundled CRNN name or "ddddocr"
    options: tuple[str, ...] = ()
    preset: str = "npu"


ROWS = {r.name: r for r in [
    Row("crnn_dense", "crnn_dense"),
    Row("crnn_sparse78", "crnn_sparse78"),
    Row("ddddocr", "ddddocr"),
    Row("ddddocr 50% LSTM+Gemm", "ddddocr", ("--prune", "sparsity=0.5,ops=dense+lstm")),
    Row("ddddocr 78% LSTM+Gemm", "ddddocr", ("--prune", "sparsity=0.78,ops=dense+lstm")),
    Row("ddddocr 78% all layers", "ddddocr", ("--prune", "0.78")),
    Row("ddddocr 2:4", "ddddocr", ("--prune", "2:4")),
    Row("ddddocr (npu-large)", "ddddocr", preset="npu-large"),
]}


def _command(row: Row, work: Path) -> tuple[list[str], str, Path]:
    """(compile argv, the command as a user types it, the float ONNX)."""
    if row.model != "ddddocr":
        with contextlib.redirect_stdout(io.StringIO()):  # the demo's own report
            ocrc_main(["demo", "--model", row.model, "--target-config", row.preset,
                       "--out", str(work / row.model)])
        prog = load_program(work / row.model / f"{row.model}.npu")
        d = prog.inputs[0]
        model = bundled_model(row.model).path
        argv = ["compile", str(model), "-t", "npu", "--target-config", row.preset,
                "--input-shape", f"{d.name}={','.join(map(str, d.shape))}",
                "--calib", str(work / row.model / "calib.npz")]
        return argv, f"ocrc demo --model {row.model}", Path(model)
    calib = work / "ddddocr-calib.npz"
    if not calib.exists():
        rng = np.random.default_rng(0)
        np.savez(calib, **{f"{i:03d}": rng.random((1, 1, 64, 160)).astype(np.float32)
                           for i in range(2)})
    model = Path(zoo.fetch_model("ddddocr-common"))
    opts = [*row.options, *(("--target-config", row.preset) if row.preset != "npu" else ())]
    argv = ["compile", str(model), "-t", "npu", "--input-shape", DD_SHAPE, "--calib", str(calib),
            *opts]
    return argv, " ".join(["ocrc compile common.onnx -t npu --input-shape", DD_SHAPE,
                           "--calib CALIB.npz", *opts]), model


def _lstm_cycles(stats: object) -> int:
    return sum(lay.cycles for lay in stats.layers if "npu.lstm" in lay.name)  # type: ignore


def bench_row(row: Row, work: Path) -> list[object]:
    argv, cmd, model = _command(row, work)
    args = build_parser().parse_args(argv)
    prepare_npu_args(args)
    qg = run_pipeline(import_onnx(args.model, input_shapes(args.input_shape)), args)
    target = args.npu_target
    res: CompileResult = compile_program(qg, target, row.name)
    dense = compile_program(qg, target, row.name, sparse_weights=False)
    rng = np.random.default_rng(1)
    x = {v.name: rng.random(v.type.shape).astype(np.float32) for v in qg.inputs}
    out, st = run_program(res.program, x)
    ref = run(qg, x)
    exact = all(np.array_equal(ref[k], out[k]) for k in ref)
    _, dst = run_program(dense.program, x)
    p = res.program
    wr = weight_report(verify(p).fields, p.layer_ids, p.layers)
    stored, stored_dense = sum(r.stored for r in wr), sum(r.stored_dense for r in wr)
    size, dsize, fsize = len(p.to_bytes()), len(dense.program.to_bytes()), model.stat().st_size
    return [row.name, f"`{cmd}`", row.preset, f"{fsize:,}", f"{dsize:,}", f"{size:,}",
            f"{fsize / size:.2f}x", f"{1 - stored / stored_dense:.1%}",
            f"{dst.total_cycles:,}", f"{st.total_cycles:,}", f"{st.latency_s * 1e3:.3f}",
            f"{dst.total_cycles / st.total_cycles:.2f}x",
            f"{_lstm_cycles(dst):,} / {_lstm_cycles(st):,}",
            f"{res.estimate / st.total_cycles:.3f}", "yes" if exact else "**NO**"]


HEADER = ("setting", "command", "preset", "float ONNX bytes", "program bytes, dense weights",
          "program bytes", "vs float", "weight bytes saved", "cycles, dense weights",
          "NPU cycles", "latency ms", "speed-up", "LSTM cycles dense / sparse", "estimate / VM",
          "bit-exact")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.rows.split(","):
            rows.append(bench_row(ROWS[name], Path(tmp)))
            print(" | ".join(str(c) for c in rows[-1]), flush=True)
    body = (
        "`python -m benchmarks.sparse_weights`: each setting's quantised graph compiled twice "
        "for the NPU, with weights stored and run dense (`compile_program(..., "
        "sparse_weights=False)`, the backend before compressed streams) and as `ocrc` compiles "
        "it now: every weight block the kernels load is stored in the smallest stream format "
        "LOADW decodes (dense, bitmask + nonzeros, csr run-length; raw int8 or 4-bit indices "
        "into a 16-entry codebook), the DMA is charged the compressed bytes, and each MAC "
        "instruction gets the sparsity hint (zero-block skipping, 2:4 at double rate) that "
        "is fastest on the target. The LSTM keeps the rows of its recurrent weights that fit "
        "resident in SRAM across time steps (all of them on npu-large) and streams the rest. "
        "Calibration: the demo's bundled images for the CRNNs, 2 seeded uniform samples for "
        "ddddocr (bytes and cycles do not depend on it). Cycles are the VM's on one input "
        "(they do not depend on the data); *bit-exact*: the compressed program's outputs "
        "equal the reference interpreter's.\n\n" + markdown_table(HEADER, rows) + "\n"
        "- *program bytes*: the whole `.npu` file (code, constants incl. bias/scale blocks and "
        "tables, metadata); *weight bytes saved*: int8 weight streams stored against dense "
        "int8 (`ocrc disasm --stats PROG.npu` lists the formats per layer).\n"
        "- *LSTM cycles*: the recurrent kernel (the input projections are a separate "
        "matmul). On `npu` (1 MiB SRAM) the 2 MiB of ddddocr's R does not fit: the rows that "
        "fit stay resident and the rest is re-streamed every step, compressed. Before this "
        "work (commit de9aa52) R was re-streamed whole every step on `npu`: ddddocr took "
        "7,219,973 cycles (LSTM 5,400,152) for a 13,811,153-byte program; the partial "
        "residency alone brings it to 6,610,282 (the *dense weights* column).\n"
        "- 2:4 runs at double rate, so the MAC utilisation `ocrc bench` prints (dense MACs "
        "over cycles x array size) can exceed 100% there.\n")
    if not args.no_write:
        write_section("Sparse weights on the NPU", body)


if __name__ == "__main__":
    main()
