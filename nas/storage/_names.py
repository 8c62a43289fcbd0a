"""Study names: one pattern, checked by every command before anything is opened or created.

A study's name becomes a folder (``studies/NAME/``) and part of its default SQLite URL, so it
follows the agent names' rule: letters, digits, ``.``, ``_``, ``-``, at most 64 characters and
starting with a letter or digit. That keeps ``..``, ``/``, absolute paths, ``?`` and ``%`` (which
would escape ``studies/`` or be read as part of the URL) out.
"""

from __future__ import annotations

from nas.errors import UserError

RULE = "letters, digits, '.', '_' or '-', at most 64, starting with a letter or digit"


def check_study_name(name: str) -> str:
    """The name if it follows the pattern, else a one-line UserError."""
    from device_agents import NAME_PATTERN  # here: the registry loads pydantic, which --help need not

    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise UserError(f"invalid study name {name!r}: use {RULE}")
    return name
