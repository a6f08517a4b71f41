"""The paper notebooks' figures of merit (spkadv.evaluation.merit): keys, values and targets."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest
from spkadv.evaluation import merit
from spkadv.evaluation.tables import PAPER_TABLE2


def test_data_prep_counts_trials_and_keeps_the_build_report():
    trials = pd.DataFrame({"target": [1, 0, 0, 1, 0]})
    build = {"skipped": ["x: empty"], "reused": 0, "build_minutes": 1.5, "candidates": 8}
    m = merit.data_prep(
        {"eval_utterances": 4}, build, trials, {"a": 1.0, "b": 0.5}, 2.5,
        {"eer_recrec_whitebox_a_M": 1.0}, "synthetic", "campplus", 0.3,
    )  # fmt: skip
    assert list(m)[:7] == [
        "eval_utterances", "corpus_source", "target_trials", "nontarget_trials", "skipped_files",
        "loo_id_accuracy", "loo_id_accuracy_a",
    ]  # fmt: skip
    assert (m["target_trials"], m["nontarget_trials"], m["skipped_files"]) == (2, 3, 1)
    assert m["loo_id_accuracy"] == 0.75 and m["loo_id_accuracy_b"] == 0.5
    assert m["eer_recrec_whitebox"] == 2.5 and m["eer_recrec_whitebox_a_M"] == 1.0
    assert m["corpus_reused"] is False and m["corpus_build_minutes"] == 1.5
    assert m["synthetic_candidates"] == 8 and m["synthetic_near_duplicates"] is None


RUN = SimpleNamespace(minutes=2.0, steps=10)


def test_ssed_baseline_and_its_targets():
    per_utt = pd.DataFrame({"snr_adv_db": [30.0, 34.0]})
    eers = {"rec-rec": 2.0, "rec-adv_ssed": 7.0, "adv_ssed-adv_ssed": 3.0}
    m = merit.ssed_baseline(per_utt, eers, [3.0, 4.0], RUN, 99, 2)
    assert m == {
        "snr_adv_db": 32.0, "pesq_adv_nb_raw": 3.5, "eer_recrec": 2.0, "eer_recadv": 7.0,
        "eer_advadv": 3.0, "train_minutes": 2.0, "steps": 10, "eval_utterances": 2,
        "receptive_field_samples": 99,
    }  # fmt: skip
    goals = merit.ssed_targets(m)
    assert [g.met for g in goals] == [True, True]
    assert goals[0].target == ">= 3x rec-rec (2.00 %)"
    assert [g.met for g in merit.ssed_targets({**m, "snr_adv_db": 41.0})] == [True, False]


def _joint(int16: bool) -> dict:
    per_utt = pd.DataFrame(
        {
            "snr_adv_db": [31.0, 33.0],
            "snr_gn_db": [32.0, 32.0],
            "snr_rst_db": [50.0, math.inf],  # exact restoration counts as 200 dB
            "snr_rst_refined_db": [60.0, 60.0],
        }
    )
    if int16:
        per_utt["snr_int16_floor_db"] = [70.0, math.nan]
        per_utt["snr_rst_int16_db"] = [40.0, math.nan]
        per_utt["snr_rst_refined_int16_db"] = [68.0, math.nan]
    eers = {
        "rec-rec": 1.0,
        "rec-adv": 8.0,
        "rec-gn": 2.0,
        "adv-adv": 3.0,
        "rec-rst": 1.2,
        "rec-rst_refined": 1.0,
    }
    return merit.joint_training(per_utt, eers, [3.6, 3.6], RUN, 99, 2, 3)


def test_joint_training_figures():
    m = _joint(int16=False)
    assert m["adversarial_gain"] == 4.0 and m["snr_rst_db"] == 125.0 and m["refine_iterations"] == 3
    assert not any(k in m for k in merit.INT16_KEYS)
    m = _joint(int16=True)
    assert m["snr_int16_floor_db"] == 70.0 and m["snr_rst_refined_int16_db"] == 68.0
    assert list(m)[-3:] == list(merit.INT16_KEYS)
    gain = merit.joint_training(
        pd.DataFrame({k: [30.0] for k in ("snr_adv_db", "snr_gn_db", "snr_rst_db", "snr_rst_refined_db")}),
        {"rec-rec": 1.0, "rec-adv": 1.0, "rec-gn": 0.0, "adv-adv": 1.0, "rec-rst": 1.0, "rec-rst_refined": 1.0},
        [3.0], RUN, 1, 1, 1,
    )["adversarial_gain"]  # fmt: skip
    assert math.isnan(gain)


def test_joint_targets():
    met = {g.name: g.met for g in merit.joint_targets(_joint(int16=True))}
    assert met == {
        "rec-adv EER >= 4x rec-rec": True,
        "rec-adv EER >= 2x rec-gn": True,
        "SNR(adv) >= 30 dB": True,
        "PESQ(adv) raw NB >= 3.5": True,
        "rec-rst EER within 0.5 of rec-rec": True,
        "SNR(rst) >= 45 dB": True,
        "refined int16 within 3 dB of the floor": True,
    }
    without = merit.joint_targets(_joint(int16=False))[-1]
    assert not without.met and math.isnan(without.value) and without.target == ">= nan - 3 dB"


def test_purification_figures():
    robustness = pd.DataFrame(
        {"distortion": ["none", "int16"], "snr_rst_db": [50.0, 40.0], "eer_recrst": [1.0, 2.0]}
    )
    m = merit.purification({"adv": 30.0, "an": 20.0}, robustness, 8, 2, ["mp3_64"], 25.01)
    assert m["snr_adv_db"] == 30.0 and m["paper_snr_qt_db"] == PAPER_TABLE2[("SNR", "qt")]
    assert m["robust_int16_snr_rst_db"] == 40.0 and m["robust_none_eer_recrst"] == 1.0
    assert m["skipped_purifiers"] == "mp3_64" and list(m)[-1] == "snr_an_vs_adv_db"
    assert merit.purification({}, robustness.iloc[:0], 0, 0, [], 0.0)["skipped_purifiers"] == "none"


def _table1() -> pd.DataFrame:
    rows = []
    for role in ("whitebox", "blackbox"):
        for cond, eer in (("rec-rec", 1.0), ("rec-adv", 10.0), ("rec-gn", 2.0), ("rec-rst", 1.2)):
            for gender, shift in (("M", -0.5), ("F", 0.5)):
                paper = 1.5 if cond != "rec-gn" else math.nan
                rows.append((role, cond, gender, eer + shift, eer, paper))
    return pd.DataFrame(
        rows, columns=["encoder", "condition", "gender", "eer", "eer_kaldi", "paper_eer"]
    )


def test_table1_averages_over_set_and_gender():
    m = merit.table1(_table1(), 100, 10, 0.5, 2.0, [])
    assert m["eer_whitebox_rec_adv"] == 10.0 and m["eer_kaldi_blackbox_rec_rst"] == 1.2
    assert m["paper_eer_whitebox_rec_rec"] == 1.5 and "paper_eer_whitebox_rec_gn" not in m
    assert m["skipped_conditions"] == "none" and m["n_trials"] == 100
    assert (
        merit.table1(_table1(), 1, 1, 0, 0, {"rec-an": "no audio"})["skipped_conditions"]
        == "rec-an"
    )


def test_table1_targets():
    goals = merit.table1_targets(merit.table1(_table1(), 100, 10, 0.5, 2.0, []))
    assert [g.met for g in goals] == [True, True, True, True, True]
    assert goals[3].target == ">= 3x rec-rec (1.00 %)"
    missing = merit.table1_targets({"eer_whitebox_rec_rec": 1.0})
    assert not any(g.met for g in missing) and math.isnan(missing[0].value)


def test_table2_keys():
    assert (
        merit.metric_key("P-Mean (dio)") == "p_mean_dio"
        and merit.metric_key("PESQ-WB") == "pesq_wb"
    )
    assert merit.band_key("1-4 kHz") == "1_4kHz" and merit.band_key("0.5-1 kHz") == "0p5_1kHz"
    table = pd.DataFrame(
        {
            "metric": ["PESQ", "SNR", "P-Std (dio)"],
            "condition": ["rec", "adv", "adv"],
            "value": [4.5, 30.0, 0.1],
        }
    )
    m = merit.table2(
        table, {"0-1 kHz": 0.2, "1-4 kHz": 0.8}, 4, 3, 0, "faster-whisper/tiny.en", [], 9.0
    )
    assert m["pesq_rec"] == 4.5 and m["snr_adv"] == 30.0 and m["p_std_dio_adv"] == 0.1
    assert m["delta_energy_0_1kHz"] == 0.2 and m["delta_energy_1_4kHz"] == 0.8
    assert m["asr"] == "faster-whisper/tiny.en" and m["skipped_conditions"] == "none"
    assert m["n_quality_utterances"] == 4 and m["n_wer_utterances"] == 3 and m["seconds"] == 9.0


@pytest.mark.parametrize("fn", [merit.ssed_targets, merit.joint_targets, merit.table1_targets])
def test_targets_have_distinct_keys(fn):
    from spkadv.evaluation import targets

    m = (
        _joint(int16=True)
        if fn is merit.joint_targets
        else {"eer_recrec": 1.0, "eer_recadv": 2.0, "snr_adv_db": 30.0}
    )
    targets.as_metrics(fn(m))  # raises on two targets with one key
