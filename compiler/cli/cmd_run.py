"""`ocrc run PROGRAM --input NAME=FILE.npy ... [--output OUT.npz]`: execute a program.

A `.ir` program runs on the reference interpreter; `.npu` programs run on the VM (wired in
when the NPU backend lands)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ocrc.compiler.cli.common import load_inputs, save_outputs
from ocrc.compiler.ir.interp import run as interp_run
from ocrc.compiler.ir.irfile import load_ir
from ocrc.runtime.errors import OcrcError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("run", help="run a program (.ir on the reference interpreter)")
    p.add_argument("program", type=Path, help="a .ir file")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy", help="an input tensor")
    p.add_argument("--output", "-o", type=Path, help="write the outputs to this .npz")
    return p


def main(args: argparse.Namespace) -> int:
    prog: Path = args.program
    if not prog.exists():
        raise OcrcError(f"{prog}: no such file")
    if prog.suffix != ".ir":
        raise OcrcError(f"{prog}: unknown program kind '{prog.suffix}', expected .ir")
    graph = load_ir(prog)
    outputs = interp_run(graph, load_inputs(args.input))
    for name, arr in outputs.items():
        print(f"{name}: {arr.dtype}{list(arr.shape)}")
    if args.output:
        save_outputs(args.output, outputs)
    return 0
