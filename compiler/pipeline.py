"""Named pass pipelines. A pipeline is pipeline text (see ocrc.compiler.passes), and a named
pipeline is nothing more than a name for such a text: no numeric optimisation levels."""

from __future__ import annotations

from ocrc.compiler.ir.graph import Graph
from ocrc.compiler.passes import Pass, PassContext, parse_pipeline, run_passes

# The float graph optimiser: clean up, fold BN and pads into convs, fuse activations and
# residual adds into conv/dense epilogues, clean up again.
FLOAT = ("canonicalize,fold-bn,fold-pad,canonicalize,fuse-act,fuse-residual,fuse-act,fold-bn,"
         "canonicalize")

PIPELINES: dict[str, str] = {
    "float": FLOAT,
    "cleanup": "canonicalize",
    "none": "",
}
DEFAULT = "float"


def build_pipeline(text: str) -> list[Pass]:
    """Pass instances for pipeline text; named pipelines expand where their name appears."""
    return parse_pipeline(text, PIPELINES)


def optimize(g: Graph, pipeline: str = DEFAULT, ctx: PassContext | None = None) -> Graph:
    """Run pipeline text (default: the float pipeline) on `g`."""
    return run_passes(g, build_pipeline(pipeline), ctx)
