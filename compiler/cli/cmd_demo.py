"""`ocrc demo`: the main job on the bundled model, offline. Compiles the bundled CRNN (trained
and pruned to 78% sparsity by benchmarks/train) for an NPU preset with the same command a user
would type (`ocrc compile -t npu`, int8, calibrated on the bundled calibration images), runs the
program in the VM on the bundled text images, and prints the recognised strings, the compression, the NPU latency and
utilisation, and where the IR dumps and reports went."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ocrc.compiler.cli.common import save_outputs
from ocrc.runtime.errors import OcrcError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="compile the bundled CRNN for the NPU and read a few images")
    p.add_argument("--model", default="crnn_sparse78",
                   help="bundled model: crnn_sparse78 (default: pruned to 78%% weight sparsity, "
                        "stored compressed) or crnn_dense")
    p.add_argument("--target-config", default="npu", metavar="PRESET|FILE.toml",
                   help="the NPU preset or target file (default: npu)")
    p.add_argument("--out", type=Path, default=Path("ocrc-demo"),
                   help="folder for the program, IR dumps and reports (default: ./ocrc-demo)")
    return p


def main(args: argparse.Namespace) -> int:
    from ocrc.compiler.backend.host import run_program
    from ocrc.compiler.cli import main as ocrc_main
    from ocrc.frontend.bundled import bundled_images, bundled_model, ctc_greedy, preprocess
    from ocrc.runtime.program import load_program

    model = bundled_model(args.model)
    demo, calib = bundled_images("demo"), bundled_images("calib")
    # One static shape for all: the widest image, the others padded with white.
    xc = preprocess(model, [im for _, im in calib])
    x = preprocess(model, [im for _, im in demo], width=xc.shape[3])
    xc = preprocess(model, [im for _, im in calib], width=x.shape[3])
    width = x.shape[3]
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    calib_file, program = out / "calib.npz", out / f"{args.model}.npu"
    save_outputs(calib_file, {f"{i:03d}": xc[i:i + 1] for i in range(len(xc))})  # a sample each
    cmd = ["compile", str(model.path), "-t", "npu", "--target-config", args.target_config,
           "--input-shape", f"{model.input_name}=1,1,{model.height},{width}",
           "--calib", str(calib_file), "--dump-ir", str(out / "ir"),
           "--quant-report", str(out / "quant-report.json"), "-o", str(program)]
    print(f"$ ocrc {' '.join(cmd)}")
    sys.stdout.flush()
    status = ocrc_main(cmd)
    if status:
        raise OcrcError(f"demo: compiling the bundled model failed (exit status {status})")

    prog = load_program(program)
    print(f"\n{'image':<12}{'expected':<12}{'NPU (int8)':<12}")
    right, stats = 0, None
    for i, (label, _) in enumerate(demo):
        outputs, stats = run_program(prog, {model.input_name: x[i:i + 1]})
        text = ctc_greedy(np.asarray(next(iter(outputs.values()))), model.charset)
        right += text == label
        print(f"demo_{i:02d}     {label:<12}{text:<12}{'ok' if text == label else 'WRONG'}")
    assert stats is not None
    float_bytes = model.path.stat().st_size
    prog_bytes = program.stat().st_size
    print(f"\nrecognised {right}/{len(demo)} strings exactly")
    print(f"compression: float ONNX {float_bytes:,} bytes -> NPU program {prog_bytes:,} bytes "
          f"({float_bytes / prog_bytes:.2f}x smaller)")
    print(f"NPU ({stats.target}): {stats.latency_s * 1e3:.3f} ms per image "
          f"({stats.total_cycles:,} cycles at {stats.clock_hz / 1e6:.0f} MHz), MAC utilisation "
          f"{stats.mac_utilisation:.1%}, {stats.macs / 1e6:.1f} MMAC, VM wall time "
          f"{stats.wall_s * 1e3:.1f} ms")
    print(f"program: {program}\nIR dumps (one per pass, then the lowered NPU IR): {out / 'ir'}"
          f"\nquantisation report: {out / 'quant-report.json'}")
    return 0
