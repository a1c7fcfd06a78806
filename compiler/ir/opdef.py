"""The op table machinery: one `OpDef` per IR op, declared once, registered in `OPS`.

An OpDef states an op's operands, typed attributes with defaults, type inference, numpy
reference semantics (the oracle for every test, the interpreter and the VM) and a doc line.
The op modules in `ocrc.compiler.ir.ops` declare the ops; everything else (verifier, printer,
parser, interpreter, passes) reads them from here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ocrc.compiler.ir.types import TensorType

# Attribute kinds. "tensor" attributes are numpy arrays (only `const` uses one).
ATTR_KINDS = ("int", "float", "str", "ints", "floats", "tensor")

Attrs = Mapping[str, Any]
InferFn = Callable[[Sequence["TensorType | None"], Attrs], Sequence[TensorType]]
RefFn = Callable[[Sequence["np.ndarray | None"], Attrs], Sequence[np.ndarray]]


@dataclass(frozen=True)
class AttrDef:
    """A typed attribute. `default` None means the attribute is required."""

    kind: str
    default: Any = None

    def __post_init__(self) -> None:
        assert self.kind in ATTR_KINDS, self.kind


@dataclass(frozen=True, eq=False)
class OpDef:
    """One IR op. Compared by identity: `node.op is CONV`.

    inputs: operand names; a trailing "?" marks an optional operand (None when absent), a
    trailing "*" a variadic tail (only the last). num_outputs: an int, or a function of the
    attributes (split, lstm)."""

    name: str
    inputs: tuple[str, ...]
    infer: InferFn
    ref: RefFn
    doc: str
    attrs: Mapping[str, AttrDef] = field(default_factory=dict)
    num_outputs: int | Callable[[Attrs], int] = 1
    # Properties the passes query instead of listing ops (tinygrad T2).
    traits: frozenset[str] = frozenset()

    def n_outputs(self, attrs: Attrs) -> int:
        return self.num_outputs(attrs) if callable(self.num_outputs) else self.num_outputs

    @property
    def min_inputs(self) -> int:
        return sum(1 for i in self.inputs if not i.endswith(("?", "*")))

    @property
    def variadic(self) -> bool:
        return bool(self.inputs) and self.inputs[-1].endswith("*")

    def operand_index(self, name: str) -> int:
        """Position of the operand called `name` (without its ?/* suffix)."""
        return [i.rstrip("?*") for i in self.inputs].index(name)

    def with_defaults(self, attrs: Attrs) -> dict[str, Any]:
        """All attributes: the given ones plus the defaults of the missing optional ones."""
        out = {k: v.default for k, v in self.attrs.items() if v.default is not None}
        out.update(attrs)
        return out

    def __repr__(self) -> str:
        return f"OpDef({self.name})"


OPS: dict[str, OpDef] = {}


def defop(name: str, inputs: Sequence[str], infer: InferFn, ref: RefFn, doc: str,
          attrs: Mapping[str, AttrDef] | None = None,
          num_outputs: int | Callable[[Attrs], int] = 1,
          traits: Sequence[str] = ()) -> OpDef:
    """Declare and register an op; its name must be new."""
    if name in OPS:
        raise ValueError(f"op {name!r} declared twice")
    op = OpDef(name, tuple(inputs), infer, ref, doc, dict(attrs or {}), num_outputs,
               frozenset(traits))
    OPS[name] = op
    return op


def same_as_first(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    """Type inference of shape- and dtype-preserving unary ops."""
    assert types[0] is not None
    return [types[0]]


def coerce_attr(kind: str, value: Any) -> Any:
    """Normalise an attribute value to its kind's canonical Python form (tuples for lists,
    float for floats, an ndarray for tensors). Raises TypeError saying what was expected."""
    if kind == "int":
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"an int, got {value!r}")
        return int(value)
    if kind == "float":
        if isinstance(value, (bool, np.bool_)) or not isinstance(
                value, (int, float, np.integer, np.floating)):
            raise TypeError(f"a float, got {value!r}")
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise TypeError(f"a string, got {value!r}")
        return value
    if kind in ("ints", "floats"):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise TypeError(f"a list of {kind[:-1]}s, got {value!r}")
        return tuple(coerce_attr(kind[:-1], v) for v in value)
    if kind == "tensor":
        if not isinstance(value, np.ndarray):
            raise TypeError(f"a tensor, got {type(value).__name__}")
        return value
    raise AssertionError(kind)


def attr_equal(a: Any, b: Any) -> bool:
    """Attribute equality that works for arrays and tuples."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True)))
    return bool(a == b)
