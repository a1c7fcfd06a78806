"""Runs the `// RUN:` lines of every tests/filecheck/*.ir file (one FileCheck golden file per
pass, plus the diagnostics file) as one pytest case each, the way lit would."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
FILES = sorted(HERE.glob("*.ir"))
# The tools by module, so the test uses the interpreter running pytest (no PATH lookups).
TOOLS = {"ocrc": f"{shlex.quote(sys.executable)} -m ocrc.compiler.cli",
         "filecheck": f"{shlex.quote(sys.executable)} -m filecheck"}


def run_lines(path: Path) -> list[str]:
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("// RUN:"):
            cmd = line.removeprefix("// RUN:").strip().replace("%s", shlex.quote(str(path)))
            lines.append(" ".join(TOOLS.get(w, w) for w in cmd.split(" ")))
    return lines


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_filecheck(path: Path) -> None:
    cmds = run_lines(path)
    assert cmds, f"{path.name} has no '// RUN:' line"
    for cmd in cmds:
        proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True,
                              text=True, cwd=HERE, timeout=120, check=False)
        assert proc.returncode == 0, (f"{path.name}: RUN line failed ({proc.returncode}): "
                                      f"{cmd}\n{proc.stdout}\n{proc.stderr}")
