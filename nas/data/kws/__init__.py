"""Keyword spotting offline: a spoken-keyword dataset synthesised with eSpeak NG, as log-mel vectors.

``load_kws`` gives the :class:`nas.data.Dataset` that ``dataset = "kws"`` names in a search space.
"""

from __future__ import annotations

import numpy as np

from nas.data._dataset import Dataset, from_arrays
from nas.data.kws.dataset import LABELS, KwsConfig, kws_arrays, split_by_voice

__all__ = ["LABELS", "KwsConfig", "load_kws"]


def load_kws(val_fraction: float = 0.15, seed: int = 0, config: KwsConfig | None = None) -> Dataset:
    """The KWS dataset split by voice (``val_fraction`` of the voices each for validation and test).

    Features are standardised per input with the training part's mean and deviation.
    """
    arrays, _ = kws_arrays(config)
    train, val, test = split_by_voice(arrays["voice"], val_fraction, seed)
    X, y = arrays["X"], arrays["y"]
    mean, std = X[train].mean(axis=0), X[train].std(axis=0) + 1e-5
    X = (X - mean) / std
    parts = {"X_train": X[train], "y_train": y[train], "X_val": X[val], "y_val": y[val],
             "X_test": X[test], "y_test": y[test]}
    return from_arrays("kws", {name: np.asarray(value) for name, value in parts.items()})
