"""Speech synthesis with eSpeak NG through its C API (ctypes), without a system install.

The ``espeakng-loader`` wheel ships ``libespeak-ng`` and its voice data, so a fresh virtual
environment can synthesise; Debian's ``libespeak-ng1`` (with ``espeak-ng-data``) is the fallback.
The library keeps global state (one voice, one set of parameters), so :class:`Synthesizer` is a
process-wide singleton used from one thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nas.errors import UserError

__all__ = ["ESPEAK_MISSING", "EspeakMissing", "Synthesizer", "Voice", "synthesizer"]

ESPEAK_MISSING = ("eSpeak NG is not available: pip install espeakng-loader "
                  "(or apt-get install libespeak-ng1 espeak-ng-data)")

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH, _RANGE = 1, 3, 4
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakMissing(UserError):
    """Neither the ``espeakng-loader`` wheel nor a system ``libespeak-ng`` could be loaded."""


@dataclass(frozen=True)
class Voice:
    """An eSpeak NG voice: a language or accent (``en-us``) and a variant (``m3``, ``f2``, ``klatt``)."""

    language: str
    variant: str

    @property
    def name(self) -> str:
        return f"{self.language}+{self.variant}"


def _locate() -> tuple[str, str | None, str]:
    """(library path, data path or None for the library's default, source label)."""
    try:
        import espeakng_loader

        return espeakng_loader.get_library_path(), espeakng_loader.get_data_path(), "espeakng-loader"
    except (ImportError, RuntimeError):
        pass
    found = ctypes.util.find_library("espeak-ng")
    if found is None:
        raise EspeakMissing(ESPEAK_MISSING)
    return found, None, "system"


class Synthesizer:
    """Text to 16-bit mono samples at :attr:`sample_rate` (22050 Hz for eSpeak NG's voices)."""

    def __init__(self) -> None:
        library, data, self.source = _locate()
        try:
            self._lib = ctypes.CDLL(library)
        except OSError as exc:
            raise EspeakMissing(f"{ESPEAK_MISSING} ({exc})") from None
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                                ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self._lib.espeak_Info.restype = ctypes.c_char_p
        self._lib.espeak_Info.argtypes = [ctypes.c_void_p]
        path = None if data is None else str(Path(data).parent).encode()
        self.sample_rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, path, 0)
        if self.sample_rate <= 0:
            raise EspeakMissing(f"{ESPEAK_MISSING} (initialisation failed with data at {data})")
        self.version = self._lib.espeak_Info(None).decode()
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # kept referenced: the library calls it later
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, samples: ctypes.POINTER(ctypes.c_short), count: int, events: int) -> int:
        if samples and count > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0

    def say(self, text: str, voice: Voice, rate: int = 175, pitch: int = 50, pitch_range: int = 50) -> np.ndarray:
        """Samples of ``text`` in ``voice`` (words per minute, pitch and range 0-100), float32 in [-1, 1]."""
        if self._lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice.name!r}")
        for parameter, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range)):
            self._lib.espeak_SetParameter(parameter, value, 0)
        if hasattr(self._lib, "espeak_ng_SetRandSeed"):  # some variants add noise: same seed, same samples
            self._lib.espeak_ng_SetRandSeed(0)
        self._chunks = []
        encoded = text.encode()
        error = self._lib.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if error != 0:
            raise RuntimeError(f"eSpeak NG could not synthesise {text!r} (error {error})")
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return samples.astype(np.float32) / 32768.0


_INSTANCE: Synthesizer | None = None


def synthesizer() -> Synthesizer:
    """The process's synthesiser, created on first use (EspeakMissing, one line, if there is none)."""
    global _INSTANCE
    if _INSTANCE is None:
        _INSTANCE = Synthesizer()
    return _INSTANCE
