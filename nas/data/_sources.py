"""Datasets a search space can name, loaded into tensors with a deterministic split.

Sources (the ``dataset`` field of a search space):

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (real data, no download);
* ``kws``: spoken keywords synthesised with eSpeak NG, 1280 log-mel inputs, split by voice (``nas.data.kws``);
* ``npz:PATH``: arrays ``X_train, y_train, X_val, y_val`` (``X_test, y_test`` optional);
* ``mnist:DIR``: MNIST IDX files (``train-images-idx3-ubyte`` etc., optionally ``.gz``) in a local folder;
* ``python:module:function``: a function returning a dict or tuple of those arrays.
"""

from __future__ import annotations

import gzip
import importlib
from pathlib import Path
from typing import Any

import numpy as np

from nas.data._dataset import Dataset, from_arrays
from nas.errors import UserError

SOURCES = ("digits", "kws", "npz:PATH", "mnist:DIR", "python:module:function")


def check_source(source: str) -> str:
    """The source if its form is known (used by the search-space validator), else ValueError."""
    kind, _, rest = source.partition(":")
    if source in ("digits", "kws") or (kind in ("npz", "mnist") and rest) or (
            kind == "python" and rest.count(":") == 1):
        return source
    raise ValueError(f"unknown dataset {source!r}; allowed: {', '.join(SOURCES)}")


class DataError(UserError):
    """A dataset that cannot be loaded: missing files, a bad module, missing arrays."""


def load_dataset(source: str, val_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Load ``source``, split it and check it (``nas.data_checks``); the same seed always gives the same split."""
    try:
        return _load(source, val_fraction, seed)
    except (OSError, ValueError, KeyError, ImportError, AttributeError, TypeError) as exc:
        raise DataError(f"dataset {source}: {exc}") from exc


def _load(source: str, val_fraction: float, seed: int) -> Dataset:
    kind, _, rest = check_source(source).partition(":")
    if kind == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        return _split(source, digits.data / 16.0, digits.target, val_fraction, seed)
    if kind == "kws":
        from nas.data.kws import load_kws

        return load_kws(val_fraction, seed)
    if kind == "npz":
        with np.load(Path(rest).expanduser()) as arrays:
            return from_arrays(source, dict(arrays))
    if kind == "mnist":
        return _mnist(source, Path(rest).expanduser(), val_fraction, seed)
    module, function = rest.split(":")
    result = getattr(importlib.import_module(module), function)()
    if isinstance(result, Dataset):
        result = {key: getattr(result, key) for key in Dataset.__dataclass_fields__ if key != "name"}
    names = ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test")
    return from_arrays(source, result if isinstance(result, dict) else dict(zip(names, result, strict=False)))


def _split(name: str, X: Any, y: Any, val_fraction: float, seed: int, **test: Any) -> Dataset:
    order = np.random.default_rng(seed).permutation(len(y))
    n_val = max(1, int(round(len(y) * val_fraction)))
    val, train = order[:n_val], order[n_val:]
    X, y = np.asarray(X), np.asarray(y)
    return from_arrays(name, {"X_train": X[train], "y_train": y[train], "X_val": X[val], "y_val": y[val], **test})


def _read_idx(path: Path) -> np.ndarray:
    candidates = [path, path.with_name(path.name + ".gz")]
    found = next((p for p in candidates if p.exists()), None)
    if found is None:
        raise FileNotFoundError(f"MNIST file {path} (or .gz) not found")
    opener = gzip.open if found.suffix == ".gz" else open
    with opener(found, "rb") as handle:
        data = handle.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _mnist(name: str, folder: Path, val_fraction: float, seed: int) -> Dataset:
    X = _read_idx(folder / "train-images-idx3-ubyte") / 255.0
    y = _read_idx(folder / "train-labels-idx1-ubyte")
    X_test = _read_idx(folder / "t10k-images-idx3-ubyte") / 255.0
    y_test = _read_idx(folder / "t10k-labels-idx1-ubyte")
    return _split(name, X, y, val_fraction, seed, X_test=X_test, y_test=y_test)
