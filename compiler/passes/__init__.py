"""The pass registry and the pipeline parser.

`PASSES` maps each pass name to its class (one module per pass, registered on import below).
`parse_pipeline("canonicalize,fold-bn,fuse-act{into_epilogue=false}")` returns pass instances;
an unknown pass or option, a bad value or a malformed string raises PassError naming the
problem and the valid choices. Named pipelines (compiler/pipeline.py) expand in place.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from ocrc.compiler.errors import PassError
from ocrc.compiler.passes import (  # noqa: F401  (each module registers its pass)
    bias_correct,
    canonicalize,
    compress_auto,
    decompose,
    equalize,
    fold_bn,
    fold_pad,
    fuse_act,
    fuse_residual,
    lowrank,
    prune,
    prune_structured,
    quantize,
    share_weights,
)
from ocrc.compiler.passes.base import (
    PASSES,
    DumpIR,
    Instrument,
    Pass,
    PassContext,
    PrintIR,
    TimePasses,
    register,
    run_passes,
)

__all__ = [
    "PASSES",
    "DumpIR",
    "Instrument",
    "Pass",
    "PassContext",
    "PrintIR",
    "TimePasses",
    "parse_pipeline",
    "pass_options",
    "register",
    "run_passes",
]

_NAME = re.compile(r"[a-z][a-z0-9-]*")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_VALUE = re.compile(r"[^,{}=\s]+")
_MAX_DEPTH = 8


def pass_options(cls: type[Pass]) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _convert(text: str, f: dataclasses.Field[Any], where: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind == "bool":
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        if kind == "int":
            return int(text, 0)
        if kind == "float":
            return float(text)
        if kind == "str":
            return text
    except ValueError:
        raise PassError(f"{where}: option '{f.name}' needs a {kind}, got {text!r}") from None
    raise AssertionError(f"option {f.name} has unsupported type {kind}")


class _Reader:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self, rx: re.Pattern[str], what: str) -> str:
        self.skip()
        m = rx.match(self.text, self.pos)
        if not m:
            raise self.error(f"expected {what}")
        self.pos = m.end()
        return m.group()

    def expect(self, ch: str) -> None:
        if self.peek() != ch:
            raise self.error(f"expected '{ch}'")
        self.pos += 1

    def error(self, msg: str) -> PassError:
        found = repr(self.text[self.pos]) if self.pos < len(self.text) else "end of text"
        return PassError(f"pipeline {self.text!r}: column {self.pos + 1}: {msg}, found {found}")


def parse_pipeline(text: str, named: Mapping[str, str] | None = None,
                   _depth: int = 0) -> list[Pass]:
    """Parse `name{key=value,...},name,...` into pass instances (empty text: no passes).

    `named` maps pipeline names to pipeline texts that expand where their name appears."""
    named = named or {}
    if _depth > _MAX_DEPTH:
        raise PassError(f"named pipelines nest deeper than {_MAX_DEPTH} levels: {text!r}")
    r = _Reader(text)
    out: list[Pass] = []
    if not r.peek():
        return out
    while True:
        start = r.pos
        name = r.take(_NAME, "a pass name")
        opts: dict[str, str] = {}
        if r.peek() == "{":
            r.pos += 1
            while r.peek() != "}":
                key = r.take(_KEY, "an option name")
                r.expect("=")
                value = r.take(_VALUE, f"a value for option '{key}'")
                if key.replace("-", "_") in opts:
                    raise PassError(f"pipeline {text!r}: option '{key}' of '{name}' given twice")
                opts[key.replace("-", "_")] = value
                if r.peek() == ",":
                    r.pos += 1
                elif r.peek() != "}":
                    raise r.error("expected ',' or '}' after an option")
            r.pos += 1
        out.extend(_instantiate(text, name, opts, named, start, _depth))
        if not r.peek():
            return out
        if r.peek() != ",":
            raise r.error("expected ',' between passes")
        r.pos += 1


def _instantiate(text: str, name: str, opts: dict[str, str], named: Mapping[str, str],
                 start: int, depth: int) -> list[Pass]:
    if name in named and name not in PASSES:
        if opts:
            raise PassError(f"pipeline {text!r}: named pipeline '{name}' takes no options")
        return parse_pipeline(named[name], named, depth + 1)
    if name not in PASSES:
        choices = ", ".join(sorted(PASSES))
        pipes = f"; named pipelines: {', '.join(sorted(named))}" if named else ""
        raise PassError(f"pipeline {text!r}: column {start + 1}: unknown pass '{name}'; "
                        f"valid passes: {choices}{pipes}")
    cls = PASSES[name]
    fields = pass_options(cls)
    kwargs: dict[str, Any] = {}
    for key, value in opts.items():
        if key not in fields:
            valid = ", ".join(sorted(fields)) or "none (it takes no options)"
            raise PassError(f"pipeline {text!r}: pass '{name}' has no option '{key}'; "
                            f"valid options: {valid}")
        kwargs[key] = _convert(value, fields[key], f"pipeline {text!r}: pass '{name}'")
    return [cls(**kwargs)]
