"""The docs keep up with the code: every registered pass has an entry in docs/passes.md."""

from __future__ import annotations

from pathlib import Path

from ocrc.compiler.passes import PASSES

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_pass_has_an_entry_in_passes_md() -> None:
    text = (DOCS / "passes.md").read_text(encoding="utf-8")
    missing = sorted(name for name in PASSES if f"**{name}**" not in text)
    assert not missing, (f"docs/passes.md has no '**name**' entry (section 'The passes') for "
                         f"{', '.join(missing)}")
