"""`ocrc run PROGRAM --input NAME=FILE.npy ... [--output OUT.npz]`: execute a program.

A `.ir` program runs on the reference interpreter. A `.npu` program runs on the VM: float
inputs are quantised and the outputs dequantised through the program's I/O descriptors, a host
tail (softmax) runs after it, and a one-paragraph summary (latency, cycles, utilisation) follows
the outputs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ocrc.compiler.cli.common import load_inputs, save_outputs
from ocrc.compiler.ir.interp import run as interp_run
from ocrc.compiler.ir.irfile import load_ir
from ocrc.runtime.errors import OcrcError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("run", help="run a program (.ir on the reference interpreter, .npu on "
                                   "the VM)")
    p.add_argument("program", type=Path, help="a .ir or .npu file")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy", help="an input tensor")
    p.add_argument("--output", "-o", type=Path, help="write the outputs to this .npz")
    return p


def run_npu(path: Path, inputs: dict) -> tuple[dict, str]:  # type: ignore[type-arg]
    """Outputs and the summary paragraph of one VM run of a .npu file."""
    from ocrc.compiler.backend.host import run_program
    from ocrc.runtime.program import load_program

    prog = load_program(path)
    want = [d.name for d in prog.inputs]
    missing = [n for n in want if n not in inputs]
    if missing:
        raise OcrcError(f"{path}: missing --input for {missing}; the program's inputs are "
                        + ", ".join(f"{d.name} {list(d.shape)}" for d in prog.inputs))
    outputs, stats = run_program(prog, inputs)
    return outputs, stats.summary()


def main(args: argparse.Namespace) -> int:
    prog: Path = args.program
    if not prog.exists():
        raise OcrcError(f"{prog}: no such file")
    summary = ""
    if prog.suffix == ".ir":
        outputs = interp_run(load_ir(prog), load_inputs(args.input))
    elif prog.suffix == ".npu":
        outputs, summary = run_npu(prog, load_inputs(args.input))
    else:
        raise OcrcError(f"{prog}: unknown program kind '{prog.suffix}', expected .ir or .npu")
    for name, arr in outputs.items():
        print(f"{name}: {arr.dtype}{list(arr.shape)}")
    if summary:
        print(summary)
    if args.output:
        save_outputs(args.output, outputs)
    return 0
