"""Reading and writing `.ir` files: the text plus `NAME.ir.npz` beside it holding the arrays
of the @symbol constants. Both are written atomically and deterministically."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from ocrc.compiler.errors import IRParseError
from ocrc.compiler.ir.graph import Graph
from ocrc.compiler.ir.parser import parse_graph
from ocrc.compiler.ir.printer import print_graph
from ocrc.runtime.errors import OcrcError
from ocrc.runtime.fileio import atomic_write_bytes, atomic_write_text, npz_bytes


def side_file(path: str | os.PathLike[str]) -> Path:
    return Path(f"{os.fspath(path)}.npz")


def save_ir(g: Graph, path: str | os.PathLike[str]) -> None:
    """Write `path` (text) and, when there are large constants, `path`.npz."""
    text, blobs = print_graph(g)
    if blobs:
        atomic_write_bytes(side_file(path), npz_bytes(blobs))
    elif side_file(path).exists():
        side_file(path).unlink()  # a stale side file from an earlier dump would mislead
    atomic_write_text(path, text)


def load_ir(path: str | os.PathLike[str]) -> Graph:
    """Parse an .ir file (and its .npz); OcrcError naming the file on any problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise OcrcError(f"{path}: cannot read IR file: {e}") from None
    blobs: dict[str, np.ndarray] = {}
    side = side_file(path)
    if side.exists():
        try:
            with np.load(side, allow_pickle=False) as z:
                blobs = {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise OcrcError(f"{side}: cannot read the IR's constants: {e}") from None
    try:
        return parse_graph(text, blobs)
    except IRParseError as e:
        raise IRParseError(f"{path}:{e}") from None
