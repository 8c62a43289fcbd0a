"""``nas bench accuracy|layers|measure|overhead|search|ssh``: each exits non-zero when its target is missed."""

from __future__ import annotations

import importlib
import sys

import click

BENCHMARKS = {
    "accuracy": "nas.bench.accuracy",
    "search": "nas.bench.search",
    "layers": "nas.bench.layers",
    "measure": "nas.bench.measure",
    "overhead": "nas.bench.overhead",
    "ssh": "nas.bench.ssh",
}


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("which", type=click.Choice(sorted(BENCHMARKS)))
@click.pass_context
def bench(ctx: click.Context, which: str) -> None:
    """Run benchmark WHICH (extra arguments go to it; try 'nas bench layers --help')."""
    sys.exit(importlib.import_module(BENCHMARKS[which]).main(ctx.args))
