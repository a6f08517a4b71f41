"""The speed / strength frontier (spkadv.studies.amortised, benchmarks.bench_frontier): a held-out
encoder scores the same waveforms, restoration is scored, PGD is timed and scored as a point, the
fast-protection targets are read from the table, and the benchmark refuses what it cannot run."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from spkadv.encoders.random_conv import RandomConvEncoder
from spkadv.studies import amortised, frontier, settings, study

from tests.test_predictor import _model, _predictor
from tests.test_studies_settings import tone_rows


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    """2 speakers per gender x 2 utterances of 0.6 s, with Table-1-style trials."""
    rows = tone_rows(tmp_path_factory.mktemp("frontier"), subset="eval", samples=9600)
    return settings.dev_set(rows, 2, 0.6, nontargets=30, seed=0)


def test_a_second_scorer_sees_the_same_waveforms_and_restoration_is_scored(small_set):
    evalset, trials = small_set
    model = _model()
    net = _predictor(model)
    white = model.encoder()
    rec = dict(zip(evalset.utt_ids, study.embed(white, evalset.waves), strict=True))
    other = RandomConvEncoder()
    rec_other = dict(zip(evalset.utt_ids, study.embed(other, evalset.waves), strict=True))
    row = amortised.measure(
        model, net, evalset, trials, rec, {"start": "predicted", "steps": 1},
        blackbox={"same": (white, rec), "other": (other, rec_other)},
    )  # fmt: skip
    # the white box scored again under another name gives its own figures: same waveforms
    for key in ("eer_recadv", "eer_recgn", "cos_x_adv", "cos_x_gn"):
        assert row[f"same_{key}"] == pytest.approx(row[key], abs=1e-6)
        assert f"other_{key}" in row
    assert 0 <= row["other_eer_recadv"] <= 100 and -1 <= row["other_cos_x_adv"] <= 1
    assert 0 <= row["eer_recrst"] <= 100 and row["snr_rst_db"] > row["snr_adv_db"]
    plain = amortised.measure(model, net, evalset, trials, rec, {"start": "predicted", "steps": 0})
    assert not any(k.startswith(("same_", "other_")) for k in plain)


def test_pgd_is_a_keyless_point_within_its_budget(small_set):
    evalset, trials = small_set
    model = _model()
    white = model.encoder()
    rec = dict(zip(evalset.utt_ids, study.embed(white, evalset.waves), strict=True))
    before = white.backwards
    row = frontier.pgd_point(white, evalset, trials, rec, snr_db=25.0, steps=2)
    assert white.backwards - before >= len(evalset.waves)  # PGD ran on the white box
    assert row["start"] == "pgd" and row["steps"] == 2 and row["protect_cost"] > 0
    assert row["snr_adv_db"] >= 25.0 - 0.05
    assert math.isnan(row["snr_rst_db"]) and math.isnan(row["eer_recrst"])


def _table(points: dict[str, tuple[str, int, float, float, float, float]]) -> pd.DataFrame:
    cols = ["start", "steps", "protect_cost", "eer_recadv", "eer_recrst", "snr_rst_db"]
    table = pd.DataFrame.from_dict(points, orient="index", columns=cols)
    return table.assign(to_radius=False)


def test_the_fast_targets_are_read_at_the_strongest_keyed_point_under_the_cost():
    recrec = 2.0  # today's rise: 12 - 2 = 10 points
    table = _table(
        {
            "today": ("zero", 10, 1.2, 12.0, 2.1, 58.0),
            "k0": ("predicted", 0, 0.03, 8.0, 2.1, 60.0),
            "k1": ("predicted", 1, 0.14, 11.5, 2.4, 59.0),
            "k5": ("predicted", 5, 0.6, 12.5, 2.1, 58.0),
            "pgd": ("pgd", 1, 0.05, 40.0, float("nan"), float("nan")),  # no key: never counted
        }
    )
    t = frontier.speed_targets(table, "today", recrec)
    assert t["fast_point"] == "k1"
    assert t["eer_rise_fraction_fast"]["value"] == pytest.approx(0.95)
    assert t["eer_rise_fraction_fast"]["met"] and t["protect_rtf_fast"]["met"]
    assert t["eer_recrst_diff_points_fast"]["value"] == pytest.approx(0.3)
    assert t["eer_recrst_diff_points_fast"]["met"] and t["snr_rst_db_fast"]["met"]
    # restoration drifting or a weaker fast point: not met
    table.loc["k1", ["eer_recrst", "eer_recadv"]] = [3.0, 10.0]
    t = frontier.speed_targets(table, "today", recrec)
    assert not t["eer_recrst_diff_points_fast"]["met"] and not t["eer_rise_fraction_fast"]["met"]
    # nothing keyed under the cost
    slow = table.drop(index=["k0", "k1"])
    t = frontier.speed_targets(slow, "today", recrec)
    assert t["fast_point"] is None and not t["protect_rtf_fast"]["met"]
    assert math.isnan(t["eer_rise_fraction_fast"]["value"])
    assert not t["eer_rise_fraction_fast"]["met"]


def test_the_frontier_figure_has_a_panel_per_measure():
    table = _table(
        {
            "today": ("zero", 10, 1.2, 12.0, 2.1, 58.0),
            "k0": ("predicted", 0, 0.03, 8.0, 2.1, 60.0),
            "pgd": ("pgd", 1, 0.05, 40.0, float("nan"), float("nan")),
        }
    ).assign(ge2e_eer_recadv=[4.0, 3.0, 3.5])
    fig = frontier.speed_figure(table, "today", {"white": 2.0, "ge2e": 2.5}, "ge2e", "t")
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert len(labels) == 3 and "ge2e" in labels[1] and "SNR(rst)" in labels[2]
    fig = frontier.speed_figure(table, "today", {"white": 2.0}, None, "t")
    assert len(fig.axes) == 2


def test_the_benchmark_says_what_is_missing(tmp_path: Path, monkeypatch, capsys):
    from benchmarks import bench_frontier

    monkeypatch.setenv("SPKADV_RUNS", str(tmp_path))
    assert bench_frontier.main(["--profile", "default"]) == 2
    assert "no trained default model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_frontier.main(["--per-speaker", "1"])
    with pytest.raises(SystemExit):
        bench_frontier.main(["--refine-steps", "0,x"])
