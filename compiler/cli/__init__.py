"""The `ocrc` command line. One module per subcommand, each with `add_parser(subparsers)` and
`main(args) -> int`; this module wires them and owns the error policy:
exit 0 on success; 2 on a user error (one line on stderr, no traceback); 1 on an internal
error (a short message; `--debug` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

from ocrc.runtime.errors import OcrcError

# Subcommand modules, in the order `ocrc --help` lists them.
COMMANDS = ("demo", "inspect", "compile", "analyze", "opt", "run", "disasm", "bench")


class UsageError(OcrcError):
    """A bad command-line option."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        where = self.prog.removeprefix("ocrc").strip()
        raise UsageError(f"{where}: {message}" if where else message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ocrc", description="Compile ONNX OCR models for an int8 NPU.")
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        mod = importlib.import_module(f"ocrc.compiler.cli.cmd_{name}")
        sp = mod.add_parser(sub)
        sp.set_defaults(_main=mod.main)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                            format="%(levelname)s %(name)s: %(message)s")
        return int(args._main(args) or 0)
    except OcrcError as e:
        msg = str(e)
        print(f"ocrc: error: {msg}", file=sys.stderr)
        if debug:
            traceback.print_exc()
        return 2
    except KeyboardInterrupt:
        print("ocrc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # an internal error: a bug in ocrc, not in the input
        print(f"ocrc: internal error: {type(e).__name__}: {e} (rerun with --debug for the "
              "traceback)", file=sys.stderr)
        if debug:
            traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
