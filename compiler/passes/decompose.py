"""`decompose`: ops without an integer form rewritten into ops that have one, before
quantisation (the patterns live in compiler/quant/decompose.py; `prepare` applies them too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ocrc.compiler.errors import PassError
from ocrc.compiler.ir.graph import Graph
from ocrc.compiler.passes.base import Pass, PassContext, register
from ocrc.compiler.quant.decompose import DECOMPOSABLE, PATTERNS
from ocrc.compiler.rewrite import apply_patterns


@register
@dataclass(frozen=True)
class Decompose(Pass):
    """Rewrite ops that have no integer form into ops that do (run before `quantize`).

    `affine` (per-channel scale and shift on NCHW, constant parameters) becomes a depthwise
    1x1 conv with the scale as weights and the shift as bias. `lrn` (NCHW) becomes
    `x * pow(bias + alpha/size * conv1x1(x * x, band), -beta)`: the square a mul, the window
    sum over `size` neighbouring channels a 1x1 conv whose weight is the band matrix, the power
    an elementwise function of one tensor and a scalar (a table when quantised), then a mul.
    Options: `ops` (`+`-separated subset of affine, lrn). Guarantees: the same function up to
    float32 rounding; ops of another rank are left as they are.
    """

    name: ClassVar[str] = "decompose"
    ops: str = "affine+lrn"

    def run(self, g: Graph, ctx: PassContext) -> Graph:
        names = [o for o in self.ops.split("+") if o]
        bad = [o for o in names if o not in PATTERNS]
        if bad:
            raise PassError(f"decompose: unknown op {bad[0]!r} in ops; expected a '+'-separated "
                            f"subset of {', '.join(DECOMPOSABLE)}")
        return apply_patterns(g, [PATTERNS[o] for o in names])
