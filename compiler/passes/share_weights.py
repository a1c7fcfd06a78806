"""`share-weights`: weight sharing on a quantised graph (Deep Compression's k-means codebook,
in the int8 domain): each selected int8 weight tensor keeps only `centroids` distinct values
(0 among them), so its stream stores 4-bit (16) or 8-bit (256) indices plus the codebook.
Lossy: the quantised graph, hence the golden interpreter, uses the shared values."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from ocrc.compiler.compress.sites import parse_layer_values
from ocrc.compiler.compress.storage import kmeans_codebook, quantize_to_codebook, weight_values
from ocrc.compiler.errors import PassError
from ocrc.compiler.ir.graph import Graph, Node
from ocrc.compiler.passes.base import Pass, PassContext, register

log = logging.getLogger(__name__)


@register
@dataclass(frozen=True)
class ShareWeights(Pass):
    """Replace the int8 weights of qconv/qdense/qlstm by their nearest of `centroids` k-means
    centroids per tensor (`layers=name:0;...` limits it to those layers, `exclude=a+b` skips
    some; names as in the storage report, qlstm as NAME.W / NAME.R). Nonzero weights stay
    nonzero. Needs a quantised graph. The codebooks land in ctx.options['codebooks'] (layer ->
    int8[centroids]) for the storage report. A wide classifier (thousands of classes) rarely
    survives 16 levels: its argmax over many noisy logits is fragile."""

    name: ClassVar[str] = "share-weights"
    centroids: int = 16
    layers: str = ""
    exclude: str = ""  # layer names joined by '+', left as they are

    def __post_init__(self) -> None:
        if self.centroids not in (16, 256):
            raise PassError(f"share-weights: centroids={self.centroids} must be 16 or 256")
        parse_layer_values(self.layers, "share-weights: layers")

    def run(self, g: Graph, ctx: PassContext) -> Graph:
        targets = weight_values(g)
        if not targets:
            raise PassError("share-weights: the graph has no int8 weights (run quantize first)")
        only = parse_layer_values(self.layers, "share-weights: layers")
        new = {}
        books = ctx.options.setdefault("codebooks", {})
        for layer, v in targets:
            if (only and layer not in only) or layer in self.exclude.split("+"):
                continue
            w = g.const_value(v)
            assert w is not None
            cb = kmeans_codebook(w, self.centroids)
            new[v] = quantize_to_codebook(w, cb)
            books[layer] = cb
            log.info("share-weights %s: %d centroids", layer, self.centroids)
        nodes = [Node(n.op, n.inputs, {**n.attrs, "value": new[n.outputs[0]]}, n.outputs, n.name)
                 if n.op.name == "const" and n.outputs[0] in new else n for n in g.nodes]
        return Graph(list(g.inputs), nodes, list(g.outputs), g.name)
