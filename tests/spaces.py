"""Small search spaces for fast tests, written as TOML like a user would."""

from __future__ import annotations

from pathlib import Path

_TEMPLATE = """
name = "{name}"
[data]
dataset = "digits"
[backbone]
hidden_layers = {hidden_layers}
widths = {widths}
[layers]
{layers}
[training]
epochs = {epochs}
learning_rate = 0.01
[[objectives]]
metric = "accuracy"
[[objectives]]
metric = "latency_ms"
[[objectives]]
metric = "params"
[measure]
min_runs = 5
min_seconds = {min_seconds}
warmup = 1
"""


def small_space(name: str, layers: str, widths: str = "[16, 32]", hidden_layers: str = "[1, 2]", epochs: int = 3,
                min_seconds: float = 0.02) -> str:
    """A digits space small enough to train in a second; ``layers`` is the body of its [layers] table."""
    return _TEMPLATE.format(name=name, layers=layers.strip(), widths=widths, hidden_layers=hidden_layers,
                            epochs=epochs, min_seconds=min_seconds)


FAST_SPACE = small_space("fast", """
kinds = ["dense", "lowrank", "toeplitz"]
lowrank_ranks = [2, 4]
displacement_ranks = [1, 2]
""")


def write_space(directory: Path, text: str = FAST_SPACE, name: str = "space.toml") -> Path:
    path = directory / name
    path.write_text(text)
    return path
