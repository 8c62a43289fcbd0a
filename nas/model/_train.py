"""Train a candidate and measure its validation accuracy (CPU here, CUDA when present)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from nas.data import Dataset

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite: the trial fails with this reason.

    Left alone, a diverged model predicts one class everywhere and is recorded as a complete trial
    with that class's share as its accuracy, possibly on the Pareto set.
    """


@dataclass
class TrainResult:
    accuracy: float                      # on the validation part: what the search selects by
    seconds: float
    epochs: int
    test_accuracy: float | None = None   # on the test part, when the dataset has one: never used to select


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    device = next(model.parameters()).device
    model.eval()
    correct = 0
    for start in range(0, len(y), batch_size):
        logits = model(X[start:start + batch_size].to(device))
        correct += int((logits.argmax(dim=1).cpu() == y[start:start + batch_size]).sum())
    return correct / len(y)


def warm_up() -> None:
    """Build one optimizer: torch imports its compiler stack (``torch._dynamo``, about 3 s here) the
    first time any is built. A study does it at start, so that one-off cost is the process's start-up
    and the first trial's timing is its own."""
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def train(model: nn.Module, data: Dataset, epochs: int, batch_size: int = 64, optimizer: str = "adam",
          learning_rate: float = 1e-3, weight_decay: float = 0.0, seed: int = 0,
          device: torch.device | None = None) -> TrainResult:
    """Minibatch training with a seeded shuffle; the model is left on the CPU afterwards."""
    device = device or default_device()
    generator = torch.Generator().manual_seed(seed)
    model.to(device).train()
    opt = OPTIMIZERS[optimizer](model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    X, y = data.X_train.to(device), data.y_train.to(device)
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        total = torch.zeros((), device=device)
        for batch in torch.randperm(len(y), generator=generator).split(batch_size):
            batch = batch.to(device)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(X[batch]), y[batch])
            loss.backward()
            opt.step()
            total += loss.detach()
        _check_finite(model, total, epoch)  # once per epoch: no per-batch device sync
    seconds = time.perf_counter() - started
    test = None if data.X_test is None else accuracy(model, data.X_test, data.y_test)
    result = TrainResult(accuracy=accuracy(model, data.X_val, data.y_val), seconds=seconds, epochs=epochs,
                         test_accuracy=test)
    model.cpu()
    return result


def _check_finite(model: nn.Module, loss_sum: torch.Tensor, epoch: int) -> None:
    if not torch.isfinite(loss_sum):
        raise TrainingDiverged(f"training diverged: loss became {float(loss_sum)} in epoch {epoch} "
                               "(lower [training] learning_rate?)")
    for name, parameter in model.named_parameters():
        if not torch.isfinite(parameter).all():
            raise TrainingDiverged(f"training diverged: weights {name} became non-finite in epoch {epoch} "
                                   "(lower [training] learning_rate?)")
