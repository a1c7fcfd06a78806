"""The IR verifier: SSA, arity, attributes against the op table, declared types against
inferred ones. Run after import, after every pass (--verify-each, always on in tests) and
after parsing. Raises IRVerifyError naming the node, the attribute or operand, what was found
and what was expected."""

from __future__ import annotations

from ocrc.compiler.errors import IRVerifyError
from ocrc.compiler.ir.graph import Graph, Node, Value
from ocrc.compiler.ir.opdef import OPS, coerce_attr
from ocrc.compiler.ir.types import TensorType


def _fail(n: Node, msg: str) -> IRVerifyError:
    return IRVerifyError(f"{n.label()}: {msg}")


def verify_node(n: Node, defined: set[Value]) -> None:
    op = n.op
    if OPS.get(op.name) is not op:
        raise _fail(n, f"op '{op.name}' is not registered in the op table")
    spec = op.inputs
    if len(n.inputs) < op.min_inputs or (not op.variadic and len(n.inputs) > len(spec)):
        want = f"{op.min_inputs}" + ("+" if op.variadic else f"..{len(spec)}")
        raise _fail(n, f"has {len(n.inputs)} operands, expected {want} ({', '.join(spec)})")
    for i, v in enumerate(n.inputs):
        name = spec[min(i, len(spec) - 1)]
        if v is None:
            if not name.endswith(("?", "*")) or name.endswith("*"):
                raise _fail(n, f"operand '{name.rstrip('?*')}' is required but absent")
            continue
        if v not in defined:
            raise _fail(n, f"operand '{name.rstrip('?*')}' (%{v.name}) is used before it is "
                        "defined")
    for key, val in n.attrs.items():
        if key not in op.attrs:
            raise _fail(n, f"unknown attribute '{key}' (expected one of "
                        f"{', '.join(sorted(op.attrs)) or 'none'})")
        try:
            coerce_attr(op.attrs[key].kind, val)
        except TypeError as e:
            raise _fail(n, f"attr '{key}' needs {e}") from None
    for key, a in op.attrs.items():
        if a.default is None and key not in n.attrs:
            raise _fail(n, f"required attribute '{key}' is missing")
    attrs = n.all_attrs
    want = op.n_outputs(attrs)
    if len(n.outputs) != want:
        raise _fail(n, f"has {len(n.outputs)} results, expected {want}")
    try:
        inferred = list(op.infer([v.type if v is not None else None for v in n.inputs], attrs))
    except (ValueError, AssertionError, KeyError, IndexError, TypeError) as e:
        raise _fail(n, f"invalid operands or attributes: {e}") from None
    declared = [v.type for v in n.outputs]
    if inferred != declared:
        raise _fail(n, f"declared type {', '.join(map(str, declared))} but operands give "
                    f"{', '.join(map(str, inferred))}")
    for v in n.outputs:
        if v in defined:
            raise _fail(n, f"result %{v.name} is defined twice (not SSA)")


def verify(g: Graph) -> None:
    """Check every invariant of `g`; raise IRVerifyError on the first violation."""
    defined: set[Value] = set()
    for v in g.inputs:
        if v in defined:
            raise IRVerifyError(f"graph input %{v.name} is listed twice")
        if not isinstance(v.type, TensorType):
            raise IRVerifyError(f"graph input %{v.name} has no tensor type")
        defined.add(v)
    for n in g.nodes:
        verify_node(n, defined)
        defined.update(n.outputs)
    for v in g.outputs:
        if v not in defined:
            raise IRVerifyError(f"graph output %{v.name} is not defined")
