"""`prune`: zero weights by a mask: magnitude (per layer or one global threshold), N:M along
the NPU's reduction axis, or masks from a file (`masks=FILE.npz`, keyed by weight tensor
names, for models pruned during training). Zeros are exact, so the storage formats and the
int8 weights keep them; weights that are already sparse stay so (and are reported)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from ocrc.compiler.compress.masks import (
    check_masks,
    check_sparsity,
    global_masks,
    load_masks,
    magnitude_mask,
    nm_mask,
    parse_nm,
)
from ocrc.compiler.compress.sites import (
    Site,
    check_layers,
    const_arrays,
    from_rows,
    group_of,
    parse_layer_values,
    parse_ops,
    to_rows,
    weight_sites,
)
from ocrc.compiler.compress.stats import site_grams
from ocrc.compiler.errors import PassError
from ocrc.compiler.ir.graph import Graph, Node
from ocrc.compiler.passes.base import Pass, PassContext, register

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PruneRow:
    """One weight site: its sparsity before (already-zero weights) and after."""

    layer: str
    tensor: str
    shape: tuple[int, ...]
    before: float
    after: float
    how: str


@register
@dataclass(frozen=True)
class Prune(Pass):
    """Multiply selected weights by a 0/1 mask.

    `sparsity` (per layer; `scope=global`: one threshold over all selected weights;
    `scope=row`: the same sparsity in every output row), `nm=N:M` (keep the N largest of every
    M consecutive weights along the reduction axis; layers whose axis M does not divide are
    skipped and reported, unless named in `layers`), `layers=name:sparsity;...` (per-layer
    overrides; with nm, the layers to prune) and `masks=FILE.npz` (applied first; they select
    their own tensors). `ops` chooses the
    layer kinds (conv+dense+matmul+lstm). `criterion=activation` ranks |w| * ||x|| (the
    weight times the norm of its input over ctx.options['calibration'] or precomputed
    ctx.options['input_grams'], as in Wanda) instead of |w|. Bad values raise PassError at
    parse time. Reports:
    ctx.options['reports']['prune'] (a list of PruneRow).
    """

    name: ClassVar[str] = "prune"
    sparsity: float = 0.0
    scope: str = "layer"
    nm: str = ""
    layers: str = ""
    masks: str = ""
    ops: str = "conv+dense+matmul+lstm"
    criterion: str = "magnitude"

    def __post_init__(self) -> None:
        check_sparsity(self.sparsity, "prune")
        for name, sp in parse_layer_values(self.layers, "prune: layers").items():
            check_sparsity(sp, f"prune: layers {name}")
        if self.scope not in ("layer", "global", "row"):
            raise PassError(f"prune: scope={self.scope!r} must be 'layer', 'global' or 'row'")
        if self.criterion not in ("magnitude", "activation"):
            raise PassError(f"prune: criterion={self.criterion!r} must be 'magnitude' or "
                            "'activation'")
        if self.nm:
            parse_nm(self.nm, "prune")
        parse_ops(self.ops, "prune: ops")
        if not (self.sparsity or self.nm or self.layers or self.masks):
            raise PassError("prune: give sparsity=, nm=N:M, layers=name:sparsity;... or "
                            "masks=FILE.npz")

    def run(self, g: Graph, ctx: PassContext) -> Graph:
        sites = weight_sites(g, parse_ops(self.ops, "prune: ops"))
        consts = const_arrays(g)
        per_layer = parse_layer_values(self.layers, "prune: layers")
        check_layers(per_layer, sites, "prune: layers")
        new: dict[Node, np.ndarray] = {}  # const node -> pruned array
        const_node = {n.outputs[0]: n for n in g.nodes if n.op.name == "const"}
        rows: list[PruneRow] = []
        w_of = {s: consts[s.value] for s in sites}
        if self.masks:
            by_name = {s.tensor: w_of[s] for s in sites}
            masks = check_masks(load_masks(self.masks), by_name, f"prune: masks {self.masks}")
            for s in sites:
                if s.tensor in masks:
                    w_of[s] = _masked(w_of[s], masks[s.tensor])
                    rows.append(self._row(s, consts[s.value], w_of[s], "masks file"))
        todo = [s for s in sites if self._selected(s, per_layer)]
        score = {s: np.abs(w_of[s]) for s in todo}
        if self.criterion == "activation" and todo:
            grams = site_grams(g, todo, ctx.options, "prune{criterion=activation}")
            score = {s: _activation_score(s, w_of[s], grams.get(s.layer)) for s in todo}
        if self.scope == "global" and self.sparsity and not self.nm:
            for s, mk in zip(todo, global_masks([score[s] for s in todo], self.sparsity)):
                rows.append(self._row(s, w_of[s], _masked(w_of[s], mk), "global magnitude"))
                w_of[s] = _masked(w_of[s], mk)
        else:
            for s in todo:
                mk, how = self._mask(s, score[s], per_layer)
                if mk is None:
                    rows.append(self._row(s, w_of[s], w_of[s], how))
                    continue
                rows.append(self._row(s, w_of[s], _masked(w_of[s], mk), how))
                w_of[s] = _masked(w_of[s], mk)
        for s in sites:
            if w_of[s] is not consts[s.value]:
                new[const_node[s.value]] = w_of[s].astype(consts[s.value].dtype)
        ctx.options.setdefault("reports", {})["prune"] = rows
        for r in rows:
            log.info("prune %s (%s): sparsity %.3f -> %.3f (%s)", r.layer, r.tensor, r.before,
                     r.after, r.how)
        nodes = [Node(n.op, n.inputs, {**n.attrs, "value": new[n]}, n.outputs, n.name)
                 if n in new else n for n in g.nodes]
        return Graph(list(g.inputs), nodes, list(g.outputs), g.name)

    def _selected(self, s: Site, per_layer: dict[str, float]) -> bool:
        if self.layers:
            return s.layer in per_layer or bool(self.sparsity and not self.nm)
        return bool(self.sparsity or self.nm)

    def _mask(self, s: Site, w: np.ndarray,
              per_layer: dict[str, float]) -> tuple[np.ndarray | None, str]:
        if self.nm:
            n, m = parse_nm(self.nm, "prune")
            try:
                return nm_mask(s, w, n, m), f"{n}:{m}"
            except PassError:
                if s.layer in per_layer:
                    raise
                return None, f"skipped: {m} does not divide the reduction axis"
        sp = per_layer.get(s.layer, self.sparsity)
        # pruned-in-training zeros score 0, so they count towards the target
        if self.scope == "row":
            rows = to_rows(w, s.kind, group_of(s))
            mk = np.stack([magnitude_mask(r, sp) for r in rows.reshape(-1, rows.shape[-1])])
            return from_rows(mk.reshape(rows.shape), s.kind, w.shape), self.criterion + " per row"
        return magnitude_mask(w, sp), self.criterion

    @staticmethod
    def _row(s: Site, before: np.ndarray, after: np.ndarray, how: str) -> PruneRow:
        return PruneRow(s.layer, s.tensor, tuple(before.shape), float(np.mean(before == 0)),
                        float(np.mean(after == 0)), how)


def _masked(w: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask, w, np.zeros((), w.dtype))  # +0.0, never -0.0


def _activation_score(s: Site, w: np.ndarray, gram: np.ndarray | None) -> np.ndarray:
    """|w| times the input norm of its column (Wanda); |w| where no statistics exist."""
    if gram is None:
        return np.abs(w)
    diag = np.diagonal(gram, axis1=-2, axis2=-1)  # [K] or [D, K]
    norms = np.sqrt(np.maximum(diag, 0.0))
    rows = np.abs(to_rows(w, s.kind, 1)).astype(np.float64)
    scaled = rows * (norms[:, None, :] if norms.ndim == 2 else norms[None, None, :])
    return from_rows(scaled, s.kind, w.shape)
