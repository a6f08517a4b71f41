"""The training-settings study: arms of the profile, the table over seeds, the choice rule, the
conclusion, and a grid that resumes from its cached runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from spkadv.base import config
from spkadv.studies import settings, study
from spkadv.studies import training_settings as ts

RULE = ts.ArmRule(min_snr_adv_db=30.0, min_snr_rst_db=45.0)
ARMS = {"beta 0.1": {"LOSS_BETA": 0.1}, "loud": {"EPS": 0.3}, "weak": {"LEARNING_RATE": 1e-5}}


def _runs(per_arm: dict[str, list[tuple[float, float, float, float]]]) -> pd.DataFrame:
    """arm -> per seed (rec-adv EER, cos(x, x'), SNR(adv), SNR(rst)); cos(x, gn) 0.9."""
    rows = []
    for arm, seeds in per_arm.items():
        for seed, (eer, cos, snr_adv, snr_rst) in enumerate(seeds):
            rows.append({
                "arm": arm, "seed": seed, "eer_recadv": eer, "eer_recgn": 1.0, "cos_x_adv": cos,
                "cos_x_gn": 0.9, "snr_adv_db": snr_adv, "snr_rst_db": snr_rst,
                "collapsed": bool(snr_rst < snr_adv + 3 or cos >= 0.9),
            })  # fmt: skip
    return pd.DataFrame(rows)


RUNS = {
    "current": [(5.0, 0.7, 31.0, 55.0), (7.0, 0.6, 31.0, 56.0)],  # mean 6.0, spread 2.0
    "beta 0.1": [(6.0, 0.65, 32.0, 55.0), (8.0, 0.6, 32.0, 55.0)],  # mean 7.0: the best in the rule
    "loud": [(12.0, 0.4, 31.0, 55.0), (12.0, 0.4, 28.0, 55.0)],  # one seed under 30 dB
    "weak": [(9.0, 0.95, 31.0, 55.0), (9.0, 0.5, 31.0, 55.0)],  # one seed collapsed (cos >= gn)
}


def test_arms_keep_the_profile_first_and_change_only_the_named_keys():
    params = config.load_profile("smoke")
    grid = ts.arms(params, {"beta 0.1": {"LOSS_BETA": params["LOSS_BETA"] * 2}})
    assert list(grid) == ["current", "beta 0.1"]
    assert grid["current"] == params
    changed = {k for k in params if grid["beta 0.1"][k] != params[k]}
    assert changed == {"LOSS_BETA"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"current": {"LOSS_BETA": 9.0}}, "rename the arm"),
        ({"empty": {}}, "changes no key"),
        ({"typo": {"LOSS_BETTA": 0.1}}, "LOSS_BETTA"),
        ({"same": {"SEED": None}}, None),  # replaced below by the profile's own value
    ],
)
def test_bad_arms_raise_a_clear_error(overrides, message):
    params = config.load_profile("smoke")
    if "same" in overrides:
        overrides, message = {"same": {"LOSS_BETA": params["LOSS_BETA"]}}, "equals the profile"
    with pytest.raises(ValueError, match=message):
        ts.arms(params, overrides)


def test_the_arm_table_averages_over_seeds_and_applies_the_rule():
    table = ts.arm_table(_runs(RUNS), RULE)
    assert list(table.index) == list(RUNS)
    assert table.loc["current", "eer_recadv"] == pytest.approx(6.0)
    assert table.loc["current", "eer_recadv_spread"] == pytest.approx(2.0)
    assert table.loc["loud", "snr_adv_db_min"] == pytest.approx(28.0)
    assert table["meets_rule"].to_dict() == {"current": True, "beta 0.1": True, "loud": False, "weak": False}  # fmt: skip
    assert table.loc["weak", "collapsed_runs"] == 1 and table.loc["weak", "runs"] == 2


def test_choose_takes_the_highest_mean_rec_adv_within_the_rule_ties_by_cos():
    steady = {**RUNS, "current": [(6.0, 0.7, 31.0, 55.0)] * 2}  # no spread over seeds
    table = ts.arm_table(_runs(steady), RULE)
    assert ts.choose(table, RULE) == "beta 0.1"
    tie = ts.arm_table(_runs({**RUNS, "current": [(6.0, 0.5, 31.0, 55.0), (8.0, 0.5, 31.0, 55.0)]}), RULE)  # fmt: skip
    assert ts.choose(tie, RULE) == "current"  # same mean rec-adv, lower cos(x, x')
    looser = ts.ArmRule(min_snr_adv_db=20.0, min_snr_rst_db=45.0)
    assert ts.choose(ts.arm_table(_runs(steady), looser), looser) == "loud"
    none = ts.arm_table(_runs({"current": [(5.0, 0.7, 25.0, 55.0)]}), RULE)
    assert ts.choose(none, RULE) is None


def test_a_changed_arm_must_beat_the_profile_by_the_margin_and_the_seed_spread():
    table = ts.arm_table(_runs(RUNS), RULE)  # 'beta 0.1' +1.0 over the profile, whose spread is 2.0
    assert (
        ts.choose(table, ts.ArmRule(30.0, 45.0, margin_points=0.5)) == "current"
    )  # within the spread
    steady = ts.arm_table(
        _runs({**RUNS, "current": [(6.0, 0.7, 31.0, 55.0)] * 2}), RULE
    )  # spread 0
    assert ts.choose(steady, ts.ArmRule(30.0, 45.0, margin_points=0.5)) == "beta 0.1"
    assert (
        ts.choose(steady, ts.ArmRule(30.0, 45.0, margin_points=1.0)) == "current"
    )  # not more than
    text = ts.conclusion(steady, ARMS, "current", RULE, 0.15)
    assert (
        text.startswith("**Dev confirms")
        and "the best changed arm, 'beta 0.1', +1.00 points" in text
    )
    unfit = ts.arm_table(_runs({**RUNS, "current": [(6.0, 0.7, 25.0, 55.0)] * 2}), RULE)
    assert (
        ts.choose(unfit, ts.ArmRule(30.0, 45.0, margin_points=5.0)) == "beta 0.1"
    )  # the profile is outside the rule


def test_the_margin_is_a_share_of_the_target_trials():
    trials = pd.DataFrame({"target": [1] * 32 + [0] * 448})
    assert ts.margin_for(trials, 1.0) == pytest.approx(3.125)
    assert ts.margin_for(trials, 0.5) == pytest.approx(1.5625)
    with pytest.raises(ValueError, match="no target trial"):
        ts.margin_for(pd.DataFrame({"target": [0, 0]}), 1.0)


def test_the_conclusion_and_metrics_say_whether_dev_confirms():
    table = ts.arm_table(_runs(RUNS), RULE)
    text = ts.conclusion(table, ARMS, "beta 0.1", RULE, 0.15)
    assert "does not confirm" in text and "'beta 0.1' (LOSS_BETA 0.1)" in text
    assert "+1.00 points" in text and "spread over seeds of 2.00 points" in text
    assert "Outside the rule: 'loud' and 'weak'" in text
    m = ts.figures_of_merit(table, ARMS, "beta 0.1", RULE, text)
    assert m["dev_confirms_current"] is False and m["chosen"] == "beta 0.1"
    assert m["beta_0_1__eer_recadv"] == pytest.approx(7.0) and m["weak__meets_rule"] is False
    same = ts.conclusion(table, ARMS, "current", RULE, 0.15)
    assert same.startswith("**Dev confirms")
    assert ts.figures_of_merit(table, ARMS, "current", RULE, same)["dev_confirms_current"] is True
    assert "chooses nothing" in ts.conclusion(table, ARMS, None, RULE, 0.15)


def test_the_grid_trains_each_run_once_and_resumes_from_its_cache(tmp_path: Path, monkeypatch):
    params = config.load_profile("smoke")
    grid = ts.arms(params, {"beta 0.1": {"LOSS_BETA": 0.1}})
    rng = np.random.default_rng(0)
    evalset = study.EvalSet(["a1", "a2", "b1", "b2"], ["a", "a", "b", "b"], [rng.standard_normal(800).astype(np.float32) for _ in range(4)])  # fmt: skip
    trials = pd.DataFrame({"set": "dev", "gender": "f", "enrol": ["a1", "b1"], "test": ["a2", "a2"], "target": [1, 0]})  # fmt: skip
    trained, measured = [], []

    class Model:
        meta = {"steps": 3}

    def fake_train(p, cfg, *args):
        trained.append((p["LOSS_BETA"], cfg.seed))
        return Model()

    def fake_measure(model, evalset, trials, rec, variant, **kw):
        measured.append(variant)
        return {"eer_recadv": 5.0, "eer_recgn": 1.0, "cos_x_adv": 0.6, "cos_x_gn": 0.9, "snr_adv_db": 31.0, "snr_rst_db": 55.0}  # fmt: skip

    monkeypatch.setattr(ts, "trained_model", fake_train)
    monkeypatch.setattr(settings, "measure", fake_measure)
    lines: list[str] = []
    args = (grid, [0, 1], 0.5, 1.0, [], [], None, evalset, trials, {}, tmp_path)
    runs = ts.run_grid(*args, report=lines.append)
    assert len(runs) == 4 and sorted(trained) == sorted([(params["LOSS_BETA"], 0), (params["LOSS_BETA"], 1), (0.1, 0), (0.1, 1)])  # fmt: skip
    assert measured == [{}] * 4  # the model's own protect-time settings
    assert (
        lines[0].startswith("[1/4] current, seed 0: rec-adv 5.00 %") and not runs["collapsed"].any()
    )
    again = ts.run_grid(*args, report=lambda _: None)
    assert len(trained) == 4 and len(measured) == 4  # every run read from its cache
    pd.testing.assert_frame_equal(runs, again)
    cfg_steps = {ts.training_config(params, 0, f, 1.0).steps for f in (0.5, 1.0)}
    assert len(cfg_steps) == 2  # the fraction is part of the run's configuration


def test_step_fractions_out_of_range_are_refused():
    params = config.load_profile("smoke")
    for joint, removal in ((0.0, 1.0), (1.5, 1.0), (0.5, -0.1)):
        with pytest.raises(ValueError, match="step fractions"):
            ts.training_config(params, 0, joint, removal)
