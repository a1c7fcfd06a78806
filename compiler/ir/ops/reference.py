"""The op reference of docs/ir.md, generated from the op table (one fact, one home).

`op_reference()` renders every op declared in the modules of this package (operands,
attributes with kinds and defaults, results, traits, doc line), grouped by module.
`python -m ocrc.compiler.ir.ops.reference docs/ir.md` rewrites the generated block of that
file in place; a test fails when the block is stale.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

import numpy as np

from ocrc.compiler.ir import ops as ops_pkg
from ocrc.compiler.ir.opdef import OPS, OpDef

BEGIN = "<!-- BEGIN OP REFERENCE (python -m ocrc.compiler.ir.ops.reference docs/ir.md) -->"
END = "<!-- END OP REFERENCE -->"
SKIP_MODULES = ("counts", "reference")


def _modules() -> list[str]:
    names = [m.name for m in pkgutil.iter_modules(ops_pkg.__path__)
             if m.name not in SKIP_MODULES]
    for name in names:
        importlib.import_module(f"{ops_pkg.__name__}.{name}")
    return sorted(names)


def _default(value: object) -> str:
    if value is None:
        return "required"
    if isinstance(value, np.ndarray):
        return "array"
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return repr(value) if isinstance(value, str) else str(value)


def _operands(op: OpDef) -> str:
    out = []
    for name in op.inputs:
        if name.endswith("*"):
            out.append(f"{name[:-1]}...")
        elif name.endswith("?"):
            out.append(f"[{name[:-1]}]")
        else:
            out.append(name)
    return ", ".join(out)


def op_reference() -> str:
    """Markdown for every op of this package, grouped by the module that declares it."""
    by_module: dict[str, list[OpDef]] = {m: [] for m in _modules()}
    for op in OPS.values():
        mod = getattr(op.ref, "__module__", "").rpartition(".")[2]
        if mod in by_module:
            by_module[mod].append(op)
    lines = []
    for mod, ops in by_module.items():
        if not ops:
            continue
        lines += [f"### {mod}", ""]
        for op in ops:
            results = "n (per attributes)" if callable(op.num_outputs) else str(op.num_outputs)
            lines.append(f"- **`{op.name}`**`({_operands(op)})`: {op.doc}")
            if op.attrs:
                lines.append("  attrs: " + ", ".join(
                    f"`{k}`: {a.kind} = {_default(a.default)}" for k, a in op.attrs.items()))
            extra = [f"results: {results}"] if results != "1" else []
            if op.traits:
                extra.append("traits: " + ", ".join(sorted(op.traits)))
            if extra:
                lines.append("  " + "; ".join(extra))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def updated(text: str) -> str:
    """`text` with the block between BEGIN and END replaced by the current reference."""
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise ValueError("the file has no op reference markers")
    return f"{head}{BEGIN}\n\n{op_reference()}\n{END}{tail}"


if __name__ == "__main__":
    path = Path(sys.argv[1])
    path.write_text(updated(path.read_text(encoding="utf-8")), encoding="utf-8")
