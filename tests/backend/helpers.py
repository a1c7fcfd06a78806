"""Helpers of the backend tests: seeded float graphs quantised with the real quantiser, small
targets that force tiling and DRAM-homed activations, and the bit-exactness check
(VM output == reference interpreter of the quantised graph)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from ocrc.compiler.backend.codegen import CompileResult, compile_program
from ocrc.compiler.backend.host import run_program
from ocrc.compiler.ir import Builder, DType, Graph, TensorType
from ocrc.compiler.ir.interp import run
from ocrc.compiler.quant import calibrate, prepare, quantize_graph
from ocrc.compiler.quant.mixed import quantize_mixed
from ocrc.runtime.stats import Stats
from ocrc.runtime.target import Target, load_target, target_from_dict


def tiny_target(sram: int = 16384, rows: int = 4, cols: int = 4, dataflow: str = "os",
                lanes: int = 8) -> Target:
    """A small NPU: little SRAM so activations spill to DRAM and kernels tile."""
    return target_from_dict({
        "name": f"tiny-{sram}-{rows}x{cols}-{dataflow}", "clock_hz": 100_000_000,
        "mac": {"rows": rows, "cols": cols, "dataflow": dataflow, "int16": True},
        "vector": {"lanes": lanes}, "sram": {"bytes": sram},
        "dram": {"bytes_per_cycle": 4, "latency": 20}})


TARGETS: dict[str, Callable[[], Target]] = {
    "npu": lambda: load_target("npu"),
    "tiny": tiny_target,
    "tiny-ws": lambda: tiny_target(32768, 8, 4, "ws"),
}


class G:
    """A float graph builder with seeded constants."""

    def __init__(self, shape: tuple[int, ...], seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.b = Builder()
        self.shape = shape
        self.x = self.b.input("x", TensorType(DType.F32, shape))

    def w(self, *shape: int, sc: float = 0.3) -> Any:
        return self.b.const((self.rng.standard_normal(shape) * sc).astype(np.float32))

    def op(self, name: str, *inputs: Any, **attrs: Any) -> Any:
        return self.b.op(name, *inputs, **attrs)

    def conv(self, x: Any, cout: int, k: int = 3, group: int = 1, **attrs: Any) -> Any:
        cin = x.type.shape[1]
        return self.op("conv", x, self.w(cout, cin // group, k, k), self.w(cout, sc=0.1),
                       group=group, **attrs)

    def graph(self, *outs: Any) -> Graph:
        for i, v in enumerate(outs):
            v.name = v.name or f"y{i}"
        self.b.output(*outs)
        return self.b.graph


def quantise(g: Graph, seed: int = 1, n: int = 2, int16: str = "none") -> Graph:
    """The int8 graph of a float graph, calibrated on n seeded uniform samples; `int16` is the
    mixed-precision plan ('all' or value/layer names joined by '+', docs/quantization.md §8)."""
    p = prepare(g)
    rng = np.random.default_rng(seed)
    data = [{v.name: rng.random(v.type.shape).astype(np.float32) for v in p.inputs}
            for _ in range(n)]
    table = calibrate(p, data, progress=False)
    if int16 != "none":
        return quantize_mixed(p, table, int16)[0].graph
    return quantize_graph(p, table).graph


def check_exact(qg: Graph, target: Target, seed: int = 2) -> tuple[CompileResult, Stats]:
    """Compile qg for target, run the VM and the interpreter on one seeded input; assert the
    outputs are identical."""
    res = compile_program(qg, target, "test")
    rng = np.random.default_rng(seed)
    x = {v.name: rng.random(v.type.shape).astype(np.float32) for v in qg.inputs}
    ref = run(qg, x)
    raw, stats = run_program(res.program, x)
    for name, want in ref.items():
        assert name in raw, f"program has no output {name!r}"
        np.testing.assert_array_equal(raw[name], want, err_msg=f"output {name} on {target.name}")
    return res, stats
