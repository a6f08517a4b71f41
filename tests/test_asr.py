"""ASR: Whisper text normalisation, corpus WER, cached transcription (offline tiny.en)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from spkadv.evaluation import asr
from spkadv.evaluation.asr import ASRError


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Mr. Smith went home.", "MISTER SMITH WENT HOME"),
        ("Dr. Jones", "DOCTOR JONES"),
        ("I have twenty-five apples", "I HAVE 25 APPLES"),
        ("It costs ten percent more", "it costs 10% more"),
        ("Hello, world! How are you?", "HELLO WORLD HOW ARE YOU"),
        ("We're here", "WE ARE HERE"),
        ("the colour grey", "THE COLOR GRAY"),
    ],
)
def test_normaliser_equates(a: str, b: str) -> None:
    assert asr.normalize_text(a) == asr.normalize_text(b)
    assert asr.wer([b], [a]) == 0.0


def test_normaliser_keeps_real_differences() -> None:
    assert asr.normalize_text("Mr. Smith") != asr.normalize_text("Mrs. Smith")
    assert asr.normalize_text("twenty five") != asr.normalize_text("twenty six")


def test_wer_is_corpus_level_percent() -> None:
    # 1 substitution in 4 words + 1 deletion in 2 words = 2 errors / 6 words
    assert asr.wer(["A B C D", "E F"], ["a b x d", "e"]) == pytest.approx(100 * 2 / 6)
    assert asr.wer(["ONE TWO"], [""]) == 100.0
    assert asr.wer(["A B", "."], ["a b", "extra words"]) == pytest.approx(
        100.0
    )  # insertions on an empty ref
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        asr.wer(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no words"):
        asr.wer(["", ","], ["a", "b"])


def test_unknown_backend_and_offline_openai_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ASRError, match="unknown ASR backend 'kaldi'"):
        asr.transcribe_files([], backend="kaldi")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(ASRError, match="faster-whisper"):
        asr.load_transcriber("openai-whisper", "base", device="cpu")
    assert time.perf_counter() - start < 10
    with pytest.raises(ASRError, match="unknown openai-whisper model"):
        asr.load_transcriber("openai-whisper", "giant", device="cpu")


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("flite") is None:
        pytest.skip("flite (Debian package) is not installed")
    path = tmp_path_factory.mktemp("asr") / "fox.wav"
    text = "The quick brown fox jumps over the lazy dog."
    subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(path)], check=True)
    return path


def test_transcribe_tiny_en_and_cache(
    spoken: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stats: dict[str, float] = {}
    texts = asr.transcribe_files(
        [spoken],
        backend="faster-whisper",
        model="tiny.en",
        cache_dir=tmp_path,
        progress=False,
        stats=stats,
    )
    assert asr.wer(["THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG"], texts) <= 12.0
    assert stats["audio_seconds"] == pytest.approx(2.97, abs=0.1) and stats["real_time_factor"] > 0
    cached = list((tmp_path / "transcripts").glob("faster-whisper-tiny.en-*/*.txt"))
    assert len(cached) == 1 and cached[0].read_text() == texts[0]

    def fail(*args, **kwargs):
        raise AssertionError("cache not used")

    monkeypatch.setattr(asr, "load_transcriber", fail)
    assert (
        asr.transcribe_files([spoken, spoken], model="tiny.en", cache_dir=tmp_path, progress=False)
        == texts * 2
    )
