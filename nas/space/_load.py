"""Reading a search-space file: one-line errors naming the file, the field, the bad value and what is allowed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from nas.space._schema import SearchSpace, SpaceError
from nas.space._text import read_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

BUILTIN_DIR = Path(__file__).resolve().parents[2] / "search_spaces"
MAX_FILE_BYTES = 1 << 20  # a search space is a few hundred bytes; this bounds a read of /dev/zero


def resolve_space_path(path: str | Path) -> Path:
    """An existing file, or a shipped space's bare name (``digits`` -> search_spaces/digits.toml).

    Only a bare name (no folder, no ``.toml``) means a shipped space: a mistyped path is an error, never
    silently the shipped space of the same base name.
    """
    given = Path(path)
    if str(path) and given.exists():
        return given
    shipped = sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))
    if str(path) in shipped:
        return BUILTIN_DIR / f"{path}.toml"
    raise SpaceError(f"{path}: no such search-space file (shipped spaces, by bare name: {', '.join(shipped)})")


def load_space(path: str | Path) -> SearchSpace:
    """Parse and validate a search-space file; one-line SpaceError on any problem."""
    path = resolve_space_path(path)
    try:
        text = read_text(path, MAX_FILE_BYTES)
    except ValueError as exc:
        raise SpaceError(f"{path}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpaceError(f"{path}: not valid TOML: {exc}") from None
    if not data:
        raise SpaceError(f"{path}: no settings (an empty or comment-only file); start from a shipped space, "
                         f"e.g. {BUILTIN_DIR / 'digits.toml'}")
    data.setdefault("name", path.stem)
    return space_from_dict(data, str(path))


def space_from_dict(data: dict[str, Any], source: str = "<search space>") -> SearchSpace:
    try:
        return SearchSpace.model_validate(data)
    except ValidationError as exc:
        raise SpaceError(f"{source}: {_describe(exc.errors()[0])}") from None


def _describe(error: dict[str, Any]) -> str:
    """One line: the field, the bad value, what is allowed."""
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        parent = _model_at(error["loc"][:-1])
        allowed = ", ".join(parent.model_fields) if parent else "see the shipped search spaces"
        return f"unknown field '{where}'; allowed here: {allowed}"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "value_error" and not error["loc"]:
        return message
    return f"field '{where}': {message} (got {error.get('input')!r})"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = SearchSpace
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part)
        annotation = getattr(info, "annotation", None)
        args = getattr(annotation, "__args__", ())
        candidates = [a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not candidates:
            return None
        model = candidates[0]
    return model
