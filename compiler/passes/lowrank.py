"""`lowrank`: truncated-SVD splits of weight matrices, W ~ U V, where that saves MACs.

dense/matmul: x W^T -> (x V^T) U^T; 1x1 and kxk conv: a conv with r filters (the original
window) followed by a 1x1 conv holding the epilogue; lstm: the input weights W of each
direction (gates stacked, [4H, I]) become one dense x -> [T, B, sum r] feeding an lstm whose W
is block-structured [D, 4H, sum r]; the recurrent R of each direction ([4H, H], gates stacked)
becomes U [D, 4H, k] in the lstm's `r` and V [D, k, H] in its `rv` operand (one k for both
directions: the larger of their ranks), so each step computes U (V h).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from ocrc.compiler.compress import svd
from ocrc.compiler.compress.sites import (
    Site,
    check_layers,
    const_arrays,
    group_of,
    parse_layer_values,
    parse_ops,
    to_rows,
    weight_sites,
)
from ocrc.compiler.compress.stats import site_grams
from ocrc.compiler.errors import PassError
from ocrc.compiler.ir.graph import Graph, Node, Value
from ocrc.compiler.passes.base import Pass, PassContext, register
from ocrc.compiler.rewrite import Rewriter, apply_patterns

log = logging.getLogger(__name__)

DEFAULT_MULTIPLE_TARGET = "npu"  # rank multiple from this preset when no target is given
WINDOW = ("strides", "pads", "dilations")
EPILOGUE = ("act", "act_params")


@dataclass(frozen=True)
class LowRankRow:
    """What lowrank did to one weight site (ranks per direction/matrix)."""

    layer: str
    shape: tuple[int, ...]
    ranks: tuple[int, ...]
    energy: float  # fraction of sum(s**2) kept (of the whitened matrix with whiten=true)
    rel_error: float  # ||W - UV||_F / ||W||_F
    macs: int
    macs_after: int
    status: str  # "split" or why not


def mac_multiple(ctx: PassContext, option: int) -> int:
    """The rank multiple: the option, else the context target's MAC-array width, else the
    default preset's."""
    if option:
        return option
    target = ctx.target
    if target is None:
        from ocrc.runtime.target import load_target
        target = load_target(DEFAULT_MULTIPLE_TARGET)
    return int(getattr(target, "cols", 1))


def positions(site: Site) -> int:
    """How many times the weight matrix is applied per inference (output positions)."""
    n = site.node
    if site.kind == "conv":
        return int(np.prod(n.outputs[0].type.shape)) // n.outputs[0].type.shape[1]
    x = n.inputs[0]
    assert x is not None
    return int(np.prod(x.type.shape[:-1]))


@register
@dataclass(frozen=True)
class LowRank(Pass):
    """Split selected MAC layers into two through a truncated SVD.

    Rank per layer by `energy` (fraction of sum(s**2) kept), `ratio` (of min(m, n)), `rank`,
    `budget` (the fraction of the selected layers' MACs to keep: one energy level for all,
    found by bisection) or explicit `layers=name:rank;...` (which override). Ranks are rounded
    up to `multiple` (default: the target's MAC-array width). A split that does not save MACs
    (r >= mn/(m+n)) is skipped and reported, as are grouped convs and an already factored R.
    `whiten=true` uses the calibration data (ctx.options['calibration']). Reports land in
    ctx.options['reports']['lowrank'] (a list of LowRankRow).
    """

    name: ClassVar[str] = "lowrank"
    energy: float = 0.0
    ratio: float = 0.0
    rank: int = 0
    budget: float = 0.0
    layers: str = ""
    ops: str = "dense+matmul+conv+lstm"
    multiple: int = 0
    whiten: bool = False

    def __post_init__(self) -> None:
        for key in ("energy", "ratio", "budget"):
            v = getattr(self, key)
            if not 0.0 <= v <= 1.0:
                raise PassError(f"lowrank: {key}={v} must be in (0, 1]")
        if self.rank < 0 or self.multiple < 0:
            raise PassError("lowrank: rank and multiple must be >= 0")
        given = [k for k in ("energy", "ratio", "rank", "budget") if getattr(self, k)]
        if len(given) > 1:
            raise PassError(f"lowrank: give one of energy, ratio, rank, budget; got "
                            f"{', '.join(given)}")
        if not given and not self.layers:
            raise PassError("lowrank: give one of energy=, ratio=, rank=, budget= or "
                            "layers=name:rank;...")
        parse_layer_values(self.layers, "lowrank: layers", int)
        parse_ops(self.ops, "lowrank: ops")

    def run(self, g: Graph, ctx: PassContext) -> Graph:
        rows, factors = self.plan(g, ctx)
        ctx.options.setdefault("reports", {})["lowrank"] = rows
        for r in rows:
            log.info("lowrank %s %s: ranks %s, energy %.3f, error %.3f, MACs %d -> %d (%s)",
                     r.layer, list(r.shape), list(r.ranks), r.energy, r.rel_error, r.macs,
                     r.macs_after, r.status)
        if not factors:
            return g
        return apply_patterns(g, [lambda rw, n: _split(rw, n, factors)])

    # --- planning ------------------------------------------------------------------------------
    def plan(self, g: Graph, ctx: PassContext) -> tuple[list[LowRankRow], dict[Node, Any]]:
        sites = weight_sites(g, parse_ops(self.ops, "lowrank: ops"))
        explicit = parse_layer_values(self.layers, "lowrank: layers", int)
        check_layers(explicit, sites, "lowrank: layers")
        consts = const_arrays(g)
        if not (self.energy or self.ratio or self.rank or self.budget):
            sites = [s for s in sites if s.layer in explicit]  # only the named layers
        grams: dict[str, np.ndarray] = {}
        if self.whiten:
            grams = site_grams(g, [s for s in sites if group_of(s) == 1 and not _factored(s)],
                               ctx.options, "lowrank{whiten=true}")
        mult = mac_multiple(ctx, self.multiple)
        spectra: dict[Site, list[np.ndarray]] = {}
        decomps: dict[Site, list[svd.Decomposition]] = {}
        for s in sites:
            if _factored(s) or group_of(s) != 1 or (s.kind == "matmul"
                                                    and s.value.type.rank != 2):
                continue
            mats = to_rows(consts[s.value], s.kind, 1)
            gram = grams.get(s.layer)  # [D, H, H] for an LSTM's R (h of each direction)
            decomps[s] = [svd.decompose(m, gram[d] if s.kind == "lstm.r" and gram is not None
                                        else gram) for d, m in enumerate(mats)]
            spectra[s] = [d.s for d in decomps[s]]
        level = self.energy
        if self.budget:
            level = self._budget_level(spectra, mult, explicit)
        rows, factors = [], {}
        for s in sites:
            w = consts[s.value]
            if s not in spectra:
                why = ("recurrent R is already factored" if s.kind == "lstm.r"
                       else "grouped conv" if s.kind == "conv" else "batched matmul")
                rows.append(LowRankRow(s.layer, w.shape, (), 1.0, 0.0, 0, 0, "skipped: " + why))
                continue
            ranks = self._ranks(s, spectra[s], level, mult, explicit)
            row, ok = self._row(s, w, spectra[s], ranks)
            rows.append(row)
            if ok:
                factors.setdefault(s.node, {})[s.kind] = (
                    s, [d.factor(r) for d, r in zip(decomps[s], ranks)])
        return rows, factors

    def _ranks(self, s: Site, spectra: list[np.ndarray], level: float, mult: int,
               explicit: dict[str, float]) -> list[int]:
        out = []
        for sv in spectra:
            full = len(sv)
            if s.layer in explicit:
                r = int(explicit[s.layer])
                if not 1 <= r <= full:
                    raise PassError(f"lowrank: rank {r} for {s.layer} is outside [1, {full}] "
                                    f"(min(m, n) of its {full}-rank matrices)")
                out.append(r)
                continue
            if self.rank:
                if self.rank > full:
                    raise PassError(f"lowrank: rank={self.rank} is above min(m, n) = {full} "
                                    f"for {s.layer}")
                r = self.rank
            elif self.ratio:
                r = max(1, math.ceil(self.ratio * full))
            else:
                r = svd.energy_rank(sv, level)
            out.append(svd.round_rank(r, mult, full))
        if s.kind == "lstm.r":  # one k for both directions (V is [D, k, H])
            out = [max(out)] * len(out)
        return out

    def _row(self, s: Site, w: np.ndarray, spectra: list[np.ndarray],
             ranks: list[int]) -> tuple[LowRankRow, bool]:
        mats = to_rows(w, s.kind, 1)
        _, m, n = mats.shape
        e = [sv.astype(np.float64) ** 2 for sv in spectra]
        energy = float(sum(x[:r].sum() for x, r in zip(e, ranks)) / max(sum(x.sum() for x in e),
                                                                       1e-300))
        err = float(math.sqrt(max(1.0 - energy, 0.0)))
        p = positions(s)
        before = p * len(mats) * m * n
        after = p * sum(ranks) * (n + len(mats) * m) if s.kind == "lstm.w" else \
            p * sum(r * (m + n) for r in ranks)
        saves = after < before and all(r < svd.break_even(m, n) for r in ranks)
        status = "split" if saves else "skipped: saves nothing (r >= mn/(m+n))"
        return LowRankRow(s.layer, w.shape, tuple(ranks), energy, err, before,
                          after if saves else before, status), saves

    def _budget_level(self, spectra: dict[Site, list[np.ndarray]], mult: int,
                      explicit: dict[str, float]) -> float:
        """The largest energy level whose splits keep at most `budget` of the MACs."""
        def macs(level: float) -> tuple[int, int]:
            tot = new = 0
            for s, sp in spectra.items():
                row, _ = self._row(s, np.zeros(s.value.type.shape, np.float32), sp,
                                   self._ranks(s, sp, level, mult, explicit))
                tot += row.macs
                new += row.macs_after
            return tot, new

        lo, hi = 0.0, 1.0
        for _ in range(30):
            mid = (lo + hi) / 2
            tot, new = macs(mid)
            if new <= self.budget * tot:
                lo = mid
            else:
                hi = mid
        return lo


# --- rewriting --------------------------------------------------------------------------------
def _split(rw: Rewriter, n: Node, factors: dict[Node, Any]) -> Any:
    if n not in factors:
        return None
    out = _split_node(rw, n, factors[n])
    final = set(out) if isinstance(out, tuple) else {out}
    base = n.outputs[0].name or n.name or "lowrank"
    for m in rw.pending:  # name the new intermediate (calibration tables key values by name)
        for v in m.outputs:
            if not v.name and m.op.name != "const" and v not in final:
                v.name = f"{base}.v"
    return out


def _factored(s: Site) -> bool:
    """An LSTM's R that is already U of a factored recurrence."""
    return s.kind == "lstm.r" and len(s.node.inputs) > 7 and s.node.inputs[7] is not None


def _split_node(rw: Rewriter, n: Node, factors: dict[str, Any]) -> Any:
    if n.op.name == "lstm":
        return _split_lstm(rw, n, factors)
    (factor,) = factors.values()
    s, uv = factor
    ins = list(n.inputs) + [None] * 7
    x = ins[0]
    keep = {k: v for k, v in n.attrs.items() if k in EPILOGUE}
    if s.kind == "dense":
        (u, v), = uv
        t = rw.emit("dense", (x, rw.const(v)), name=n.name + ".v")
        return rw.emit("dense", [t, rw.const(u)] + ins[2:5], keep, name=n.name)
    if s.kind == "matmul":
        (u, v), = uv
        t = rw.emit("matmul", (x, rw.const(v.T)), name=n.name + ".v")
        return rw.emit("matmul", (t, rw.const(u.T)), name=n.name)
    (u, v), = uv
    o, ci, kh, kw = n.inputs[1].type.shape  # type: ignore[union-attr]
    r = u.shape[1]
    v4 = v.reshape(r, kh, kw, ci).transpose(0, 3, 1, 2)
    win = {k: a for k, a in n.attrs.items() if k in WINDOW}
    t = rw.emit("conv", (x, rw.const(v4)), win, name=n.name + ".v")
    return rw.emit("conv", [t, rw.const(u.reshape(o, r, 1, 1))] + ins[2:5], keep,
                   name=n.name)


def _split_lstm(rw: Rewriter, n: Node, factors: dict[str, Any]) -> Any:
    """lstm.w: one dense for all directions, block-structured W; lstm.r: U as r, V as rv."""
    args: list[Value | None] = (list(n.inputs) + [None] * 8)[:8]
    if "lstm.w" in factors:
        _, uv = factors["lstm.w"]
        vs = [v for _, v in uv]
        total = sum(len(v) for v in vs)
        w = np.zeros((len(uv), uv[0][0].shape[0], total), np.float32)
        at = 0
        for d, (u, v) in enumerate(uv):
            w[d, :, at:at + len(v)] = u
            at += len(v)
        args[0] = rw.emit("dense", (args[0], rw.const(np.concatenate(vs))), name=n.name + ".v")
        args[1] = rw.const(w)
    if "lstm.r" in factors:
        _, uv = factors["lstm.r"]
        args[2] = rw.const(np.stack([u for u, _ in uv]))
        args[7] = rw.const(np.stack([v for _, v in uv]))
    while args[-1] is None:
        args.pop()
    return rw.emit_multi("lstm", args, n.attrs, name=n.name)
