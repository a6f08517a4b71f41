"""The protect/restore tool on the bad inputs a person's recordings can be (issue 8's list).

Each input either works (resampled, down-mixed, clipped: with a warning) or fails with a message
naming the file and the problem; nothing is ever written over the input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from spkadv.cli import main as cli
from spkadv.core import modelfile
from spkadv.core.models import RemovalModule, SSEDConfig, SSEDGenerator

SR = 16_000


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = SSEDConfig(width=4, stages=2, res_blocks=1, level_window=101)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    return modelfile.save_model(path, SSEDGenerator(config), RemovalModule(config), 0.05)


def speech_like(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return (
        0.3 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
        + 0.01 * rng.standard_normal(len(t))
    ).astype(np.float32)


def write(path: Path, data: np.ndarray, sr: int = SR, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sr, **kwargs)
    return path


def raw(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def protect(src: Path, out: Path, model: Path) -> int:
    return cli.main(["protect", str(src), "-o", str(out), "--model", str(model), "--quiet"])


# (name, builder) -> the input works: output at 16 kHz, length = input duration at 16 kHz
WORKING = {
    "8 kHz": lambda d: write(d / "a8k.wav", speech_like(1.0, 8000), 8000),
    "22.05 kHz": lambda d: write(d / "a22k.wav", speech_like(1.0, 22050), 22050),
    "44.1 kHz": lambda d: write(d / "a44k.wav", speech_like(1.0, 44100), 44100),
    "48 kHz": lambda d: write(d / "a48k.wav", speech_like(1.0, 48000), 48000),
    "stereo": lambda d: write(
        d / "stereo.wav", np.stack([speech_like(1.0), speech_like(1.0, seed=1)], 1)
    ),
    "24-bit WAV": lambda d: write(d / "pcm24.wav", speech_like(1.0), subtype="PCM_24"),
    "float WAV": lambda d: write(d / "float.wav", speech_like(1.0), subtype="FLOAT"),
    "FLAC": lambda d: write(d / "lossless.flac", speech_like(1.0), format="FLAC"),
    "digital silence": lambda d: write(d / "silence.wav", np.zeros(SR, np.float32)),
    "beyond [-1, 1]": lambda d: write(d / "loud.wav", 3 * speech_like(1.0), subtype="FLOAT"),
    "spaces and non-ASCII path": lambda d: write(
        d / "mes enregistrements" / "voix de Zoë.wav", speech_like(1.0)
    ),
    "very long file (10 min)": lambda d: write(
        d / "long.flac", np.tile(speech_like(1.0), 600), format="FLAC"
    ),
}

# (name, builder, expected message fragment)
FAILING = {
    "not an audio file": (lambda d: raw(d / "notes.wav", b"hello"), "not a readable audio file"),
    "empty file": (lambda d: raw(d / "empty.wav", b""), "empty file"),
    "truncated WAV header": (
        lambda d: raw(d / "cut.wav", write(d / "full.wav", speech_like(1.0)).read_bytes()[:30]),
        "not a readable audio file",
    ),
    "a single sample": (lambda d: write(d / "one.wav", np.array([0.1], np.float32)), "1 sample"),
    "NaN samples": (
        lambda d: write(d / "nan.wav", np.array([0.0, np.nan, 0.1], np.float32), subtype="FLOAT"),
        "NaN/Inf",
    ),
    "Inf samples": (
        lambda d: write(d / "inf.wav", np.array([0.0, np.inf, 0.1], np.float32), subtype="FLOAT"),
        "NaN/Inf",
    ),
    "missing file": (lambda d: d / "nowhere.wav", "does not exist"),
}


@pytest.mark.parametrize("case", list(WORKING), ids=list(WORKING))
def test_inputs_that_work(tmp_path: Path, model: Path, case: str):
    src = WORKING[case](tmp_path)
    before = src.read_bytes()
    info = sf.info(src)
    out = tmp_path / "out" / "protected.wav"
    assert protect(src, out, model) == 0
    y, sr = sf.read(out)
    assert sr == SR and y.ndim == 1
    assert abs(len(y) - round(info.duration * SR)) <= 1
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
    assert src.read_bytes() == before  # the input is untouched
    restored = tmp_path / "out" / "restored.wav"
    assert (
        cli.main(["restore", str(out), "-o", str(restored), "--model", str(model), "--quiet"]) == 0
    )
    assert len(sf.read(restored)[0]) == len(y)


@pytest.mark.parametrize("case", list(FAILING), ids=list(FAILING))
def test_inputs_that_fail_name_the_file_and_problem(tmp_path: Path, model: Path, case: str, capsys):
    build, message = FAILING[case]
    src = build(tmp_path)
    out = tmp_path / "out.wav"
    assert protect(src, out, model) != 0
    err = capsys.readouterr().err
    assert src.name in err and message in err, err
    assert not out.exists()
    assert not list(tmp_path.glob(".out*"))  # no half-written temporary file left behind


def test_mixed_folder_reports_every_file_and_goes_on(tmp_path: Path, model: Path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = [WORKING[c](folder) for c in ("8 kHz", "stereo", "FLAC")]
    bad = [FAILING[c][0](folder) for c in ("not an audio file", "empty file", "NaN samples")]
    (folder / "readme.txt").write_text("not audio, and not named like audio")
    out = tmp_path / "protected"
    assert protect(folder, out, model) == 1
    captured = capsys.readouterr()
    for path in bad:
        assert path.name in captured.err
    for path in good:
        assert (out / path.relative_to(folder)).with_suffix(".wav").exists()
    assert "3 of 6 file(s) done, 3 failed" in captured.out
