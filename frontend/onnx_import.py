"""ONNX -> IR: loads a model (file or ModelProto, opsets 7-21), binds symbolic input dims from
`input_shapes`, turns initializers and Constant nodes into constants, converts every node
through the converter named like its op (onnx_ops, onnx_tensor_ops), folds shape computations
to constants on the way (OnnxBuilder), drops dead values and verifies the result.

Output shapes come from the IR's own type inference: shapes the model declares are not trusted.
"""

from __future__ import annotations

import inspect
import logging
import os
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper

from ocrc.compiler.errors import OnnxImportError, UnsupportedOpError
from ocrc.compiler.ir.graph import Graph, Value
from ocrc.compiler.ir.printer import sanitize
from ocrc.compiler.ir.types import TensorType
from ocrc.compiler.ir.verify import verify
from ocrc.frontend import onnx_ops, onnx_tensor_ops
from ocrc.frontend.onnx_builder import OnnxBuilder
from ocrc.frontend.onnx_tensor_ops import onnx_dtype

log = logging.getLogger(__name__)

MIN_OPSET, MAX_OPSET = 7, 21
DEFAULT_DOMAINS = ("", "ai.onnx")
# Op versions newer than MAX_OPSET whose schema change was reviewed and is implemented for
# every version: MaxPool/AveragePool-22 only spell out that ceil_mode windows starting in the
# right padding are dropped, which `window_out` always does.
REVIEWED_VERSIONS = {("MaxPool", 22), ("AveragePool", 22)}


def _collect(*modules: types.ModuleType) -> dict[str, Callable[..., Any]]:
    """Every public callable named like an ONNX op (capitalised) in the converter modules."""
    out: dict[str, Callable[..., Any]] = {}
    for mod in modules:
        for name, obj in vars(mod).items():
            if callable(obj) and name[:1].isupper() and not isinstance(obj, type) and \
                    getattr(obj, "__module__", mod.__name__) == mod.__name__:
                out[name] = obj
    return out


CONVERTERS = _collect(onnx_ops, onnx_tensor_ops)


def supported_ops() -> list[str]:
    """The ONNX op types ocrc imports (default domain)."""
    return sorted(CONVERTERS)


# --- loading ---------------------------------------------------------------------------------
def load_model(model: str | os.PathLike[str] | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """The ModelProto and how messages name it; OnnxImportError (one line) if it is not ONNX."""
    if isinstance(model, onnx.ModelProto):
        return model, model.graph.name or "model"
    where = os.fspath(model)
    if not Path(where).is_file():
        raise OnnxImportError(f"{where}: no such file")
    try:
        proto = onnx.load(where)
    except (DecodeError, ValueError, RuntimeError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OnnxImportError(f"{where}: not an ONNX model or truncated ({first})") from None
    if not proto.HasField("graph") or not proto.opset_import or not proto.graph.node:
        raise OnnxImportError(f"{where}: not an ONNX model or truncated (no graph, opset or "
                              "nodes in the protobuf)")
    return proto, where


def _opset(proto: onnx.ModelProto, where: str) -> int:
    versions = [o.version for o in proto.opset_import if o.domain in DEFAULT_DOMAINS]
    if not versions:
        raise UnsupportedOpError(f"{where}: the model imports no ai.onnx opset")
    if versions[0] < MIN_OPSET:
        raise UnsupportedOpError(f"{where}: opset {versions[0]} is not supported (ocrc imports "
                                 f"opsets {MIN_OPSET} to {MAX_OPSET})")
    return versions[0]


def _signature(schema: Any) -> tuple[Any, ...]:
    return (schema.doc, sorted((k, str(a.default_value)) for k, a in schema.attributes.items()),
            [(i.name, i.option) for i in schema.inputs],
            [(o.name, o.option) for o in schema.outputs])


def _newer_than_known(op_type: str, opset: int) -> int | None:
    """The op's version when it changed after opset MAX_OPSET in more than its element types
    (same doc, attributes and inputs/outputs means only new dtypes were added), else None."""
    if opset <= MAX_OPSET:
        return None
    schema = onnx.defs.get_schema(op_type, opset, "")
    if schema.since_version <= MAX_OPSET or (op_type, schema.since_version) in REVIEWED_VERSIONS:
        return None
    known = onnx.defs.get_schema(op_type, MAX_OPSET, "")
    return None if _signature(schema) == _signature(known) else int(schema.since_version)


def _check_supported(proto: onnx.ModelProto, opset: int, where: str) -> None:
    """Raise one UnsupportedOpError listing every node ocrc cannot import."""
    bad = []
    versions = {o.domain: o.version for o in proto.opset_import}
    for i, node in enumerate(proto.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        domain = node.domain or "ai.onnx"
        ver = versions.get(node.domain, versions.get("ai.onnx" if not node.domain else "", 0))
        if node.domain not in DEFAULT_DOMAINS or node.op_type not in CONVERTERS:
            bad.append(f"'{name}' {node.op_type} (domain {domain}, opset {ver})")
        elif (since := _newer_than_known(node.op_type, opset)) is not None:
            bad.append(f"'{name}' {node.op_type}-{since} (domain {domain}, opset {ver}; ocrc "
                       f"knows opsets {MIN_OPSET} to {MAX_OPSET})")
    if bad:
        raise UnsupportedOpError(f"{where}: {len(bad)} unsupported ONNX node(s): "
                                 + "; ".join(bad))


# --- inputs ------------------------------------------------------------------------------------
def _declared(vi: onnx.ValueInfoProto) -> list[int | str]:
    dims: list[int | str] = []
    for d in vi.type.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    return dims


def _fmt(dims: Sequence[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _input_type(vi: onnx.ValueInfoProto, given: Sequence[int] | None, where: str) -> TensorType:
    if not vi.type.HasField("tensor_type"):
        raise UnsupportedOpError(f"{where}: input '{vi.name}' is not a tensor")
    try:
        dtype = onnx_dtype(None, vi.type.tensor_type.elem_type)
    except ValueError as e:
        raise UnsupportedOpError(f"{where}: input '{vi.name}' has {e}, which is not "
                                 "supported") from None
    dims = _declared(vi)
    spec = f"{vi.name} {_fmt(dims)}"
    if given is None:
        sym = [(i, d) for i, d in enumerate(dims) if isinstance(d, str)]
        if sym:
            i, d = sym[0]
            example = ",".join(str(x) if isinstance(x, int) else "N" for x in dims)
            raise OnnxImportError(f"{where}: input '{vi.name}' dim {i} is symbolic ('{d}'); "
                                  f"bind it with --input-shape {vi.name}={example} (the model "
                                  f"declares {spec})")
        return TensorType(dtype, tuple(int(d) for d in dims))
    if len(given) != len(dims):
        raise OnnxImportError(f"{where}: --input-shape {vi.name}={','.join(map(str, given))} "
                              f"has {len(given)} dims, the model expects {len(dims)}: {spec}")
    for i, (g, d) in enumerate(zip(given, dims)):
        if g < 0 or (isinstance(d, int) and g != d) or (isinstance(d, str) and g < 1):
            want = f"the model fixes it to {d}" if isinstance(d, int) else "expected >= 1"
            raise OnnxImportError(f"{where}: --input-shape {vi.name}={','.join(map(str, given))}"
                                  f": dim {i} is {g}, but {want} ({spec})")
    return TensorType(dtype, tuple(int(g) for g in given))


def _initializer(t: onnx.TensorProto, where: str) -> np.ndarray:
    try:
        onnx_dtype(None, t.data_type)
        return numpy_helper.to_array(t)
    except ValueError as e:
        raise UnsupportedOpError(f"{where}: initializer '{t.name}' has {e}, which is not "
                                 "supported") from None


# --- conversion -------------------------------------------------------------------------------
def _attrs(node: onnx.NodeProto, fn: Callable[..., Any], b: OnnxBuilder) -> dict[str, Any]:
    params = inspect.signature(fn).parameters
    positional = {n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD}
    out: dict[str, Any] = {}
    for a in node.attribute:
        val = helper.get_attribute_value(a)
        if isinstance(val, bytes):
            val = val.decode("utf-8", "replace")
        elif isinstance(val, list) and val and isinstance(val[0], bytes):
            val = [v.decode("utf-8", "replace") for v in val]
        # An attribute named like an input (Dropout's `ratio` before opset 12) gets a suffix.
        key = f"{a.name}_attr" if a.name in positional else a.name
        if key not in params or params[key].kind is not params[key].KEYWORD_ONLY:
            raise b.unsupported(f"attribute '{a.name}' = {val!r}")
        out[key] = val
    return out


def _convert_node(b: OnnxBuilder, node: onnx.NodeProto, env: dict[str, Value]) -> None:
    fn = CONVERTERS[node.op_type]
    missing = [n for n in node.input if n and n not in env]
    if missing:
        raise b.invalid(f"input '{missing[0]}' is not defined before the node")
    inputs = [env[n] if n else None for n in node.input]
    before = len(b.graph.nodes)
    result = fn(b, *inputs, **_attrs(node, fn, b))
    outs = result if isinstance(result, tuple) else (result,)
    created = {v for n in b.graph.nodes[before:] for v in n.outputs}
    for i, name in enumerate(node.output):
        if not name:
            continue
        if i >= len(outs):
            raise b.unsupported(f"output {i} ('{name}')")
        if outs[i] in created:
            outs[i].name = sanitize(name)  # the ONNX tensor name is the value's name hint
        env[name] = outs[i]


def import_onnx(model: str | os.PathLike[str] | onnx.ModelProto,
                input_shapes: Mapping[str, Sequence[int]] | None = None) -> Graph:
    """Import an ONNX model as a verified IR graph with static shapes.

    input_shapes binds the dims of the named inputs (needed for every symbolic dim). Raises
    OnnxImportError (malformed file, shapes) or UnsupportedOpError (ops, attributes, dtypes)."""
    proto, where = load_model(model)
    opset = _opset(proto, where)
    _check_supported(proto, opset, where)
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    shapes = dict(input_shapes or {})
    runtime = [vi for vi in graph.input if vi.name not in inits]
    unknown = [n for n in shapes if n not in {vi.name for vi in runtime}]
    if unknown:
        listing = ", ".join(f"{vi.name} {_fmt(_declared(vi))}" for vi in runtime)
        raise OnnxImportError(f"{where}: --input-shape names '{unknown[0]}', which is not an "
                              f"input of the model; its inputs are: {listing}")
    b = OnnxBuilder(opset)
    env: dict[str, Value] = {}
    for name, t in inits.items():  # initializers that are also inputs (old IR) are constants
        env[name] = b.const(_initializer(t, where), name=sanitize(name))
    for vi in runtime:  # named as the text form spells them ('gpu_0/data_0' -> gpu_0_data_0)
        env[vi.name] = b.input(sanitize(vi.name), _input_type(vi, shapes.get(vi.name), where))
    for i, node in enumerate(graph.node):
        b.node_name, b.op_type = node.name or f"{node.op_type}_{i}", node.op_type
        b.n_outputs = len(node.output)
        try:
            _convert_node(b, node, env)
        except (OnnxImportError, UnsupportedOpError) as e:
            raise type(e)(f"{where}: {e}") from None
    missing = [o.name for o in graph.output if o.name not in env]
    if missing:
        raise OnnxImportError(f"{where}: graph output '{missing[0]}' is never computed")
    b.output(*(env[o.name] for o in graph.output))
    g = b.graph.dce()
    g.name = "main"
    verify(g)
    log.info("imported %s: %d nodes", where, len(g.nodes))
    return g
