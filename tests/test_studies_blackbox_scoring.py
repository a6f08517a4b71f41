"""The black-box study's scoring: sets scored by every encoder, the noise probe, PGD, metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from spkadv.encoders.random_conv import RandomConvEncoder
from spkadv.studies import blackbox_scoring


def _speech(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    tone = 0.2 * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) * np.sin(2 * np.pi * (150 + 40 * seed) * t)
    return (tone + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def _scorer() -> blackbox_scoring.Scorer:
    clean = [_speech(0.6, i) for i in range(4)]
    encoders = {"white": RandomConvEncoder(seed=0), "black": RandomConvEncoder(seed=1)}
    return blackbox_scoring.Scorer.build(clean, ["a", "a", "b", "b"], encoders)


def test_a_set_equal_to_the_originals_scores_as_rec_rec() -> None:
    scorer = _scorer()
    row = scorer.score_set(scorer.clean, scorer.clean)
    assert list(row)[:6] == ["snr_adv_db", "white_recrec", "white_recadv", "white_recgn", "white_cos_adv", "white_cos_gn"]  # fmt: skip
    assert row["snr_adv_db"] == 200.0  # δ = 0: capped
    for side in ("white", "black"):
        assert row[f"{side}_recadv"] == row[f"{side}_recrec"] == scorer.recrec(side)
        assert row[f"{side}_cos_adv"] == pytest.approx(1.0, abs=1e-5)
    scorer.add("surrogate", RandomConvEncoder(seed=2))
    assert "surrogate_cos_gn" in scorer.score_set(scorer.clean, scorer.clean)


def test_noise_probe_scores_the_white_box_at_the_first_snr_only() -> None:
    rows = blackbox_scoring.noise_probe(_scorer(), [30.0, 10.0], ["flat", "level"])
    assert [(r["snr_db"], r["shape"], r["side"]) for r in rows] == [
        (30.0, "flat", "white"), (30.0, "flat", "black"), (30.0, "level", "white"), (30.0, "level", "black"),
        (10.0, "flat", "black"), (10.0, "level", "black"),
    ]  # fmt: skip
    loud = [r["cos"] for r in rows if r["snr_db"] == 10.0]
    quiet = [r["cos"] for r in rows if r["snr_db"] == 30.0 and r["side"] == "black"]
    assert min(quiet) > max(loud) - 0.05  # more noise moves the embedding at least as far
    wide = blackbox_scoring.noise_wide(pd.DataFrame(rows))
    assert list(wide.columns) == [
        "side",
        "shape",
        "eer_rec @ 30 dB",
        "eer_rec @ 10 dB",
        "cos @ 30 dB",
        "cos @ 10 dB",
    ]


def test_pgd_row_refuses_an_encoder_it_does_not_have(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="choose among"):
        blackbox_scoring.pgd_row(
            _scorer(), "x", {"encoders": {"surrogate": 1.0}}, ["u"] * 4, tmp_path, 30.0, False
        )
    scorer = _scorer()
    ids = [f"u{i}" for i in range(4)]
    row, minutes = blackbox_scoring.pgd_row(scorer, "PGD white", {"encoders": {"white": 1.0}, "steps": 2}, ids, tmp_path, 20.0, False)  # fmt: skip
    assert row["attacked"] == "white" and not row["oracle"] and row["steps"] == 2 and minutes >= 0
    assert row["snr_adv_db"] >= 20.0 - 0.01 and row["white_cos_adv"] < row["white_cos_gn"]


def test_metrics_flatten_settings_noise_and_pgd_with_slugs() -> None:
    table = pd.DataFrame([{"variant": "10 steps + surrogate", "snr_adv_db": 31.0}])
    noise = [{"side": "black", "shape": "flat", "snr_db": 31.5, "eer_rec": 2.9, "cos": 0.99}]
    pgd = [
        {
            "attack": "PGD GE2E (oracle)",
            "attacked": "black",
            "oracle": True,
            "steps": 10,
            "snr_adv_db": 31.5,
        }
    ]
    m = blackbox_scoring.blackbox_metrics(table, noise, pgd, {"utterances": 4})
    assert m == {
        "utterances": 4, "10_steps___surrogate__snr_adv_db": 31.0, "noise__black_flat_31.5dB_eer": 2.9,
        "noise__black_flat_31.5dB_cos": 0.99, "pgd__PGD_GE2E__oracle__steps": 10, "pgd__PGD_GE2E__oracle__snr_adv_db": 31.5,
    }  # fmt: skip


def test_speech_share_sums_to_one() -> None:
    share = blackbox_scoring.speech_share(_scorer().clean)
    assert share.shape == (40,) and share.sum() == pytest.approx(1.0)
