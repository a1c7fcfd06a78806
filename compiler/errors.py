"""Errors raised by the compiler and the frontend. All subclass `OcrcError`, so the command
line reports them as one line with exit status 2."""

from __future__ import annotations

from ocrc.runtime.errors import OcrcError


class IRParseError(OcrcError):
    """Text IR that does not parse: carries line, column, the source line and a caret."""

    def __init__(self, message: str, line: int = 0, column: int = 0, context: str = "") -> None:
        self.line, self.column, self.context = line, column, context
        where = f"{line}:{column}: " if line else ""
        super().__init__(f"{where}{message}" + (f"\n{context}" if context else ""))


class IRVerifyError(OcrcError):
    """A graph breaks an IR invariant (SSA, arity, attribute types, inferred types)."""


class OnnxImportError(OcrcError):
    """An ONNX file or model is malformed, or its shapes cannot be made static."""


class UnsupportedOpError(OcrcError):
    """An op, or an attribute value of an op, that ocrc does not support."""


class PassError(OcrcError):
    """A bad pipeline string, pass option, or a pass precondition that does not hold."""
