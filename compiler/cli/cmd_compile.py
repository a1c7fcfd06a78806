"""`ocrc compile MODEL.onnx [-t ir|npu|onnx] [-o OUT] [--input-shape NAME=D0,D1,...] [pipeline
options]`: import an ONNX model, run the pass pipeline and write the text IR and its .npz
atomically (-t ir, the default), an NPU program (-t npu) or the optimised graph as ONNX
(-t onnx; with --quant int8 QDQ, or with --onnx-form integer the int8 graph in ONNX integer
ops).

Also home of the `--input-shape` option that `ocrc inspect` shares."""

from __future__ import annotations

import argparse
from pathlib import Path

from ocrc.compiler.cli.npu_target import add_npu_options, compile_npu, prepare_npu_args
from ocrc.compiler.cli.pipeline_options import (add_pipeline_options, run_pipeline,
                                                run_pipeline_ctx)
from ocrc.compiler.export_onnx import check_onnx_form
from ocrc.compiler.ir.irfile import save_ir
from ocrc.frontend.onnx_import import import_onnx
from ocrc.runtime.errors import OcrcError

TARGETS = ("ir", "npu", "onnx")
AVAILABLE_TARGETS = ("ir", "npu", "onnx")


def add_input_shape_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D0,D1,...",
                   help="bind the dims of input NAME (needed for symbolic dims; repeatable)")


def input_shapes(specs: list[str]) -> dict[str, list[int]]:
    """`NAME=D0,D1,...` options as {NAME: [D0, D1, ...]}; OcrcError naming a bad one."""
    out: dict[str, list[int]] = {}
    for spec in specs:
        name, sep, dims = spec.partition("=")
        try:
            shape = [int(d) for d in dims.split(",")]
        except ValueError:
            shape = []
        if not sep or not name or not shape:
            raise OcrcError(f"--input-shape {spec!r}: expected NAME=D0,D1,... with integer dims")
        if name in out:
            raise OcrcError(f"--input-shape: input '{name}' given twice")
        out[name] = shape
    return out


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("compile", help="compile an ONNX model to text IR, an NPU program or ONNX "
                                         "(-t ir|npu|onnx)")
    p.add_argument("model", type=Path, help="an .onnx file")
    p.add_argument("-t", "--target", default="ir", metavar="TARGET",
                   help=f"what to produce: {', '.join(TARGETS)} (default: ir)")
    p.add_argument("-o", "--output", type=Path,
                   help="output file (default, here: MODEL.ir, MODEL.npu or MODEL.opt.onnx)")
    add_input_shape_option(p)
    p.add_argument("--onnx-form", default="qdq", metavar="FORM",
                   help="-t onnx with --quant int8: qdq (QuantizeLinear/DequantizeLinear around "
                        "float ops, what runtimes fuse and accelerate; the default) or integer "
                        "(the int8 graph op for op in ONNX integer ops, computing the golden "
                        "model's codes exactly)")
    add_pipeline_options(p)
    add_npu_options(p)
    return p


def main(args: argparse.Namespace) -> int:
    if args.target not in TARGETS:
        raise OcrcError(f"--target {args.target!r}: unknown target; expected one of "
                        f"{', '.join(TARGETS)}")
    if args.target not in AVAILABLE_TARGETS:
        raise OcrcError(f"--target {args.target!r}: target '{args.target}' is not available "
                        f"yet (available: {', '.join(AVAILABLE_TARGETS)})")
    check_onnx_form(args.onnx_form)  # before the pipeline, which may calibrate for minutes
    if args.onnx_form != "qdq" and args.target != "onnx":
        raise OcrcError(f"--onnx-form {args.onnx_form}: applies to -t onnx, not -t {args.target}")
    shapes = input_shapes(args.input_shape)
    if args.target == "npu":
        prepare_npu_args(args)
    if args.target == "onnx":
        from ocrc.compiler.export_onnx import save_onnx

        if args.share_weights:  # the QDQ model is rebuilt from the unshared quantisation
            raise OcrcError("--share-weights: -t onnx cannot hold shared weights; use -t ir "
                            "or -t npu")

        graph, ctx = run_pipeline_ctx(import_onnx(args.model, shapes), args)
        save_onnx(graph, ctx.options, args.output or Path(args.model.stem + ".opt.onnx"),
                  args.onnx_form)
        return 0
    graph = run_pipeline(import_onnx(args.model, shapes), args)
    if args.target == "npu":
        return compile_npu(graph, args)
    out: Path = args.output or Path(args.model.stem + ".ir")
    save_ir(graph, out)
    return 0
