"""Restoration after an ordinary channel (notebook 30's robustness table)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from spkadv.audio import purify
from spkadv.audio.io import load_audio, save_audio
from spkadv.base import config
from spkadv.core import modelfile
from spkadv.core import protect as P
from spkadv.core.models import RemovalModule, SSEDConfig, SSEDGenerator
from spkadv.encoders.frozen import SpeakerEncoder
from spkadv.evaluation import metrics
from spkadv.evaluation.robustness import restoration_robustness


class Energy(SpeakerEncoder):  # a stand-in encoder: log energy and a constant
    name, dim, fingerprint = "energy", 2, "1" * 64

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def embed(self, waves):
        return torch.stack([waves.pow(2).mean(1).log(), torch.ones_like(waves[:, 0])], 1)


def test_restoration_robustness_scores_each_channel_and_skips_what_cannot_run(
    tmp_runs, tmp_path, monkeypatch
) -> None:
    torch.manual_seed(0)
    cfg = SSEDConfig(width=4, stages=2, res_blocks=1, level_window=101)
    path = modelfile.save_model(tmp_path / "m.pt", SSEDGenerator(cfg), RemovalModule(cfg), 0.05)
    model = modelfile.load_model(path)
    rng = np.random.default_rng(0)
    rec, adv = {}, {}
    for i, utt in enumerate(["a1", "b1"]):
        x = (0.1 * (i + 1) * rng.standard_normal(4000)).astype(np.float32)
        rec[utt] = save_audio(tmp_path / "rec" / f"{utt}.wav", x)
        adv[utt] = save_audio(tmp_path / "adv" / f"{utt}.wav", P.protect(model, x))
    trials = pd.DataFrame(
        {
            "enrol": ["a0", "b0", "a0", "b0"],
            "test": ["a1", "a1", "b1", "b1"],
            "target": [1, 0, 0, 1],
        }
    )
    enrol = {"a0": np.array([np.log(0.01), 1.0]), "b0": np.array([np.log(0.04), 1.0])}
    real = purify.spec_available
    monkeypatch.setattr(
        purify,
        "spec_available",
        lambda spec: (False, "no codec here") if spec.startswith("mp3") else real(spec),
    )
    table, skipped = restoration_robustness(
        model, "smoke", adv, rec, ["none", "mp3_64", "noise_30"], Energy(), trials, enrol,
        seed=3, progress=False, cache_dir=tmp_path / "cache",
    )  # fmt: skip
    assert skipped == {"mp3_64": "no codec here"}
    assert list(table["distortion"]) == ["none", "noise_30"] and (table["n_utts"] == 2).all()
    assert table["eer_recrst"].between(0, 100).all()
    none = table.iloc[0]
    expected = np.mean(
        [metrics.snr_db(load_audio(rec[u]), P.restore(model, load_audio(adv[u]))) for u in adv]
    )
    assert none["snr_rst_db"] == pytest.approx(expected, abs=1e-3)
    assert none["snr_distorted_adv_db"] == pytest.approx(
        np.mean([metrics.snr_db(load_audio(rec[u]), load_audio(adv[u])) for u in adv])
    )
    noisy = table.iloc[1]  # the channel's noise lowers the SNR of x̃' below that of x'
    assert noisy["snr_distorted_adv_db"] < none["snr_distorted_adv_db"]
    for dist in ("none", "noise_30"):
        assert sorted(
            p.name for p in config.condition_dir("smoke", f"rst_{dist}").glob("*.wav")
        ) == [
            "a1.wav",
            "b1.wav",
        ]
    assert not config.condition_dir("smoke", "rst_mp3_64").exists()
