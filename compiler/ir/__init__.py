"""The ocrc IR: typed SSA graph, op table, verifier, text form and reference interpreter."""

from __future__ import annotations

from ocrc.compiler.ir import ops  # noqa: F401  (registers every op)
from ocrc.compiler.ir.graph import Builder, Graph, Node, Value
from ocrc.compiler.ir.interp import run
from ocrc.compiler.ir.opdef import OPS, AttrDef, OpDef, defop
from ocrc.compiler.ir.parser import parse_graph
from ocrc.compiler.ir.printer import graph_text, print_graph
from ocrc.compiler.ir.types import DType, TensorType
from ocrc.compiler.ir.verify import verify

__all__ = ["Builder", "Graph", "Node", "Value", "run", "OPS", "AttrDef", "OpDef", "defop",
           "parse_graph", "print_graph", "graph_text", "DType", "TensorType", "verify"]
