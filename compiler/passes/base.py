"""The pass manager's parts: the Pass base class, the PassContext handed to every pass, the
instruments (print IR before/after, dump IR files, time passes) and `run_passes`, which runs a
parsed pipeline on a Graph, verifying after every pass when asked."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

from ocrc.compiler.errors import IRVerifyError
from ocrc.compiler.ir.graph import Graph
from ocrc.compiler.ir.irfile import save_ir
from ocrc.compiler.ir.printer import graph_text
from ocrc.compiler.ir.verify import verify

log = logging.getLogger(__name__)


PASSES: dict[str, type[Pass]] = {}


def register(cls: type[Pass]) -> type[Pass]:
    """Class decorator: add a pass to PASSES under its `name` (which must be new)."""
    if not cls.name or cls.name in PASSES:
        raise ValueError(f"pass {cls.__name__}: name {cls.name!r} is empty or taken")
    PASSES[cls.name] = cls
    return cls


@dataclass(frozen=True)
class Pass:
    """A graph-to-graph transformation. Subclasses are frozen dataclasses: a kebab-case `name`
    matching the module, options as fields, and `run`. A pass returns a new Graph (it never
    mutates its input) that verifies whenever its input did."""

    name: ClassVar[str] = ""

    def run(self, g: Graph, ctx: PassContext) -> Graph:
        raise NotImplementedError

    def spec(self) -> str:
        """The pipeline text of this pass with its non-default options: `name{k=v}`."""
        opts = [f"{f.name}={_format_option(getattr(self, f.name))}"
                for f in dataclasses.fields(self) if getattr(self, f.name) != f.default]
        return self.name + ("{" + ",".join(opts) + "}" if opts else "")


def _format_option(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


class Instrument:
    """Hooks around every pass; instruments observe, they never change the graph."""

    def before_pass(self, index: int, p: Pass, g: Graph) -> None:
        """Called with the pass's input graph."""

    def after_pass(self, index: int, p: Pass, g: Graph, seconds: float) -> None:
        """Called with the pass's output graph and its wall time."""


@dataclass
class PrintIR(Instrument):
    """Write the IR text before/after the named passes (or after all) to `stream`."""

    stream: IO[str]
    after_all: bool = False
    after: tuple[str, ...] = ()
    before: tuple[str, ...] = ()

    def before_pass(self, index: int, p: Pass, g: Graph) -> None:
        if p.name in self.before:
            self.stream.write(f"// -----// IR Dump Before {p.spec()} ({index}) //----- //\n")
            self.stream.write(graph_text(g))

    def after_pass(self, index: int, p: Pass, g: Graph, seconds: float) -> None:
        if self.after_all or p.name in self.after:
            self.stream.write(f"// -----// IR Dump After {p.spec()} ({index}) //----- //\n")
            self.stream.write(graph_text(g))


@dataclass
class DumpIR(Instrument):
    """Write `NN-<pass>.ir` (+ its `.npz`) after every pass into `directory`; `00-input.ir`
    is the pipeline's input. Every file parses back with `load_ir`."""

    directory: Path

    def before_pass(self, index: int, p: Pass, g: Graph) -> None:
        if index == 1:
            os.makedirs(self.directory, exist_ok=True)
            save_ir(g, self.directory / "00-input.ir")

    def after_pass(self, index: int, p: Pass, g: Graph, seconds: float) -> None:
        save_ir(g, self.directory / f"{index:02d}-{p.name}.ir")


@dataclass
class TimePasses(Instrument):
    """Record the wall time and the op count after each pass; `table()` formats them."""

    rows: list[tuple[str, float, int]] = field(default_factory=list)

    def after_pass(self, index: int, p: Pass, g: Graph, seconds: float) -> None:
        self.rows.append((p.spec(), seconds, g.count_ops()))

    def table(self) -> str:
        total = sum(s for _, s, _ in self.rows) or 1e-12
        width = max([len(n) for n, _, _ in self.rows] + [4])
        lines = ["===-------------------------------------------------------------------===",
                 "                      ... Pass execution timing report ...",
                 "===-------------------------------------------------------------------===",
                 f"  {'wall (s)':>9}  {'%':>6}  {'ops':>5}  pass"]
        for name, s, ops in self.rows:
            lines.append(f"  {s:9.4f}  {100 * s / total:5.1f}%  {ops:5d}  {name:<{width}}")
        lines.append(f"  {total:9.4f}  100.0%  {'':>5}  total")
        return "\n".join(lines) + "\n"


@dataclass
class PassContext:
    """What every pass may consult: the target (None until a backend chooses one), free-form
    options, the instruments, and whether to verify the IR after every pass."""

    target: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    instruments: list[Instrument] = field(default_factory=list)
    verify_each: bool = True


def run_passes(g: Graph, passes: Sequence[Pass], ctx: PassContext | None = None) -> Graph:
    """Run `passes` in order on `g`. With ctx.verify_each, verify the result of every pass and
    raise IRVerifyError naming the pass whose output is invalid."""
    ctx = ctx if ctx is not None else PassContext()
    for index, p in enumerate(passes, start=1):
        for ins in ctx.instruments:
            ins.before_pass(index, p, g)
        t0 = time.perf_counter()
        g = p.run(g, ctx)
        seconds = time.perf_counter() - t0
        log.info("pass %s: %.3f s, %d ops", p.spec(), seconds, g.count_ops())
        if ctx.verify_each:
            try:
                verify(g)
            except IRVerifyError as e:
                raise IRVerifyError(f"after pass '{p.spec()}' ({index}): {e}") from None
        for ins in ctx.instruments:
            ins.after_pass(index, p, g, seconds)
    return g
