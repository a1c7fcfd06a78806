"""Command-line options that choose and instrument the pass pipeline (`ocrc compile`,
`ocrc opt`): --passes, --print-ir-after-all, --print-ir-after/-before=NAME, --dump-ir DIR,
--time-passes, --verify-each. The IR dumps and the timing table go to stderr."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ocrc.compiler.errors import PassError
from ocrc.compiler.ir.graph import Graph
from ocrc.compiler.passes import PASSES, DumpIR, Instrument, PassContext, PrintIR, TimePasses
from ocrc.compiler.passes import run_passes
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
    out = run_passes(graph, passes, ctx)
    if timer is not None:
        sys.stderr.write(timer.table())
    return out
