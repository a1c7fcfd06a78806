"""End to end on small quantised graphs: compile -> VM output bit-exact with the reference
interpreter of the quantised IR, on the default preset and on small targets that force tiling,
channel blocks, streamed weights and DRAM-homed activations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from ocrc.compiler.ir import Graph

from tests.backend.helpers import TARGETS, G, check_exact, quantise, tiny_target


def conv_plain() -> Graph:
    g = G((1, 3, 12, 16))
    return g.graph(g.conv(g.x, 8, pads=(1, 1, 1, 1), act="relu"))


def conv_strided_padded_dilated() -> Graph:
    g = G((1, 4, 13, 17))
    a = g.conv(g.x, 8, strides=(2, 2), pads=(1, 0, 2, 1))
    b = g.conv(a, 12, dilations=(2, 2), pads=(2, 2, 2, 2), act="clip", act_params=(0.0, 6.0))
    return g.graph(b)


def conv_depthwise_grouped() -> Graph:
    g = G((1, 8, 10, 12))
    a = g.conv(g.x, 8, group=8, pads=(1, 1, 1, 1), act="relu")
    b = g.conv(a, 12, group=2, k=1)
    c = g.conv(b, 12, group=12, strides=(2, 1), pads=(1, 1, 1, 1))
    return g.graph(c)


def depthwise_split() -> Graph:  # 24 KiB activations: channel blocks on the 16 KiB target
    g = G((1, 64, 16, 24))
    a = g.conv(g.x, 64, group=64, k=5, pads=(2, 2, 2, 2), act="relu")
    b = g.conv(a, 64, group=16, pads=(1, 1, 1, 1))
    return g.graph(g.op("max_pool", b, kernel_shape=(16, 2), strides=(16, 2)))


def conv_wide() -> Graph:  # 40 output channels: blocks of the array's columns on small targets
    g = G((1, 16, 9, 20))
    a = g.conv(g.x, 40, pads=(1, 1, 1, 1), act="silu")
    return g.graph(g.conv(a, 24, k=1))


def residual_add() -> Graph:
    g = G((1, 8, 8, 10))
    a = g.conv(g.x, 8, pads=(1, 1, 1, 1), act="relu")
    b = g.conv(a, 8, pads=(1, 1, 1, 1))
    c = g.op("add", b, a)
    d = g.op("add", c, g.w(1, 8, 1, 1))  # a per-channel constant: broadcast ADD
    return g.graph(g.op("relu", d))


def pools() -> Graph:
    g = G((1, 6, 11, 14))
    a = g.op("max_pool", g.x, kernel_shape=(2, 2), strides=(2, 2), ceil_mode=1)
    b = g.op("max_pool", g.x, kernel_shape=(3, 3), strides=(1, 1), pads=(1, 1, 1, 1))
    c = g.op("avg_pool", b, kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1))
    d = g.op("avg_pool", b, kernel_shape=(2, 2), strides=(2, 2), pads=(1, 1, 1, 1),
             count_include_pad=1)
    e = g.op("global_avg_pool", c)
    return g.graph(a, c, d, e)


def concat_lut_mul() -> Graph:
    g = G((1, 4, 8, 8))
    a = g.conv(g.x, 6, pads=(1, 1, 1, 1))
    b = g.conv(g.x, 5, pads=(1, 1, 1, 1), act="relu")
    c = g.op("concat", a, b, axis=1)
    s = g.op("sigmoid", c)
    m = g.op("mul", c, s)  # x * sigmoid(x) of two tensors: MUL
    w = g.op("concat", m, c, axis=3)  # along the width
    gate = g.op("hard_sigmoid", g.op("global_avg_pool", m))
    return g.graph(w, g.op("mul", m, gate))


def dense_head() -> Graph:
    g = G((1, 8, 4, 6))
    a = g.conv(g.x, 10, pads=(1, 1, 1, 1), act="relu")
    t = g.op("transpose", a, perm=(3, 0, 1, 2))  # [W, 1, C, H]: the CRNN bridge
    r = g.op("reshape", t, shape=(6, 1, 40))
    d = g.op("dense", r, g.w(50, 40, sc=0.2), g.w(50, sc=0.1))
    return g.graph(g.op("softmax", d, axis=-1))


def dense_long_k() -> Graph:  # K = 3000: weight rows do not fit the tiny target: K blocks
    g = G((3, 1, 3000))
    return g.graph(g.op("dense", g.x, g.w(36, 3000, sc=0.05), g.w(36, sc=0.1), act="relu"))


def lstm(direction: str, hidden: int = 12, init: bool = False) -> Callable[[], Graph]:
    def build() -> Graph:
        g = G((7, 1, 10))
        dn = 2 if direction == "bidirectional" else 1
        extra: list[Any] = [g.w(dn, 8 * hidden, sc=0.1)]
        if init:
            extra += [g.w(dn, 1, hidden, sc=0.5), g.w(dn, 1, hidden, sc=0.5)]
        y, _, _ = g.b.emit("lstm", [g.x, g.w(dn, 4 * hidden, 10), g.w(dn, 4 * hidden, hidden),
                                      *extra], {"hidden_size": hidden, "direction": direction})
        r = g.op("reshape", y, shape=(7, 1, dn * hidden))
        return g.graph(g.op("dense", r, g.w(9, dn * hidden), g.w(9, sc=0.1)))
    return build


CASES: dict[str, Callable[[], Graph]] = {
    "conv": conv_plain, "conv_strided": conv_strided_padded_dilated,
    "conv_grouped": conv_depthwise_grouped, "dw_split": depthwise_split, "conv_wide": conv_wide, "residual": residual_add,
    "pools": pools, "concat_lut_mul": concat_lut_mul, "dense_head": dense_head,
    "dense_long_k": dense_long_k,
    "lstm_fwd": lstm("forward"), "lstm_rev_init": lstm("reverse", init=True),
    "lstm_bi": lstm("bidirectional", hidden=16),
}


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("case", list(CASES))
def test_bit_exact(case: str, target: str) -> None:
    qg = quantise(CASES[case]())
    res, stats = check_exact(qg, TARGETS[target]())
    assert stats.total_cycles > 0
    assert res.program.n_insns > 1


def big() -> Graph:
    """Activations and weights larger than the tiny target's 16 KiB of SRAM."""
    g = G((1, 16, 24, 32))
    a = g.conv(g.x, 40, pads=(1, 1, 1, 1), act="relu")  # 30 KiB output, 5.6 KiB weights
    b = g.conv(a, 48, strides=(2, 2), pads=(1, 1, 1, 1))
    c = g.op("add", g.conv(b, 48, k=1), b)
    p = g.op("max_pool", c, kernel_shape=(12, 1), strides=(12, 1))  # [1, 48, 1, 16]
    t = g.op("reshape", g.op("transpose", p, perm=(3, 0, 1, 2)), shape=(16, 1, 48))
    h = 40  # R: 2 x 160 x 40 = 12.5 KiB, streamed
    y, _, _ = g.b.emit("lstm", [t, g.w(2, 4 * h, 48), g.w(2, 4 * h, h), g.w(2, 8 * h, sc=0.1)],
                       {"hidden_size": h, "direction": "bidirectional"})
    r = g.op("reshape", y, shape=(16, 1, 2 * h))
    return g.graph(g.op("dense", r, g.w(300, 2 * h, sc=0.2), g.w(300, sc=0.1)))


def test_small_sram_spills_to_dram() -> None:
    qg = quantise(big())
    res, _ = check_exact(qg, TARGETS["tiny"]())
    assert any(s.home == "dram" and s.kind == "temp" for s in res.plan.storages)
    assert any(t.tiles > 1 for t in res.tilings)
    lstm = [t for k, t in zip(res.plan.kernels, res.tilings) if k.anchor.op.name == "npu.lstm"]
    assert lstm and lstm[0].params["res"] < 4 * 40  # R does not fit: (partly) streamed


def test_host_tail_is_marked() -> None:
    res, _ = check_exact(quantise(dense_head()), TARGETS["npu"]())
    assert res.host_ops == 1
    assert "softmax" in res.program.meta["host_tail"]


def test_deterministic() -> None:
    qg = quantise(CASES["lstm_bi"]())
    t = TARGETS["tiny"]()
    from ocrc.compiler.backend.codegen import compile_program
    a = compile_program(qg, t).program.to_bytes()
    b = compile_program(qg, t).program.to_bytes()
    assert a == b
    assert np.frombuffer(a, np.uint8).size > 0


def test_lstm_streams_r_in_small_blocks_when_sram_is_small() -> None:
    """R of one direction (512 x 128 = 64 KiB) is twice the target's whole SRAM: the LSTM must
    stream it in blocks of a few rows (ddddocr's 2048 x 512 R on npu-lite is this case)."""
    h = 128
    g = G((1, 8, 1, 4))
    t = g.op("reshape", g.op("transpose", g.x, perm=(3, 0, 1, 2)), shape=(4, 1, 8))
    y, _, _ = g.b.emit("lstm", [t, g.w(2, 4 * h, 8), g.w(2, 4 * h, h), g.w(2, 8 * h, sc=0.1)],
                       {"hidden_size": h, "direction": "bidirectional"})
    res, _ = check_exact(quantise(g.graph(y)), tiny_target(32768))
    lstm = [t for k, t in zip(res.plan.kernels, res.tilings) if k.anchor.op.name == "npu.lstm"]
    assert lstm[0].params["res"] == 0 and lstm[0].params["nb"] <= 4 * h // 8


@pytest.mark.parametrize("target", ["npu", "tiny"])
def test_per_channel_tables_after_equalisation(target: str) -> None:
    """Cross-layer equalisation turns conv -> silu -> conv into per-channel silu tables: one
    LUT instruction per tile, `tables` = the tile's channels."""
    from ocrc.compiler.quant import calibrate, prepare, quantize_graph
    from ocrc.compiler.quant.equalize import channel_absmax, equalize

    g = G((1, 6, 10, 12))
    a = g.conv(g.x, 24, pads=(1, 1, 1, 1), act="silu")
    p = prepare(g.graph(g.conv(a, 16, pads=(1, 1, 1, 1))))
    rng = np.random.default_rng(3)
    data = [{"x": rng.random((1, 6, 10, 12)).astype(np.float32)} for _ in range(2)]
    absmax: dict[str, np.ndarray] = {}
    channel_absmax(p, data, absmax)
    e = equalize(p, absmax)
    qg = quantize_graph(e, calibrate(e, data, progress=False)).graph
    luts = [n for n in qg.nodes if n.op.name == "lut"]
    assert luts and luts[0].inputs[1].type.shape == (24, 256)
    res, _ = check_exact(qg, TARGETS[target]())
    from ocrc.runtime import isa
    f = isa.decode_program(res.program.code)
    luts = f[f[:, isa.C_OPCODE] == isa.Opcode.LUT]
    assert luts.size and luts[:, isa.C_TABLES].max() > 1


def test_weights_over_dram_name_the_compression_options() -> None:
    """Weights larger than the target's DRAM: one error naming the target and the way out."""
    from ocrc.compiler.backend.codegen import compile_program
    from ocrc.runtime.errors import ProgramError
    g = G((1, 256))
    qg = quantise(g.graph(g.op("dense", g.x, g.w(64, 256), g.w(64))))
    small = replace(tiny_target(), name="small-dram", dram_bytes=4096)  # 16 KiB of weights
    with pytest.raises(ProgramError, match=r"exceed the target's DRAM \(4096 bytes\): the "
                       r"weights do not fit 'small-dram'; .*--low-rank.*--prune") as e:
        compile_program(qg, small)
    assert "\n" not in str(e.value)
    compile_program(qg, replace(small, dram_bytes=1 << 20))  # fits with more DRAM
