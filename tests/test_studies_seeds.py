"""Joint training across seeds and thread counts: the arms, the figures of merit, the conclusion."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from spkadv.studies import seeds


def _runs(
    collapsed_seed: int | None = None, arm: str = "profile", rst: float = 55.0
) -> pd.DataFrame:
    rows = []
    for seed in (0, 1, 2):
        for threads in (1, 2):
            dead = seed == collapsed_seed
            rows.append({
                "arm": arm, "seed": seed, "threads": threads, "steps": 90,
                "eer_recrec": 3.5, "eer_recadv": 3.5 if dead else 10.0 + seed + 0.1 * threads,
                "eer_recgn": 3.4, "eer_recrst": 3.6, "cos_x_adv": 1.0 if dead else 0.70 + 0.01 * seed,
                "cos_x_gn": 0.94 if not dead else 1.0, "snr_adv_db": 150.0 if dead else 31.5,
                "snr_rst_db": 150.0 if dead else rst + threads, "collapsed": dead,
            })  # fmt: skip
    return pd.DataFrame(rows)


def test_summary_and_metrics_keep_the_keys_of_both_arms() -> None:
    runs = pd.concat([_runs(), _runs(collapsed_seed=2, arm="compare")], ignore_index=True)
    m = seeds.grid_metrics(runs, 0.15, 1.0, "dev", {"MODEL_MASK_INIT": 0.0})
    assert m["runs"] == 6 and m["collapsed_runs"] == 0 and m["compare_collapsed_runs"] == 2
    assert m["eer_recadv_min"] == pytest.approx(10.1) and m["eer_recadv_max"] == pytest.approx(12.2)
    assert m["compare"] == json.dumps({"MODEL_MASK_INIT": 0.0}) and m["subset"] == "dev"
    assert "compare_snr_rst_db_mean" in m and m["step_fraction"] == 0.15
    assert "compare_runs" not in seeds.grid_metrics(
        runs[runs["arm"] == "profile"], 0.15, 1.0, "dev", {}
    )


def test_conclusion_says_a_collapse_follows_the_seed_and_compares_the_arms() -> None:
    runs = pd.concat([_runs(collapsed_seed=2), _runs(arm="compare", rst=40.0)], ignore_index=True)
    text = seeds.conclusion(runs, {"MODEL_MASK_INIT": 0.5})
    assert "**profile: 2 of 6 runs collapsed**" in text
    assert (
        "seed 2 with 1 thread(s) and seed 2 with 2 thread(s) (removal a no-op in 2, attack no better than noise in 2)"
        in text
    )
    assert "the collapse followed the seed (every thread count of seed 2)" in text
    assert "**compare: 0 of 6 runs collapsed**" in text
    assert (
        "0 of 6 runs at or above notebook 20's 45 dB target" in text
    )  # the compare arm's short runs
    assert "the thread count matters less than the seed" in text
    assert 'The compare arm ({"MODEL_MASK_INIT": 0.5})' in text


def test_conclusion_of_a_thread_count_collapse() -> None:
    runs = _runs()
    runs.loc[runs["threads"] == 2, "collapsed"] = True
    assert "the collapse followed the thread count (2 thread(s), every seed)" in seeds.conclusion(
        runs, {}
    )


def test_compare_arms_refuses_an_unknown_key() -> None:
    params = {"JOINT_STEPS": 10}
    assert list(seeds.compare_arms(params, {})) == ["profile"]
    arms = seeds.compare_arms(params, {"JOINT_STEPS": 20})
    assert arms["compare"]["JOINT_STEPS"] == 20 and arms["profile"]["JOINT_STEPS"] == 10
    with pytest.raises(ValueError, match="NOT_A_KEY"):
        seeds.compare_arms(params, {"NOT_A_KEY": 1})


def test_runs_figure_has_a_panel_for_the_attack_and_one_for_the_cosine() -> None:
    fig = seeds.runs_figure(pd.concat([_runs(), _runs(arm="compare")], ignore_index=True), "test")
    assert [ax.get_ylabel() for ax in fig.axes] == ["rec-adv EER (%)", "cos(x, x′)"]
