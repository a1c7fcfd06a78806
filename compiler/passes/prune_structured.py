"""`prune-structured`: remove whole filters (output channels) and, with them, the matching
input channels of every consumer, keeping coupled channels consistent (residual adds, concats,
depthwise convs, the CNN-to-RNN reshape; see compress/groups.py)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from ocrc.compiler.compress.groups import Channels, analyse
from ocrc.compiler.compress.importance import CRITERIA, scores, std_from_moments
from ocrc.compiler.compress.masks import check_sparsity
from ocrc.compiler.compress.sites import node_layer, parse_layer_values
from ocrc.compiler.compress.slicing import remove_channels
from ocrc.compiler.compress.stats import (channel_means, channel_moments, mac_input_axes,
                                          matching)
from ocrc.compiler.errors import PassError
from ocrc.compiler.ir.graph import Graph, Value
from ocrc.compiler.passes.base import Pass, PassContext, register

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StructuredRow:
    """One channel space (the filters of `layers`, coupled channel by channel)."""

    layers: tuple[str, ...]
    channels: int
    removed: int
    criterion: str
    filters: tuple[tuple[str, tuple[int, ...]], ...] = ()  # per layer, the removed filters


@register
@dataclass(frozen=True)
class PruneStructured(Pass):
    """Remove `sparsity` of the channels of every channel space (a set of layers whose filters
    are coupled one to one), the least important by `criterion` (l1, gm, entropy, std: entropy
    needs ctx.options['calibration'], std that or ctx.options['channel_moments'] of the filters'
    outputs). `layers=name:sparsity;...` overrides per space (any layer of it) and, without
    `sparsity`, limits pruning to those spaces. Kept counts are
    rounded up to `multiple`; at least one channel stays. `ops` chooses the filter sources
    (conv, or conv+dense). Channels reaching an op that cannot be sliced (or a graph output)
    are never removed. `compensate=mean` folds each removed channel's mean activation (on the
    value its consumers read) into the consumers' biases (mean replacement, compress/slicing.py;
    exact away from zero-padded conv borders), from ctx.options['channel_means'] (by value
    name, e.g. stats.channel_means over several input shapes), the means within
    ctx.options['channel_moments'], or else measured on the matching samples of
    ctx.options['calibration']; `none` drops the channels (as if zero). The default: mean
    when any of these options is present (none, with a warning, when none covers the removed
    channels). `lsq` replaces each removed channel by its least-squares
    fit on the kept channels of the same value (plus a constant), folded into the consumers'
    kept weights and biases (statistics: ctx.options['channel_moments'] or calibration). Reports:
    ctx.options['reports']['prune-structured']. `statistics_axes` names the values (and axes)
    whose moments serve std and lsq on any input shape (stats.moment_sums, then stats.moments).
    """

    name: ClassVar[str] = "prune-structured"
    sparsity: float = 0.0
    criterion: str = "l1"
    layers: str = ""
    multiple: int = 1
    ops: str = "conv"
    compensate: str = ""  # mean | none; "": mean when statistics are available

    def __post_init__(self) -> None:
        check_sparsity(self.sparsity, "prune-structured")
        for name, sp in parse_layer_values(self.layers, "prune-structured: layers").items():
            check_sparsity(sp, f"prune-structured: layers {name}")
        if self.criterion not in CRITERIA:
            raise PassError(f"prune-structured: criterion={self.criterion!r} must be one of "
                            f"{', '.join(CRITERIA)}")
        if self.multiple < 1:
            raise PassError("prune-structured: multiple must be >= 1")
        if set(self.ops.split("+")) - {"conv", "dense"}:
            raise PassError(f"prune-structured: ops={self.ops!r}: expected conv or conv+dense")
        if self.compensate not in ("", "mean", "lsq", "none"):
            raise PassError(f"prune-structured: compensate={self.compensate!r}: expected mean, "
                            "lsq or none")
        if not (self.sparsity or self.layers):
            raise PassError("prune-structured: give sparsity= or layers=name:sparsity;...")

    def run(self, g: Graph, ctx: PassContext) -> Graph:
        ch = analyse(g, tuple(self.ops.split("+")))
        per_layer = parse_layer_values(self.layers, "prune-structured: layers")
        known = {node_layer(n) for n, _ in ch.sources.values()}
        for name in per_layer:
            if name not in known:
                raise PassError(f"prune-structured: no filter layer {name!r}; layers: "
                                f"{', '.join(sorted(known)[:12])}")
        groups = ch.groups()
        sources = list(dict.fromkeys(n for n, _ in ch.sources.values()))
        samples = None
        stds = (std_from_moments(sources, ctx.options.get("channel_moments"))
                if self.criterion == "std" else None)
        if self.criterion == "entropy" or self.criterion == "std" and stds is None:
            samples = matching(g, ctx.options.get("calibration"),
                               f"prune-structured{{criterion={self.criterion}}}")
        score = scores(self.criterion, sources, g, samples, stds)
        spaces: dict[tuple[str, ...], list[tuple[float, tuple[int, ...]]]] = {}
        for grp in groups:
            members = [ch.sources[i] for i in grp]
            key = tuple(sorted({node_layer(n) for n, _ in members}))
            s = float(sum(score[n][j] for n, j in members)) / len(members)
            spaces.setdefault(key, []).append((s, grp))
        removed: list[int] = []
        rows = []
        for key in sorted(spaces):
            cands = sorted(spaces[key])  # ascending score, ties by channel id
            sp = max((per_layer[k] for k in key if k in per_layer), default=self.sparsity
                     if not per_layer or self.sparsity else 0.0)
            n = len(cands)
            kept = min(n, max(1, math.ceil(n * (1 - sp) / self.multiple) * self.multiple))
            drop: dict[str, list[int]] = {}
            for _, grp in cands[:n - kept]:
                removed.extend(grp)
                for i in grp:
                    src, j = ch.sources[i]
                    drop.setdefault(node_layer(src), []).append(j)
            filters = tuple((k, tuple(sorted(v))) for k, v in sorted(drop.items()))
            rows.append(StructuredRow(key, n, n - kept, self.criterion, filters))
            log.info("prune-structured %s: %d -> %d channels", "+".join(key), n, kept)
        ctx.options.setdefault("reports", {})["prune-structured"] = rows
        if not removed:
            return g
        if self.compensate == "lsq":
            return remove_channels(g, ch, np.unique(removed),
                                   *self.fit(g, ch, np.unique(removed), ctx))
        means = self.means(g, ch, np.unique(removed), ctx)
        return remove_channels(g, ch, np.unique(removed), means)

    def fit(self, g: Graph, ch: Channels, removed: np.ndarray, ctx: PassContext
            ) -> tuple[dict[Value, np.ndarray], dict[Value, np.ndarray]]:
        """Least squares of each removed channel on the kept channels of the same value (a
        ridge of 1e-3 of the mean kept variance): intercepts [C] and coefficients [C, C].
        Moments from ctx.options['channel_moments'] (by value name: mean [C], covariance
        [C, C]) or the matching calibration samples."""
        axes = self.consumed(g, ch, removed)
        given = ctx.options.get("channel_moments")
        if isinstance(given, Mapping) and all(v.name in given for v in axes):
            moments = {v: given[v.name] for v in axes}
        else:
            samples = matching(g, ctx.options.get("calibration"),
                               "prune-structured{compensate=lsq}")
            moments = channel_moments(g, samples, axes)
        means, mix = {}, {}
        for v, (mean, cov) in moments.items():
            lost = np.isin(ch.channel_ids(v), removed)
            r, k = np.flatnonzero(lost), np.flatnonzero(~lost)
            ckk = cov[np.ix_(k, k)]
            ridge = 1e-3 * max(float(np.trace(ckk)) / max(len(k), 1), 1e-12)
            a = np.zeros_like(cov)
            a[np.ix_(r, k)] = np.linalg.solve(ckk + ridge * np.eye(len(k)), cov[np.ix_(k, r)]).T
            means[v] = mean - a @ mean
            mix[v] = a
        return means, mix

    @staticmethod
    def statistics_axes(g: Graph, ops: str = "conv") -> dict[Value, int]:
        """The values whose channel moments `criterion=std` and `compensate=lsq` may read (with
        their channel axis): the filter sources' outputs and every MAC input carrying their
        channels along the axis its consumers reduce."""
        ch = analyse(g, tuple(ops.split("+")))
        axes = {n.outputs[0]: 1 for n, _ in ch.sources.values()}
        for v, ax in mac_input_axes(g).items():
            if ch.channel_ids(v) is not None and ch.axis[v] % v.type.rank == ax:
                axes[v] = ax
        return axes

    def consumed(self, g: Graph, ch: Channels, removed: np.ndarray) -> dict[Value, int]:
        """The MAC inputs that lose channels, with the axis their consumers reduce."""
        axes = {}
        for v, ax in mac_input_axes(g).items():
            ids = ch.channel_ids(v)
            if ids is not None and np.isin(ids, removed).any():
                if ch.axis[v] % v.type.rank == ax:  # else not a per-channel input: left alone
                    axes[v] = ax
        return axes

    def means(self, g: Graph, ch: Channels, removed: np.ndarray,
              ctx: PassContext) -> dict[Value, np.ndarray] | None:
        """The channel means of the values whose consumers lose channels (None: no
        compensation)."""
        given = ctx.options.get("channel_means")
        moments = ctx.options.get("channel_moments")
        mode = self.compensate or ("mean" if given is not None or moments is not None or
                                   ctx.options.get("calibration") is not None else "none")
        if mode == "none":
            return None
        axes = self.consumed(g, ch, removed)
        if given is None and isinstance(moments, Mapping):  # the means within the moments
            given = {name: mean for name, (mean, _cov) in moments.items()}
        if isinstance(given, Mapping):
            out = {v: np.asarray(given[v.name]) for v in axes if v.name in given}
            for v, m in out.items():
                if m.shape != (v.type.shape[axes[v]],):
                    raise PassError(f"prune-structured: channel_means[{v.name!r}] has shape "
                                    f"{list(m.shape)}, expected [{v.type.shape[axes[v]]}]")
            if len(out) == len(axes):
                return out
        try:
            samples = matching(g, ctx.options.get("calibration"),
                               "prune-structured{compensate=mean}")
        except PassError:
            if self.compensate:
                raise
            log.warning("prune-structured: no usable channel statistics: compensate=none")
            return None
        return channel_means(g, samples, axes)
