"""Helpers shared by the subcommands: option parsing and input/output files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ocrc.runtime.errors import OcrcError
from ocrc.runtime.fileio import atomic_write_bytes, npz_bytes


def parse_named_file(spec: str, option: str) -> tuple[str, Path]:
    """`NAME=FILE` -> (NAME, Path(FILE)); OcrcError naming the option otherwise."""
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise OcrcError(f"{option} {spec!r}: expected NAME=FILE")
    return name, Path(path)


def load_npy(path: Path, what: str) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise OcrcError(f"{what}: cannot read {path} as a .npy array: {e}") from None
    if not isinstance(arr, np.ndarray):
        raise OcrcError(f"{what}: {path} holds an .npz archive, expected one .npy array")
    return arr


def load_inputs(specs: list[str] | None, option: str = "--input") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for spec in specs or []:
        name, path = parse_named_file(spec, option)
        if name in out:
            raise OcrcError(f"{option}: input '{name}' given twice")
        out[name] = load_npy(path, f"{option} {name}")
    return out


def save_outputs(path: str | os.PathLike[str], outputs: dict[str, np.ndarray]) -> None:
    atomic_write_bytes(path, npz_bytes(outputs))
