"""The paper notebooks' figures of merit: the flat ``metrics.json`` each of 00-50 writes, and the
targets 10, 20 and 40 record beside them (:mod:`spkadv.evaluation.targets`).

Each function takes what its notebook computed and names the numbers; notebook 60's are
:func:`spkadv.evaluation.attacker_tables.attacker_metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from spkadv.evaluation.conditions import mean_db
from spkadv.evaluation.tables import PAPER_TABLE2
from spkadv.evaluation.targets import Target, record

# --- 00_data_prep --------------------------------------------------------------------------------


def data_prep(
    summary: Mapping[str, Any],
    build: Mapping[str, Any],
    trials: pd.DataFrame,
    loo: Mapping[str, float],
    eer_recrec: float,
    eer_by_group: Mapping[str, float],
    corpus_source: str,
    encoder: str,
    minutes: float,
) -> dict[str, Any]:
    """Corpus counts (``summary``, :func:`spkadv.data.corpus.corpus_summary`), trial counts, the
    leave-one-out identification accuracy (mean and per set), the white box's rec-rec EER (all
    trials and per ``eer_recrec_whitebox_<set>_<gender>``), and what the corpus build reported."""
    is_target = trials["target"].to_numpy() == 1
    return {
        **summary,
        "corpus_source": corpus_source,
        "target_trials": int(is_target.sum()),
        "nontarget_trials": int((~is_target).sum()),
        "skipped_files": len(build["skipped"]),
        "loo_id_accuracy": float(np.mean(list(loo.values()))),
        **{f"loo_id_accuracy_{s}": a for s, a in loo.items()},
        "eer_recrec_whitebox": eer_recrec,
        **eer_by_group,
        "whitebox_encoder": encoder,
        "corpus_reused": bool(build["reused"]),
        "corpus_build_minutes": build.get("build_minutes"),  # of the build that made the corpus
        "minutes": minutes,
        "synthetic_candidates": build.get("candidates"),
        "synthetic_near_duplicates": build.get("near_duplicates"),
        "synthetic_near_duplicate_pairs_kept": build.get("near_duplicate_pairs_kept"),
        "synthetic_eval_max_centroid_cosine_M": build.get("eval_max_centroid_cosine_M"),
        "synthetic_eval_max_centroid_cosine_F": build.get("eval_max_centroid_cosine_F"),
        "synthetic_dev_near_duplicates": build.get("dev_near_duplicates"),
        "synthetic_dev_near_duplicates_kept": build.get("dev_near_duplicates_kept"),
    }


# --- 10_ssed_baseline and 20_joint_training ------------------------------------------------------


def ssed_baseline(
    per_utt: pd.DataFrame,
    eers: Mapping[str, float],
    pesq_adv: Sequence[float],
    result: Any,
    receptive_field: int,
    eval_utterances: int,
) -> dict[str, Any]:
    """Notebook 10: SNR and PESQ of x', the white-box EERs of ``rec-rec``, ``rec-adv_ssed`` and
    ``adv_ssed-adv_ssed`` (keys ``eer_recrec``, ``eer_recadv``, ``eer_advadv``) and the training
    run (``result``: :func:`spkadv.core.train.train`'s, with ``minutes`` and ``steps``)."""
    return {
        "snr_adv_db": mean_db(per_utt["snr_adv_db"]),
        "pesq_adv_nb_raw": float(np.mean(pesq_adv)),
        "eer_recrec": eers["rec-rec"],
        "eer_recadv": eers["rec-adv_ssed"],
        "eer_advadv": eers["adv_ssed-adv_ssed"],
        "train_minutes": result.minutes,
        "steps": result.steps,
        "eval_utterances": eval_utterances,
        "receptive_field_samples": receptive_field,
    }


def ssed_targets(m: Mapping[str, float]) -> list[Target]:
    """Notebook 10's targets on :func:`ssed_baseline`'s figures."""
    rr, ra, snr = m["eer_recrec"], m["eer_recadv"], m["snr_adv_db"]
    return [
        record("rec-adv EER >= 3x rec-rec", ra, f">= 3x rec-rec ({rr:.2f} %)", ra >= 3 * rr),
        record("SNR(adv) in 25-40 dB", snr, "25-40 dB", 25 <= snr <= 40),
    ]


INT16_KEYS = ("snr_int16_floor_db", "snr_rst_int16_db", "snr_rst_refined_int16_db")


def joint_training(
    per_utt: pd.DataFrame,
    eers: Mapping[str, float],
    pesq_adv: Sequence[float],
    result: Any,
    receptive_field: int,
    eval_utterances: int,
    refine_iterations: int,
) -> dict[str, Any]:
    """Notebook 20: protection (white-box EERs of rec-adv, rec-gn, adv-adv and the adversarial gain
    rec-adv / rec-gn), quality (SNR, PESQ), restoration (rec-rst, rec-rst_refined, their SNRs, and
    from 16-bit x' when measured) and the training run."""
    m = {
        "snr_adv_db": mean_db(per_utt["snr_adv_db"]),
        "pesq_adv_nb_raw": float(np.mean(pesq_adv)),
        "eer_recrec": eers["rec-rec"],
        "eer_recadv": eers["rec-adv"],
        "eer_recgn": eers["rec-gn"],
        "adversarial_gain": eers["rec-adv"] / eers["rec-gn"] if eers["rec-gn"] > 0 else math.nan,
        "snr_gn_db": mean_db(per_utt["snr_gn_db"]),
        "eer_advadv": eers["adv-adv"],
        "eer_recrst": eers["rec-rst"],
        "eer_recrst_refined": eers["rec-rst_refined"],
        "snr_rst_db": mean_db(per_utt["snr_rst_db"]),
        "snr_rst_refined_db": mean_db(per_utt["snr_rst_refined_db"]),
        "train_minutes": result.minutes,
        "steps": result.steps,
        "eval_utterances": eval_utterances,
        "refine_iterations": refine_iterations,
        "receptive_field_samples": receptive_field,
    }
    if "snr_int16_floor_db" in per_utt:
        for key in INT16_KEYS:
            m[key] = mean_db(per_utt[key].dropna())
    return m


def joint_targets(m: Mapping[str, float]) -> list[Target]:
    """Notebook 20's targets on :func:`joint_training`'s figures (the int16 one unmet when the
    16-bit restoration was not measured)."""
    rr, ra, rg = m["eer_recrec"], m["eer_recadv"], m["eer_recgn"]
    floor = m.get("snr_int16_floor_db", math.nan)
    return [
        record("rec-adv EER >= 4x rec-rec", ra, f">= 4x rec-rec ({rr:.2f} %)", ra >= 4 * rr),
        record("rec-adv EER >= 2x rec-gn", ra, f">= 2x rec-gn ({rg:.2f} %)", ra >= 2 * rg),
        record("SNR(adv) >= 30 dB", m["snr_adv_db"], ">= 30 dB", m["snr_adv_db"] >= 30),
        record(
            "PESQ(adv) raw NB >= 3.5",
            m["pesq_adv_nb_raw"],
            ">= 3.5",
            m["pesq_adv_nb_raw"] >= 3.5,
        ),
        record(
            "rec-rst EER within 0.5 of rec-rec",
            m["eer_recrst"],
            f"{rr:.2f} ± 0.5 %",
            abs(m["eer_recrst"] - rr) <= 0.5,
        ),
        record("SNR(rst) >= 45 dB", m["snr_rst_db"], ">= 45 dB", m["snr_rst_db"] >= 45),
        record(
            "refined int16 within 3 dB of the floor",
            m.get("snr_rst_refined_int16_db", math.nan),
            f">= {floor:.1f} - 3 dB",
            m.get("snr_rst_refined_int16_db", -1e9) >= m.get("snr_int16_floor_db", 1e9) - 3,
        ),
    ]


# --- 30_purification -----------------------------------------------------------------------------


def purification(
    snr: Mapping[str, float],
    robustness: pd.DataFrame,
    n_utterances: int,
    n_robustness_utterances: int,
    skipped: Iterable[str],
    snr_an_vs_adv: float,
) -> dict[str, Any]:
    """Notebook 30: mean SNR of each condition against x (``snr_<cond>_db``), the paper's for the
    three baselines, restoration after each channel (``robust_<distortion>_{snr_rst_db,
    eer_recrst}``), counts, the purifiers skipped and the noise purifier's SNR against x'."""
    results = {f"snr_{c}_db": v for c, v in snr.items()}
    results.update({f"paper_snr_{c}_db": PAPER_TABLE2[("SNR", c)] for c in ("an", "qt", "ms")})
    for row in robustness.itertuples():
        results[f"robust_{row.distortion}_snr_rst_db"] = row.snr_rst_db
        results[f"robust_{row.distortion}_eer_recrst"] = row.eer_recrst
    results.update(
        n_utterances=n_utterances,
        n_robustness_utterances=n_robustness_utterances,
        skipped_purifiers=", ".join(skipped) or "none",
    )
    results["snr_an_vs_adv_db"] = snr_an_vs_adv
    return results


# --- 40_table1_eer -------------------------------------------------------------------------------


def table1(
    table: pd.DataFrame,
    n_trials: int,
    n_test_utterances: int,
    scoring_seconds: float,
    seconds: float,
    skipped: Iterable[str],
) -> dict[str, Any]:
    """Notebook 40: per encoder role and condition the EER averaged over the (set, gender) rows
    (``eer_<role>_<condition>``), its Kaldi variant and the paper's average for the same cells
    (where the paper has all of them), then counts, timings and the conditions skipped."""
    results: dict[str, Any] = {}
    for (role, cond), grp in table.groupby(["encoder", "condition"], sort=False):
        key = f"{role}_{cond.replace('-', '_')}"
        results[f"eer_{key}"] = float(grp["eer"].mean())
        results[f"eer_kaldi_{key}"] = float(grp["eer_kaldi"].mean())
        if grp["paper_eer"].notna().all():
            results[f"paper_eer_{key}"] = float(grp["paper_eer"].mean())
    results.update(
        n_trials=n_trials,
        n_test_utterances=n_test_utterances,
        scoring_seconds=scoring_seconds,
        seconds=seconds,
        skipped_conditions=", ".join(skipped) or "none",
    )
    return results


def table1_targets(results: Mapping[str, Any]) -> list[Target]:
    """Notebook 40's targets on :func:`table1`'s figures (NaN, so unmet, for a condition skipped)."""
    wb = {
        c: results.get(f"eer_whitebox_{c}", math.nan)
        for c in ("rec_rec", "rec_adv", "rec_gn", "rec_rst")
    }
    bb = {c: results.get(f"eer_blackbox_{c}", math.nan) for c in ("rec_rec", "rec_adv", "rec_gn")}
    return [
        record(
            "white box rec-adv >= 4x rec-rec",
            wb["rec_adv"],
            f">= 4x rec-rec ({wb['rec_rec']:.2f} %)",
            wb["rec_adv"] >= 4 * wb["rec_rec"],
        ),
        record(
            "white box rec-adv >= 2x rec-gn",
            wb["rec_adv"],
            f">= 2x rec-gn ({wb['rec_gn']:.2f} %)",
            wb["rec_adv"] >= 2 * wb["rec_gn"],
        ),
        record(
            "white box rec-rst within 0.5 of rec-rec",
            wb["rec_rst"],
            f"{wb['rec_rec']:.2f} ± 0.5 %",
            abs(wb["rec_rst"] - wb["rec_rec"]) <= 0.5,
        ),
        record(
            "black box rec-adv >= 3x rec-rec",
            bb["rec_adv"],
            f">= 3x rec-rec ({bb['rec_rec']:.2f} %)",
            bb["rec_adv"] >= 3 * bb["rec_rec"],
        ),
        record(
            "black box rec-adv above rec-gn",
            bb["rec_adv"],
            f"> rec-gn ({bb['rec_gn']:.2f} %)",
            bb["rec_adv"] > bb["rec_gn"],
        ),
    ]


# --- 50_table2_quality ---------------------------------------------------------------------------


def metric_key(metric: str) -> str:
    """A Table 2 metric as a key part: ``"P-Mean (dio)"`` -> ``"p_mean_dio"``."""
    return metric.lower().replace("-", "_").replace(" (", "_").replace(")", "")


def band_key(band: str) -> str:
    """A band of :func:`spkadv.evaluation.plotting.band_energy_fractions` as a key part:
    ``"1-4 kHz"`` -> ``"1_4kHz"``, ``"0.5-1 kHz"`` -> ``"0p5_1kHz"``."""
    return band.replace(" ", "").replace("-", "_").replace(".", "p")


def table2(
    table: pd.DataFrame,
    bands: Mapping[str, float],
    n_quality_utterances: int,
    n_wer_utterances: int,
    pesq_failures: int,
    asr: str,
    skipped: Iterable[str],
    seconds: float,
) -> dict[str, Any]:
    """Notebook 50: every Table 2 cell (``<metric>_<condition>``), the share of δ's energy per band
    (``delta_energy_<band>``), the subset sizes, PESQ failures, the ASR and what was skipped."""
    results: dict[str, Any] = {}
    for row in table.itertuples():
        results[f"{metric_key(row.metric)}_{row.condition}"] = row.value
    results.update({f"delta_energy_{band_key(k)}": v for k, v in bands.items()})
    results.update(
        n_quality_utterances=n_quality_utterances,
        n_wer_utterances=n_wer_utterances,
        pesq_failures=pesq_failures,
        asr=asr,
        skipped_conditions=", ".join(skipped) or "none",
        seconds=seconds,
    )
    return results
