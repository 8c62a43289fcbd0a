"""The keyword-spotting dataset: real eSpeak NG synthesis, log-mel features checked against librosa."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from nas.data.kws import LABELS, KwsConfig, load_kws
from nas.data.kws.dataset import build_kws, kws_arrays, split_by_voice
from nas.data.kws.espeak import Voice, synthesizer
from nas.data.kws.features import log_mel, stack_frames

SMALL = KwsConfig(accents=("en", "en-us", "en-gb-scotland"), variants=("m1", "f2", "klatt"), per_voice=1)


def test_log_mel_matches_librosa() -> None:
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    signal = np.sin(2 * np.pi * 440 * t) * np.linspace(0, 1, t.size) + 0.1 * rng.standard_normal(t.size)
    ours = log_mel(signal, 16000)
    # librosa centres the 400-sample window in a 512-sample frame: pad by the difference so the
    # frames cover the same samples (the zero padding's position does not change |FFT|).
    reference = librosa.feature.melspectrogram(
        y=np.pad(signal, 56), sr=16000, n_fft=512, win_length=400, hop_length=160, window="hamming",
        center=False, power=2.0, n_mels=40, fmin=20.0, fmax=8000.0, htk=True, norm=None).T
    assert ours.shape == reference.shape == (98, 40)
    np.testing.assert_allclose(ours, np.log(np.maximum(reference, 1e-10)), atol=2e-4)


def test_stacked_frames_average_in_time_order() -> None:
    features = np.arange(7 * 2, dtype=np.float32).reshape(7, 2)
    np.testing.assert_array_equal(stack_frames(features, 3), [2, 3, 8, 9])
    batch = np.stack([features, features + 1])
    np.testing.assert_array_equal(stack_frames(batch, 3)[1], [3, 4, 9, 10])


def test_synthesis_speaks_and_follows_the_rate() -> None:
    synth = synthesizer()
    slow = synth.say("forward", Voice("en-us", "m3"), rate=100)
    fast = synth.say("forward", Voice("en-us", "m3"), rate=300)
    assert synth.sample_rate == 22050
    assert 0.1 < np.abs(slow).max() <= 1.0
    assert len(slow) > 1.5 * len(fast)
    with pytest.raises(ValueError, match="no voice"):
        synth.say("yes", Voice("xx-nowhere", "m3"))


@pytest.mark.slow
def test_small_dataset_is_deterministic_cached_and_split_by_voice(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NAS_DATA_DIR", str(tmp_path))
    arrays, path = kws_arrays(SMALL)
    voices = len(SMALL.voices())
    assert arrays["X"].shape == (voices * len(LABELS) * SMALL.per_voice, 1280)
    assert np.isfinite(arrays["X"]).all()
    assert np.bincount(arrays["y"]).tolist() == [voices * SMALL.per_voice] * len(LABELS)
    # Silence clips are quieter than spoken ones in the same voices.
    energy = arrays["X"].mean(axis=1)
    assert energy[arrays["y"] == LABELS.index("_silence_")].mean() < energy[arrays["y"] == 0].mean()

    stamp = path.stat().st_mtime_ns
    again, same_path = kws_arrays(SMALL)
    assert same_path == path and path.stat().st_mtime_ns == stamp  # read from the cache
    rebuilt = build_kws(SMALL)  # a second synthesis in a fresh process: the same bytes
    np.testing.assert_array_equal(rebuilt["X"], arrays["X"])
    assert kws_arrays(KwsConfig(**{**SMALL.__dict__, "seed": 1}))[1] != path

    data = load_kws(0.2, seed=0, config=SMALL)
    assert data.in_features == 1280 and data.num_classes == len(LABELS)
    assert data.X_test is not None and len(data.y_test) == len(data.y_val) > 0
    assert abs(float(data.X_train.mean())) < 1e-3  # standardised on the training voices


def test_split_never_shares_a_voice() -> None:
    voices = np.repeat(np.arange(20), 5)
    train, val, test = split_by_voice(voices, 0.15, seed=3)
    parts = [set(voices[rows]) for rows in (train, val, test)]
    assert parts[0].isdisjoint(parts[1]) and parts[0].isdisjoint(parts[2]) and parts[1].isdisjoint(parts[2])
    assert len(parts[1]) == len(parts[2]) == 3 and len(train) + len(val) + len(test) == len(voices)
    assert split_by_voice(voices, 0.15, seed=3)[2].tolist() == test.tolist()
    with pytest.raises(ValueError, match="voices"):
        split_by_voice(np.arange(2), 0.4, seed=0)


def test_missing_espeak_is_one_line(tmp_path) -> None:
    # A real run of the CLI where neither the wheel nor a system library can be found.
    (tmp_path / "espeakng_loader.py").write_text("raise ImportError('hidden by the test')\n")
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent("""
        import ctypes.util
        ctypes.util.find_library = lambda name: None
    """))
    env = {"PYTHONPATH": f"{tmp_path}:{':'.join(sys.path)}", "NAS_DATA_DIR": str(tmp_path / "data"),
           "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", "from nas.cli import main; main()", "data", "kws"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "eSpeak NG is not available" in result.stderr
    assert not (tmp_path / "data").exists()
