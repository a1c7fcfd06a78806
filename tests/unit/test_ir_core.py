"""The IR core: builder, verifier, printer/parser round trip, interpreter, error messages."""

from __future__ import annotations

import numpy as np
import pytest

from ocrc.compiler.errors import IRParseError, IRVerifyError
from ocrc.compiler.ir import Builder, DType, Graph, Node, TensorType, parse_graph, print_graph, run
from ocrc.compiler.ir import verify
from ocrc.compiler.ir.irfile import load_ir, save_ir
from ocrc.compiler.ir.ops import nn


def small_graph() -> Graph:
    rng = np.random.default_rng(0)
    b = Builder()
    x = b.input("x", TensorType(DType.F32, (1, 3, 8, 8)))
    w = b.const(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    bias = b.const(np.arange(4, dtype=np.float32), "b")
    y = b.op("conv", x, w, bias, pads=(1, 1, 1, 1), act="silu", name="Conv_0")
    z = b.op("add", y, b.const(np.float32(1.5)))
    b.output(b.op("clip", z, min=0.0, max=6.0))
    return b.graph


def test_roundtrip_is_byte_identical_and_computes_the_same() -> None:
    g = small_graph()
    verify(g)
    text, blobs = print_graph(g)
    g2 = parse_graph(text, blobs)
    assert print_graph(g2)[0] == text
    x = {"x": np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    a, b = run(g, x), run(g2, x)
    np.testing.assert_array_equal(list(a.values())[0], list(b.values())[0])


def test_large_constants_go_to_the_side_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    g = small_graph()
    save_ir(g, tmp_path / "m.ir")
    assert (tmp_path / "m.ir.npz").exists()
    assert "@w" in (tmp_path / "m.ir").read_text()
    assert "dense<[0.0, 1.0, 2.0, 3.0]>" in (tmp_path / "m.ir").read_text()
    assert print_graph(load_ir(tmp_path / "m.ir"))[0] == print_graph(g)[0]
    save_ir(g, tmp_path / "m2.ir")
    assert (tmp_path / "m.ir.npz").read_bytes() == (tmp_path / "m2.ir.npz").read_bytes()


def test_conv_matches_direct_loop() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 7, 6)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 2)).astype(np.float32)
    y = nn.conv2d(x, w, (2, 1), (1, 0, 2, 1), (2, 1), 2)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 2), (0, 1)))
    ref = np.zeros_like(y)
    for m in range(6):
        g = m // 3
        for i in range(y.shape[2]):
            for j in range(y.shape[3]):
                patch = xp[0, g * 2:(g + 1) * 2, i * 2:i * 2 + 5:2, j:j + 2]
                ref[0, m, i, j] = np.sum(patch * w[m])
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("edit,message", [
    (("conv(", "convx("), r"4:8: unknown op 'convx'"),
    (("pads = [1, 1, 1, 1]", "pads = [1, 1]"), r"attr 'pads' needs 4 ints, got \[1, 1\]"),
    (("add(%0, %1)", "add(%0, %9)"), r"use of undefined value %9"),
    ((": f32[1,4,8,8] loc", "f32[1,4,8,8] loc"), r"unexpected OPNAME 'f32', expected one of COLON"),
    (("{max = 6.0", "{maxx = 6.0"), r"clip: unknown attribute 'maxx' \(expected one of max, min\)"),
    (("act = \"silu\"", "act = 3"), r"conv.act: expected a string, got 3"),
    (("-> f32[1,4,8,8] {", "-> f32[1,4,8,9] {"), r"return types do not match"),
])
def test_parse_errors_name_line_column_and_problem(edit: tuple[str, str], message: str) -> None:
    text, blobs = print_graph(small_graph())
    assert edit[0] in text
    with pytest.raises(IRParseError, match=message) as e:
        parse_graph(text.replace(edit[0], edit[1], 1), blobs)
    if e.value.line:
        assert "^" in str(e.value)


def test_verifier_rejects_type_mismatch_and_non_ssa() -> None:
    g = small_graph()
    conv = g.nodes[2]
    bad = Node(conv.op, conv.inputs, conv.attrs,
               (type(conv.output)(TensorType(DType.F32, (1, 4, 8, 9)), "y"),), conv.name)
    with pytest.raises(IRVerifyError, match=r"declared type f32\[1,4,8,9\] but operands give "
                       r"f32\[1,4,8,8\]"):
        verify(Graph(g.inputs, [*g.nodes[:2], bad], [bad.output]))
    with pytest.raises(IRVerifyError, match="defined twice"):
        verify(Graph(g.inputs, [*g.nodes[:3], g.nodes[2]], [g.nodes[2].output]))


def test_interpreter_checks_inputs() -> None:
    g = small_graph()
    with pytest.raises(Exception, match=r"input 'x': got float32\[1, 3, 8, 9\], expected "
                       r"float32\[1, 3, 8, 8\]"):
        run(g, {"x": np.zeros((1, 3, 8, 9), np.float32)})
    with pytest.raises(Exception, match=r"missing \['x'\]"):
        run(g, {})


def test_float_attrs_roundtrip_exactly() -> None:
    b = Builder()
    x = b.input("x", TensorType(DType.F32, (2, 3)))
    b.output(b.op("leaky_relu", x, alpha=0.1 + 1e-17), b.op("clip", x, min=-np.inf, max=1 / 3))
    text = print_graph(b.graph)[0]
    g2 = parse_graph(text)
    assert print_graph(g2)[0] == text
    assert g2.nodes[1].attrs["min"] == -np.inf and g2.nodes[1].attrs["max"] == 1 / 3
