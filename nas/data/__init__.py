"""Datasets a search space can name, loaded into tensors with a deterministic split and checked once.

Sources: ``digits`` (scikit-learn's bundled digits), ``kws`` (keywords synthesised offline,
``nas.data.kws``), ``npz:PATH``, ``mnist:DIR`` and ``python:module:function``; see ``load_dataset``.
"""

from nas.data._dataset import Dataset, from_arrays
from nas.data._sources import SOURCES, DataError, check_source, load_dataset

__all__ = ["SOURCES", "DataError", "Dataset", "check_source", "from_arrays", "load_dataset"]
