"""The `-t npu` target of `ocrc compile`: the quantised graph the pipeline produced -> a `.npu`
program (compiler.backend), with `--target-config PRESET|FILE.toml`. With --dump-ir the
lowered NPU-level IR is written next to the pass dumps (NN-npu-lower.ir)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ocrc.compiler.backend.codegen import compile_program
from ocrc.compiler.ir.graph import Graph
from ocrc.compiler.ir.irfile import save_ir
from ocrc.runtime.errors import OcrcError
from ocrc.runtime.target import load_target, presets

log = logging.getLogger(__name__)


def add_npu_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("npu target")
    g.add_argument("--target-config", default="npu", metavar="PRESET|FILE.toml",
                   help=f"the NPU: a preset ({', '.join(presets())}) or a target TOML file "
                        "(default: npu)")


def prepare_npu_args(args: argparse.Namespace) -> None:
    """-t npu implies --quant int8 (which needs --calib); the target is read first so a bad
    --target-config fails before the (slow) pipeline runs."""
    args.npu_target = load_target(args.target_config)
    if getattr(args, "quant", "none") == "none":
        args.quant = "int8"
    if getattr(args, "calib", None) is None:
        raise OcrcError("-t npu quantises the model: pass calibration inputs with "
                        "--calib DIR|FILE.npz")


def compile_npu(graph: Graph, args: argparse.Namespace) -> int:
    target = args.npu_target
    res = compile_program(graph, target, args.model.stem)
    if args.dump_ir is not None:
        n = len(list(Path(args.dump_ir).glob("*.ir")))
        save_ir(res.lowered, Path(args.dump_ir) / f"{n:02d}-npu-lower.ir")
    out: Path = args.output or Path(args.model.stem + ".npu")
    res.program.save(out)
    size = len(res.program.to_bytes())
    sys.stderr.write(f"{out}: {res.program.n_insns} instructions, {size:,} bytes, "
                     f"{len(res.plan.kernels)} kernels on {target.name}, estimated "
                     f"{res.estimate:,} cycles"
                     + (f", {res.host_ops} host op(s)" if res.host_ops else "") + "\n")
    return 0
