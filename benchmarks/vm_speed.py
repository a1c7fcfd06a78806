"""VM speed: wall time per inference of the NPU virtual machine against onnxruntime fp32, both
on one thread, measured side by side in one run on ddddocr common.onnx at 1x1x64x160
(0.569 GMAC) compiled by ocrc for the `npu` preset; plus the numba start-up time of a fresh
process with a warm cache. Writes the `## VM speed` section of benchmarks/RESULTS.md.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.vm_speed
        [--repeat N] [--synthetic] [--sweep] [--no-write]

One thread each: OPENBLAS_NUM_THREADS=1 is set before numpy loads (the VM's sgemm is scipy's
OpenBLAS, called by numba) and threadpoolctl limits it too when installed; onnxruntime runs
with intra/inter-op threads = 1. The runs alternate VM / onnxruntime so that both see the same
machine load; both wall and CPU (process) time are reported. OPENBLAS_CORETYPE, when set on
this machine, pins OpenBLAS to its AVX2 kernels: unset it (with OPENBLAS_L2_SIZE) for this
command only, as above; the script records which kernel ran. `--synthetic` times the
ddddocr-shaped program built here instead (random weights), `--sweep` the sgemm and integer
MAC paths of kernels.py on the shapes that set its thresholds.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy / scipy load OpenBLAS

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ocrc.runtime.builder import ProgramBuilder
from ocrc.runtime.isa import DType, Opcode
from ocrc.runtime.program import Program
from ocrc.runtime.target import Target, load_target
from ocrc.runtime.vm import VM

from benchmarks.ocr.report import markdown_table, write_section

SHAPE = (1, 1, 64, 160)

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
        self.consts: dict[str, tuple[int, int]] = {}

    def weights(self, name: str, n: int, k: int) -> int:
        """LOADW n*k random int8 weights + a qp block (DRAM constants made once per name, so
        the recurrent weights are the same every step); returns the SRAM weight address."""
        if name not in self.consts:
            w = self.rng.integers(-127, 128, n * k, dtype=np.int8)
            qp = np.concatenate([self.rng.integers(-500, 500, n), np.full(n, 1 << 30),
                                 np.full(n, 42)]).astype("<i4")
            self.consts[name] = (self.b.const(name, w), self.b.const(name + ".qp", qp))
        wd, qd = self.consts[name]
        buf = WBUF[self.i % 2]
        pop = int(self.i >= 2)
        self.b.emit(Opcode.LOADW, dram=wd, clen=n * k, count=n * k, sram=buf, pop_next=pop)
        self.b.emit(Opcode.LOAD, dram=qd, sram=buf + 250 * KB, n0=12 * n, n1=1, n2=1,
                    push_next=1)
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
    """The synthetic ddddocr-shaped program (random weights; what was timed before the
    backend existed)."""
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
                wa = ld.weights(f"lstm.r{d}.{j}", NT, H)
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


def compiled_ddddocr(target: str) -> Program:
    """ddddocr common.onnx at 1x1x64x160, quantised (2 seeded calibration samples, as
    benchmarks.npu_backend) and compiled for the target."""
    from ocrc.compiler.backend.codegen import compile_program

    from benchmarks.npu_backend import MODELS, quantised

    qg = quantised(MODELS["ddddocr-common"].load())
    return compile_program(qg, load_target(target), "ddddocr-common").program


def ort_session(onnx_path: str):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])


def blas_info() -> str:
    """The BLAS that numba's np.dot calls (scipy's), its kernel and threads (threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        return ("threadpoolctl not installed; OPENBLAS_NUM_THREADS="
                + os.environ["OPENBLAS_NUM_THREADS"])
    threadpool_limits(1)
    libs = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return "; ".join(f"{Path(i['filepath']).name} {i.get('version')} kernel "
                     f"{i.get('architecture')} threads {i['num_threads']}" for i in libs)


def timed(fn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def startup(prog_path: str) -> dict[str, float]:
    """A fresh process with a warm numba cache: interpreter + imports, VM(program) and the
    first run (numba loads the cached machine code), the second run."""
    code = (
        "import time; t0 = time.perf_counter()\n"
        "import numpy as np\n"
        "from ocrc.runtime.program import load_program\nfrom ocrc.runtime.vm import VM\n"
        f"t1 = time.perf_counter(); p = load_program({prog_path!r}); vm = VM(p)\n"
        "x = {d.name: np.zeros(d.shape, np.float32) for d in p.inputs}\n"
        "vm.run(x); t2 = time.perf_counter(); vm.run(x); t3 = time.perf_counter()\n"
        "import json; print(json.dumps({'import_s': t1 - t0, 'first_run_s': t2 - t1, "
        "'second_run_s': t3 - t2}))\n")
    out: dict[str, float] = {}
    for _ in range(2):  # the first one may still write cache entries
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True)
        out = json.loads(res.stdout.strip().splitlines()[-1])
        out["process_s"] = time.perf_counter() - t0
    return out


def sweep() -> list[list[object]]:
    """sgemm vs the integer loop on conv/matmul shapes (microseconds, best of 20)."""
    from numba import njit
    from ocrc.runtime import kernels as K

    @njit
    def f32(col8, wg, out):  # type: ignore[no-untyped-def]
        wf = np.empty(wg.shape, np.float32)
        K._zsum(wg, 3, wf)
        colf = col8.astype(np.float32)
        K._dot_f32(colf, wf, out)

    @njit
    def i16(col8, wg, out):  # type: ignore[no-untyped-def]
        xz = np.empty(col8.shape, np.int16)
        for i in range(col8.shape[0]):
            for j in range(col8.shape[1]):
                xz[i, j] = col8[i, j] - 3
        K._dot_i32(xz, wg, out)

    rng = np.random.default_rng(0)
    rows: list[list[object]] = []
    for m, n, k in [(1, 512, 512), (20, 288, 1024), (20, 256, 512), (32, 64, 256),
                    (64, 16, 288), (160, 32, 576), (640, 32, 432), (2560, 24, 216)]:
        x = rng.integers(-128, 128, (m, k)).astype(np.int8)
        w = rng.integers(-128, 128, (n, k)).astype(np.int8)
        out = np.empty((m, n), np.int32)
        best = []
        for fn in (f32, i16):
            fn(x, w, out)
            args = (x, w, out)
            best.append(min(timed(lambda f=fn, a=args: f(*a))[1] for _ in range(20)) * 1e6)
        rows.append([f"{m}x{n}x{k}", f"{best[0]:.1f}", f"{best[1]:.1f}",
                     "sgemm" if K.use_blas(m, n, k) else "integer"])
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="npu")
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--synthetic", action="store_true", help="time the synthetic program")
    ap.add_argument("--sweep", action="store_true", help="also time sgemm vs integer paths")
    ap.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    a = ap.parse_args()
    from ocrc.frontend.zoo import fetch_model

    onnx_path = str(fetch_model("ddddocr-common"))
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    prog = (build_ddddocr_like(load_target(a.target)) if a.synthetic
            else compiled_ddddocr(a.target))
    t_build = time.perf_counter() - t0
    kind = "synthetic ddddocr-shaped" if a.synthetic else "ddddocr common.onnx compiled by ocrc"
    x = np.random.default_rng(1).random(SHAPE).astype(np.float32)
    feed_vm = {prog.inputs[0].name: x}
    vm = VM(prog)
    first = timed(lambda: vm.run(feed_vm))[0]
    sess = ort_session(onnx_path)
    feed_ort = {sess.get_inputs()[0].name: x}
    for _ in range(3):
        vm.run(feed_vm)
        sess.run(None, feed_ort)
    blas = blas_info()
    vm_t, ort_t = [], []
    for _ in range(a.repeat):  # alternate, so that both see the same load
        vm_t.append(timed(lambda: vm.run(feed_vm)))
        ort_t.append(timed(lambda: sess.run(None, feed_ort)))
    _, stats = vm.run(feed_vm)
    with tempfile.TemporaryDirectory() as d:
        path = str(Path(d) / "prog.npu")
        prog.save(path)
        start = startup(path)
    load1 = os.getloadavg()
    vw, vc = np.array(vm_t).T * 1e3
    ow, oc = np.array(ort_t).T * 1e3
    rows = [
        ["wall, median", f"{np.median(vw):.2f}", f"{np.median(ow):.2f}",
         f"{np.median(vw) / np.median(ow):.2f}x"],
        ["wall, min", f"{vw.min():.2f}", f"{ow.min():.2f}", f"{vw.min() / ow.min():.2f}x"],
        ["CPU time, median", f"{np.median(vc):.2f}", f"{np.median(oc):.2f}",
         f"{np.median(vc) / np.median(oc):.2f}x"],
    ]
    table = markdown_table(["per inference (ms)", "ocrc VM", "onnxruntime fp32", "VM / ORT"],
                           rows)
    env = ", ".join(f"{k}={os.environ[k]}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
                    if k in os.environ) or "OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset"
    body = (
        "Command: `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.vm_speed"
        f"{' --synthetic' if a.synthetic else ''}` (unsetting the two only for this command: "
        "they pin OpenBLAS to its AVX2 kernels on this machine).\n\n"
        f"Program: {kind}, target `{a.target}`: {prog.n_insns:,} instructions, "
        f"{stats.macs / 1e9:.3f} GMAC, {stats.dram_read / 2**20:.1f} MiB DRAM read per run "
        f"(built in {t_build:.1f} s). Input 1x1x64x160, the same array for both. "
        f"{a.repeat} alternating runs each after 3 warm-up runs, one thread each "
        f"(VM BLAS: {blas}; onnxruntime intra/inter-op threads 1; {env}). "
        f"{platform.machine()}, {os.cpu_count()} cores shared with other jobs: load average "
        f"{load0[0]:.1f} before, {load1[0]:.1f} after; the CPU-time row is the least "
        "load-sensitive.\n\n" + table + "\n"
        f"First run in this process (numba cache load + run): {first * 1e3:.0f} ms. Fresh "
        f"process with a warm numba cache: imports {start['import_s']:.2f} s, VM(program) + "
        f"first run {start['first_run_s']:.2f} s, second run "
        f"{start['second_run_s'] * 1e3:.1f} ms; whole process {start['process_s']:.2f} s.\n\n"
        f"Simulated NPU: {stats.summary()}\n")
    if a.sweep:
        body += ("\nMAC paths, CPU microseconds per product (best of 20; integer = int16 "
                 "(x - zx) loop, sgemm = float32 copies + chunked sgemm):\n\n"
                 + markdown_table(["M x N x K", "sgemm", "integer", "kernels.py picks"],
                                  sweep()))
    print(body)
    if not a.no_write:
        write_section("VM speed", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
