"""``spkadv check``: similarity, verifier decision at the stored EER threshold, SNR, PESQ."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from spkadv.audio.io import resample
from spkadv.cli import check
from spkadv.cli import main as cli
from spkadv.core import modelfile
from spkadv.core import protect as P
from spkadv.core.models import RemovalModule, SSEDConfig, SSEDGenerator
from spkadv.evaluation import metrics, verification

SR = 16_000
CONFIG = SSEDConfig(width=4, stages=3, res_blocks=1, level_window=101)


def _speech_like(seconds: float = 2.0, seed: int = 0, f0: float = 140.0) -> np.ndarray:
    """A voiced-like signal (harmonics with a slow pitch wobble and an envelope)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 2 * t) ** 2
    return (0.1 * x * envelope + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return modelfile.save_model(
        tmp_path / "model.pt", SSEDGenerator(CONFIG), RemovalModule(CONFIG), 0.05, {"note": "kept"}
    )


def _scores() -> dict:
    rng = np.random.default_rng(0)
    return {
        ("synthetic", g, role, "rec-rec"): (rng.normal(0.7, 0.1, 40), rng.normal(0.2, 0.1, 400))
        for g in ("M", "F")
        for role in ("whitebox", "blackbox")
    }


ROLES = {"whitebox": "campplus", "blackbox": "ge2e"}


# --- thresholds --------------------------------------------------------------------------------


def test_eer_threshold_on_separable_scores() -> None:
    threshold, eer = metrics.eer_threshold([0.8, 0.9, 0.7], [0.1, 0.3, 0.2, 0.4])
    assert threshold == pytest.approx(0.55) and eer == 0.0  # midway between the two classes


def test_eer_threshold_balances_the_two_errors() -> None:
    rng = np.random.default_rng(1)
    tar, non = rng.normal(1.0, 1.0, 4000), rng.normal(-1.0, 1.0, 4000)
    threshold, eer = metrics.eer_threshold(tar, non)
    frr, far = np.mean(tar < threshold), np.mean(non >= threshold)
    assert threshold == pytest.approx(0.0, abs=0.1)
    assert frr == pytest.approx(far, abs=0.01) and eer == pytest.approx(100 * frr, abs=1.0)
    assert eer == metrics.eer(tar, non)  # the EER of Table 1, not another estimate


def test_eer_threshold_when_the_crossing_lies_above_every_score() -> None:
    # one target, tied with the highest non-target: the ROC crosses FRR = FAR above all scores
    threshold, eer = metrics.eer_threshold([0.9], [0.9, 0.1])
    assert threshold == 0.9 and eer == metrics.eer([0.9], [0.9, 0.1])


def _run_model(runs: Path) -> Path:
    """A model file where a run keeps it: runs/<profile>/20_joint_training/model.pt."""
    torch.manual_seed(0)
    return modelfile.save_model(
        runs / "smoke" / verification.MODEL_STAGE / "model.pt",
        SSEDGenerator(CONFIG),
        RemovalModule(CONFIG),
        0.05,
        {"note": "kept"},
    )


def _store(model_path: Path) -> dict:
    """Notebook 40's step: the rec-rec thresholds into its own stage folder."""
    fingerprint = modelfile.load_model(model_path).fingerprint
    stage = model_path.parent.parent / verification.STAGE
    return verification.store_thresholds(stage, fingerprint, _scores(), ROLES, "rec-rec", "smoke")


def test_thresholds_go_to_the_stage_folder_and_leave_the_model_file_alone(tmp_path: Path) -> None:
    model_path = _run_model(tmp_path / "runs")
    before = model_path.read_bytes()
    stored = _store(model_path)
    assert model_path.read_bytes() == before  # the model file is never rewritten
    path = tmp_path / "runs" / "smoke" / "40_table1_eer" / "verification.json"
    assert verification.run_thresholds_path(model_path) == path
    fingerprint, thresholds = verification.read_thresholds(path)
    assert fingerprint == modelfile.load_model(model_path).fingerprint and thresholds == stored
    assert stored["whitebox"]["encoder"] == "campplus" and stored["blackbox"]["encoder"] == "ge2e"
    assert 0.3 < stored["whitebox"]["threshold"] < 0.6 and stored["whitebox"]["n_target"] == 80
    with pytest.raises(ValueError, match="no rec-adv scores"):
        verification.eer_thresholds(_scores(), ROLES, "rec-adv")


def test_thresholds_are_found_in_order(tmp_path: Path) -> None:
    model_path = _run_model(tmp_path / "runs")
    model = modelfile.load_model(model_path)
    old_meta = {"verification": {"whitebox": {"encoder": "campplus", "threshold": 0.5}}}

    def find(meta=None, explicit=None):
        return verification.find_thresholds(model_path, model.fingerprint, meta or {}, explicit)

    thresholds, notes = find()
    assert thresholds == {} and "run notebook 40_table1_eer" in notes[-1]
    assert find(old_meta)[0] == old_meta["verification"]  # an older model file's metadata
    stored = _store(model_path)
    thresholds, notes = find(old_meta)
    assert thresholds == stored and "this model's run" in notes[0]  # the run's file comes first
    # a file written for another model is not used
    path = verification.run_thresholds_path(model_path)
    verification.write_thresholds(path, stored, "0" * 64)
    thresholds, notes = find(old_meta)
    assert thresholds == old_meta["verification"] and "belongs to another model" in notes[0]
    # an explicit file is used as asked, with a note when it was written for another model
    thresholds, notes = find(explicit=path)
    assert thresholds == stored and "written for another model" in notes[1]
    with pytest.raises(verification.VerificationFileError, match="no such thresholds file"):
        find(explicit=tmp_path / "missing.json")
    assert verification.run_thresholds_path(tmp_path / "elsewhere" / "model.pt") is None


# --- pairing and loading -------------------------------------------------------------------------


def _write(path: Path, x: np.ndarray, sr: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, sr)
    return path


def test_folders_are_matched_by_name(tmp_path: Path) -> None:
    x = _speech_like()
    _write(tmp_path / "orig" / "a.flac", x)
    _write(tmp_path / "orig" / "sub" / "b.wav", x)
    _write(tmp_path / "prot" / "a.wav", x)
    _write(tmp_path / "prot" / "sub" / "b.wav", x)
    pairs = check.pair_files(tmp_path / "orig", tmp_path / "prot")
    assert [(n, o.name, p.name) for n, o, p in pairs] == [
        ("a", "a.flac", "a.wav"),
        ("sub/b", "b.wav", "b.wav"),
    ]
    _write(tmp_path / "prot" / "c.wav", x)
    with pytest.raises(check.CheckError, match="1 protected file.*no original.*c"):
        check.pair_files(tmp_path / "orig", tmp_path / "prot")


def test_file_and_folder_do_not_pair(tmp_path: Path) -> None:
    f = _write(tmp_path / "a.wav", _speech_like())
    with pytest.raises(check.CheckError, match="is a file but protected .* is a folder"):
        check.pair_files(f, tmp_path)
    with pytest.raises(check.CheckError, match="does not exist"):
        check.pair_files(f, tmp_path / "missing.wav")


def test_mismatched_lengths_and_rates_say_what_to_do(tmp_path: Path) -> None:
    x = _speech_like()
    a = _write(tmp_path / "a.wav", x)
    short = _write(tmp_path / "short.wav", x[:-800])
    with pytest.raises(check.CheckError, match="lengths differ.*32000 samples.*31200"):
        check.load_pair(a, short)
    odd_rate = _write(tmp_path / "r.wav", x, 22_050)
    with pytest.raises(check.CheckError, match="sample rates differ.*22050 Hz.*writes 16000"):
        check.load_pair(a, odd_rate)


def test_original_at_another_rate_is_resampled_with_a_note(tmp_path: Path) -> None:
    x44 = resample(_speech_like(), SR, 44_100)
    orig = _write(tmp_path / "o.wav", x44, 44_100)
    prot = _write(tmp_path / "p.wav", resample(x44, 44_100, SR))
    x, y, notes = check.load_pair(orig, prot)
    assert len(x) == len(y) and "resampled from 44100 Hz" in notes[0]


# --- the command ----------------------------------------------------------------------------------


def test_identical_files_are_accepted_with_similarity_one(tmp_path: Path, capsys) -> None:
    model_path = _run_model(tmp_path / "runs")
    _store(model_path)
    a = _write(tmp_path / "a.wav", _speech_like())
    assert cli.main(["check", str(a), str(a), "--model", str(model_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rec = out["files"][0]
    for role in ("whitebox", "blackbox"):
        assert rec[f"{role}_cosine"] == pytest.approx(1.0, abs=1e-5)
        assert rec[f"{role}_decision"] == "accepted"
    assert rec["snr_db"] == "inf" and rec["pesq"] == pytest.approx(4.5, abs=0.01)
    assert cli.main(["check", str(a), str(a), "--model", str(model_path)]) == 0
    text = capsys.readouterr().out
    row = text.splitlines()[-1].split()
    assert row[:5] == ["a.wav", "1.000", "accepted", "1.000", "accepted"] and row[5] == "inf"
    assert "accept when cosine >=" in text and "this model's run" in text
    # the same thresholds from an explicit file, without the model
    path = verification.run_thresholds_path(model_path)
    assert cli.main(["check", str(a), str(a), "--thresholds", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["files"][0]["whitebox_decision"] == "accepted"


def test_protected_folder_gets_a_summary_line(tmp_path: Path, capsys) -> None:
    model_path = _run_model(tmp_path / "runs")
    _store(model_path)
    model = modelfile.load_model(model_path)
    for i in range(2):
        x = _speech_like(seed=i, f0=120.0 + 60 * i)
        _write(tmp_path / "orig" / f"u{i}.wav", x)
        _write(tmp_path / "prot" / f"u{i}.wav", P.protect(model, x))
    assert (
        cli.main(
            ["check", str(tmp_path / "orig"), str(tmp_path / "prot"), "--model", str(model_path)]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("summary: 2 file(s), 0 failed; whitebox campplus ")
    assert "mean SNR" in lines[-1] and sum(line.startswith("u") for line in lines) == 2
    head = next(line for line in lines if line.startswith("file"))
    column = head.index("verifier")  # columns are aligned under their headings
    for row in (line for line in lines if line.startswith("u")):
        assert row[column:].split()[0] in ("accepted", "rejected")


def test_model_without_thresholds_says_so_and_decides_nothing(
    model_path: Path, tmp_path: Path, capsys
) -> None:
    a = _write(tmp_path / "a.wav", _speech_like())
    assert cli.main(["check", str(a), str(a), "--model", str(model_path), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)["files"][0]
    assert rec["whitebox_decision"] is None and rec["whitebox_threshold"] is None
    assert cli.main(["check", str(a), str(a), "--model", str(model_path)]) == 0
    text = capsys.readouterr().out
    assert "no verification thresholds for this model" in text and "no threshold" in text


def test_usage_errors_exit_2(tmp_path: Path, capsys) -> None:
    a = _write(tmp_path / "a.wav", _speech_like())
    assert cli.main(["check", str(a), str(tmp_path)]) == 2
    assert "give two files or two folders" in capsys.readouterr().err
    assert cli.main(["check", str(a), str(a), "--model", str(tmp_path / "none.pt")]) == 2
    assert "model file not found" in capsys.readouterr().err
    assert cli.main(["check", str(a), str(a), "--thresholds", str(tmp_path / "none.json")]) == 2
    assert "no such thresholds file" in capsys.readouterr().err


def test_a_bad_pair_in_a_folder_fails_that_file_only(tmp_path: Path, capsys) -> None:
    x = _speech_like()
    _write(tmp_path / "o" / "good.wav", x)
    _write(tmp_path / "p" / "good.wav", x)
    _write(tmp_path / "o" / "bad.wav", x)
    _write(tmp_path / "p" / "bad.wav", x[:-1600])
    assert cli.main(["check", str(tmp_path / "o"), str(tmp_path / "p")]) == 1
    out = capsys.readouterr().out
    assert "bad   FAILED\n  lengths differ" in out and "summary: 2 file(s), 1 failed" in out
