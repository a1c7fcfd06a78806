"""docs/ir.md documents the IR: its op reference block is the one generated from the op table,
and every op of the table's modules appears in it."""

from __future__ import annotations

from pathlib import Path

from ocrc.compiler.ir.ops.reference import op_reference, updated

DOC = Path(__file__).resolve().parents[2] / "docs" / "ir.md"


def test_ir_md_op_reference_is_current() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert updated(text) == text, (
        "docs/ir.md is stale: run `python -m ocrc.compiler.ir.ops.reference docs/ir.md`")


def test_reference_lists_the_frontend_ops() -> None:
    ref = op_reference()
    for name in ("conv_transpose", "max_pool", "avg_pool", "global_avg_pool", "lrn", "reshape",
                 "transpose", "concat", "split", "slice", "pad", "resize", "lstm", "gather"):
        assert f"**`{name}`**" in ref
