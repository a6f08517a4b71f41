"""Table assembly: conditions, subsets, EER rows beside the paper's numbers, Table 2 rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from spkadv.audio.io import save_audio
from spkadv.base import config
from spkadv.evaluation import tables as evaluation


def test_paper_numbers_and_fallback_for_sets_not_in_the_paper():
    assert evaluation.paper_eer("test-clean", "M", "whitebox", "rec-adv") == (18.62, "test-clean")
    assert evaluation.paper_eer("dev-clean", "F", "blackbox", "rec-an") == (6.60, "dev-clean")
    value, note = evaluation.paper_eer("synthetic", "F", "whitebox", "rec-rec")
    assert value == 1.64 and "not in the paper" in note
    value, note = evaluation.paper_eer("test-clean", "F", "whitebox", "rec-qt")
    assert math.isnan(value) and note == ""
    assert evaluation.PAPER_TABLE2[("SNR", "an")] == 24.15
    assert evaluation.PAPER_TABLE2[("PESQ", "rec")] == 4.50


def test_condition_sides():
    assert evaluation.condition_sides("rec-rst_refined") == ("rec", "rst_refined")
    with pytest.raises(ValueError, match="enrol-test"):
        evaluation.condition_sides("adv")


def test_subset_and_trial_restriction():
    rows = pd.DataFrame(
        {
            "utt_id": [f"s{s}u{u}" for s in range(3) for u in range(5)],
            "speaker": [f"s{s}" for s in range(3) for _ in range(5)],
        }
    )
    sub = evaluation.select_test_utterances(rows.iloc[::-1], 2)
    assert list(sub["utt_id"]) == [
        "s0u3",
        "s0u4",
        "s1u3",
        "s1u4",
        "s2u3",
        "s2u4",
    ]  # first 2 in file order
    assert len(evaluation.select_test_utterances(rows, 0)) == 15
    trials = pd.DataFrame({"enrol": ["a", "b", "c"], "test": ["x", "y", "x"], "target": [1, 0, 0]})
    assert list(evaluation.restrict_trials(trials, ["x"])["enrol"]) == ["a", "c"]


def test_condition_paths_names_the_missing_stage(tmp_runs):
    rows = pd.DataFrame({"utt_id": ["u1", "u2"], "path": ["/a/u1.flac", "/a/u2.flac"]})
    assert evaluation.condition_paths("smoke", rows, "rec")["u2"].name == "u2.flac"
    save_audio(config.condition_dir("smoke", "adv") / "u1.wav", np.zeros(100, np.float32))
    with pytest.raises(FileNotFoundError, match="1 of 2 .* 20_joint_training"):
        evaluation.condition_paths("smoke", rows, "adv")
    ok, skipped = evaluation.split_available("smoke", rows, ["rec", "adv"])
    assert ok == ["rec"] and "adv" in skipped


def test_verification_rows_on_constructed_embeddings():
    # Two speakers per gender; "adv" swaps the test embedding to the other speaker's direction.
    trials = pd.DataFrame(
        {
            "set": "synthetic",
            "gender": ["M", "M", "M", "M"],
            "enrol": ["a1", "b1", "b1", "a1"],
            "test": ["a2", "a2", "b2", "b2"],
            "target": [1, 0, 1, 0],
        }
    )
    e = {"a1": [1.0, 0.0], "a2": [0.9, 0.1], "b1": [0.0, 1.0], "b2": [0.1, 0.9]}
    rec = {k: np.array(v) for k, v in e.items()}
    adv = {"a2": rec["b2"], "b2": rec["a2"], "a1": rec["a1"], "b1": rec["b1"]}
    emb = {("whitebox", "rec"): rec, ("whitebox", "adv"): adv}
    table, scores = evaluation.verification_rows(
        trials, emb, ["rec-rec", "rec-adv"], {"whitebox": "toy"}, n_boot=20
    )
    by_cond = table.set_index("condition")
    assert by_cond.loc["rec-rec", "eer"] == 0.0
    assert by_cond.loc["rec-adv", "eer"] == 100.0
    assert by_cond.loc["rec-adv", "paper_eer"] == 18.62
    assert "not in the paper" in by_cond.loc["rec-adv", "paper_set"]
    assert scores[("synthetic", "M", "whitebox", "rec-rec")][0].size == 2
    md = evaluation.table1_markdown(table)
    assert "rec-adv" in md and "paper 18.62" in md


def test_table2_rows_means_and_population_std():
    quality = pd.DataFrame(
        {
            "condition": ["rec", "rec", "adv", "adv"],
            "utt_id": ["u1", "u2", "u1", "u2"],
            "pesq_nb_raw": [4.5, 4.5, 3.0, 4.0],
            "pesq_wb": [4.64, 4.64, 2.0, 3.0],
            "snr_db": [math.inf, math.inf, 30.0, 34.0],
            "pitch_praat": [1.0, 1.0, 0.9, 0.7],
        }
    )
    table = evaluation.table2_rows(quality, {"rec": 4.0, "adv": 8.0}, ["praat"])
    get = table.set_index(["metric", "condition"])
    assert get.loc[("PESQ", "adv"), "value"] == pytest.approx(3.5)
    assert get.loc[("PESQ", "adv"), "paper_value"] == 3.67
    assert get.loc[("SNR", "rec"), "value"] == math.inf and math.isnan(
        get.loc[("SNR", "rec"), "diff"]
    )
    assert get.loc[("SNR", "adv"), "value"] == pytest.approx(32.0)
    assert get.loc[("P-Std", "adv"), "value"] == pytest.approx(0.1)  # population std of .9, .7
    assert get.loc[("WER", "adv"), "diff"] == pytest.approx(8.0 - 6.94)
    assert "∞" in evaluation.table2_markdown(table)


def test_frame_markdown():
    text = evaluation.frame_markdown(pd.DataFrame({"a": ["x"], "b": [math.inf], "c": [1.234]}))
    assert text.splitlines()[2] == "| x | ∞ | 1.23 |"


def test_quality_scores_are_cached_by_content(tmp_path, monkeypatch):
    from .test_metrics import speech_like, with_noise

    x = speech_like(2.0)
    ref = {"u1": save_audio(tmp_path / "rec" / "u1.wav", x)}
    adv = {"u1": save_audio(tmp_path / "adv" / "u1.wav", with_noise(x, 30.0))}
    cache = tmp_path / "quality.csv"
    q = evaluation.quality_scores(ref, {"rec": ref, "adv": adv}, cache, ["praat"], progress=False)
    got = q.set_index("condition")
    assert got.loc["rec", "snr_db"] == math.inf and got.loc["rec", "pesq_nb_raw"] == pytest.approx(
        4.5, abs=1e-3
    )
    assert got.loc["adv", "snr_db"] == pytest.approx(30.0, abs=0.1) and got.loc[
        "rec", "pitch_praat"
    ] == pytest.approx(1.0)
    # A second run reads the cache: make any recomputation fail loudly.
    monkeypatch.setattr(evaluation.metrics, "pesq_nb_raw", lambda *a: 1 / 0)
    again = evaluation.quality_scores(
        ref, {"rec": ref, "adv": adv}, cache, ["praat"], progress=False
    )
    pd.testing.assert_frame_equal(again, q)


def test_existing_paths_lists_only_written_audio(tmp_runs):
    rows = pd.DataFrame({"utt_id": ["u1", "u2"], "path": ["/a/u1.flac", "/a/u2.flac"]})
    save_audio(config.condition_dir("smoke", "adv") / "u2.wav", np.zeros(100, np.float32))
    assert list(evaluation.existing_paths("smoke", rows, "adv")) == ["u2"]
    assert list(evaluation.existing_paths("smoke", rows, "rec")) == ["u1", "u2"]


def test_embed_conditions_uses_the_cache_folder_it_is_given(tmp_path, monkeypatch):
    import torch
    from spkadv.encoders.frozen import SpeakerEncoder

    class Energy(SpeakerEncoder):  # a stand-in encoder: log energy and length
        name, dim, fingerprint = "energy", 2, "0" * 64

        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(1))

        def embed(self, waves):
            return torch.stack(
                [waves.pow(2).mean(1).log(), torch.full_like(waves[:, 0], waves.shape[1])], 1
            )

    rng = np.random.default_rng(0)
    paths = {c: {f"u{i}": save_audio(tmp_path / f"{c}{i}.wav", rng.standard_normal(800 + i).astype(np.float32) * 0.1)
                 for i in range(3)} for c in ("rec", "adv")}  # fmt: skip
    monkeypatch.setattr(config, "cache_dir", lambda profile=None: tmp_path / "wrong")
    out = evaluation.embed_conditions(Energy(), paths, progress=False, cache_dir=tmp_path / "given")
    assert sorted(out) == ["adv", "rec"] and out["rec"]["u2"][1] == 802
    assert len(list((tmp_path / "given" / "embeddings").glob("energy-*/*.npy"))) == 6
    assert not (tmp_path / "wrong").exists()
