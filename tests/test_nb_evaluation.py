"""Library calls of notebooks 10-50: eval-set embeddings and PESQ, notebook 30's purifiers, WER per
condition, and the model file's meta."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from spkadv.audio import purify
from spkadv.audio.io import save_audio
from spkadv.base import config
from spkadv.core import modelfile
from spkadv.encoders.frozen import SpeakerEncoder
from spkadv.evaluation import asr, conditions


class Energy(SpeakerEncoder):  # a stand-in encoder: log energy and length
    name, dim, fingerprint = "energy", 2, "0" * 64

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def embed(self, waves):
        return torch.stack(
            [waves.pow(2).mean(1).log(), torch.full_like(waves[:, 0], waves.shape[1])], 1
        )


def _rows(tmp_path: Path, profile: str) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        x = (rng.standard_normal(800 + i) * 0.1).astype(np.float32)
        rows.append((f"u{i}", str(save_audio(tmp_path / f"u{i}.wav", x))))
        save_audio(config.condition_dir(profile, "adv") / f"u{i}.wav", 2 * x)
    return pd.DataFrame(rows, columns=["utt_id", "path"])


def test_eval_embeddings_of_the_original_and_a_condition(tmp_runs, tmp_path: Path):
    rows = _rows(tmp_path, "p")
    out = conditions.eval_embeddings(
        Energy(), "p", rows, ("rec", "adv"), cache_dir=tmp_path / "c", progress=False
    )
    assert list(out) == ["rec", "adv"] and list(out["adv"]) == ["u0", "u1", "u2"]
    assert out["rec"]["u2"][1] == 802
    assert out["adv"]["u1"][0] == pytest.approx(out["rec"]["u1"][0] + np.log(4), abs=1e-4)
    assert len(list((tmp_path / "c" / "embeddings").glob("energy-*/*.npy"))) == 6


def test_pesq_scores_compare_each_condition_file_with_its_original(
    tmp_runs, tmp_path: Path, monkeypatch
):
    rows = _rows(tmp_path, "p")
    monkeypatch.setattr(
        conditions.metrics,
        "pesq_nb_raw",
        lambda ref, deg: float(np.abs(deg).sum() / np.abs(ref).sum()),
    )
    assert conditions.pesq_scores("p", rows, "adv") == pytest.approx([2.0, 2.0, 2.0])


def test_purifier_specs_name_the_paper_three_and_skip_what_cannot_run(monkeypatch):
    monkeypatch.setattr(purify, "codec_available", lambda kind: (False, f"no {kind} encoder"))
    purifiers, skipped = purify.purifier_specs(25.0, 256, 3, ["downup_8000", "mp3_64"])
    assert purifiers == {
        "an": "noise_25.0",
        "qt": "quantize_256",
        "ms": "median_3",
        "downup_8000": "downup_8000",
    }
    assert skipped == {"mp3_64": "no mp3 encoder"}
    assert all(purify.parse_spec(spec) for spec in purifiers.values())
    with pytest.raises(ValueError, match="unknown purifier"):
        purify.purifier_specs(25.0, 256, 3, ["nonsense_1"])


def test_condition_wers_transcribe_each_condition(monkeypatch):
    heard = {"a.wav": "the cat sat", "b.wav": "the cat sad", "c.wav": "a dog"}
    calls = []

    def fake(paths, backend, model, cache_dir=None, progress=True, stats=None):
        calls.append((tuple(paths), backend, model, cache_dir))
        stats.update(audio_seconds=len(paths))
        return [heard[p] for p in paths]

    monkeypatch.setattr(asr, "transcribe_files", fake)
    monkeypatch.setattr(asr, "normalize_text", str.lower)
    wers, stats = asr.condition_wers(
        ["The cat sat", "a dog"],
        {"rec": ["a.wav", "c.wav"], "adv": ["b.wav", "c.wav"]},
        "x",
        "m",
        cache_dir="k",
    )
    assert wers == {"rec": 0.0, "adv": pytest.approx(100 / 5)}
    assert stats == {"rec": {"audio_seconds": 2}, "adv": {"audio_seconds": 2}}
    assert calls[0] == (("a.wav", "c.wav"), "x", "m", "k")


def test_model_meta_holds_what_protect_reads_in_order():
    meta = modelfile.model_meta("p", "campplus", 12, 10, 31.0, 0.5, 16)
    assert list(meta) == [
        "profile",
        "steps",
        "encoder",
        "code_steps",
        "snr_target_db",
        "code_radius",
    ]
    assert meta["code_radius"] == pytest.approx(2.0) and meta["code_steps"] == 10
    meta = modelfile.model_meta("p", "campplus", 12, 0, 31.0, 0.5, 16, code_bf16=False)
    assert (
        list(meta)[4:] == ["code_bf16", "snr_target_db", "code_radius"]
        and meta["code_bf16"] is False
    )
