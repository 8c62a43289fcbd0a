"""Numbers read from users are finite: ``nan`` and ``inf`` parse as floats everywhere in Python, and a
NaN passes every range check (each comparison with it is false), so a ``--timeout nan`` would run a
study with no timeout and a ``max_latency_ms = inf`` would constrain nothing."""

from __future__ import annotations

import argparse
import math
from typing import Any

import click


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses ``nan``, ``inf`` and ``-inf``."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


def finite_float(text: str) -> float:
    """An ``argparse`` type: a float that is a finite number."""
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return number
