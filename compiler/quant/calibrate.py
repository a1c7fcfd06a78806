"""Calibration: run the float graph over sample inputs and observe every float tensor.

`calibrate(graph, data)` takes any iterable of input dicts (a tqdm progress bar counts them)
and returns a `CalibTable` keyed by value name, so tables from graphs of the same model at
different input widths merge (`table.merge`). LSTM internals (gate pre-activations, cell state)
are observed by re-running the float cell on the node's inputs. `load_calibration_set` reads
the `--calib` directory of .npy files or .npz archive, with clear errors.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ocrc.compiler.ir.graph import Graph, Node, Value
from ocrc.compiler.ir.interp import run
from ocrc.compiler.ir.ops.rnn import LSTM_DIRECTIONS
from ocrc.compiler.quant.observers import Observer
from ocrc.compiler.quant.qparams import sigmoid64
from ocrc.runtime.errors import OcrcError

log = logging.getLogger(__name__)


class CalibrationError(OcrcError):
    """An empty or mismatched calibration set, or a sample of the wrong shape or type."""


@dataclass
class LstmStats:
    """max |pre-activation| per direction and gate (i, o, f, c), max |cell| per direction and,
    for a factored R (U V), max |V h| per direction and row of V."""

    gate_absmax: np.ndarray  # [D, 4]
    cell_absmax: np.ndarray  # [D]
    vh_absmax: np.ndarray | None = None  # [D, k]

    def merge(self, other: LstmStats) -> None:
        self.gate_absmax = np.maximum(self.gate_absmax, other.gate_absmax)
        self.cell_absmax = np.maximum(self.cell_absmax, other.cell_absmax)
        if self.vh_absmax is None or other.vh_absmax is None:
            self.vh_absmax = self.vh_absmax if other.vh_absmax is None else other.vh_absmax
        else:
            self.vh_absmax = np.maximum(self.vh_absmax, other.vh_absmax)

    def copy(self) -> LstmStats:
        vh = None if self.vh_absmax is None else self.vh_absmax.copy()
        return LstmStats(self.gate_absmax.copy(), self.cell_absmax.copy(), vh)


@dataclass
class CalibTable:
    """Observers by value name, LSTM statistics by the lstm's Y name, and the sample count."""

    observers: dict[str, Observer] = field(default_factory=dict)
    lstm: dict[str, LstmStats] = field(default_factory=dict)
    samples: int = 0

    def observer(self, name: str) -> Observer:
        if name not in self.observers:
            self.observers[name] = Observer()
        return self.observers[name]

    def merge(self, other: CalibTable) -> None:
        """Fold `other` in by re-observing is impossible, so histograms are combined exactly
        (both use power-of-two radii: the smaller is doubled up to the larger)."""
        for name, ob in other.observers.items():
            mine = self.observer(name)
            _merge_observer(mine, ob)
        for name, st in other.lstm.items():
            if name in self.lstm:
                self.lstm[name].merge(st)
            else:
                self.lstm[name] = st.copy()
        self.samples += other.samples


def _merge_observer(a: Observer, b: Observer) -> None:
    if b.empty:
        return
    a.lo, a.hi = min(a.lo, b.lo), max(a.hi, b.hi)
    a.absmax = max(a.absmax, b.absmax)
    a.count += b.count
    hb, rb = b.hist.copy(), b.radius
    if a.radius == 0.0:
        a.radius, a.hist = rb, hb
        return
    if rb == 0.0:
        a.hist[len(a.hist) // 2] += int(hb.sum())
        return
    while a.radius < rb:
        a._double()
    while rb < a.radius:  # double b's histogram the same way
        merged = hb[0::2] + hb[1::2]
        hb = np.zeros_like(hb)
        hb[len(hb) // 4: len(hb) // 4 + len(hb) // 2] = merged
        rb *= 2
    a.hist += hb


def lstm_internals(node: Node, args: list[np.ndarray | None]) -> LstmStats:
    """Re-run a float lstm (ONNX semantics, no peepholes) and measure its internals."""
    x, w, r, b, h0, c0, _, rv = (list(args) + [None] * 8)[:8]
    assert x is not None and w is not None and r is not None
    direction = node.attr("direction")
    d_n, hs = LSTM_DIRECTIONS[direction], node.attr("hidden_size")
    t_n, bs, _ = x.shape
    gmax = np.zeros((d_n, 4))
    cmax = np.zeros(d_n)
    vmax = np.zeros((d_n, rv.shape[1])) if rv is not None else None
    for d in range(d_n):
        xw = np.matmul(x.astype(np.float64), w[d].T.astype(np.float64))
        if b is not None:
            xw = xw + b[d, :4 * hs] + b[d, 4 * hs:]
        h = h0[d].astype(np.float64) if h0 is not None else np.zeros((bs, hs))
        c = c0[d].astype(np.float64) if c0 is not None else np.zeros((bs, hs))
        reverse = direction == "reverse" or d == 1
        for step in (range(t_n - 1, -1, -1) if reverse else range(t_n)):
            if rv is not None and vmax is not None:  # factored R: U (V h)
                vh = h @ rv[d].T.astype(np.float64)
                vmax[d] = np.maximum(vmax[d], np.abs(vh).max(axis=0))
                g = xw[step] + vh @ r[d].T.astype(np.float64)
            else:
                g = xw[step] + h @ r[d].T.astype(np.float64)
            gi, go, gf, gc = (g[:, k * hs:(k + 1) * hs] for k in range(4))
            gmax[d] = np.maximum(gmax[d], [np.abs(v).max() for v in (gi, go, gf, gc)])
            c = sigmoid64(gf) * c + sigmoid64(gi) * np.tanh(gc)
            h = sigmoid64(go) * np.tanh(c)
            cmax[d] = max(cmax[d], float(np.abs(c).max()))
    return LstmStats(gmax, cmax, vmax)


def check_sample(g: Graph, sample: Mapping[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """The sample as the graph's float inputs; CalibrationError naming `where` otherwise."""
    names = [v.name for v in g.inputs]
    if sorted(sample) != sorted(names):
        raise CalibrationError(f"{where}: has inputs {sorted(sample)}, the model takes "
                               f"{names}")
    out = {}
    for v in g.inputs:
        arr = np.asarray(sample[v.name])
        if arr.shape != v.type.shape:
            raise CalibrationError(f"{where}: input '{v.name}' has shape {list(arr.shape)}, "
                                   f"the model expects {list(v.type.shape)}")
        if arr.dtype.kind not in "fiu":
            raise CalibrationError(f"{where}: input '{v.name}' has dtype {arr.dtype}, "
                                   "expected a numeric array")
        out[v.name] = arr.astype(v.type.dtype.np)
    return out


def calibrate(g: Graph, data: Iterable[Mapping[str, np.ndarray]],
              table: CalibTable | None = None, progress: bool = True) -> CalibTable:
    """Observe every float value of `g` (inputs and node outputs) over `data`, in order.

    Deterministic: the result depends only on the samples and their order. Raises
    CalibrationError on an empty set or a sample that does not fit the graph's inputs."""
    table = table if table is not None else CalibTable()
    lstm_nodes = [n for n in g.nodes if n.op.name == "lstm"]
    lstm_x = {n.inputs[0] for n in lstm_nodes}
    consts = {n.outputs[0]: n.attrs["value"] for n in g.nodes if n.op.name == "const"}
    kept: dict[Value, np.ndarray] = {}

    def hook(node: Node, outs: list[np.ndarray]) -> None:
        if node.op.name == "const":
            return
        for v, arr in zip(node.outputs, outs):
            if v.type.dtype.is_float:
                table.observer(v.name).update(arr)
            if v in lstm_x:
                kept[v] = arr
        if node.op.name == "lstm":
            args = [consts.get(v, kept.get(v)) if v is not None else None for v in node.inputs]
            st = lstm_internals(node, args)
            key = node.outputs[0].name
            if key in table.lstm:
                table.lstm[key].merge(st)
            else:
                table.lstm[key] = st

    n = 0
    for i, sample in enumerate(tqdm(data, desc="calibrating", unit="sample",
                                    disable=not progress, leave=False)):
        inputs = check_sample(g, sample, f"calibration sample {i}")
        for v in g.inputs:
            table.observer(v.name).update(inputs[v.name])
        for v in lstm_x:
            if v in g.inputs:
                kept[v] = inputs[v.name]
        run(g, inputs, hook)
        kept.clear()
        n += 1
    if n == 0:
        raise CalibrationError("the calibration set is empty")
    table.samples += n
    log.info("calibrated %d values of %s on %d samples", len(table.observers), g.name, n)
    return table


def load_calibration_set(path: str | Path, g: Graph) -> list[dict[str, np.ndarray]]:
    """Samples for `g` from a directory of .npy files (one input tensor each, sorted by file
    name) or an .npz archive (one sample per array, sorted by key). A graph with several
    inputs takes files/keys named `<input>_<anything>`, grouped by the sorted suffix."""
    path = Path(path)
    arrays: list[tuple[str, np.ndarray]] = []
    if path.is_dir():
        files = sorted(path.glob("*.npy"))
        if not files:
            raise CalibrationError(f"--calib {path}: the directory holds no .npy files")
        for f in files:
            try:
                arrays.append((f.stem, np.load(f, allow_pickle=False)))
            except (OSError, ValueError, EOFError) as e:
                raise CalibrationError(f"--calib {f}: cannot read as .npy: {e}") from None
    elif path.suffix == ".npz" and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = [(k, z[k]) for k in sorted(z.files)]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise CalibrationError(f"--calib {path}: cannot read as .npz: {e}") from None
        if not arrays:
            raise CalibrationError(f"--calib {path}: the archive is empty")
    else:
        raise CalibrationError(f"--calib {path}: expected a directory of .npy files or an "
                               ".npz file")
    names = [v.name for v in g.inputs]
    if len(names) == 1:
        samples = [{names[0]: a} for _, a in arrays]
    else:
        groups: dict[str, dict[str, np.ndarray]] = {}
        for key, a in arrays:
            owner = next((nm for nm in names if key.startswith(nm + "_")), None)
            if owner is None:
                raise CalibrationError(f"--calib {path}: '{key}' does not name an input "
                                       f"(expected <input>_<suffix> with input in {names})")
            groups.setdefault(key[len(owner) + 1:], {})[owner] = a
        samples = [groups[k] for k in sorted(groups)]
    for i, s in enumerate(samples):
        check_sample(g, s, f"--calib {path}: sample {i}")
    return samples
