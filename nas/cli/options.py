"""Parameter types the commands share: study names, checked before anything is opened, and numbers
that must be finite: ``nan`` and ``inf`` parse as floats everywhere in Python, and a NaN passes every
range check (each comparison with it is false), so a ``--timeout nan`` would run a study with no
timeout and a ``max_latency_ms = inf`` would constrain nothing."""

from __future__ import annotations

import argparse
import math
from typing import Any

import click

from nas.errors import UserError
from nas.storage import check_study_name


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


class StudyName(click.ParamType):
    """The NAME argument of every study command, checked by click before the command runs."""

    name = "name"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return check_study_name(value)
        except UserError as exc:
            self.fail(str(exc), param, ctx)


STUDY_NAME = StudyName()
