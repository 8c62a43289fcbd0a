"""Log-mel filterbank features as small-footprint keyword-spotting DNNs use them.

40 mel bands over frames of 25 ms every 10 ms (Hamming window, power spectrum, HTK mel scale,
triangles built like librosa's with ``norm=None``), then the natural log. Written with numpy
because no torchaudio build matches the pinned torch; ``tests/test_kws.py`` checks it against
librosa.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["FRAME_MS", "HOP_MS", "N_MELS", "log_mel", "mel_filterbank", "stack_frames"]

N_MELS = 40
FRAME_MS = 25
HOP_MS = 10
_LOG_FLOOR = 1e-10


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int = N_MELS, fmin: float = 20.0,
                   fmax: float | None = None) -> np.ndarray:
    """Triangular filters on the HTK mel scale, shape ``(n_mels, n_fft // 2 + 1)``, peak 1."""
    fmax = sample_rate / 2.0 if fmax is None else fmax
    bins = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    return np.maximum(0.0, np.minimum(rising, falling))


def log_mel(samples: np.ndarray, sample_rate: int, n_mels: int = N_MELS) -> np.ndarray:
    """Log mel energies of ``samples`` (time last), shape ``(..., frames, n_mels)``, float32.

    Frames are 25 ms long every 10 ms, without padding: ``1 + (length - frame) // hop`` of them.
    A batch of equally long signals goes through in one call.
    """
    frame = sample_rate * FRAME_MS // 1000
    hop = sample_rate * HOP_MS // 1000
    n_fft = 1 << (frame - 1).bit_length()
    count = 1 + (samples.shape[-1] - frame) // hop
    if count < 1:
        raise ValueError(f"{samples.shape[-1]} samples are shorter than one {FRAME_MS} ms frame")
    index = np.arange(frame)[None, :] + hop * np.arange(count)[:, None]
    frames = np.asarray(samples, dtype=np.float64)[..., index] * np.hamming(frame + 1)[:-1]
    power = np.abs(np.fft.rfft(frames, n=n_fft)) ** 2
    energies = power @ mel_filterbank(sample_rate, n_fft, n_mels).T
    return np.log(np.maximum(energies, _LOG_FLOOR)).astype(np.float32)


def stack_frames(features: np.ndarray, pool: int) -> np.ndarray:
    """Frames averaged in groups of ``pool`` and stacked into one vector (time-major) per signal.

    ``features`` has shape ``(..., frames, bands)``. With ``pool = 3`` a second of 98 frames
    becomes 32 frames of 30 ms: 32 x 40 = 1280 inputs.
    """
    *lead, frames, bands = features.shape
    groups = frames // pool
    pooled = features[..., : groups * pool, :].reshape(*lead, groups, pool, bands).mean(axis=-2)
    return pooled.reshape(*lead, groups * bands)
