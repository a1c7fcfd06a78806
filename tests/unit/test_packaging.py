"""The wheel is complete (every package listed) and the layering rules hold."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CODE = {"frontend": "ocrc.frontend", "compiler": "ocrc.compiler", "runtime": "ocrc.runtime"}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for folder, pkg in CODE.items():
        for f in sorted((ROOT / folder).rglob("*.py")):
            rel = f.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out.append((".".join([pkg, *parts]), f))
    return out


def test_every_package_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = set()
    for folder, pkg in CODE.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join([pkg, *rel]))
    assert found - listed == set(), f"add these to [tool.setuptools] packages: {found - listed}"
    assert listed - found == set(), f"listed but missing: {listed - found}"


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


# (importing package prefix, forbidden import prefix, allowed exceptions)
RULES = [
    ("ocrc.runtime", "ocrc.compiler", ()),
    ("ocrc.runtime", "ocrc.frontend", ()),
    # The command line is the driver: the one place of the compiler that calls the frontend.
    ("ocrc.compiler", "ocrc.frontend", ("ocrc.compiler.cli",)),
    ("ocrc.compiler.ir", "ocrc.compiler.passes", ()),
    ("ocrc.compiler.ir", "ocrc.compiler.backend", ()),
    ("ocrc.frontend", "ocrc.compiler.backend", ()),
    ("ocrc.frontend", "ocrc.compiler.passes", ()),
]


@pytest.mark.parametrize("mod,path", _modules(), ids=lambda x: str(x).rsplit("/", 1)[-1])
def test_layering(mod: str, path: Path) -> None:
    for imported in _imports(path):
        for src, bad, allowed in RULES:
            if mod.startswith(src) and imported.startswith(bad) and not mod.startswith(
                    allowed or ("\0",)):
                pytest.fail(f"{mod} imports {imported}: {src} must not depend on {bad}")


def test_size_budget() -> None:
    """No source file over 500 lines (STYLE R15); exceptions must be named here."""
    allowed: dict[str, int] = {}
    too_big = []
    for _, f in _modules():
        n = len(f.read_text().splitlines())
        if n > allowed.get(f.relative_to(ROOT).as_posix(), 500):
            too_big.append(f"{f.relative_to(ROOT)}: {n} lines")
    assert not too_big, too_big


def test_no_machine_paths() -> None:
    import re
    pat = re.compile(r"/(work|root|home)/[A-Za-z]")
    hits = []
    for folder in [*CODE, "tests", "benchmarks", "docs"]:
        for f in (ROOT / folder).rglob("*"):
            if f.suffix in (".py", ".md", ".toml", ".txt") and f.is_file():
                for i, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
                    if pat.search(line) and "noqa: path" not in line:
                        hits.append(f"{f.relative_to(ROOT)}:{i}")
    assert not hits, f"project files name machine paths: {hits}"
