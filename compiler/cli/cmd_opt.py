"""`ocrc opt IN.ir -p PIPELINE [-o OUT.ir]`: text IR in, pipeline, text IR out (like mlir-opt).

Reads IN.ir with its IN.ir.npz, verifies after every pass, prints the result to stdout or
writes OUT.ir (+ .npz) atomically. `--split-input-file` treats `// -----` lines as separators
of independent inputs; `--verify-diagnostics` expects each input to fail and prints the error
(so FileCheck files can test error messages)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

from ocrc.compiler.cli.pipeline_options import add_pipeline_options, run_pipeline
from ocrc.compiler.ir.irfile import load_ir, save_ir, side_file
from ocrc.compiler.ir.parser import parse_graph
from ocrc.compiler.ir.printer import graph_text
from ocrc.runtime.errors import OcrcError
from ocrc.runtime.fileio import atomic_write_text

SPLIT = re.compile(r"^// -----\s*$", re.MULTILINE)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("opt", help="run a pass pipeline on a .ir file")
    p.add_argument("input", type=Path, help="a .ir file (its .ir.npz is read when present)")
    p.add_argument("-o", "--output", type=Path, help="write the result here (default: stdout)")
    p.add_argument("--split-input-file", action="store_true",
                   help="process each '// -----'-separated part of the input on its own")
    p.add_argument("--verify-diagnostics", action="store_true",
                   help="expect every input to fail; print its error message to stdout")
    add_pipeline_options(p, default="canonicalize", short=True)
    return p


def _blobs(path: Path) -> dict[str, np.ndarray]:
    side = side_file(path)
    if not side.exists():
        return {}
    try:
        with np.load(side, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise OcrcError(f"{side}: cannot read the IR's constants: {e}") from None


def _one(text: str, blobs: dict[str, np.ndarray], args: argparse.Namespace, where: str) -> str:
    try:
        g = parse_graph(text, blobs)
    except OcrcError as e:
        raise type(e)(f"{where}:{e}") from None
    return graph_text(run_pipeline(g, args, verify_each=True))


def main(args: argparse.Namespace) -> int:
    path: Path = args.input
    if not path.exists():
        raise OcrcError(f"{path}: no such file")
    if not (args.split_input_file or args.verify_diagnostics):
        g = load_ir(path)
        out = run_pipeline(g, args, verify_each=True)
        if args.output is not None:
            save_ir(out, args.output)
        else:
            sys.stdout.write(graph_text(out))
        return 0
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise OcrcError(f"{path}: cannot read IR file: {e}") from None
    parts = SPLIT.split(text) if args.split_input_file else [text]
    # Pad each part with the newlines before it, so messages give the file's line numbers.
    offsets = [0]
    for part in parts[:-1]:
        offsets.append(offsets[-1] + part.count("\n"))  # the separator keeps its newline
    parts = ["\n" * off + part for off, part in zip(offsets, parts)]
    blobs = _blobs(path)
    results = []
    for k, part in enumerate(parts):
        where = f"{path}" + (f" (part {k + 1})" if len(parts) > 1 else "")
        if not args.verify_diagnostics:
            results.append(_one(part, blobs, args, where))
            continue
        try:
            _one(part, blobs, args, where)
        except OcrcError as e:
            results.append(f"error: {str(e).replace(where + ':', '', 1)}\n")
            continue
        raise OcrcError(f"{where}: --verify-diagnostics expected an error, but the pipeline "
                        "succeeded")
    body = "// -----\n".join(results)
    if args.output is not None:
        atomic_write_text(args.output, body)
    else:
        sys.stdout.write(body)
    return 0
