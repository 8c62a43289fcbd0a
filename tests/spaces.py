"""Small search spaces for fast tests, written as TOML like a user would."""

from __future__ import annotations

from pathlib import Path

FAST_SPACE = """
name = "fast"
[data]
dataset = "digits"
[backbone]
hidden_layers = [1, 2]
widths = [16, 32]
[layers]
kinds = ["dense", "lowrank", "toeplitz"]
lowrank_ranks = [2, 4]
displacement_ranks = [1, 2]
[training]
epochs = 3
learning_rate = 0.01
[[objectives]]
metric = "accuracy"
[[objectives]]
metric = "latency_ms"
[[objectives]]
metric = "params"
[measure]
min_runs = 5
min_seconds = 0.02
warmup = 1
"""


def write_space(directory: Path, text: str = FAST_SPACE, name: str = "space.toml") -> Path:
    path = directory / name
    path.write_text(text)
    return path
