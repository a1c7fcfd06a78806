"""`ocrc disasm PROG.npu [--stats]`: the instructions of a program, one per line: index, queue,
the assembly (`runtime.isa.disasm`, which `assemble` reads back) and the IR layer it came from;
--stats adds counts per opcode and queue, the program's size by section, its SRAM peak, and
per layer the weight stream formats, bytes saved against dense int8 and MAC sparsity hints."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from ocrc.runtime import isa
from ocrc.runtime.isa import Opcode
from ocrc.runtime.program import load_program
from ocrc.runtime.verify import verify


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("disasm", help="disassemble a .npu program")
    p.add_argument("program", type=Path, help="a .npu file")
    p.add_argument("--stats", action="store_true",
                   help="counts per opcode and queue, section sizes, SRAM peak, weight "
                        "formats and sparsity per layer")
    return p


def disasm_lines(prog: object) -> list[str]:
    """`pc queue  MNEMONIC field=value ... [flags]  ; layer` for every instruction."""
    vp = verify(prog)  # type: ignore[arg-type]
    out = []
    for pc, row in enumerate(vp.fields):
        q = isa.Queue(int(vp.queues[pc])).name.lower()
        layer = vp.program.layers[int(vp.program.layer_ids[pc])]
        out.append(f"{pc:6d} {q:<7} {isa.disasm_row(row)}  ; {layer}")
    return out


def stats_lines(prog: object) -> list[str]:
    vp = verify(prog)  # type: ignore[arg-type]
    p = vp.program
    ops = Counter(Opcode(int(o)).name for o in vp.fields[:, isa.C_OPCODE])
    queues = Counter(isa.Queue(int(q)).name.lower() for q in vp.queues)
    const = sum(r.size for r in p.regions if r.kind == "const")
    size = len(p.to_bytes())
    lines = [(f"program: {p.n_insns} instructions ({p.code.nbytes:,} bytes of code), "
              f"{const:,} bytes of constants, file {size:,} bytes; target {p.target.name}"),
             (f"SRAM in use at most {p.meta.get('sram_peak', vp.sram_peak):,} of "
             f"{p.target.sram_bytes:,} bytes (highest address touched {vp.sram_peak:,}); DRAM "
             f"{p.dram_size:,} bytes in {len(p.regions)} regions; "
             f"{len([x for x in p.layers if x != '<none>'])} layers; "
             f"host ops {p.meta.get('host_ops', 0)}"),
             "per queue: " + ", ".join(f"{q} {n}" for q, n in sorted(queues.items())),
             "per opcode:"]
    lines += [f"  {name:<8}{n:>8}" for name, n in sorted(ops.items(), key=lambda kv: -kv[1])]
    return lines + weight_lines(vp)


def weight_lines(vp: object) -> list[str]:
    """Per layer: the weight streams' formats, bytes stored and moved per inference against
    dense int8, and the MAC instructions' sparsity hints."""
    from ocrc.compiler.backend.weights import weight_report

    p = vp.program  # type: ignore[attr-defined]
    rows = weight_report(vp.fields, p.layer_ids, p.layers)  # type: ignore[attr-defined]
    if not rows:
        return []
    out = ["weights per layer (stored: distinct streams; moved: all LOADWs of one inference):",
           (f"  {'layer':<34}{'stored':>12}{'dense':>12}{'saved':>7}{'moved':>13}{'dense':>13}"
            "  formats; MAC sparsity hints")]
    tot = [0, 0, 0, 0]
    for r in rows:
        vals = (r.stored, r.stored_dense, r.moved, r.moved_dense)
        tot = [a + b for a, b in zip(tot, vals, strict=True)]
        fm = ", ".join(f"{k} {v:,}" for k, v in sorted((r.formats or {}).items()))
        hs = ", ".join(f"{k} {v}" for k, v in sorted((r.hints or {}).items()))
        out.append(f"  {r.layer[:33]:<34}{r.stored:>12,}{r.stored_dense:>12,}"
                   f"{1 - r.stored / max(r.stored_dense, 1):>7.1%}{r.moved:>13,}"
                   f"{r.moved_dense:>13,}  {fm}; {hs}")
    out.append(f"  {'total':<34}{tot[0]:>12,}{tot[1]:>12,}{1 - tot[0] / max(tot[1], 1):>7.1%}"
               f"{tot[2]:>13,}{tot[3]:>13,}")
    return out


def main(args: argparse.Namespace) -> int:
    prog = load_program(args.program)
    lines = disasm_lines(prog)
    if args.stats:
        lines += [""] + stats_lines(prog)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
