"""A dataset as the study uses it: train, validation and (optionally) test tensors, checked once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from nas.data._checks import checked_arrays


@dataclass
class Dataset:
    name: str
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    X_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None

    @property
    def in_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def num_classes(self) -> int:
        return int(torch.cat([self.y_train, self.y_val]).max()) + 1


def from_arrays(name: str, arrays: dict[str, Any]) -> Dataset:
    """A checked dataset from numpy arrays (``X_train``, ``y_train``, ``X_val``, ``y_val``, optionally the
    test pair); see ``nas.data._checks``."""
    arrays = {key: value for key, value in arrays.items() if value is not None}
    return Dataset(name=name, **{key: torch.from_numpy(value) for key, value in checked_arrays(arrays).items()})
