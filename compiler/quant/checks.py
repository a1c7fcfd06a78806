"""The verifier rule of quantised graphs: no float op between the input `quantize` and the
output `dequantize` (docs/quantization.md §6).

Values are in one of three regions: "float-in" (graph inputs and what float ops make of them),
"int" (from a quantize on), "float-out" (from a dequantize on). A node reading an int value must
be an integer op (no float operand or result besides constants), and may not mix regions.
"""

from __future__ import annotations

from ocrc.compiler.errors import IRVerifyError
from ocrc.compiler.ir.graph import Graph, Value

FLOAT_IN, INT, FLOAT_OUT = "float-in", "int", "float-out"


def verify_quantized(g: Graph) -> None:
    """Raise IRVerifyError naming the first node that breaks the rule."""
    region: dict[Value, str] = {v: FLOAT_IN for v in g.inputs}
    for n in g.nodes:
        name = n.op.name
        if name == "const":
            continue
        ins = [v for v in n.inputs if v is not None and v in region]
        regions = sorted({region[v] for v in ins})
        if name == "quantize":
            if regions == [INT]:
                raise IRVerifyError(f"{n.label()}: quantize of an already quantised value")
            out = INT
        elif name == "dequantize":
            if regions and regions != [INT]:
                raise IRVerifyError(f"{n.label()}: dequantize of a float value")
            out = FLOAT_OUT
        elif INT in regions:
            if len(regions) > 1:
                raise IRVerifyError(f"{n.label()}: mixes quantised and float operands "
                                    f"({', '.join(regions)})")
            floats = [v for v in list(n.inputs) + list(n.outputs)
                      if v is not None and v.type.dtype.is_float]
            if floats:
                raise IRVerifyError(
                    f"{n.label()}: float op between the input quantize and the output "
                    f"dequantize (%{floats[0].name}: {floats[0].type}); a quantised graph must "
                    "stay integer there")
            out = INT
        else:
            out = regions[0] if len(regions) == 1 else (FLOAT_OUT if regions else FLOAT_IN)
            if len(regions) > 1:
                raise IRVerifyError(f"{n.label()}: mixes values from before the input quantize "
                                    "and after the output dequantize")
        for v in n.outputs:
            region[v] = out
    for v in g.outputs:
        if region.get(v) == INT and v.type.dtype.is_float:
            raise IRVerifyError(f"graph output %{v.name} is float inside the int region")
