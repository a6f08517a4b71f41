"""The protect-time settings study: variants applied to the model's meta, the choice rule, the
measuring loop on a tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from spkadv.audio.io import save_audio
from spkadv.core import modelfile, protect
from spkadv.core.models import RemovalModule, SSEDConfig, SSEDGenerator
from spkadv.data.manifest import MANIFEST_COLUMNS
from spkadv.encoders.random_conv import RandomConvEncoder
from spkadv.studies import settings, study

RULE = settings.ChoiceRule(min_snr_adv_db=30.0, min_snr_rst_db=45.0, max_cost_ratio=2.0)


def _model() -> modelfile.ProtectionModel:
    cfg = SSEDConfig(width=4, stages=2, res_blocks=1, code_film=True)
    torch.manual_seed(0)
    gen, rem = SSEDGenerator(cfg).eval(), RemovalModule(cfg).eval()
    meta = {"code_steps": 2, "code_radius": 1.0, "encoder": "test"}
    return modelfile.ProtectionModel(gen, rem, 0.1, "test", cfg, meta, RandomConvEncoder())


def _table(rows: dict[str, tuple[float, float, float, float]]) -> pd.DataFrame:
    """variant -> (rec-adv EER, SNR(adv), SNR(rst), protect cost)."""
    cols = ["eer_recadv", "snr_adv_db", "snr_rst_db", "protect_cost"]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=cols)
    return table.assign(eer_recgn=1.0, code_steps=10, code_lr=0.5, code_radius=4.0)


ROWS = {
    "current": (5.0, 31.0, 50.0, 1.0),
    "loud": (9.0, 29.0, 50.0, 1.0),  # SNR(adv) under 30 dB
    "no removal": (8.0, 31.0, 40.0, 1.0),  # SNR(rst) under 45 dB
    "slow": (7.0, 31.0, 50.0, 3.0),  # 3x the current cost
    "better": (6.0, 31.0, 50.0, 1.5),
}


def test_choose_picks_the_highest_rec_adv_within_the_constraints():
    table = _table(ROWS)
    assert settings.choose(table, "current", RULE) == "better"
    assert settings.meets_rule(table, "current", RULE).to_dict() == {
        "current": True, "loud": False, "no removal": False, "slow": False, "better": True,
    }  # fmt: skip


def test_choose_honours_the_cost_limit():
    table = _table(ROWS)
    looser = settings.ChoiceRule(30.0, 45.0, max_cost_ratio=3.0)
    assert settings.choose(table, "current", looser) == "slow"
    cheaper = _table({**ROWS, "current": (5.0, 31.0, 50.0, 0.5)})  # limit 1.0: better is out
    assert settings.choose(cheaper, "current", RULE) == "current"


@pytest.mark.parametrize("order", [["a", "b"], ["b", "a"]])
def test_a_tie_goes_to_the_lower_cost(order):
    rows = {
        "current": (5.0, 31.0, 50.0, 1.0),
        "a": (6.0, 31.0, 50.0, 1.8),
        "b": (6.0, 31.0, 50.0, 1.2),
    }
    table = _table({k: rows[k] for k in ["current", *order]})
    assert settings.choose(table, "current", RULE) == "b"


def test_no_variant_within_the_rule_chooses_none_and_says_so():
    table = _table({"current": (5.0, 25.0, 50.0, 1.0), "other": (6.0, 31.0, 30.0, 1.0)})
    assert settings.choose(table, "current", RULE) is None
    assert settings.conclusion(table, "current", None, RULE).startswith("No variant meets the rule")


def test_the_conclusion_confirms_or_names_the_other_choice():
    table = _table(ROWS)
    confirms = settings.conclusion(table, "current", "current", RULE)
    assert (
        confirms.startswith("dev confirms CODE_STEPS 10, code lr 0.5")
        and "next best within the rule: better" in confirms
    )
    other = settings.conclusion(table, "current", "better", RULE)
    assert other.startswith("dev would choose better") and "6.00 %" in other and "1.50x" in other


def test_the_summary_table_marks_cost_ratio_rule_current_and_chosen():
    summary = settings.summary_table(_table(ROWS), "current", "better", RULE).set_index("variant")
    assert summary.loc["slow", "cost_ratio"] == pytest.approx(3.0)
    assert summary["meets_rule"].sum() == 2
    assert summary["current"].tolist() == [True, False, False, False, False]
    assert summary.index[summary["chosen"]].tolist() == ["better"]
    with pytest.raises(ValueError, match="'gone' is not among"):
        settings.meets_rule(_table(ROWS), "gone", RULE)


def test_figures_of_merit_are_flat_and_say_whether_dev_confirms():
    current = {"code_steps": 10, "code_lr": 0.5, "code_radius": 4.0}
    summary = settings.summary_table(_table(ROWS), "current", "better", RULE)
    merit = settings.figures_of_merit(summary, current, "better", RULE, "text")
    assert merit["current"] == "current" and merit["current_code_steps"] == 10
    assert merit["chosen"] == "better" and merit["dev_confirms_current"] is False
    assert merit["no_removal__snr_rst_db"] == 40.0 and merit["better__chosen"]
    assert not [k for k, v in merit.items() if isinstance(v, dict | list)]
    kept = settings.summary_table(_table(ROWS), "current", "current", RULE)
    assert settings.figures_of_merit(kept, current, "current", RULE, "")["dev_confirms_current"]


def test_the_override_sets_the_meta_and_restores_the_model():
    model = _model()
    before = dict(model.meta)
    assert settings.current_setting(model) == {"code_steps": 2, "code_lr": 0.5, "code_radius": 1.0}
    with settings.overridden(
        model, {"code_steps": 0, "code_lr": 1.0, "code_radius_scale": 2.0}
    ) as res:
        assert res == {"code_steps": 0, "code_lr": 1.0, "code_radius": 2.0}
        assert {k: model.meta[k] for k in res} == res
        code = protect.protection_code(model, np.zeros(1600, dtype=np.float32) + 0.1)
        assert not code.any()  # 0 steps: the zero code, read from the overridden meta
    assert model.meta == before
    with pytest.raises(RuntimeError), settings.overridden(model, {"code_lr": 0.25}):
        raise RuntimeError("a failing variant")
    assert model.meta == before


def test_unknown_or_bad_variant_settings_raise_a_clear_error():
    model = _model()
    with pytest.raises(
        ValueError, match=r"unknown protect-time setting\(s\) \['code_radius'\].*code_radius_scale"
    ):
        with settings.overridden(model, {"code_radius": 2.0}):
            pass
    assert model.meta["code_radius"] == 1.0
    for bad in (
        {"code_steps": -1},
        {"code_steps": 2.5},
        {"code_lr": 0.0},
        {"code_radius_scale": -1.0},
    ):
        with pytest.raises(ValueError, match="code_"):
            settings.resolve(bad, settings.current_setting(model))


def test_the_current_setting_is_found_in_the_grid_or_added():
    current = {"code_steps": 10, "code_lr": 0.5, "code_radius": 4.0}
    grid = {"5 steps": {"code_steps": 5}, "10 steps": {"code_steps": 10}}
    assert settings.with_current(grid, current) == (grid, "10 steps")
    variants, name = settings.with_current({"5 steps": {"code_steps": 5}}, current)
    assert name == "current" and list(variants) == ["current", "5 steps"]
    with pytest.raises(ValueError, match="rename it"):
        settings.with_current({"current": {"code_steps": 5}}, current)


def tone_rows(folder: Path, subset: str = "dev", samples: int = 12800) -> pd.DataFrame:
    """Manifest rows of 2 speakers per gender x 2 tones each (``samples`` long), written to ``folder``."""
    rng = np.random.default_rng(0)
    rows = []
    for g in "MF":
        for s in range(2):
            for k in range(2):
                t = np.arange(samples) / 16000
                f0 = 120 + 60 * s + (80 if g == "F" else 0)
                x = 0.2 * np.sin(2 * np.pi * f0 * t) + 0.01 * rng.standard_normal(len(t))
                path = folder / f"{g}{s}_{k}.wav"
                save_audio(path, x.astype(np.float32))
                rows.append((f"{g}{s}_{k}", f"{g}{s}", g, subset, "synthetic", str(path), samples / 16000, "A"))  # fmt: skip
    return pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))


def test_measure_scores_a_variant_on_dev_trials_and_leaves_the_model_as_it_was(tmp_path: Path):
    rows = tone_rows(tmp_path)
    evalset, trials = settings.dev_set(rows, 2, 0.6, nontargets=30, seed=0)
    assert len(evalset.waves) == 8 and all(len(w) == 9600 for w in evalset.waves)
    assert trials["target"].sum() == 8 and set(trials["gender"]) == {"M", "F"}
    model = _model()
    before = dict(model.meta)
    encoder = model.encoder()
    rec = dict(zip(evalset.utt_ids, study.embed(encoder, evalset.waves), strict=True))
    settings.warm_up(model, evalset)
    row = settings.measure(model, evalset, trials, rec, {"code_steps": 1})
    assert model.meta == before and torch.get_num_threads() >= 1
    assert row["code_steps"] == 1 and row["protect_cost"] > 0
    assert (
        0 <= row["eer_recadv"] <= 100
        and np.isfinite(row["snr_adv_db"])
        and np.isfinite(row["snr_rst_db"])
    )
    assert -1 <= row["cos_x_adv"] <= 1
    with pytest.raises(ValueError, match="a target trial needs 2"):
        settings.dev_set(rows, 1, 0.6, nontargets=30, seed=0)
    fewer, _ = settings.dev_set(rows, 2, 0.6, nontargets=30, seed=0, speakers_per_gender=1)
    assert fewer.speakers == ["M0", "M0", "F0", "F0"]


def test_cost_figure_labels_every_variant():
    fig = settings.cost_figure(_table(ROWS), "current", "better", RULE, "title")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert (
        texts[0] == "current (current)" and "better ← chosen" in texts and len(texts) == len(ROWS)
    )
