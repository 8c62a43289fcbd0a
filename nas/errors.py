"""Errors a user can act on: shown as one line, exit code 2, nothing else happens."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or an unusable environment, said in one line."""

    exit_code = 2
