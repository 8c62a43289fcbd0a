"""The ``nas`` command line: nouns, then verbs (``nas study start``, ``nas agent add``...).

Each noun lives in its own module; errors are one line a user can act on, with the traceback
behind ``--verbose``. The modules import torch, onnx, Optuna and paramiko only inside the commands
that use them, so that ``--help`` and usage errors answer at once.
"""

from __future__ import annotations

import logging
import sys
import warnings

import click

from device_agents import AgentError
from nas.cli.agent import agent
from nas.cli.bench import bench
from nas.cli.data import data
from nas.cli.demo import demo
from nas.cli.pick import pick
from nas.cli.report import report
from nas.cli.study import study
from nas.errors import UserError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", "-v", is_flag=True, help="Show tracebacks and exporter chatter.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Hardware-aware search over dense, low-rank and Toeplitz-like layers, measured on real devices."""
    ctx.obj = {"verbose": verbose}


for command in (study, agent, report, pick, data, bench, demo):
    cli.add_command(command)


def main() -> None:
    """Entry point: run the CLI, turning known errors into one line and exit code 2."""
    verbose = "--verbose" in sys.argv or "-v" in sys.argv
    if verbose:
        logging.basicConfig(level=logging.WARNING)  # paramiko's tracebacks for each failed connection
    else:
        # Optuna flags heartbeats and metric names as experimental (matched by message, so that Optuna
        # is not imported here); ``nas study`` also quietens its per-trial failure log.
        warnings.filterwarnings("ignore", message=r".* is (an )?experimental")
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (UserError, AgentError) as exc:
        if verbose:
            raise
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(getattr(exc, "exit_code", 2))
