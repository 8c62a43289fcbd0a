import gzip

import numpy as np
import pytest
import torch

from nas.data import check_source, load_dataset


def test_digits_split_is_deterministic_and_disjoint():
    a, b = load_dataset("digits", 0.25, seed=1), load_dataset("digits", 0.25, seed=1)
    assert torch.equal(a.X_val, b.X_val) and torch.equal(a.y_train, b.y_train)
    assert a.in_features == 64 and a.num_classes == 10
    assert len(a.y_val) == round(1797 * 0.25) and len(a.y_train) + len(a.y_val) == 1797
    assert float(a.X_train.max()) <= 1.0
    c = load_dataset("digits", 0.25, seed=2)
    assert not torch.equal(a.X_val, c.X_val)


def test_npz_source(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"X_train": rng.random((20, 3, 2)), "y_train": np.arange(20) % 4,
              "X_val": rng.random((10, 3, 2)), "y_val": np.arange(10) % 4}
    np.savez(tmp_path / "d.npz", **arrays)
    data = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert data.X_train.shape == (20, 6) and data.X_train.dtype == torch.float32
    assert data.y_val.tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1] and data.num_classes == 4


def make_data():
    return {"X_train": np.ones((4, 2)), "y_train": [0, 1, 0, 1], "X_val": np.zeros((10, 2)), "y_val": [1, 0] * 5}


def test_python_source():
    data = load_dataset(f"python:{__name__}:make_data")
    assert data.in_features == 2 and data.y_val.tolist() == [1, 0] * 5


def write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_mnist_idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (60, 4, 4)))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(60) % 10)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (7, 4, 4)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(7) % 10)
    data = load_dataset(f"mnist:{tmp_path}", val_fraction=0.2)
    assert data.in_features == 16 and len(data.y_val) == 12 and len(data.y_test) == 7
    assert float(data.X_train.min()) >= 0.0 and float(data.X_train.max()) <= 1.0


@pytest.mark.parametrize("bad", ["cifar", "npz:", "python:only_module"])
def test_unknown_sources_are_refused(bad):
    with pytest.raises(ValueError, match="allowed: digits"):
        check_source(bad)
