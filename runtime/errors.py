"""The error hierarchy of ocrc: every error a user can cause is an `OcrcError`.

It lives in the lowest layer (runtime) so that every package can import it. The command line
turns an `OcrcError` into one line on stderr and exit status 2; anything else is an internal
error (exit status 1).
"""

from __future__ import annotations


class OcrcError(Exception):
    """A user-facing error: the message names the file/node/op/field, what was found and what
    was expected. Raised for bad input, never for bugs."""


class TargetError(OcrcError):
    """A target description (TOML) is malformed or inconsistent."""


class ISAEncodeError(OcrcError):
    """An instruction field does not fit its declared width, or an unknown field was given."""


class ProgramError(OcrcError):
    """A program file is corrupt, truncated, foreign or fails verification."""


class VMError(OcrcError):
    """The VM refused or stopped a program (names the instruction)."""
