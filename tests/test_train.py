"""Training of wide structured layers with the shipped settings (Adam, lr 0.003, batch 64)."""

from __future__ import annotations

from nas.data import load_dataset
from nas.model import build_model, spec_seed, train
from nas.space import load_space
from nas.spec import ArchSpec, LayerSpec


def test_wide_stacked_toeplitz_layers_train_on_digits() -> None:
    # T2 T2 D at 64-2048-1024: 32 stacked 64x64 blocks, then one 2048x2048 block truncated to 1024
    # rows. With generators of size n^(-1/2) this net ended at chance (constant output).
    layers = (LayerSpec("toeplitz", 2048, 2), LayerSpec("toeplitz", 1024, 2), LayerSpec("dense", 10))
    spec = ArchSpec(64, layers)
    shipped = load_space("digits")
    data = load_dataset("digits", shipped.data.val_fraction, shipped.data.seed)
    settings = shipped.training
    model = build_model(spec, seed=spec_seed(spec))
    # Four of the shipped twelve epochs keep the test short; they suffice now.
    result = train(model, data, epochs=4, batch_size=settings.batch_size, optimizer=settings.optimizer,
                   learning_rate=settings.learning_rate, weight_decay=settings.weight_decay, seed=settings.seed)
    assert result.accuracy >= 0.90
