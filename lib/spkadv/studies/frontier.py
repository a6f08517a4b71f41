"""The speed / strength frontier of protection (``benchmarks.bench_frontier``): per-utterance PGD
timed and scored as a point beside the code variants of :func:`spkadv.studies.amortised.measure`,
the fast-protection targets read from the table, and the figure."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from spkadv import SAMPLE_RATE
from spkadv.evaluation import conditions, metrics, plotting
from spkadv.studies import settings, study
from spkadv.studies.amortised import Scorer, scored_elsewhere
from spkadv.studies.settings import one_thread

# The speed / strength frontier (``benchmarks.bench_frontier``): targets of a protection faster
# than real time, measured on eval speakers with the choices (the predictor) made on dev.
FAST_RTF = 0.15  # protect CPU s per audio second on one thread, about 10x faster than 10 code steps
RISE_FRACTION = 0.9  # of today's white-box EER rise over rec-rec
RST_POINTS = 0.5  # rec-rst EER within this many points of today's
MIN_SNR_RST_DB = 45.0


def speed_targets(table: pd.DataFrame, current: str, eer_recrec: float) -> dict[str, Any]:
    """The fast-protection targets as ``{name: {"value", "target", "met"}}`` on ``table``
    (indexed by point, columns of :func:`measure` / :func:`pgd_point`): among the protections
    with a key (not PGD) at most :data:`FAST_RTF` CPU s per audio second, the one with the
    highest white-box rec-adv; its fraction of today's EER rise, its rec-rst against today's and
    its SNR(rst). No such point: every target not met, values NaN."""
    today = table.loc[current]
    keyed = table[table["start"] != "pgd"]
    fast = keyed[keyed["protect_cost"] <= FAST_RTF]
    rise_today = float(today["eer_recadv"]) - eer_recrec
    if len(fast):
        best_name = str(fast["eer_recadv"].astype(float).idxmax())
        best = fast.loc[best_name]
        fraction = (
            (float(best["eer_recadv"]) - eer_recrec) / rise_today
            if rise_today > 0
            else float("nan")
        )
        rst_diff = abs(float(best["eer_recrst"]) - float(today["eer_recrst"]))
        snr_rst, rtf = float(best["snr_rst_db"]), float(best["protect_cost"])
    else:
        best_name, fraction, rst_diff, snr_rst = None, float("nan"), float("nan"), float("nan")
        rtf = float(keyed["protect_cost"].min())

    def rec(value: float, target: str, met: bool) -> dict[str, Any]:
        return {"value": value, "target": target, "met": bool(met)}

    return {
        "fast_point": best_name,
        "protect_rtf_fast": rec(rtf, f"<= {FAST_RTF:g}", rtf <= FAST_RTF),
        "eer_rise_fraction_fast": rec(fraction, f">= {RISE_FRACTION:g}", fraction >= RISE_FRACTION),
        "eer_recrst_diff_points_fast": rec(rst_diff, f"<= {RST_POINTS:g}", rst_diff <= RST_POINTS),
        "snr_rst_db_fast": rec(snr_rst, f">= {MIN_SNR_RST_DB:g}", snr_rst >= MIN_SNR_RST_DB),
    }


def speed_figure(
    table: pd.DataFrame,
    current: str,
    recrec: dict[str, float],
    blackbox: str | None,
    title: str,
):
    """White-box rec-adv, held-out black-box rec-adv and SNR(rst) against protect cost (CPU s
    per audio second, one thread, log scale): the predicted code refined for k steps and PGD for
    n steps as lines, today's protection as a star; rec-rec (dotted), 90 % of today's white-box
    EER rise (dashed), :data:`FAST_RTF` and real time marked. ``recrec``: encoder name ->
    rec-rec EER (``"white"`` for the white box)."""
    plotting.setup()
    import matplotlib.pyplot as plt  # lazy: after setup() has chosen the backend (Agg in batch)

    panels = [("eer_recadv", "rec-adv EER (%), white box", "white")]
    if blackbox:
        panels.append(
            (f"{blackbox}_eer_recadv", f"rec-adv EER (%), {blackbox} (held out)", blackbox)
        )
    panels.append(("snr_rst_db", "SNR(rst) (dB), the key holder's restoration", None))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.3))
    predicted = table[
        (table["start"] == "predicted") & ~table["to_radius"].astype(bool)
    ].sort_values("steps")
    pgd = table[table["start"] == "pgd"].sort_values("steps")
    today = table.loc[current]
    for ax, (column, label, ref) in zip(axes, panels, strict=True):
        for rows, style, color, name, letter in ((predicted, "o-", "C0", "predicted code + k steps", "k"),
                                                  (pgd, "s--", "C3", "PGD, n steps (no key)", "n")):  # fmt: skip
            rows = rows[rows[column].notna()]
            if not len(rows):
                continue
            ax.plot(rows["protect_cost"], rows[column], style, color=color, label=name)
            for _, row in rows.iterrows():
                ax.annotate(f"{letter}={int(row['steps'])}", (row["protect_cost"], row[column]),
                            textcoords="offset points", xytext=(4, 4), fontsize=7)  # fmt: skip
        ax.scatter(today["protect_cost"], today[column], marker="*", s=160, color="C2", zorder=3,
                   label=current)  # fmt: skip
        if ref is not None and ref in recrec:
            ax.axhline(recrec[ref], color="grey", ls=":", lw=1, label="rec-rec")
        if ref == "white":
            goal = recrec["white"] + RISE_FRACTION * (float(today[column]) - recrec["white"])
            ax.axhline(
                goal, color="C2", ls="--", lw=1, label=f"{RISE_FRACTION:.0%} of today's rise"
            )
        if column == "snr_rst_db":
            ax.axhline(MIN_SNR_RST_DB, color="grey", ls=":", lw=1, label=f"{MIN_SNR_RST_DB:g} dB")
        ax.axvline(FAST_RTF, color="C1", ls="-.", lw=1, label=f"target {FAST_RTF:g}")
        ax.axvline(1.0, color="grey", ls="--", lw=1, label="real time")
        ax.set_xscale("log")
        ax.set_xlabel("protect cost (CPU s per audio second, one thread)")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def pgd_point(
    encoder: torch.nn.Module,
    evalset: study.EvalSet,
    trials: pd.DataFrame,
    rec: dict[str, np.ndarray],
    snr_db: float,
    steps: int,
    blackbox: dict[str, Scorer] | None = None,
    noise_seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Per-utterance PGD on ``encoder`` (the white box), ``steps`` steps at an L2 budget of
    ``snr_db`` (:func:`spkadv.evaluation.attacks.pgd`, its default step length), timed and scored
    as :func:`measure` times and scores a code variant. PGD keeps no key: it has no restoration
    (``snr_rst_db`` and ``eer_recrst`` are NaN)."""
    from spkadv.evaluation import attacks

    advs, gns, snr_adv, cpu = [], [], [], 0.0
    with one_thread():
        pairs = list(zip(evalset.utt_ids, evalset.waves, strict=True))
        for i, (utt, x) in enumerate(tqdm(pairs, desc=f"PGD, {steps} steps", disable=not progress)):
            started = time.process_time()
            adv = attacks.pgd(encoder, x, snr_db=snr_db, steps=steps, seed=i).x_adv
            cpu += time.process_time() - started
            advs.append(adv)
            gns.append(conditions.matched_noise(x, adv - x, noise_seed, utt))
            snr_adv.append(metrics.snr_db(x, adv))
        scores = settings.score_protected(encoder, evalset, trials, rec, advs, gns)
        scores |= scored_elsewhere(blackbox, evalset, trials, advs, gns)
    audio_seconds = sum(len(x) for x in evalset.waves) / SAMPLE_RATE
    return {
        "start": "pgd",
        "steps": steps,
        "to_radius": False,
        **scores,
        "eer_recrst": float("nan"),
        "snr_adv_db": conditions.mean_db(snr_adv),
        "snr_rst_db": float("nan"),
        "max_code_norm": float("nan"),
        "code_cost": cpu / audio_seconds,
        "protect_cost": cpu / audio_seconds,
    }
