"""``nas data kws``: build (or find in the cache) the keyword-spotting dataset and describe it."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from nas.cli.options import FiniteFloatRange


@click.group()
def data() -> None:
    """Build and inspect the generated datasets."""


@data.command()
@click.option("--val-fraction", type=FiniteFloatRange(0, 0.5, min_open=True, max_open=True), default=0.15,
              show_default=True, help="Share of the voices held out for validation, and the same for test.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split by voice.")
def kws(val_fraction: float, seed: int) -> None:
    """Synthesise the spoken-keyword dataset with eSpeak NG (cached) and show its parts.

    The first run synthesises and featurises every clip (a few minutes on 2 cores); later runs
    read the cache under the user's data dir ($NAS_DATA_DIR overrides it).
    """
    import numpy as np

    from nas.data.kws import LABELS, KwsConfig
    from nas.data.kws.dataset import kws_arrays, split_by_voice
    from nas.data.kws.espeak import synthesizer

    console = Console()
    config = KwsConfig()
    arrays, path = kws_arrays(config)
    synth = synthesizer()
    parts = dict(zip(("train", "validation", "test"), split_by_voice(arrays["voice"], val_fraction, seed),
                     strict=True))
    console.print(f"kws: {len(arrays['y'])} clips of {arrays['X'].shape[1]} inputs (32 frames x 40 log-mel bands), "
                  f"{len(LABELS)} classes, {len(config.voices())} voices; eSpeak NG {synth.version} "
                  f"({synth.source})\ncache: {path}")
    counts = {part: np.bincount(arrays["y"][rows], minlength=len(LABELS)) for part, rows in parts.items()}
    table = Table("class", *parts)
    table.add_row("[bold]voices", *[str(len(np.unique(arrays["voice"][rows]))) for rows in parts.values()])
    table.add_row("[bold]clips", *[str(len(rows)) for rows in parts.values()])
    for index, label in enumerate(LABELS):
        table.add_row(label, *[str(counts[part][index]) for part in parts])
    console.print(table)
