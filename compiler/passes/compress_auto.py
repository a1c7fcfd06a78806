"""`compress-auto`: per-layer pruning / low-rank settings chosen automatically under an error
budget (the per-layer redundancy analysis, automated): sweep each layer's settings alone on
the calibration samples, then pick the most compressive combination whose joint loss of the
metric stays within `budget` (compress/sensitivity.py). What `--prune auto{budget=...}` and
`--low-rank auto{budget=...}` run."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from ocrc.compiler.compress import sensitivity
from ocrc.compiler.compress.metrics import METRICS, get_metric
from ocrc.compiler.compress.sites import parse_ops, weight_sites
from ocrc.compiler.compress.stats import matching
from ocrc.compiler.errors import PassError
from ocrc.compiler.ir.graph import Graph
from ocrc.compiler.passes.base import Pass, PassContext, register
from ocrc.compiler.passes.lowrank import mac_multiple

log = logging.getLogger(__name__)


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(t) for t in text.split("+") if t)
    except ValueError:
        raise PassError(f"compress-auto: {what}={text!r}: expected numbers joined by '+'") from None
    if any(not 0 < v < 1 for v in vals):
        raise PassError(f"compress-auto: {what}={text!r}: values must be in (0, 1)")
    return vals


@register
@dataclass(frozen=True)
class CompressAuto(Pass):
    """Choose per-layer compression under `budget` (points of `metric` lost against the
    uncompressed model on up to `samples` calibration samples of ctx.options['calibration']).
    `prune`, `nm` and `lowrank` enable the setting kinds; `sparsities`/`energies` list the
    levels tried ('+'-joined). Metric agreement decodes `layout` (TNC or NTC) logits by greedy
    CTC. Reports: ctx.options['reports']['compress-auto'] (pipeline, loss, the sweep)."""

    name: ClassVar[str] = "compress-auto"
    budget: float = 1.0
    prune: bool = True
    nm: bool = False
    lowrank: bool = False
    metric: str = "agreement"
    layout: str = "TNC"
    samples: int = 16
    ops: str = "conv+dense+matmul+lstm"
    sparsities: str = "0.5+0.7+0.8+0.9"
    energies: str = "0.95+0.9+0.8"
    multiple: int = 0
    calib: str = ""  # instead of ctx.options['calibration']: a .npy dir/.npz, or synthetic:N

    def __post_init__(self) -> None:
        if self.budget < 0:
            raise PassError(f"compress-auto: budget={self.budget} must be >= 0")
        if self.metric not in METRICS:
            raise PassError(f"compress-auto: metric={self.metric!r} must be one of "
                            f"{', '.join(METRICS)}")
        if self.layout not in ("TNC", "NTC"):
            raise PassError(f"compress-auto: layout={self.layout!r} must be TNC or NTC")
        if not (self.prune or self.nm or self.lowrank):
            raise PassError("compress-auto: enable at least one of prune, nm, lowrank")
        if self.samples < 1:
            raise PassError("compress-auto: samples must be >= 1")
        _floats(self.sparsities, "sparsities")
        _floats(self.energies, "energies")
        parse_ops(self.ops, "compress-auto: ops")

    def run(self, g: Graph, ctx: PassContext) -> Graph:
        data = matching(g, self._calibration(g, ctx), "compress-auto")[:self.samples]
        sites = weight_sites(g, parse_ops(self.ops, "compress-auto: ops"))
        cands = sensitivity.candidates(
            g, sites, _floats(self.sparsities, "sparsities") if self.prune else (),
            _floats(self.energies, "energies") if self.lowrank else (),
            ("2:4",) if self.nm else (), multiple=mac_multiple(ctx, self.multiple))
        metric = get_metric(self.metric, self.layout)
        work = [(g, data)]
        progress = bool(ctx.options.get("progress", False))
        sw = sensitivity.sweep(work, cands, metric, progress)
        pick, loss = sensitivity.choose(work, sw, metric, self.budget, progress=progress)
        text = sensitivity.settings_pipeline(pick)
        log.info("compress-auto: %s (joint %s loss %.3f, budget %g)", text or "nothing",
                 self.metric, loss, self.budget)
        ctx.options.setdefault("reports", {})["compress-auto"] = {
            "pipeline": text, "loss": loss, "sweep": sw}
        return sensitivity.apply(g, pick)

    def _calibration(self, g: Graph, ctx: PassContext) -> object:
        if not self.calib:
            return ctx.options.get("calibration")
        if self.calib.startswith("synthetic:"):
            from ocrc.compiler.passes.quantize import synthetic_samples
            try:
                return synthetic_samples(g, int(self.calib.split(":", 1)[1]))
            except ValueError:
                raise PassError(f"compress-auto: calib={self.calib!r} needs a count") from None
        from pathlib import Path

        from ocrc.compiler.quant.calibrate import load_calibration_set
        return load_calibration_set(Path(self.calib), g)
