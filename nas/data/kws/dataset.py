"""The ``kws`` dataset: spoken keywords synthesised offline with eSpeak NG, as log-mel vectors.

Twelve classes as in small-footprint keyword spotting: ten keywords, a *filler* class of other
words and a *silence* class of noise alone. Every voice (an English accent times an eSpeak NG
variant) says every class ``per_voice`` times with its own speaking rate, pitch and pitch range;
each clip is one second at 16 kHz with the word at a random offset (time shift), a random level,
and white, pink or brown noise at one of several SNRs. Features: 40 log-mel bands, 25 ms / 10 ms,
averaged over 30 ms and stacked, 32 x 40 = 1280 inputs (``nas.data.kws.features``).

The split is by voice: test voices (and validation voices) are never heard in training.
Generation is deterministic: eSpeak NG's waveform depends on what the process synthesised
before, so one fresh process synthesises every clip in a fixed order, and all randomness comes
from generators seeded by (seed, voice, class, clip). The arrays are cached under the user's data
dir, named by a hash of everything that shapes them (settings, eSpeak NG version, feature version).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import queue
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from nas.data.kws.espeak import Voice, synthesizer
from nas.data.kws.features import log_mel, stack_frames

__all__ = ["KEYWORDS", "LABELS", "KwsConfig", "build_kws", "kws_arrays", "kws_cache_dir", "split_by_voice"]

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
FILLER_WORDS = ("bed", "bird", "cat", "dog", "happy", "house", "tree", "wow", "zero", "one", "two", "three",
                "four", "five", "six", "seven", "eight", "nine", "learn", "follow", "forward", "backward",
                "visual", "marvin", "sheila", "yellow", "noise", "upper", "often", "gold")
LABELS = (*KEYWORDS, "_filler_", "_silence_")
ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "klatt", "klatt2", "klatt3",
            "Andy", "Annie")
NOISES = ("white", "pink", "brown")
# Bump when the synthesis, mixing or features change in a way the settings do not show.
FORMAT_VERSION = 1
_SYNTH_RATE = 22050
_CHUNK = 256  # clips featurised per batch


@dataclass(frozen=True)
class KwsConfig:
    """Everything that shapes the arrays; its hash names the cache file."""

    accents: tuple[str, ...] = ACCENTS
    variants: tuple[str, ...] = VARIANTS
    per_voice: int = 3                              # clips of every class per voice
    rates_wpm: tuple[int, int] = (120, 230)         # speaking rate, uniform
    pitches: tuple[int, int] = (20, 80)             # eSpeak NG pitch 0-100, uniform
    snrs_db: tuple[float, ...] = (30.0, 20.0, 10.0, 5.0, 0.0)
    sample_rate: int = 16000
    clip_seconds: float = 1.0
    pool: int = 3                                   # 10-ms frames averaged per stacked frame
    seed: int = 0

    def voices(self) -> list[Voice]:
        return [Voice(accent, variant) for accent in self.accents for variant in self.variants]

    def key(self, espeak_version: str) -> str:
        settings = {**asdict(self), "espeak": espeak_version, "format": FORMAT_VERSION}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class _Clip:
    voice: int
    label: int
    text: str | None       # None: silence (noise only)
    rate: int
    pitch: int
    pitch_range: int
    seed: tuple[int, ...]


def kws_cache_dir() -> Path:
    """``$NAS_DATA_DIR/kws`` if set, else the user's data dir for ``nas``."""
    return Path(os.environ.get("NAS_DATA_DIR") or platformdirs.user_data_dir("nas")) / "kws"


def _plan(config: KwsConfig) -> list[_Clip]:
    """Every clip's words and voice settings, in the fixed order of synthesis."""
    clips = []
    for v in range(len(config.voices())):
        for label, name in enumerate(LABELS):
            for k in range(config.per_voice):
                seed = (config.seed, v, label, k)
                rng = np.random.default_rng(seed)
                text = {"_filler_": str(rng.choice(FILLER_WORDS)), "_silence_": None}.get(name, name)
                clips.append(_Clip(v, label, text, int(rng.integers(*config.rates_wpm, endpoint=True)),
                                   int(rng.integers(*config.pitches, endpoint=True)),
                                   int(rng.integers(30, 70, endpoint=True)), seed))
    return clips


def _synthesise_worker(jobs: list[tuple[str, str, str, int, int, int]], out: Any) -> None:
    """Runs in a fresh process: synthesise ``jobs`` in order, sending (index, samples) back."""
    try:
        synth = synthesizer()
        for index, (text, accent, variant, rate, pitch, pitch_range) in enumerate(jobs):
            out.put((index, synth.say(text, Voice(accent, variant), rate, pitch, pitch_range)))
    except Exception as exc:  # reported to the parent, which raises it there
        out.put((-1, f"{type(exc).__name__}: {exc}"))


def _synthesise(config: KwsConfig, clips: list[_Clip], console: Console) -> dict[int, np.ndarray]:
    """Samples at 22050 Hz for every clip with words, keyed by clip index, with a progress bar."""
    voices = config.voices()
    spoken = [i for i, clip in enumerate(clips) if clip.text is not None]
    jobs = [(clips[i].text, voices[clips[i].voice].language, voices[clips[i].voice].variant,
             clips[i].rate, clips[i].pitch, clips[i].pitch_range) for i in spoken]
    context = multiprocessing.get_context("spawn")
    out = context.Queue(maxsize=256)
    worker = context.Process(target=_synthesise_worker, args=(jobs, out), daemon=True)
    worker.start()
    samples: dict[int, np.ndarray] = {}
    columns = (TextColumn("[bold]kws: synthesising"), BarColumn(), MofNCompleteColumn(), TextColumn("eta"),
               TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("synth", total=len(jobs))
            while len(samples) < len(jobs):
                try:
                    index, result = out.get(timeout=5)
                except queue.Empty:
                    if not worker.is_alive():
                        raise RuntimeError(f"the eSpeak NG process died (exit code {worker.exitcode})") from None
                    continue
                if index < 0:
                    raise RuntimeError(result)
                samples[spoken[index]] = result
                progress.advance(task)
    finally:
        worker.join(timeout=5)
        if worker.is_alive():
            worker.kill()
    return samples


def _noise(kind: str, length: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white, pink (1/f power) or brown (1/f^2 power) noise, shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    freqs = np.maximum(np.fft.rfftfreq(length), 1.0 / length)
    exponent = {"white": 0.0, "pink": 0.5, "brown": 1.0}[kind]
    noise = np.fft.irfft(spectrum / freqs**exponent, n=length)
    return noise / np.sqrt(np.mean(noise**2))


def _trim(samples: np.ndarray, rate: int) -> np.ndarray:
    """The samples between the first and last 10-ms block louder than 1 % of the loudest one."""
    block = rate // 100
    blocks = len(samples) // block
    if blocks == 0:
        return samples
    energy = np.sqrt(np.mean(samples[: blocks * block].reshape(blocks, block) ** 2, axis=1))
    loud = np.flatnonzero(energy > 0.01 * energy.max())
    return samples[loud[0] * block: (loud[-1] + 1) * block]


@lru_cache(maxsize=4)
def _resampling_filter(up: int, down: int) -> np.ndarray:
    """``resample_poly``'s own default low-pass filter, designed once instead of per clip."""
    from scipy.signal import firwin

    half = 10 * max(up, down)
    return firwin(2 * half + 1, 1.0 / max(up, down), window=("kaiser", 5.0))


def _mix(config: KwsConfig, clip: _Clip, speech: np.ndarray | None) -> np.ndarray:
    """One clip: the word at a random offset and level, plus noise at a random SNR (or noise alone)."""
    from scipy.signal import resample_poly

    rng = np.random.default_rng((*clip.seed, 1))
    length = int(round(config.sample_rate * config.clip_seconds))
    noise = _noise(str(rng.choice(NOISES)), length, rng)
    if speech is None:
        return noise * 10 ** (rng.uniform(-60, -20) / 20)
    common = np.gcd(config.sample_rate, _SYNTH_RATE)
    up, down = config.sample_rate // common, _SYNTH_RATE // common
    word = _trim(resample_poly(speech, up, down, window=_resampling_filter(up, down)), config.sample_rate)
    if len(word) > length:  # a slow long word: keep its middle
        start = (len(word) - length) // 2
        word = word[start: start + length]
    word = word / max(np.sqrt(np.mean(word**2)), 1e-8) * 10 ** (rng.uniform(-35, -15) / 20)
    clip_audio = np.zeros(length)
    offset = int(rng.integers(0, length - len(word), endpoint=True))
    clip_audio[offset: offset + len(word)] = word
    snr = float(rng.choice(config.snrs_db))
    word_rms = np.sqrt(np.mean(word**2) * len(word) / length)
    return clip_audio + noise * word_rms * 10 ** (-snr / 20)


def build_kws(config: KwsConfig, console: Console | None = None) -> dict[str, np.ndarray]:
    """Synthesise, mix and featurise every clip: arrays ``X`` (float32), ``y``, ``voice``."""
    console = console or Console(stderr=True)
    clips = _plan(config)
    speech = _synthesise(config, clips, console)
    chunks = []
    for start in range(0, len(clips), _CHUNK):
        audio = np.stack([_mix(config, clip, speech.get(i)) for i, clip in enumerate(clips[start: start + _CHUNK],
                                                                                   start)])
        chunks.append(stack_frames(log_mel(audio, config.sample_rate), config.pool))
    return {"X": np.concatenate(chunks).astype(np.float32), "y": np.array([c.label for c in clips], dtype=np.int64),
            "voice": np.array([c.voice for c in clips], dtype=np.int64)}


def kws_arrays(config: KwsConfig | None = None, console: Console | None = None) -> tuple[dict[str, np.ndarray], Path]:
    """The arrays for ``config``, from the cache or built (and cached) now; and the cache file."""
    config = config or KwsConfig()
    path = kws_cache_dir() / f"{config.key(synthesizer().version)}.npz"
    if not path.exists():
        arrays = build_kws(config, console)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez_compressed(partial, **arrays, config=json.dumps(asdict(config)))
        os.replace(partial, path)  # concurrent builders write the same bytes; the last rename wins
    with np.load(path) as stored:
        return {name: stored[name] for name in ("X", "y", "voice")}, path


def split_by_voice(voices: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices (train, validation, test): ``fraction`` of the voices each for validation and
    test, chosen by ``seed``; no voice is in two parts."""
    unique = np.unique(voices)
    order = np.random.default_rng(seed).permutation(unique)
    held = max(1, int(round(len(unique) * fraction)))
    if 2 * held >= len(unique):
        raise ValueError(f"{len(unique)} voices cannot give {held} validation and {held} test voices and keep some")
    test, val = order[:held], order[held: 2 * held]
    return (np.flatnonzero(~np.isin(voices, order[: 2 * held])), np.flatnonzero(np.isin(voices, val)),
            np.flatnonzero(np.isin(voices, test)))
