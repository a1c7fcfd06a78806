"""Data movement ops of quantised graphs (pad, slice, split, gather, expand, tile) lowered to
npu.move (FILL + strided COPY boxes): bit-exact against the reference interpreter, with the
operands resident in SRAM and spilled to DRAM; unsupported forms raise naming the node."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from ocrc.compiler.backend.codegen import compile_program
from ocrc.compiler.errors import UnsupportedOpError
from ocrc.compiler.ir import Graph

from tests.backend.helpers import TARGETS, G, check_exact, quantise


def pad_slice() -> Graph:
    g = G((1, 4, 9, 10))
    a = g.conv(g.x, 6, pads=(1, 1, 1, 1), act="relu")
    p = g.op("pad", a, pads=(0, 1, 2, 0, 0, 2, -1, 3), value=0.25)
    s = g.op("slice", p, starts=(1, 0, 7), ends=(6, 100, 0), axes=(1, 2, 3), steps=(2, 3, -2))
    return g.graph(g.conv(p, 4, k=1), s)


def split_gather() -> Graph:
    g = G((1, 8, 6, 7), seed=1)
    a = g.conv(g.x, 10, pads=(1, 1, 1, 1))
    p, q, r = g.b.emit("split", [a], {"axis": 1, "sizes": (3, 5, 2)})
    idx = g.b.const(np.array([[4, 5, 6], [0, -1, 2]], np.int64))
    gt = g.op("gather", a, idx, axis=3)
    gs = g.op("gather", a, g.b.const(np.array(2, np.int64)), axis=2)
    return g.graph(g.conv(q, 4, k=1), p, r, gt, gs)


def expand_tile() -> Graph:
    g = G((1, 3, 1, 5), seed=2)
    a = g.conv(g.x, 4, k=1)
    e = g.op("expand", a, shape=(2, 4, 6, 5))
    t = g.op("tile", a, repeats=(1, 2, 3, 2))
    return g.graph(e, t)


CASES: dict[str, Callable[[], Graph]] = {"pad_slice": pad_slice, "split_gather": split_gather,
                                         "expand_tile": expand_tile}


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("case", list(CASES))
def test_moves_bit_exact(case: str, target: str) -> None:
    qg = quantise(CASES[case]())
    res, _ = check_exact(qg, TARGETS[target]())
    assert any(n.op.name == "npu.move" for n in res.lowered.nodes)


def test_pad_reflect_is_rejected_naming_the_node() -> None:
    g = G((1, 2, 5, 5))
    a = g.conv(g.x, 3, k=1)
    qg = quantise(g.graph(g.op("pad", a, pads=(0, 0, 1, 1, 0, 0, 1, 1), mode="reflect")))
    with pytest.raises(UnsupportedOpError, match="reflect"):
        compile_program(qg, TARGETS["npu"]())
