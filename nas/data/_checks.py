"""Data checked once, when it is loaded, before a study exists.

Bad arrays otherwise give "successful" studies with meaningless results (NaN features train to NaN
weights whose argmax is class 0; a label 100000 makes a 100001-way classifier) or tracebacks in the
first trial. Each problem is one line naming the array, the problem and an example index.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")
# Accuracy on fewer validation samples moves in steps too coarse to rank candidates (1/10 = 10 points).
MIN_VAL_SAMPLES = 10


class BadArrays(ValueError):
    """Arrays that cannot train or validate a classifier (reported as a DataError by the loader)."""


def checked_arrays(arrays: dict[str, Any]) -> dict[str, np.ndarray]:
    """``X_*`` as float32 samples x features and ``y_*`` as int64 labels in 0..C-1, or BadArrays.

    Checks: every split present in pairs and non-empty (validation: at least MIN_VAL_SAMPLES);
    X numeric, finite, at least 2-D (trailing dimensions are flattened), the same feature count in
    every split; y one integer label per sample, as many as X has samples, in 0..C-1 where every
    class appears in training and C >= 2.
    """
    missing = [key for key in ("X_train", "y_train", "X_val", "y_val") if key not in arrays]
    if "X_test" in arrays or "y_test" in arrays:
        missing += [key for key in ("X_test", "y_test") if key not in arrays]
    if missing:
        raise BadArrays(f"lacks {', '.join(missing)}")
    splits = [split for split in SPLITS if f"X_{split}" in arrays]
    out: dict[str, np.ndarray] = {}
    for split in splits:
        out[f"X_{split}"] = _features(f"X_{split}", arrays[f"X_{split}"])
        out[f"y_{split}"] = _labels(f"y_{split}", arrays[f"y_{split}"], len(out[f"X_{split}"]))
    features = out["X_train"].shape[1]
    for split in splits:
        if out[f"X_{split}"].shape[1] != features:
            raise BadArrays(f"X_{split} has {out[f'X_{split}'].shape[1]} features per sample but X_train has "
                            f"{features}")
    if len(out["y_val"]) < MIN_VAL_SAMPLES:
        raise BadArrays(f"y_val has {len(out['y_val'])} samples; at least {MIN_VAL_SAMPLES} are needed to "
                        "measure accuracy")
    _classes(out, splits)
    return out


def _features(name: str, X: Any) -> np.ndarray:
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise BadArrays(f"{name} has dtype {X.dtype}; expected numbers")
    if X.ndim < 2:
        raise BadArrays(f"{name} has shape {X.shape}; expected samples x features (at least 2-D)")
    if len(X) == 0 or X[0].size == 0:
        raise BadArrays(f"{name} is empty (shape {X.shape})")
    with np.errstate(over="ignore"):  # values beyond float32 become inf, reported just below
        X = X.reshape(len(X), -1).astype(np.float32)
    bad = ~np.isfinite(X)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise BadArrays(f"{name} has {int(bad.sum())} non-finite values (NaN, Inf or beyond float32), e.g. "
                        f"at [{row}, {col}]: {X[row, col]}")
    return X


def _labels(name: str, y: Any, samples: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        hint = " (one-hot? pass the class index, e.g. y.argmax(axis=1))" if y.ndim == 2 else ""
        raise BadArrays(f"{name} has shape {y.shape}; expected one integer label per sample{hint}")
    if len(y) != samples:
        raise BadArrays(f"{name} has {len(y)} labels but X_{name[2:]} has {samples} samples")
    if y.dtype.kind not in "buif":
        raise BadArrays(f"{name} has dtype {y.dtype}; expected integer class labels")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            index = int(np.argmax(bad))
            raise BadArrays(f"{name} has {int(bad.sum())} labels that are not integers, e.g. [{index}]: {y[index]}")
    negative = y < 0
    if negative.any():
        index = int(np.argmax(negative))
        raise BadArrays(f"{name} has {int(negative.sum())} negative labels, e.g. [{index}]: {y[index]}; expected "
                        "0..C-1")
    return y.astype(np.int64)


def _classes(out: dict[str, np.ndarray], splits: list[str]) -> None:
    classes = int(max(out[f"y_{split}"].max() for split in splits)) + 1
    if classes < 2:
        raise BadArrays("every label is 0; a classifier needs at least 2 classes")
    present = np.unique(out["y_train"])
    if len(present) < classes:
        gaps = np.flatnonzero(present != np.arange(len(present)))
        absent = int(gaps[0]) if len(gaps) else len(present)
        where = next(split for split in splits if out[f"y_{split}"].max() == classes - 1)
        index = int(np.argmax(out[f"y_{where}"] == classes - 1))
        raise BadArrays(f"y_train has no sample of {classes - len(present)} of the {classes} classes "
                        f"0..{classes - 1}, e.g. class {absent} (the largest label is y_{where}[{index}] = "
                        f"{classes - 1}); labels must be 0..C-1 with every class in training")
