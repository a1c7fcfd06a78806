"""Tiling: for each kernel, the tile sizes that fit its SRAM workspace budget and minimise the
analytic cost (cost.py: per tile max(compute, memory)). Candidates are run through the kernel's
own emitter in dry mode, so the workspace and cost a tiling is judged by are exactly those of
the code it would produce. Channel/column blocks are multiples of the MAC array's columns so
tiles fill the array; row bands shrink until the tile fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ocrc.compiler.backend.emit import Ctx
from ocrc.compiler.backend.emit_kernels import EMITTERS, Misfit
from ocrc.compiler.backend.emit_lstm import LstmEmitter
from ocrc.compiler.backend.memory import Kernel, Storage
from ocrc.compiler.backend.moves import MoveEmitter, copy_plan
from ocrc.compiler.ir.graph import Node
from ocrc.runtime.errors import OcrcError

UNLIMITED = 1 << 40


class WorkspaceError(OcrcError):
    """A kernel cannot be tiled into the target's SRAM."""


@dataclass(frozen=True)
class Tiling:
    params: dict[str, Any]
    workspace: int
    cost: int
    tiles: int
    dram: int = 0  # bytes moved to and from DRAM

    @property
    def rank(self) -> tuple[int, int, int, int]:
        """Cheapest first; at equal cost the least DRAM traffic (e.g. weights kept resident
        rather than re-streamed while compute hides the stream), fewer tiles, less SRAM."""
        return self.cost, self.dram, self.tiles, self.workspace


def emitter_of(kernel: Kernel) -> Any:
    name = kernel.anchor.op.name
    if name == "npu.move":
        return MoveEmitter
    return LstmEmitter if name == "npu.lstm" else EMITTERS[name]


def _splits(n: int, unit: int = 1, limit: int = 12) -> list[int]:
    """Block sizes for a dim of n: n, then ceil(n / k) rounded up to `unit`, descending."""
    out: list[int] = []
    k = 1
    while len(out) < limit:
        s = min(n, -(-math.ceil(n / k) // unit) * unit)
        if s not in out:
            out.append(s)
        if s <= unit or s == 1:
            break
        k = k + 1 if k < 4 else k * 2
    return out


def reduction_splits(kernel: Kernel, ctx: Ctx) -> list[list[dict[str, Any]]]:
    """Conv tilings that also split the reduction (input channels in chunks of kc, partial sums
    accumulated in int32), for when a cout block's weights or an input band of all channels
    crowd the SRAM (resnet50, vgg19 on npu-lite). Tried only when no plain tiling fits half
    the SRAM (they reload weights per band; dry runs of small tiles are slow)."""
    n = kernel.anchor
    if n.op.name != "npu.conv" or n.attr("group") != 1 or x_wide(n):
        return []
    _, cin, _, _ = n.inputs[0].type.shape  # type: ignore[union-attr]
    _, cout, ho, _ = n.output.type.shape
    cols = ctx.target.cols
    if cin <= cols:
        return []
    rbs, cbs = _splits(ho), _splits(cout, cols, 6)
    out = []
    for kc in _splits(cin, cols, 6)[1:]:  # one group of candidates per chunk size
        group: list[dict[str, Any]] = []
        for cb in cbs[-2:]:
            group += [{"rb": rb, "cb": cb, "order": "bands", "kc": kc} for rb in rbs[-2:]]
            group.append({"rb": rbs[-1], "cb": cb, "order": "bands", "kc": kc, "db": False})
        out.append(group)
    return out


def x_wide(n: Node) -> bool:
    """A MAC with an int16 input (the wide accumulator: no int32 partial sums)."""
    return n.inputs[0].type.dtype.np.itemsize == 2  # type: ignore[union-attr]


def candidates(kernel: Kernel, ctx: Ctx) -> list[dict[str, Any]]:
    n = kernel.anchor
    name = n.op.name
    cols = ctx.target.cols
    if name in ("npu.conv", "npu.pool"):
        _, cout, ho, _ = n.output.type.shape
        rbs = _splits(ho)
        if name == "npu.pool":
            cbs = _splits(cout, 1, 6)
        elif n.attr("group") > 1:
            ng = cout // n.attr("group")
            cbs = _splits(cout, ng, 6)
            if ng > cols:  # blocks inside one group, for groups too big for a small SRAM
                cbs += [b for b in _splits(ng, cols, 6)[1:] if ng % b == 0]
        else:
            cbs = _splits(cout, cols, 6)
        out = []
        for cb in cbs:
            for rb in rbs:
                out.append({"rb": rb, "cb": cb, "order": "bands"})
                if cb < cout:
                    out.append({"rb": rb, "cb": cb, "order": "blocks"})
        # single-buffered variants of the smallest tiles, for when nothing else fits
        out += [{**c, "db": False} for c in out if c["rb"] == rbs[-1]]
        return out
    if name == "npu.matmul":
        w = n.inputs[1]
        assert w is not None
        nn_, k = w.type.shape
        m = n.inputs[0].type.size // k  # type: ignore[union-attr]
        out = [{"mb": mb, "nb": nb} for nb in _splits(nn_, cols, 10) for mb in _splits(m, 1, 4)]
        if 2 * cols * k > ctx.target.sram_bytes // 4 and x_wide(n):
            # weight rows too long, and an int16 input's wide accumulator cannot split K:
            # column blocks narrower than the array instead (vgg19's fc6 on npu)
            out += [{"mb": mb, "nb": nb} for nb in (cols // 2, cols // 4, cols // 8) if nb
                    for mb in _splits(m, 1, 4)]
        elif 2 * cols * k > ctx.target.sram_bytes // 4:  # weight rows too long: split K too
            out += [{"mb": mb, "nb": nb, "kb": kb} for nb in _splits(nn_, cols, 10)[-3:]
                    for mb in _splits(m, 1, 4) for kb in _splits(k, 64, 6)[1:]]
        return out
    if name == "npu.lstm":
        # res: rows of R per direction resident in SRAM across the steps (all, none, or a
        # multiple of g4/8 when only part fits), the rest streamed in blocks of nb rows
        g4 = 4 * n.attr("hidden_size")
        step = max(cols, -(-g4 // 8 // cols) * cols)
        # with nothing resident, R streams in blocks down to one array width, so the kernel
        # fits any SRAM that holds its state (npu-lite); partial residency is for big SRAMs
        return [{"res": g4, "nb": g4}] + [{"res": res, "nb": nb} for res in range(0, g4, step)
                                          for nb in _splits(g4 - res, cols, 12 if res == 0 else 5)]
    if name == "npu.concat":
        out_t = n.output.type
        from ocrc.compiler.backend import layout as L
        outer, _ = L.concat_view(out_t.shape, ctx.plan.layout[kernel.outputs[0]], n.attr("axis"))
        return [{"rc": rc} for rc in _splits(outer, 1, 8)]
    if name == "npu.move":
        return [{}]
    if name == "npu.copy":
        # whole, or the outermost destination dim in 2, 4, ... chunks (double-buffered)
        x, y = n.inputs[0], kernel.outputs[0]
        lay = ctx.plan.layout
        outer = copy_plan(x.type.shape, lay[x], lay[y], 1)[0][0]  # type: ignore[union-attr]
        return [{}] + [{"parts": 1 << e} for e in range(1, 10) if 1 << e <= outer]
    size = n.output.type.size
    # flat chunks start at a multiple of the channel count of any per-channel LUT
    unit = math.lcm(64, *(m.inputs[1].type.shape[0] for m in kernel.nodes  # type: ignore[union-attr]
                          if m.op.name == "npu.lut" and m.inputs[1].type.rank == 2))
    return [{"ce": ce} for ce in _splits(size, unit, 10)]


def evaluate(ctx: Ctx, kernel: Kernel, params: dict[str, Any]) -> Tiling | None:
    em = emitter_of(kernel)(ctx, kernel, UNLIMITED, params, dry=True)
    try:
        em.run()
    except Misfit:
        return None
    return Tiling(params, em.peak, em.estimate, len(em.tiles), em.dram_bytes)


class Tiler:
    """Caches the evaluated candidates of every kernel per storage-home assignment."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self._cache: dict[tuple[int, tuple[str, ...]], list[Tiling]] = {}

    def _all(self, kernel: Kernel) -> list[Tiling]:
        homes = tuple(self.ctx.plan.of[v].home for v in (*kernel.inputs, *kernel.outputs)
                      if v in self.ctx.plan.of)
        key = (kernel.index, homes)
        if key not in self._cache:
            res = [t for t in (evaluate(self.ctx, kernel, p) for p in candidates(kernel, self.ctx))
                   if t is not None]
            half = self.ctx.target.sram_bytes // 2
            if min((t.workspace for t in res), default=UNLIMITED) > half:
                # largest chunks first (fewest reloads); stop at the first chunk size that fits
                # half the SRAM: smaller chunks cost more and their dry runs are slow
                for group in reduction_splits(kernel, self.ctx):
                    res += [t for t in (evaluate(self.ctx, kernel, p) for p in group)
                            if t is not None]
                    if min((t.workspace for t in res), default=UNLIMITED) <= half:
                        break
            if not res:
                raise WorkspaceError(f"{kernel.name}: no tiling applies to this kernel")
            self._cache[key] = res
        return self._cache[key]

    def want(self, kernel: Kernel, homes: dict[Storage, str]) -> tuple[int, int]:
        """(minimum, desired) workspace bytes of a kernel under the current homes."""
        alls = self._all(kernel)
        best = min(alls, key=lambda t: t.rank)
        return min(t.workspace for t in alls), best.workspace

    def choose(self, kernel: Kernel, budget: int) -> Tiling:
        fits = [t for t in self._all(kernel) if t.workspace <= budget]
        if not fits:
            need = min(t.workspace for t in self._all(kernel))
            raise WorkspaceError(f"{kernel.name} ({kernel.anchor.op.name}): needs at least "
                                 f"{need} bytes of SRAM workspace, the target leaves {budget}")
        return min(fits, key=lambda t: t.rank)

