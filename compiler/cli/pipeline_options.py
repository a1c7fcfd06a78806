"""Command-line options that choose and instrument the pass pipeline (`ocrc compile`,
`ocrc opt`). Owned by the pass manager; `cmd_compile` calls these two functions."""

from __future__ import annotations

import argparse

from ocrc.compiler.ir.graph import Graph


def add_pipeline_options(p: argparse.ArgumentParser) -> None:
    """Add --passes, --print-ir-after-all, --dump-ir, ... to a subcommand's parser."""


def run_pipeline(graph: Graph, args: argparse.Namespace) -> Graph:
    """Run the pipeline the options select on `graph` (identity until the pass manager lands)."""
    return graph
