"""The audio loader on good and bad input: it works (with a warning) or names the file and the problem."""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st
from spkadv.audio.io import AudioError, load_audio, save_audio
from spkadv.base.fileio import atomic_paths, write_text


def tone(seconds: float = 0.5, sr: int = 16000, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
def test_other_rates_are_resampled_to_16k(tmp_path: Path, sr: int):
    path = tmp_path / f"tone_{sr}.wav"
    sf.write(path, tone(1.0, sr), sr)
    x = load_audio(path)
    assert x.dtype == np.float32
    assert abs(len(x) - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spectrum) * 16000 / len(x) - 440) < 5  # same pitch after resampling


def test_stereo_is_downmixed_with_a_warning(tmp_path: Path):
    left, right = tone(), np.zeros(8000, np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 16000)
    with pytest.warns(UserWarning, match="2 channels down-mixed"):
        x = load_audio(path)
    np.testing.assert_allclose(x, left / 2, atol=1e-4)


@pytest.mark.parametrize(
    ("name", "fmt", "subtype", "atol"),
    [
        ("pcm16.wav", "WAV", "PCM_16", 1 / 32768),
        ("pcm24.wav", "WAV", "PCM_24", 1e-6),
        ("float.wav", "WAV", "FLOAT", 0),
        ("lossless.flac", "FLAC", "PCM_16", 1 / 32768),
    ],
)
def test_formats_round_trip(tmp_path: Path, name, fmt, subtype, atol):
    x = tone()
    sf.write(tmp_path / name, x, 16000, format=fmt, subtype=subtype)
    np.testing.assert_allclose(load_audio(tmp_path / name), x, atol=atol + 1e-7)


def test_path_with_spaces_and_non_ascii(tmp_path: Path):
    folder = tmp_path / "mes enregistrements – été"
    path = save_audio(folder / "voix de Zoë.wav", tone())
    assert len(load_audio(path)) == 8000


def test_digital_silence_loads(tmp_path: Path):
    path = save_audio(tmp_path / "silence.wav", np.zeros(16000, np.float32))
    assert not load_audio(path).any()


def test_values_beyond_full_scale_are_clipped_with_warning_or_refused(tmp_path: Path):
    path = tmp_path / "loud.wav"
    sf.write(path, np.array([0.0, 1.5, -2.0, 0.5], np.float32), 16000, subtype="FLOAT")
    with pytest.warns(UserWarning, match="beyond|clipped"):
        x = load_audio(path)
    assert x.max() == 1.0 and x.min() == -1.0
    with pytest.raises(AudioError, match="loud.wav.*beyond"):
        load_audio(path, allow_clipping=False)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_samples_are_refused(tmp_path: Path, bad):
    path = tmp_path / "broken.wav"
    sf.write(path, np.array([0.0, bad, 0.1, 0.2], np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"broken\.wav.*NaN/Inf"):
        load_audio(path)


def test_single_sample_is_refused(tmp_path: Path):
    path = tmp_path / "one.wav"
    sf.write(path, np.array([0.1], np.float32), 16000)
    with pytest.raises(AudioError, match=r"one\.wav.*1 sample"):
        load_audio(path)


def test_empty_file_is_refused(tmp_path: Path):
    path = tmp_path / "empty.wav"
    path.touch()
    with pytest.raises(AudioError, match=r"empty\.wav.*empty"):
        load_audio(path)


def test_not_audio_is_refused(tmp_path: Path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio")
    with pytest.raises(AudioError, match=r"notes\.wav.*not a readable audio file"):
        load_audio(path)


def test_truncated_wav_is_refused_or_read_partially(tmp_path: Path):
    path = tmp_path / "cut.wav"
    sf.write(path, tone(1.0), 16000)
    data = path.read_bytes()
    path.write_bytes(data[:30])  # header cut in half
    with pytest.raises(AudioError, match=r"cut\.wav"):
        load_audio(path)
    path.write_bytes(data[: len(data) // 2])  # data chunk cut: libsndfile reads what is there
    assert 0 < len(load_audio(path)) < 16000


def test_missing_file_and_folder(tmp_path: Path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="is a folder"):
        load_audio(tmp_path)


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path: Path):
    path = save_audio(tmp_path / "out.wav", tone())
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]
    with pytest.raises(ValueError, match="NaN"):
        save_audio(path, np.array([np.nan, 0.0], np.float32))
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]  # the old file is intact
    assert len(load_audio(path)) == 8000


@settings(max_examples=40, deadline=None)
@given(
    samples=st.lists(st.floats(-1.0, 1.0, width=32), min_size=2, max_size=400),
    subtype=st.sampled_from(["FLOAT", "PCM_16"]),
)
def test_property_round_trip(tmp_path_factory, samples, subtype):
    x = np.asarray(samples, np.float32)
    path = tmp_path_factory.mktemp("rt") / "x.wav"
    save_audio(path, x, subtype=subtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a valid round trip raises no warning
        y = load_audio(path)
    assert y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=0 if subtype == "FLOAT" else 1 / 32768 + 1e-7)


def test_outputs_get_ordinary_permissions(tmp_path: Path):
    path = write_text(tmp_path / "note.txt", "hello")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_atomic_writes_are_synced_before_the_rename(tmp_path: Path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        mode = os.fstat(fd)
        events.append(("fsync", "folder" if stat.S_ISDIR(mode.st_mode) else mode.st_ino))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", os.stat(src).st_ino))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = write_text(tmp_path / "note.txt", "hello")
    inode = path.stat().st_ino
    # the file's bytes reach the disk before it takes the name, the rename after it
    assert events == [("fsync", inode), ("rename", inode), ("fsync", "folder")]


def test_atomic_pairs_leave_both_or_neither(tmp_path: Path):
    a, b = tmp_path / "x.wav", tmp_path / "x.wav.json"
    with pytest.raises(RuntimeError, match="half way"):
        with atomic_paths(a, b) as (ta, tb):
            ta.write_text("audio")
            raise RuntimeError("half way")
    assert list(tmp_path.iterdir()) == []
    with atomic_paths(a, b) as (ta, tb):
        ta.write_text("audio")
        tb.write_text("tag")
    assert (a.read_text(), b.read_text()) == ("audio", "tag")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.wav", "x.wav.json"]
