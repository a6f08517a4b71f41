"""Attackers by knowledge: a black-box oracle, disjoint data, trainable removal, key separation."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from spkadv.cli import main as cli
from spkadv.core import modelfile
from spkadv.core import protect as P
from spkadv.core.models import RemovalModule, SSEDConfig, SSEDGenerator
from spkadv.evaluation import attacker_tables, attackers
from spkadv.evaluation import oracle as oracles

CONFIG = SSEDConfig(width=4, stages=2, res_blocks=1, level_window=101)


def _model_file(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    return modelfile.save_model(path, SSEDGenerator(CONFIG), RemovalModule(CONFIG), 0.05)


def _speech(seconds: float, seed: int) -> np.ndarray:
    """A voiced-like test signal: a few harmonics with a slow amplitude envelope, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16_000)) / 16_000
    f0 = rng.uniform(90, 220)
    x = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6)) / k for k in range(1, 6))
    x = x * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t) ** 2) + 0.01 * rng.standard_normal(t.size)
    return (0.1 * x).astype(np.float32)


class StrictOracle:
    """Only ``__call__`` works; touching anything else of the oracle fails the test."""

    def __init__(self, fn):
        object.__setattr__(self, "_fn", fn)

    def __call__(self, x):
        return object.__getattribute__(self, "_fn")(x)

    def __getattribute__(self, name):
        raise AssertionError(f"the attacker touched oracle.{name}: only oracle(x) is allowed")


# --- the oracle is a black box --------------------------------------------------------------


def test_oracle_protects_like_the_tool_and_exposes_no_weights(tmp_path: Path) -> None:
    path = _model_file(tmp_path / "model.pt", 0)
    oracle = oracles.ProtectionOracle(path, device="cpu")
    x = _speech(0.6, 0)
    np.testing.assert_array_equal(oracle(x), P.protect(modelfile.load_model(path), x))
    assert oracle.calls == 1 and oracle.audio_seconds == pytest.approx(0.6)
    reachable = [getattr(oracle, name) for name in dir(oracle) if not name.startswith("__")]
    leaks = (torch.nn.Module, torch.Tensor, modelfile.ProtectionModel, dict)
    assert not [v for v in reachable if isinstance(v, leaks)], reachable
    with pytest.raises(AttributeError):
        oracle.__dict__  # noqa: B018  (slots: no instance dictionary to stash a model in)
    with pytest.raises(AttributeError):
        oracle.model = None
    with pytest.raises(TypeError, match="black box"):
        pickle.dumps(oracle)
    with pytest.raises(TypeError, match="black box"):
        copy.deepcopy(oracle)


def test_oracle_map_in_worker_processes_answers_in_order(tmp_path: Path) -> None:
    path = _model_file(tmp_path / "model.pt", 0)
    waves = [_speech(0.2 + 0.05 * i, i) for i in range(4)]
    one = oracles.ProtectionOracle(path, device="cpu")
    many = oracles.ProtectionOracle(path, device="cpu", workers=2)
    expected = [one(x) for x in waves]
    answers = many.map(waves)
    assert [a.shape for a in answers] == [x.shape for x in waves]
    assert max(float(np.abs(a - e).max()) for a, e in zip(answers, expected, strict=True)) <= 1e-5
    assert many.calls == 4 and many.audio_seconds == pytest.approx(one.audio_seconds)
    pairs = attackers.make_pairs(many, waves, list("abcd"), progress=False)
    assert many.calls == 8 and pairs.utt_ids == list("abcd")


def test_attacker_code_path_uses_only_the_oracle_call() -> None:
    gain = 1.1  # a perturbation the enhancer can learn to undo: x' = 1.1 x
    oracle = StrictOracle(lambda x: gain * x)
    waves = [_speech(1.0, s) for s in range(4)]
    pairs = attackers.make_pairs(oracle, waves, [f"a{i}" for i in range(4)], progress=False)
    assert pairs.hours == pytest.approx(4 / 3600)
    settings = attackers.AttackerSettings(
        kind="stft_mask", hidden=16, n_fft=128, steps=40, batch_size=2, crop_seconds=0.25, lr=3e-3
    )
    run = attackers.fit(settings, pairs, progress=False, device="cpu")
    x, xp = pairs.clean[0], pairs.protected[0]
    before = float(attackers.residual_db(*(torch.from_numpy(a)[None] for a in (xp, x, xp))))
    after = float(attackers.residual_db(*(torch.from_numpy(a)[None] for a in (run(xp), x, xp))))
    assert before == pytest.approx(0.0, abs=1e-6)
    assert after < -3.0, after  # the attacker removed more than half the perturbation's energy


def test_removal_attacker_starts_from_the_protected_audio_and_learns(tmp_path: Path) -> None:
    oracle = StrictOracle(lambda x: x + 0.02 * np.sign(x))
    waves = [_speech(1.0, s) for s in range(3)]
    pairs = attackers.make_pairs(oracle, waves, ["a", "b", "c"], progress=False)
    settings = attackers.AttackerSettings(
        kind="removal", model=CONFIG.to_dict(), eps=0.05, steps=30, batch_size=2,
        crop_seconds=0.25, lr=3e-3, eval_every=10,
    )  # fmt: skip
    x, xp = pairs.clean[0], pairs.protected[0]

    def probe(restore):
        return {"residual_db": float(((restore(xp) - x) ** 2).sum() / ((xp - x) ** 2).sum())}

    run = attackers.fit(settings, pairs, tmp_path / "att.pt", probe, progress=False, device="cpu")
    assert [h["step"] for h in run.history] == [0, 10, 20, 30]
    assert run.history[0]["residual_db"] == pytest.approx(1.0)  # x̂ = x' at step 0
    assert run.history[-1]["residual_db"] < 0.9
    assert run.minutes > 0 and run.pairs == 3
    again = attackers.fit(settings, pairs, tmp_path / "att.pt", progress=False, device="cpu")
    assert again.loaded and again.history == run.history
    np.testing.assert_allclose(again(xp), run(xp), atol=1e-6)
    other = attackers.fit(
        settings.__class__(**{**settings.to_dict(), "steps": 5}), pairs, tmp_path / "att.pt",
        progress=False, device="cpu",
    )  # fmt: skip
    assert not other.loaded  # other settings: trained again, not loaded


def test_oracle_must_return_a_wave_of_the_same_length() -> None:
    with pytest.raises(ValueError, match="same length"):
        attackers.make_pairs(lambda x: x[:-1], [_speech(0.2, 0)], ["a"], progress=False)


def test_enhancer_is_the_identity_at_initialisation() -> None:
    x = _speech(0.7, 3)
    model = attackers.AttackerSettings(kind="stft_mask", hidden=8, n_fft=256).build()
    np.testing.assert_allclose(attackers.apply(model, x), x, atol=1e-5)
    short = x[:100]  # shorter than one FFT frame
    assert attackers.apply(model, short).shape == short.shape


# --- data disjointness ----------------------------------------------------------------------


def _manifest(shared_speaker: bool) -> pd.DataFrame:
    rows = [("t1", "s1", "train"), ("t2", "s2", "train"), ("e1", "s3", "eval")]
    if shared_speaker:
        rows.append(("e2", "s1", "eval"))
    return pd.DataFrame(rows, columns=["utt_id", "speaker", "subset"])


def test_attacker_speech_is_disjoint_from_the_eval_speakers() -> None:
    rows = attackers.attacker_corpus(_manifest(False))
    assert list(rows["utt_id"]) == ["t1", "t2"]
    assert list(attackers.attacker_corpus(_manifest(False), limit=1)["utt_id"]) == ["t1"]
    with pytest.raises(attackers.AttackerDataError, match="s1"):
        attackers.attacker_corpus(_manifest(True))
    only_eval = _manifest(False)[lambda d: d["subset"] == "eval"]
    with pytest.raises(attackers.AttackerDataError, match="no train rows"):
        attackers.attacker_corpus(only_eval)
    same_utt = pd.DataFrame([("u", "a")], columns=["utt_id", "speaker"])
    with pytest.raises(attackers.AttackerDataError, match="shared utterance"):
        attackers.check_disjoint(same_utt, same_utt.assign(speaker="b"))


# --- the adaptive verifier's enrolments -----------------------------------------------------


def _write(path: Path, x: np.ndarray) -> Path:
    sf.write(path, x, 16_000, subtype="FLOAT")
    return path


def test_enrolment_queries_trust_only_a_deterministic_oracle(tmp_path: Path) -> None:
    clean = {f"u{i}": _write(tmp_path / f"c{i}.wav", _speech(0.3, i)) for i in range(5)}
    published = {u: _write(tmp_path / f"p{u}.wav", 0.5 * sf.read(p)[0]) for u, p in clean.items()}
    calls = []

    def deterministic(x):
        calls.append(1)
        return 0.5 * x

    paths, info = oracles.query_enrolments(
        deterministic, clean, published, tmp_path / "d", check=2, progress=False
    )
    assert info == {"queried": 2, "deterministic": True} and len(calls) == 2
    assert sorted(paths) == sorted(clean) and paths["u4"] == published["u4"]
    rng = np.random.default_rng(0)
    paths, info = oracles.query_enrolments(
        lambda x: 0.5 * x + 1e-3 * rng.standard_normal(x.size).astype(np.float32),
        clean, published, tmp_path / "r", check=2, progress=False,
    )  # fmt: skip
    assert info == {"queried": 5, "deterministic": False}
    assert all(p.parent == tmp_path / "r" for p in paths.values())


# --- key separation -------------------------------------------------------------------------


def test_cli_refuses_another_models_file_while_the_library_cross_restores(
    tmp_path: Path, capsys
) -> None:
    own, other = _model_file(tmp_path / "own.pt", 0), _model_file(tmp_path / "other.pt", 1)
    assert modelfile.load_model(own).fingerprint != modelfile.load_model(other).fingerprint
    src = _write(tmp_path / "x.wav", _speech(0.5, 7))
    adv, out = tmp_path / "adv.wav", tmp_path / "rst.wav"
    assert cli.main(["protect", str(src), "-o", str(adv), "--model", str(own), "--quiet"]) == 0
    capsys.readouterr()
    code = cli.main(["restore", str(adv), "-o", str(out), "--model", str(other), "--quiet"])
    assert code == 1 and "protected by another model" in capsys.readouterr().err
    assert not out.exists()
    x_adv = sf.read(adv, dtype="float32")[0]
    cross = P.restore(
        modelfile.load_model(other), x_adv
    )  # the library does not check: figures of nb 60
    assert cross.shape == x_adv.shape and not np.allclose(
        cross, P.restore(modelfile.load_model(own), x_adv)
    )


def test_second_model_needs_another_seed(tmp_path: Path) -> None:
    from spkadv.core.train import TrainConfig

    with pytest.raises(ValueError, match="another seed"):
        attackers.train_other_model(
            TrainConfig(model=CONFIG, seed=3), 3, 1, 0, [_speech(0.5, 0)], None, tmp_path
        )


def test_second_model_trains_with_the_recipe_and_another_seed(tmp_path: Path) -> None:
    from spkadv.core.train import TrainConfig
    from spkadv.encoders.random_conv import RandomConvEncoder

    base = TrainConfig(model=CONFIG, seed=0, steps=50, batch_size=2, crop_seconds=0.25)
    path, minutes = attackers.train_other_model(
        base, 1, 2, 1, [_speech(0.5, s) for s in range(2)], RandomConvEncoder(), tmp_path,
        device=torch.device("cpu"), progress=False,
    )  # fmt: skip
    model = modelfile.load_model(path)
    assert model.meta["seed"] == 1 and model.meta["steps"] == 3 and minutes > 0
    assert model.config == CONFIG and model.removal is not None


# --- the table ------------------------------------------------------------------------------


def test_undone_share_and_table() -> None:
    assert attacker_tables.undone_percent(2.0, 20.0, 2.0) == pytest.approx(100.0)
    assert attacker_tables.undone_percent(20.0, 20.0, 2.0) == pytest.approx(0.0)
    assert attacker_tables.undone_percent(11.0, 20.0, 2.0) == pytest.approx(50.0)
    assert np.isnan(attacker_tables.undone_percent(5.0, 2.0, 2.0))  # no protection to undo
    assert attacker_tables.paper_mean_eer("rec-adv", "whitebox") == pytest.approx(
        (18.62 + 9.27 + 15.01 + 23.16) / 4
    )
    md = attacker_tables.knowledge_markdown(
        [{"knows": "F_R", "attacker": "key holder", "trial": "rec-rst", "eer_white": 1.0,
          "eer_black": float("nan"), "snr_db": None, "undone_white": 99.0}]
    )  # fmt: skip
    assert md.count("\n") == 3 and "| F_R | key holder | rec-rst | 1.00 | – | – | 99 |" in md


def _eers(**by_condition: float) -> dict[tuple[str, str], float]:
    """The same EER for both encoder roles, e.g. ``_eers(**{"rec-adv": 20.0})``."""
    return {(role, c): v for c, v in by_condition.items() for role in ("whitebox", "blackbox")}


def test_best_purifier_rows_and_metrics_of_the_attackers_table() -> None:
    m40 = {
        "eer_whitebox_rec_an": 9.0,
        "eer_blackbox_rec_an": 8.0,
        "eer_whitebox_rec_qt": 4.0,
        "eer_blackbox_rec_qt": 5.0,
    }  # ms not scored
    purifier = attacker_tables.Purifier.best({"snr_an_db": 20.0, "snr_qt_db": 25.0}, m40)
    assert (purifier.name, purifier.candidates, purifier.eer_white, purifier.snr_db) == (
        "qt",
        ("an", "qt"),
        4.0,
        25.0,
    )
    with pytest.raises(ValueError, match="none of the purifiers"):
        attacker_tables.Purifier.best({}, {})
    conds = {
        "rec-rec": 2.0,
        "rec-adv": 20.0,
        "adv-adv": 12.0,
        "oracle-adv": 11.0,
        "rec-att_removal": 11.0,
        "rec-xrst": 19.0,
        "rec-rst_refined": 2.0,
        "rec-rst": 2.5,
    }
    eer, adaptive = (
        _eers(**conds),
        _eers(**{"rec-rec": 2.0, "rec-adv": 22.0, "adv-adv": 12.0, "oracle-adv": 11.0}),
    )
    snr = {"adv": 30.0, "rst": 50.0, "rst_refined": 60.0, "xrst": 29.0, "att_removal": 33.0}
    rows = attacker_tables.knowledge_rows(eer, adaptive, snr, purifier, ["removal"], 0.5, 7)
    assert [r["trial"] for r in rows] == ["rec-rec", "rec-adv", "rec-qt", "adv-adv", "oracle-adv",
                                          "rec-att_removal", "rec-xrst", "rec-rst_refined", "rec-rst"]  # fmt: skip
    by_trial = {r["trial"]: r for r in rows}
    assert by_trial["rec-att_removal"]["undone_white"] == pytest.approx(50.0)
    assert by_trial["rec-att_removal"]["knows"] == "oracle + 30 min of pairs"
    assert by_trial["adv-adv"]["undone_white"] == pytest.approx(
        50.0
    )  # against the adaptive trials' EERs
    assert by_trial["rec-qt"]["eer_white"] == 4.0 and by_trial["rec-qt"]["paper"] is None
    assert (
        by_trial["rec-rst"]["paper"].endswith(", 50.3 dB")
        and "seed 7" in by_trial["rec-xrst"]["attacker"]
    )
    assert "| oracle | adaptive verifier" in attacker_tables.knowledge_markdown(rows)

    class Run:  # what attackers.fit returns, as far as the metrics read it
        minutes, pairs, pair_hours = 2.0, 10, 0.5
        settings = attackers.AttackerSettings(kind="removal", model={}, eps=0.1, steps=20)
        history = [{"snr_db": 30.0}, {"snr_db": 34.0}]

    curve = [{"kind": "removal", "fraction": 0.5, "pair_hours": 0.25, "snr_db": 31.0},
             {"kind": "removal", "fraction": 1.0, "pair_hours": 0.5, "snr_db": 34.0}]  # fmt: skip
    m = attacker_tables.attacker_metrics(eer, adaptive, snr, purifier, {"removal": Run()}, curve,
                                         {"train_minutes": 1.0, "steps": 3})  # fmt: skip
    assert (
        m["purifier_best"] == "qt" and m["keyholder_snr_db"] == 50.0 and m["other_model_steps"] == 3
    )
    assert m["attacker_removal_undone_white_pct"] == pytest.approx(50.0)
    assert m["attacker_removal_curve_snr_gain_db_per_minute"] == pytest.approx(2.0)
    assert m["curve_removal_pairs0.5_snr_db"] == 31.0
    assert m["curve_removal_snr_gain_db_per_pair_hour"] == pytest.approx(12.0)
    assert m["adaptive_recadv_eer_white"] == 22.0
    assert m["adaptive_beats_protection"] == "adv-adv, oracle-adv"
