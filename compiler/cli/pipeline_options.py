"""Command-line options that choose and instrument the pass pipeline (`ocrc compile`,
`ocrc opt`): --passes, --print-ir-after-all, --print-ir-after/-before=NAME, --dump-ir DIR,
--time-passes, --verify-each. The IR dumps and the timing table go to stderr."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ocrc.compiler.errors import PassError
from ocrc.compiler.ir.graph import Graph
from ocrc.compiler.passes import (
    PASSES,
    DumpIR,
    Instrument,
    Pass,
    PassContext,
    PrintIR,
    TimePasses,
    run_passes,
)
from ocrc.compiler.pipeline import DEFAULT, PIPELINES, build_pipeline


def add_pipeline_options(p: argparse.ArgumentParser, default: str = DEFAULT,
                         short: bool = False) -> None:
    """Add --passes, --print-ir-after-all, --dump-ir, ... to a subcommand's parser."""
    g = p.add_argument_group("pass pipeline")
    names = ["-p", "--passes"] if short else ["--passes"]
    g.add_argument(*names, dest="passes", default=default, metavar="PIPELINE",
                   help="pass pipeline text, e.g. 'canonicalize,fold-bn,fuse-act{into_epilogue="
                        f"false}}', or a named pipeline ({', '.join(PIPELINES)}); "
                        f"default: {default!r}")
    g.add_argument("--print-ir-after-all", action="store_true",
                   help="print the IR after every pass (stderr)")
    g.add_argument("--print-ir-after", action="append", default=[], metavar="NAME",
                   help="print the IR after each run of pass NAME (stderr; repeatable)")
    g.add_argument("--print-ir-before", action="append", default=[], metavar="NAME",
                   help="print the IR before each run of pass NAME (stderr; repeatable)")
    g.add_argument("--dump-ir", type=Path, metavar="DIR",
                   help="write NN-pass.ir (+ .npz) after every pass into DIR")
    g.add_argument("--time-passes", action="store_true",
                   help="print a table of the time spent in each pass (stderr)")
    g.add_argument("--verify-each", action="store_true",
                   help="verify the IR after every pass")
    add_quant_options(p)


def _check_names(option: str, names: list[str]) -> tuple[str, ...]:
    for n in names:
        if n not in PASSES:
            raise PassError(f"{option}={n}: unknown pass '{n}'; valid passes: "
                            f"{', '.join(sorted(PASSES))}")
    return tuple(names)


def run_pipeline(graph: Graph, args: argparse.Namespace, verify_each: bool = False) -> Graph:
    """Run the pipeline the options select on `graph`, with the instruments they ask for."""
    passes = build_pipeline(args.passes)
    after = _check_names("--print-ir-after", args.print_ir_after)
    before = _check_names("--print-ir-before", args.print_ir_before)
    instruments: list[Instrument] = []
    if args.print_ir_after_all or after or before:
        instruments.append(PrintIR(sys.stderr, args.print_ir_after_all, after, before))
    if args.dump_ir is not None:
        instruments.append(DumpIR(args.dump_ir))
    timer = TimePasses() if args.time_passes else None
    if timer is not None:
        instruments.append(timer)
    ctx = PassContext(instruments=instruments, verify_each=verify_each or args.verify_each)
    passes += quant_passes(graph, args, ctx)
    out = run_passes(graph, passes, ctx)
    if timer is not None:
        sys.stderr.write(timer.table())
    report_quant(args, ctx)
    return out


# --- quantisation options (owned by the quantiser, compiler/quant) ------------------------------
def add_quant_options(p: argparse.ArgumentParser) -> None:
    """Add --quant, --calib, --quant-method and --quant-report (docs/quantization.md)."""
    from ocrc.compiler.quant.observers import METHODS

    g = p.add_argument_group("quantisation")
    g.add_argument("--quant", choices=("int8", "none"), default="none",
                   help="int8: append the `quantize` pass to the pipeline (needs --calib)")
    g.add_argument("--calib", type=Path, metavar="DIR|FILE.npz",
                   help="calibration inputs: a directory of .npy files (one input tensor each) "
                        "or an .npz archive")
    g.add_argument("--quant-method", choices=METHODS, default="minmax",
                   help="how activation ranges are chosen (default: minmax)")
    g.add_argument("--quant-report", type=Path, metavar="FILE.json",
                   help="write per-layer SQNR/cosine vs float (entire and single modes, worst "
                        "first) and print the worst layers (stderr)")


def quant_passes(graph: Graph, args: argparse.Namespace, ctx: PassContext) -> list[Pass]:
    """The `quantize` pass --quant int8 asks for (none otherwise), its data in ctx.options."""
    from ocrc.compiler.quant.calibrate import load_calibration_set

    quant = getattr(args, "quant", "none")
    if quant != "int8":
        for opt in ("calib", "quant_report"):
            if getattr(args, opt, None) is not None:
                raise PassError(f"--{opt.replace('_', '-')} needs --quant int8")
        return []
    if args.calib is None:
        raise PassError("--quant int8 needs calibration data: --calib DIR|FILE.npz")
    ctx.options["calibration"] = load_calibration_set(args.calib, graph)
    if args.quant_report is not None:
        ctx.options["quant_report"] = args.quant_report
    return build_pipeline(f"quantize{{method={args.quant_method}}}")


def report_quant(args: argparse.Namespace, ctx: PassContext, worst: int = 10) -> None:
    rep = ctx.options.get("quant_report_table")
    if rep is not None:
        sys.stderr.write(f"quantisation report ({args.quant_report}), {worst} worst layers:\n")
        sys.stderr.write(rep.table(worst))
