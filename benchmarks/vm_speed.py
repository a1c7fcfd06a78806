"""VM speed on a program with the shape of ddddocr common.onnx at 1x1x64x160 (0.569 GMAC),
side by side with onnxruntime fp32 on one thread when the model file is given.

Until the compiler backend exists, the program is synthetic but shape-faithful: every conv of
the CNN (with its SiLU table and residual adds), the transposed feature map, the bidirectional
LSTM (batched input projections, 20 recurrent steps per direction with int16 cell arithmetic,
recurrent weights streamed from DRAM every step) and the 1024 -> 8210 classifier tiled over
SRAM, with double-buffered weight loads. Random weights; the numbers measure the VM, not
accuracy.

    OPENBLAS_NUM_THREADS=1 python benchmarks/vm_speed.py [--onnx common.onnx] [--target npu]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np
from ocrc.runtime.builder import ProgramBuilder
from ocrc.runtime.isa import DType, Opcode
from ocrc.runtime.program import Program
from ocrc.runtime.target import Target, load_target
from ocrc.runtime.vm import VM

# (name, h_in, w_in, cin, cout, k, stride, silu, residual) of the 21 convs of ddddocr.
CONVS = [
    ("Conv_0", 64, 160, 1, 24, 3, 2, True, False), ("Conv_3", 32, 80, 24, 24, 3, 1, True, False),
    ("Conv_6", 32, 80, 24, 24, 1, 1, False, True), ("Conv_8", 32, 80, 24, 24, 3, 1, True, False),
    ("Conv_11", 32, 80, 24, 24, 1, 1, False, True),
    ("Conv_13", 32, 80, 24, 96, 3, 2, True, False),
    ("Conv_16", 16, 40, 96, 48, 1, 1, False, False),
    *[item for i in (17, 22, 27) for item in (
        (f"Conv_{i}", 16, 40, 48, 192, 3, 1, True, False),
        (f"Conv_{i + 3}", 16, 40, 192, 48, 1, 1, False, True))],
    ("Conv_32", 16, 40, 48, 192, 3, 2, True, False),
    ("Conv_35", 8, 20, 192, 64, 1, 1, False, False),
    *[item for i in (36, 41, 46) for item in (
        (f"Conv_{i}", 8, 20, 64, 256, 3, 1, True, False),
        (f"Conv_{i + 3}", 8, 20, 256, 64, 1, 1, False, True))],
]
KB = 1024
ACT = [0, 128 * KB, 256 * KB]  # three activation buffers of 128 KiB (ping, pong, residual)
WBUF = [384 * KB, 640 * KB]  # two weight buffers of 256 KiB (double buffered)
SMALL = 896 * KB  # qp blocks, tables, LSTM state


class _Loader:
    """Double-buffered weight loads: load i waits until compute freed buffer i % 2."""

    def __init__(self, b: ProgramBuilder, rng: np.random.Generator) -> None:
        self.b, self.rng, self.i = b, rng, 0
        self.pending_free = 0

    def weights(self, name: str, n: int, k: int) -> int:
        """LOADW n*k random int8 weights + a qp block; returns the SRAM weight address."""
        w = self.rng.integers(-127, 128, n * k, dtype=np.int8)
        qp = np.concatenate([self.rng.integers(-500, 500, n), np.full(n, 1 << 30),
                             np.full(n, 42)]).astype("<i4")
        buf = WBUF[self.i % 2]
        pop = int(self.i >= 2)
        self.b.emit(Opcode.LOADW, dram=self.b.const(name, w), clen=n * k, count=n * k,
                    sram=buf, pop_next=pop)
        self.b.emit(Opcode.LOAD, dram=self.b.const(name + ".qp", qp), sram=buf + 250 * KB,
                    n0=12 * n, n1=1, n2=1, push_next=1)
        self.i += 1
        return buf

    @staticmethod
    def use() -> dict[str, int]:
        """Flags of the compute instruction that consumes the latest load (and frees it)."""
        return {"pop_prev": 1, "push_prev": 1}

    def finish(self) -> None:
        """Consume the tokens of the last two buffers (nothing loads into them again)."""
        for _ in range(min(self.i, 2)):
            self.b.emit(Opcode.NOP, queue=0, pop_next=1)


def build_ddddocr_like(target: Target, seed: int = 0) -> Program:
    rng = np.random.default_rng(seed)
    b = ProgramBuilder(target, meta={"model": "ddddocr-shaped synthetic"})
    x = b.input("x", (1, 1, 64, 160), scale=1 / 64)
    table = b.const("silu.lut", rng.integers(-128, 128, 256, dtype=np.int8))
    t16 = b.const("gate.lut", rng.integers(-32768, 32767, 256).astype("<i2"))
    b.layer("input")
    b.emit(Opcode.LOAD, dram=x.addr, sram=ACT[0], n0=64 * 160, n1=1, n2=1, push_next=1)
    b.emit(Opcode.LOAD, dram=table, sram=SMALL, n0=256, n1=1, n2=1)
    b.emit(Opcode.LOAD, dram=t16, sram=SMALL + 256, n0=512, n1=1, n2=1, push_next=1)
    b.emit(Opcode.NOP, queue=1, pop_prev=1)
    b.emit(Opcode.NOP, queue=1, pop_prev=1)
    ld = _Loader(b, rng)
    cur, res = 0, 2
    for name, h, w, cin, cout, k, s, silu, residual in CONVS:
        b.layer(name)
        wa = ld.weights(name, cout, k * k * cin)
        p = k // 2
        out = 1 if cur != 1 else 0
        b.emit(Opcode.CONV, src=ACT[cur], wgt=wa, qp=wa + 250 * KB, dst=ACT[out], h=h, w=w,
               cin=cin, cout=cout, kh=k, kw=k, sh=s, sw=s, dh=1, dw=1, pt=p, pb=p, pl=p, pr=p,
               groups=1, zx=-5, zy=3, lo=-128, hi=127, **ld.use())
        ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        cnt = ho * wo * cout
        if silu:
            b.emit(Opcode.LUT, src=ACT[out], dst=ACT[out], count=cnt, table=SMALL)
        if residual:
            b.emit(Opcode.ADD, a=ACT[out], b=ACT[res], dst=ACT[out], count=cnt, b_period=cnt,
                   ma=1 << 30, sa=22, mb=1 << 30, sb=22, lo=-128, hi=127)
        cur = out
        if not residual and not silu:
            b.emit(Opcode.COPY, src=ACT[cur], dst=ACT[res], n0=cnt, n1=1, n2=1, ss0=1, ds0=1,
                   esize=DType.I8)
    _lstm_and_classifier(b, ld, cur)
    ld.finish()
    return b.build()


def _lstm_and_classifier(b: ProgramBuilder, ld: _Loader, cur: int) -> None:
    T, H, NT = 20, 512, 256  # steps, hidden size, weight tile (output columns)
    st = SMALL + 1024  # h i8[2, 512], c i16[2, 512], th i32[2048], gates i16[4, 512], temps
    h, c, th, g, t1, t2 = st, st + KB, st + 4 * KB, st + 12 * KB, st + 16 * KB, st + 18 * KB
    hs, feat = st + 21 * KB, st + 42 * KB  # LSTM output i8[20, 1024]; its input i8[20, 512]
    b.layer("Transpose_51")
    # HWC [8, 20, 64] -> [20, 8*64]: x_t[c*8 + y] = in[y, t, c]
    for y in range(8):
        b.emit(Opcode.COPY, src=ACT[cur] + y * 20 * 64, dst=feat + y, n0=64, n1=20, n2=1,
               ss0=1, ss1=64, ds0=8, ds1=512, esize=DType.I8)
    tx = [0, 160 * KB]  # int32 [20, 2048] input projections per direction (ACT[0..1] reused)
    b.layer("LSTM_79")
    for d in range(2):
        for j in range(4 * H // NT):
            wa = ld.weights(f"lstm.w{d}.{j}", NT, H)
            b.emit(Opcode.MATMUL, a=feat, b=wa, qp=wa + 250 * KB, dst=tx[d] + 4 * NT * j,
                   m=T, n=NT, k=H, a_rs=H, d_rs=4 * 4 * H, zx=2, out=DType.I32, **ld.use())
        b.emit(Opcode.REQUANT, src=tx[d], dst=tx[d], count=T * 4 * H, chan=4 * H,
               qp=WBUF[1] + 250 * KB, out_dt=DType.I32)
    for step in range(T):
        for d in range(2):
            t = step if d == 0 else T - 1 - step
            for j in range(4 * H // NT):
                wa = ld.weights(f"lstm.r{d}.{step}.{j}", NT, H)
                b.emit(Opcode.MATMUL, a=h + 512 * d, b=wa, qp=wa + 250 * KB, dst=th + 4 * NT * j,
                       m=1, n=NT, k=H, a_rs=H, d_rs=4 * NT, out=DType.I32, **ld.use())
            b.emit(Opcode.REQUANT, src=th, dst=th, count=4 * H, chan=4 * H,
                   qp=WBUF[0] + 250 * KB, out_dt=DType.I32)
            b.emit(Opcode.IADD, a=th, b=tx[d] + 4 * 4 * H * t, dst=t1, count=4 * H,
                   b_period=4 * H, a_dt=DType.I32, b_dt=DType.I32, out_dt=DType.I8, shift=8,
                   lo=-128, hi=127)
            for j in range(4):
                b.emit(Opcode.LUT, src=t1 + j * H, dst=g + 2 * j * H, count=H, table=SMALL + 256,
                       out_dt=DType.I16)
            i16 = {"a_dt": DType.I16, "b_dt": DType.I16, "out_dt": DType.I16, "lo": -32768,
                   "hi": 32767, "count": H, "b_period": H}
            b.emit(Opcode.IMUL, a=g + 4 * H, b=c + 2 * H * d, dst=t2, mult=1, shift=15, **i16)
            b.emit(Opcode.IMUL, a=g, b=g + 6 * H, dst=t2 + 2 * H, mult=1, shift=20, **i16)
            b.emit(Opcode.IADD, a=t2, b=t2 + 2 * H, dst=c + 2 * H * d, **i16)
            b.emit(Opcode.RESCALE, src=c + 2 * H * d, dst=t1, count=H, in_dt=DType.I16,
                   out_dt=DType.I8, mult=1 << 30, shift=38, lo=-128, hi=127)
            b.emit(Opcode.LUT, src=t1, dst=t2, count=H, table=SMALL + 256, out_dt=DType.I16)
            b.emit(Opcode.IMUL, a=g + 2 * H, b=t2, dst=h + 512 * d, count=H, b_period=H,
                   a_dt=DType.I16, b_dt=DType.I16, out_dt=DType.I8, mult=1 << 30, shift=52,
                   lo=-128, hi=127)
            b.emit(Opcode.COPY, src=h + 512 * d, dst=hs + t * 1024 + 512 * d, n0=H, n1=1, n2=1,
                   ss0=1, ds0=1, esize=DType.I8)
    b.layer("Gemm_97")
    out = b.output("y", (20, 8210), scale=0.1)
    tile = 240
    n_tiles = -(-8210 // tile)
    for j in range(n_tiles):
        n = min(tile, 8210 - tile * j)
        wa = ld.weights(f"fc.{j}", n, 1024)
        # output buffer j % 2 is free once the store of tile j - 2 is done
        b.emit(Opcode.MATMUL, a=hs, b=wa, qp=wa + 250 * KB, dst=ACT[j % 2], m=20, n=n, k=1024,
               a_rs=1024, d_rs=n, zx=1, lo=-128, hi=127, out=DType.I8, pop_next=int(j >= 2),
               push_next=1, **ld.use())
        b.emit(Opcode.STORE, dram=out.addr + tile * j, sram=ACT[j % 2], n0=n, n1=20, n2=1,
               ds1=8210, ss1=n, pop_prev=1, push_prev=1)
    for _ in range(min(n_tiles, 2)):
        b.emit(Opcode.NOP, queue=1, pop_next=1)


def ort_time(onnx_path: str, repeat: int) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 3
    s = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    feed = {s.get_inputs()[0].name: np.random.default_rng(0).standard_normal(
        (1, 1, 64, 160)).astype(np.float32)}
    for _ in range(3):
        s.run(None, feed)
    t0 = time.perf_counter()
    for _ in range(repeat):
        s.run(None, feed)
    return (time.perf_counter() - t0) / repeat


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="npu")
    ap.add_argument("--onnx", help="ddddocr common.onnx, to time onnxruntime side by side")
    ap.add_argument("--repeat", type=int, default=20)
    a = ap.parse_args()
    t0 = time.perf_counter()
    prog = build_ddddocr_like(load_target(a.target))
    t_build = time.perf_counter() - t0
    vm = VM(prog)
    x = {"x": np.random.default_rng(1).standard_normal((1, 1, 64, 160)).astype(np.float32)}
    t0 = time.perf_counter()
    _, stats = vm.run(x)
    first = time.perf_counter() - t0
    walls, loops = [], []
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        _, st = vm.run(x)
        walls.append(time.perf_counter() - t0)
        loops.append(st.wall_s)
    warm = float(np.median(walls))
    startup = subprocess.run(  # import + first (cache-loading) run of a tiny program
        [sys.executable, "-c", ("import time; t = time.perf_counter(); "
         "from ocrc.runtime.vm import run_program; from ocrc.runtime.builder import "
         "ProgramBuilder; from ocrc.runtime.target import load_target; "
         "run_program(ProgramBuilder(load_target('npu')).build(), {}); "
         "print(f'{time.perf_counter() - t:.2f}')")],
        capture_output=True, text=True, check=False).stdout.strip()
    print(f"program: {prog.n_insns} instructions, {stats.macs / 1e9:.3f} GMAC, built in "
          f"{t_build:.2f} s")
    print(stats.summary())
    print(f"VM wall: first run {first * 1e3:.1f} ms, warm median {warm * 1e3:.2f} ms "
          f"(jitted loop {float(np.median(loops)) * 1e3:.2f} ms); fresh process with a warm "
          f"cache: import + first run {startup} s")
    if a.onnx:
        t_ort = ort_time(a.onnx, a.repeat)
        print(f"onnxruntime fp32 1 thread: {t_ort * 1e3:.2f} ms; VM / ORT = {warm / t_ort:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
