"""Writing results: markdown tables and `## ` sections of benchmarks/RESULTS.md.

Each benchmark script owns one or more `## ` sections and rewrites only those, so several
scripts can share RESULTS.md.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

RESULTS_MD = Path(__file__).resolve().parent.parent / "RESULTS.md"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; cells are str()-ed as given (format numbers before)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def replace_section(text: str, heading: str, body: str) -> str:
    """`text` with the section `## heading` (up to the next `## ` line) set to `body`.

    The section is appended at the end when it does not exist yet.
    """
    title = f"## {heading}"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip("\n") == title), None)
    block = f"{title}\n\n{body.strip()}\n\n"
    if start is None:
        sep = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
        return text + sep + block
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    return "".join(lines[:start]) + block + "".join(lines[end:])


def write_section(heading: str, body: str, path: Path = RESULTS_MD) -> None:
    """Replace (or add) one `## heading` section of `path`, atomically."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    new = replace_section(old, heading, body)
    fd, tmp = tempfile.mkstemp(prefix=".results-", suffix=".md", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
