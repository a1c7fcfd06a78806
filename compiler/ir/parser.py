"""Parser of the generic text form: lark LALR, built once at import (grammar: ir.lark).

`parse_graph(text, blobs)` returns a verified Graph; `blobs` supplies the arrays of @symbol
constants (the side .npz of a dump). Errors are IRParseError with line:column, the source line
and a caret.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

import numpy as np
from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from ocrc.compiler.errors import IRParseError, IRVerifyError
from ocrc.compiler.ir.graph import Graph, Node, Value
from ocrc.compiler.ir.opdef import OPS, coerce_attr
from ocrc.compiler.ir.types import DType, TensorType
from ocrc.compiler.ir.verify import verify_node

_GRAMMAR = resources.files("ocrc.compiler.ir").joinpath("ir.lark").read_text()
_PARSER = Lark(_GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=True)


class _Symbol(str):
    """An @symbol attribute value (resolved against the blobs)."""


def _error(text: str, msg: str, meta: Any) -> IRParseError:
    line, col = getattr(meta, "line", 0), getattr(meta, "column", 0)
    src = text.splitlines()[line - 1] if 0 < line <= len(text.splitlines()) else ""
    return IRParseError(msg, line, col, f"{src}\n{' ' * (col - 1)}^" if src else "")


def _syntax_error(text: str, e: UnexpectedInput) -> IRParseError:
    if isinstance(e, UnexpectedToken):
        tok = "end of input" if e.token.type == "$END" else f"{e.token.type} {str(e.token)!r}"
        expected = sorted(e.accepts or e.expected)
        msg = f"unexpected {tok}, expected one of {', '.join(expected)}"
    elif isinstance(e, UnexpectedCharacters):
        msg = f"unexpected character {text[e.pos_in_stream]!r}"
    elif isinstance(e, UnexpectedEOF):
        msg = "unexpected end of input"
    else:
        msg = str(e).splitlines()[0]
    line, col = getattr(e, "line", 0) or 0, getattr(e, "column", 0) or 0
    context = e.get_context(text).rstrip("\n") if line else ""
    return IRParseError(msg, line, col, context)


def _value(t: Any) -> Any:
    if isinstance(t, Tree):
        if t.data == "int":
            return int(t.children[0])
        if t.data == "float":
            return float(t.children[0])
        if t.data == "string":
            return json.loads(t.children[0])
        if t.data == "symbol":
            return _Symbol(t.children[0][1:])
        if t.data == "list":
            return [_value(c) for c in t.children if c is not None]
        if t.data == "dense":
            return ("dense", _value(t.children[0]))
    raise AssertionError(t)


def _type(t: Tree) -> TensorType:
    dtype, *dims = t.children
    return TensorType(DType(str(dtype)), tuple(int(d) for d in dims if d is not None))


def _types(t: Tree) -> list[TensorType]:
    return [_type(c) for c in t.children if c is not None]


def parse_graph(text: str, blobs: Mapping[str, np.ndarray] | None = None,
                verify: bool = True) -> Graph:
    """Parse one function of text IR into a Graph (each node verified unless verify=False)."""
    blobs = blobs or {}
    try:
        tree = _PARSER.parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(text, e) from None
    func = tree.children[0]
    sym, *rest = func.children
    ret_types = next(c for c in rest if isinstance(c, Tree) and c.data == "types")
    stmts = [c for c in rest if isinstance(c, Tree) and c.data == "stmt"]
    ret = next(c for c in rest if isinstance(c, Tree) and c.data == "ret")
    env: dict[str, Value] = {}
    g = Graph(name=str(sym)[1:])

    def define(tok: Token, v: Value) -> Value:
        if v.name in env:
            raise _error(text, f"%{v.name} is defined twice", tok)
        env[v.name] = v
        return v

    def use(tok: Token) -> Value:
        name = str(tok)[1:]
        if name not in env:
            raise _error(text, f"use of undefined value %{name}", tok)
        return env[name]

    for a in (c for c in rest if isinstance(c, Tree) and c.data == "arg"):
        g.inputs.append(define(a.children[0], Value(_type(a.children[1]), str(a.children[0])[1:])))
    for st in stmts:
        results, opname, *operands, attrs_t, types_t, loc_t = st.children
        if str(opname) not in OPS:
            raise _error(text, f"unknown op '{opname}'", opname)
        op = OPS[str(opname)]
        out_types = _types(types_t)
        res_toks = list(results.children)
        if len(res_toks) != len(out_types):
            raise _error(text, f"{op.name}: {len(res_toks)} results but {len(out_types)} types",
                         opname)
        operands = [o for o in operands if o is not None]  # None: lark's empty-list placeholder
        inputs = tuple(None if o.type == "NONE" else use(o) for o in operands)
        attrs: dict[str, Any] = {}
        for at in (attrs_t.children if attrs_t is not None else []):
            if at is None:
                continue
            key, raw = str(at.children[0]), _value(at.children[1])
            if key not in op.attrs:
                raise _error(text, f"{op.name}: unknown attribute '{key}' (expected one of "
                             f"{', '.join(sorted(op.attrs)) or 'none'})", at.children[0])
            if key in attrs:
                raise _error(text, f"{op.name}: attribute '{key}' given twice", at.children[0])
            attrs[key] = _attr(text, op.attrs[key].kind, raw, out_types[0], blobs, at.children[0],
                               f"{op.name}.{key}")
        loc = json.loads(loc_t.children[0]) if loc_t is not None else ""
        node = Node(op, inputs, attrs, tuple(Value(ty, str(t)[1:]) for t, ty in
                                             zip(res_toks, out_types)), loc)
        if verify:
            try:
                verify_node(node, set(env.values()))
            except IRVerifyError as e:
                raise _error(text, str(e), st.meta) from None
        for t, v in zip(res_toks, node.outputs):
            define(t, v)
        g.nodes.append(node)
    g.outputs = [use(t) for t in ret.children if t is not None]
    declared = _types(ret_types)
    if [v.type for v in g.outputs] != declared:
        raise _error(text, "return types do not match the function's declared result types "
                     f"({', '.join(map(str, declared))})", ret.meta)
    return g


def _attr(text: str, kind: str, raw: Any, out_type: TensorType,
          blobs: Mapping[str, np.ndarray], tok: Any, what: str) -> Any:
    if kind == "tensor":
        if isinstance(raw, _Symbol):
            if raw not in blobs:
                raise _error(text, f"{what}: no array @{raw} in the side .npz file", tok)
            arr = np.asarray(blobs[raw])
        elif isinstance(raw, tuple) and raw[0] == "dense":
            flat = raw[1]
            try:
                arr = np.array(flat, dtype=out_type.dtype.np).reshape(out_type.shape)
            except (ValueError, OverflowError) as e:
                raise _error(text, f"{what}: dense value does not fit {out_type}: {e}", tok)
        else:
            raise _error(text, f"{what}: expected dense<[...]> or @symbol", tok)
        if TensorType.of(arr) != out_type:
            raise _error(text, f"{what}: array is {TensorType.of(arr)}, type says {out_type}", tok)
        return arr
    if isinstance(raw, (_Symbol, tuple)):
        raise _error(text, f"{what}: expected {kind}, got a tensor", tok)
    try:
        return coerce_attr(kind, raw)
    except TypeError as e:
        raise _error(text, f"{what}: expected {e}", tok) from None
