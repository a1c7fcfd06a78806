"""The backend driver: quantised IR graph + target -> verified `.npu` Program.

lower (npu ops) -> kernels and storages (memory.py) -> SRAM residency and per-kernel workspace
(memory.plan_homes, guided by the tiler's workspace needs) -> tiling (tiling.py) -> DRAM layout
-> emission (emit*.py) -> dependency tokens (schedule.py) -> ProgramBuilder (encode, verify).
Float ops after the output dequantise (softmax) are the documented host fallback: they are kept
as IR text in the program's meta ("host_tail") and counted; `ocrc run` applies them.
Deterministic: the same graph and target give byte-identical programs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from ocrc.compiler.backend import layout as L
from ocrc.compiler.backend.emit import Ctx, KernelEmitter
from ocrc.compiler.backend.host import host_tail, name_boundary, tail_text
from ocrc.compiler.backend.lower import lower
from ocrc.compiler.backend.memory import MemoryPlan, build_kernels, plan_dram, plan_homes
from ocrc.compiler.backend.schedule import assign_tokens
from ocrc.compiler.backend.tiling import Tiler, Tiling, emitter_of
from ocrc.compiler.backend.weights import WeightPlanner
from ocrc.compiler.errors import UnsupportedOpError
from ocrc.compiler.ir.graph import Graph
from ocrc.runtime.builder import ProgramBuilder
from ocrc.runtime.errors import ProgramError
from ocrc.runtime.program import Program
from ocrc.runtime.target import Target

log = logging.getLogger(__name__)


@dataclass
class CompileResult:
    program: Program
    lowered: Graph
    plan: MemoryPlan
    tilings: list[Tiling] = field(default_factory=list)
    estimate: int = 0  # the cost model's cycles: sum over tiles of max(compute, memory)
    host_ops: int = 0
    sram_peak: int = 0  # max over kernels of workspace used + resident activations live

    @property
    def sram_resident(self) -> int:
        return sum(s.nbytes for s in self.plan.storages if s.kind == "temp" and s.home == "sram")


def _check_int16(g: Graph, target: Target) -> None:
    """int16 activations (docs/quantization.md §8) need the target's int16 MAC mode."""
    if target.int16:
        return
    for n in g.nodes:
        if n.op.name not in ("const", "npu.lstm") and any(v.type.dtype.value == "i16"
                                                          for v in n.outputs):
            raise UnsupportedOpError(f"{n.label()}: int16 activations need a target with "
                                     f"mac.int16; '{target.name}' has none (quantise with "
                                     "--quant-int16 none)")


def _const_of(b: ProgramBuilder, target: Target) -> Callable[[str, bytes], int]:
    """b.const, whose DRAM overflow (the only error it raises at 64-byte alignment) names the
    way out: the weights are what fills DRAM, and the compression passes shrink them."""
    def const(name: str, raw: bytes) -> int:
        try:
            return b.const(name, raw)
        except ProgramError as e:
            raise ProgramError(f"{e}: the weights do not fit '{target.name}'; compress them "
                               "(ocrc compile --low-rank SPEC, --prune SPEC)") from None
    return const


def compile_program(qgraph: Graph, target: Target, name: str = "model",
                    sparse_weights: bool = True) -> CompileResult:
    """Compile a quantised graph for `target`. Raises UnsupportedOpError / WorkspaceError
    (both OcrcError) for what the NPU cannot run. sparse_weights=False stores every weight
    block dense and runs the MAC array dense (the baseline of benchmarks/sparse_weights.py)."""
    lowered = lower(qgraph)
    _check_int16(lowered, target)
    name_boundary(lowered)
    plan = build_kernels(lowered)
    b = ProgramBuilder(target)
    ctx = Ctx(target, lowered, plan, _const_of(b, target),
              WeightPlanner(target, sparse_weights, sparse_weights))
    tiler = Tiler(ctx)
    plan_homes(plan, target.sram_bytes, tiler.want)
    tilings = [tiler.choose(k, plan.budget[k.index]) for k in plan.kernels]
    # Slide the resident storages down onto the largest workspace actually used, so the
    # program touches SRAM only up to its real peak.
    slack = min((plan.budget[k.index] - t.workspace for k, t in zip(plan.kernels, tilings)),
                default=0) // 64 * 64
    for s in plan.storages:
        if s.kind == "temp" and s.home == "sram":
            s.addr -= slack
    plan.budget = [bud - slack for bud in plan.budget]
    for v, qn in plan.inputs:
        s = plan.of[v]
        x = qn.inputs[0]
        assert x is not None
        item = v.type.dtype.np.itemsize
        d = b.input(x.name, v.type.shape, {1: "int8", 2: "int16"}[item], qn.attr("scale"),
                    qn.attr("zp"), L.byte_strides(v.type.shape, plan.layout[v], item))
        s.addr = d.addr
    for v, dq in plan.outputs:
        s = plan.of[v]
        item = v.type.dtype.np.itemsize
        dt = {1: "int8", 2: "int16", 4: "int32"}[item]
        d = b.output(dq.output.name, v.type.shape, dt, dq.attr("scale"), dq.attr("zp"),
                     L.byte_strides(v.type.shape, plan.layout[v], item),
                     addr=s.addr if s.addr >= 0 and s.home == "dram" else None)
        if s.kind == "input":
            continue
        s.home, s.addr = "dram", d.addr
    scratch = plan_dram(plan)
    if scratch:
        ctx.scratch_base = b.scratch("scratch", scratch)
    estimate = 0
    sram_peak = max((t.workspace + target.sram_bytes - slack - plan.budget[k.index]
                     for k, t in zip(plan.kernels, tilings)), default=0)
    for k, t in zip(plan.kernels, tilings):
        em: KernelEmitter = emitter_of(k)(ctx, k, plan.budget[k.index], t.params)
        em.layer = f"{k.name} [{'+'.join(n.op.name for n in k.nodes)}]"
        em.run()
        ctx.insns.extend(em.out)
        estimate += em.estimate
    insns = assign_tokens(ctx.insns)
    tail, n_host = host_tail(lowered)
    b.meta.update({"model": name, "estimate_cycles": estimate, "host_ops": n_host,
                   "sram_peak": sram_peak})
    if tail is not None:
        b.meta["host_tail"] = tail_text(tail)
    for ins in insns:
        b.layer(ins.layer)
        b.emit(ins.op, **ins.fields)
    prog = b.build()
    log.info("%s on %s: %d kernels, %d instructions, estimate %d cycles", name, target.name,
             len(plan.kernels), prog.n_insns, estimate)
    return CompileResult(prog, lowered, plan, tilings, estimate, n_host, sram_peak)
