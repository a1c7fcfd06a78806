"""The builder the ONNX converters emit through: it folds constants as it goes and names
whatever it raises after the ONNX node being converted.

Every op whose operands are all constants is evaluated at once through the op table's numpy
reference (`OpDef.ref`) and replaced by a `const`, so shape computations (Shape, Gather,
Concat, ...) collapse to constants without a separate pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ocrc.compiler.errors import OnnxImportError, UnsupportedOpError
from ocrc.compiler.ir.graph import Builder, Value
from ocrc.compiler.ir.opdef import OPS, OpDef, coerce_attr
from ocrc.compiler.ir.types import DType, TensorType


class OnnxBuilder(Builder):
    """A Builder that folds constants and knows which ONNX node it is converting."""

    def __init__(self, opset: int) -> None:
        super().__init__()
        self.opset = opset
        self.consts: dict[Value, np.ndarray] = {}
        self.node_name = ""
        self.op_type = ""
        self.n_outputs = 1  # how many outputs the current ONNX node asks for

    # --- messages -------------------------------------------------------------------------
    def where(self) -> str:
        return f"node '{self.node_name}' ({self.op_type}, opset {self.opset})"

    def unsupported(self, what: str) -> UnsupportedOpError:
        """The error for an op, attribute value or input form ocrc does not support."""
        return UnsupportedOpError(f"{self.where()}: {what} is not supported")

    def invalid(self, what: str) -> OnnxImportError:
        """The error for a malformed node (wrong shapes, attributes out of range)."""
        return OnnxImportError(f"{self.where()}: {what}")

    # --- constants ----------------------------------------------------------------------------
    def value_of(self, v: Value | None) -> np.ndarray | None:
        """The array of `v` when it is a constant, else None."""
        return None if v is None else self.consts.get(v)

    def need_const(self, v: Value | None, what: str) -> np.ndarray:
        """The array of `v`, which must be a constant (ocrc's shapes are static)."""
        arr = self.value_of(v)
        if arr is None:
            raise self.unsupported(f"a non-constant {what}")
        return arr

    def ints_of(self, v: Value | None, what: str) -> list[int]:
        return [int(i) for i in self.need_const(v, what).reshape(-1)]

    def const(self, array: np.ndarray | float | int, name: str = "",
              dtype: Any = None) -> Value:
        arr = np.asarray(array, dtype=dtype)  # ONNX tensors keep their dtype (f64 stays f64)
        try:
            DType.from_np(arr.dtype)
        except TypeError:
            raise self.unsupported(f"a constant of dtype {arr.dtype}") from None
        arr = np.asarray(arr, order="C")
        outs = super().emit("const", (), {"value": arr}, self.node_name,
                            (name,) if name else ())
        self.consts[outs[0]] = arr
        return outs[0]

    # --- emission -----------------------------------------------------------------------------
    def emit(self, op: OpDef | str, inputs: Sequence[Value | None],
             attrs: Mapping[str, Any] | None = None, name: str = "",
             out_names: Sequence[str] = ()) -> tuple[Value, ...]:
        """Append op(inputs); fold it to constants when every operand is one."""
        opdef = OPS[op] if isinstance(op, str) else op
        try:  # canonical forms (tuples, floats), so defaults compare equal and print alike
            attrs = {k: coerce_attr(opdef.attrs[k].kind, v) for k, v in (attrs or {}).items()}
        except TypeError as e:
            raise self.invalid(f"{opdef.name}: attribute needs {e}") from None
        full = opdef.with_defaults(attrs)
        try:
            types = opdef.infer([v.type if v is not None else None for v in inputs], full)
        except (ValueError, AssertionError, IndexError, KeyError, TypeError) as e:
            raise self.invalid(f"{opdef.name}: {e}") from None
        present = [v for v in inputs if v is not None]
        if opdef.name != "const" and present and all(v in self.consts for v in present):
            try:
                arrays = opdef.ref([self.consts[v] if v is not None else None for v in inputs],
                                   full)
            except (ValueError, IndexError) as e:
                raise self.invalid(f"{opdef.name}: {e}") from None
            return tuple(self.const(np.asarray(a).astype(t.dtype.np, copy=False))
                         for a, t in zip(arrays, types))
        names = list(out_names) + [""] * (len(types) - len(out_names))
        return super().emit(opdef, inputs, attrs, name or self.node_name, names)

    def op(self, op: OpDef | str, *inputs: Value | None, name: str = "",
           out_name: str = "", **attrs: Any) -> Value:
        outs = self.emit(op, inputs, attrs, name, (out_name,) if out_name else ())
        assert len(outs) == 1
        return outs[0]

    def reshape(self, x: Value, shape: Sequence[int]) -> Value:
        """x viewed as `shape`; no node when the shape does not change."""
        shape = tuple(int(d) for d in shape)
        return x if shape == x.type.shape else self.op("reshape", x, shape=shape)

    def transpose(self, x: Value, perm: Sequence[int]) -> Value:
        perm = tuple(int(p) for p in perm)
        return x if perm == tuple(range(len(perm))) else self.op("transpose", x, perm=perm)


def tensor_type(dtype: DType, shape: Sequence[int]) -> TensorType:
    return TensorType(dtype, tuple(int(d) for d in shape))
