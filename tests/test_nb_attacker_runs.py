"""Notebook 60's experiment helpers (spkadv.evaluation.attacker_runs)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from spkadv.audio.io import load_audio, save_audio
from spkadv.core import modelfile
from spkadv.core import protect as P
from spkadv.core.models import RemovalModule, SSEDConfig, SSEDGenerator
from spkadv.core.train import TrainConfig
from spkadv.evaluation import attacker_runs, attackers
from spkadv.evaluation.metrics import snr_db

CONFIG = SSEDConfig(width=4, stages=2, res_blocks=1, level_window=101)


def _wave(n: int, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def test_protected_utterances_must_cover_the_scored_tests():
    eval_rows = pd.DataFrame({"utt_id": ["a0", "a1", "a2", "b0", "b1"], "speaker": list("aaabb")})
    tests = eval_rows[eval_rows["utt_id"].isin(["a0", "b0"])]
    assert attacker_runs.protected_utterances(eval_rows, tests, 1, 1) == {"a0", "b0"}
    assert attacker_runs.protected_utterances(eval_rows, eval_rows, 0, 0) == set(
        eval_rows["utt_id"]
    )
    with pytest.raises(ValueError, match="EVAL_TEST_UTTS_PER_SPEAKER=2 .*EVAL_UTTS_PER_SPEAKER=1"):
        attacker_runs.protected_utterances(eval_rows, eval_rows, 1, 2)


class Mean:  # a stand-in encoder: the mean and the energy of the wave
    def embed(self, waves):
        return torch.stack([waves.mean(1), waves.pow(2).mean(1)], 1)


def test_curve_probe_scores_what_a_restoring_function_returns():
    clean = [_wave(400, 0), _wave(500, 1)]
    protected = [x + _wave(len(x), 9) * 0.1 for x in clean]
    probe = attacker_runs.CurveProbe(Mean(), clean, protected)
    same = probe(lambda xp: xp)
    assert same["snr_db"] == pytest.approx(probe.snr_adv_db())
    assert same["snr_db"] == pytest.approx(
        np.mean([snr_db(x, y) for x, y in zip(clean, protected, strict=True)])
    )
    perfect = iter(clean)
    exact = probe(lambda xp: next(perfect))
    assert exact["snr_db"] == 200.0 and exact["cos_white"] == pytest.approx(1.0)


PARAMS = {
    "ATTACKER_MODELS": ["removal", "stft_mask"],
    "ATTACKER_STEPS": [20, 5],
    "ATTACKER_ENHANCER_HIDDEN": 8,
    "ATTACKER_ENHANCER_NFFT": 256,
    "ATTACKER_BATCH_SIZE": 2,
    "ATTACKER_CROP_SECONDS": 0.5,
    "ATTACKER_LEARNING_RATE": 1.0e-3,
    "ATTACKER_SEED": 1,
    "ATTACKER_CURVE_EVERY": 10,
}


def test_settings_from_params():
    base = TrainConfig(model=CONFIG, eps=0.07)
    settings = attacker_runs.settings_from_params(base, PARAMS)
    assert list(settings) == ["removal", "stft_mask"]
    assert settings["stft_mask"].steps == 5 and settings["removal"].steps == 20
    assert settings["removal"].model == CONFIG.to_dict() and settings["removal"].eps == 0.07
    assert settings["stft_mask"].n_fft == 256 and settings["stft_mask"].eval_every == 10
    with pytest.raises(ValueError, match="one number per network"):
        attacker_runs.settings_from_params(base, {**PARAMS, "ATTACKER_STEPS": [20]})


def _run(kind: str, steps: int, snrs=(10.0, 12.0), loaded=False, pairs=4, hours=0.01):
    history = [
        {"step": 0, "snr_db": snrs[0], "cos_white": 0.5},
        {"step": steps, "snr_db": snrs[1], "cos_white": 0.75},
    ]
    settings = attackers.AttackerSettings(kind=kind, steps=steps)
    return attackers.AttackerRun(torch.nn.Identity(), settings, history, 0.5, pairs, hours, loaded)


def test_run_summary():
    line = attacker_runs.run_summary("removal", _run("removal", 20, loaded=True))
    assert (
        line
        == "removal: 20 steps in 0.50 min (loaded); curve utterances: SNR 10.0 -> 12.0 dB, white-box cos 0.500 -> 0.750"
    )


def test_data_size_curve_trains_on_nested_shares(monkeypatch, tmp_path: Path):
    pairs = attackers.PairSet(
        [f"u{i}" for i in range(4)],
        [_wave(100, i) for i in range(4)],
        [_wave(100, i) for i in range(4)],
    )
    fitted = []

    def fake_fit(settings, subset, path, probe, progress):
        fitted.append((settings.eval_every, len(subset.utt_ids), Path(path).name))
        return _run(
            settings.kind,
            settings.steps,
            pairs=len(subset.utt_ids),
            hours=len(subset.utt_ids) / 100,
        )

    monkeypatch.setattr(attacker_runs, "fit", fake_fit)
    settings = attackers.AttackerSettings(kind="removal", steps=20, eval_every=10)
    main = _run("removal", 20, snrs=(10.0, 15.0))
    curve = attacker_runs.data_size_curve(
        settings, pairs, main, [0.5, 0.25], tmp_path, probe=None, progress=False
    )
    assert fitted == [(0, 1, "removal_pairs0.25.pt"), (0, 2, "removal_pairs0.5.pt")]
    assert [(c["fraction"], c["pairs"]) for c in curve] == [(0.25, 1), (0.5, 2), (1.0, 4)]
    assert (
        curve[-1]["snr_db"] == 15.0
        and curve[0]["kind"] == "removal"
        and curve[0]["pair_hours"] == 0.01
    )


def _model(path: Path, seed: int):
    torch.manual_seed(seed)
    return modelfile.load_model(
        modelfile.save_model(path, SSEDGenerator(CONFIG), RemovalModule(CONFIG), 0.05)
    )


def test_own_protection_snrs_and_cross_restore(tmp_path: Path):
    model = _model(tmp_path / "m.pt", 0)
    x = _wave(1600, 3)
    snr_adv, snr_rst = attacker_runs.own_protection_snrs(model, x)
    assert snr_adv == pytest.approx(snr_db(x, P.protect(model, x)))
    assert snr_rst == pytest.approx(snr_db(x, P.restore(model, P.protect(model, x))))
    src = {"u": save_audio(tmp_path / "u.wav", P.protect(model, x))}
    out = attacker_runs.cross_restore(model, src, tmp_path / "xrst", progress=False)
    np.testing.assert_allclose(
        load_audio(out["u"]), P.restore(model, load_audio(src["u"])), atol=1e-6
    )


def test_apply_networks_writes_one_condition_per_network(tmp_path: Path):
    (tmp_path / "attackers").mkdir()
    for kind in ("removal", "stft_mask"):
        (tmp_path / "attackers" / f"{kind}.pt").write_bytes(kind.encode())
    runs = {"removal": lambda x: 0.5 * x, "stft_mask": lambda x: -x}
    src = {"u": save_audio(tmp_path / "u.wav", _wave(800, 1))}
    out = attacker_runs.apply_networks(
        runs, src, tmp_path / "audio", tmp_path / "attackers", progress=False
    )
    assert list(out) == ["att_removal", "att_stft_mask"]
    np.testing.assert_allclose(
        load_audio(out["att_stft_mask"]["u"]), -load_audio(src["u"]), atol=1e-6
    )


def _trials() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "set": "s",
            "gender": "M",
            "enrol": ["a1", "b1", "b1", "a1"],
            "test": ["a2", "a2", "b2", "b2"],
            "target": [1, 0, 1, 0],
        }
    )


def test_score_attackers_on_the_same_trials():
    rec = {
        "a1": np.array([1.0, 0.0]),
        "a2": np.array([0.9, 0.1]),
        "b1": np.array([0.0, 1.0]),
        "b2": np.array([0.1, 0.9]),
    }
    swapped = {"a1": rec["a1"], "b1": rec["b1"], "a2": rec["b2"], "b2": rec["a2"]}
    conds = {
        "rec": rec,
        "adv": swapped,
        "rst": rec,
        "rst_refined": rec,
        "xrst": swapped,
        "oracle": swapped,
        "att_removal": rec,
    }
    embeddings = {(role, c): e for role in ("whitebox", "blackbox") for c, e in conds.items()}
    roles = {"whitebox": "w", "blackbox": "b"}
    conditions = attacker_runs.trial_conditions(["att_removal"])
    assert conditions == [
        "rec-rec",
        "rec-adv",
        "rec-rst",
        "rec-rst_refined",
        "rec-xrst",
        "rec-att_removal",
    ]
    table, adaptive, eer, eer_adaptive = attacker_runs.score_attackers(
        _trials(), _trials(), embeddings, conditions, roles, n_boot=5
    )
    assert eer[("whitebox", "rec-rec")] == 0.0 and eer[("blackbox", "rec-adv")] == 100.0
    assert eer[("whitebox", "adv-adv")] == eer_adaptive[("whitebox", "adv-adv")]
    assert set(adaptive["condition"]) == set(attacker_runs.ADAPTIVE_CONDITIONS) and len(table) == 12
    frame = attacker_runs.eer_frame(eer, [*conditions, "adv-adv", "oracle-adv"])
    assert (
        list(frame.columns) == ["EER white", "EER black"]
        and frame.loc["rec-att_removal", "EER white"] == 0.0
    )
    _, adaptive, eer, eer_adaptive = attacker_runs.score_attackers(
        _trials(), _trials().iloc[:0], embeddings, conditions, roles, n_boot=5
    )
    assert adaptive.empty and eer_adaptive == {} and math.isnan(eer[("blackbox", "oracle-adv")])


def test_setup_metrics_and_outcomes():
    pairs = attackers.PairSet(
        ["p", "q"], [np.zeros(16_000, np.float32)] * 2, [np.zeros(16_000, np.float32)] * 2
    )
    oracle = SimpleNamespace(calls=5, audio_seconds=7.0)
    m = attacker_runs.setup_metrics(
        _trials(),
        pd.DataFrame({"utt_id": ["a2", "b2"]}),
        pairs,
        pd.DataFrame({"speaker": ["x", "x", "y"]}),
        oracle,
        {"queried": 2, "deterministic": True},
        _trials().iloc[:3],
    )
    assert m == {
        "n_trials": 4, "n_test_utterances": 2, "pairs": 2, "pair_hours": pytest.approx(2 / 3600), "pair_speakers": 2,
        "oracle_calls": 5, "oracle_audio_seconds": 7.0, "oracle_enrol_queried": 2, "oracle_deterministic": True, "adaptive_trials": 3,
    }  # fmt: skip
    snr = {"adv": 30.0, "rst": 50.0, "xrst": 30.5, "att_removal": 35.0, "att_stft_mask": 55.0}
    out = attacker_runs.outcomes(snr, ["removal", "stft_mask"], ["oracle-adv"])
    assert list(out.values()) == [True, True, False, False, True]
    assert not attacker_runs.outcomes({**snr, "xrst": 32.0}, [], [])[next(iter(out))]
