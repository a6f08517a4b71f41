"""What the attackers achieved, as numbers, tables and figures (notebook 60): SNRs, EERs, the share
of the protection undone, the attackers table and the learning curves."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spkadv.audio.io import load_audio
from spkadv.evaluation.conditions import mean_db
from spkadv.evaluation.metrics import snr_db
from spkadv.evaluation.plotting import setup
from spkadv.evaluation.tables import PAPER_TABLE1


def mean_snr_db(ref_paths: Mapping[str, Path], test_paths: Mapping[str, Path]) -> float:
    """Mean SNR (dB) of each ``utt -> test`` file against ``utt -> ref`` (inf capped at 200 dB)."""
    if not test_paths:
        return math.nan
    return mean_db([snr_db(load_audio(ref_paths[u]), load_audio(p)) for u, p in test_paths.items()])


def mean_eers(table: pd.DataFrame) -> dict[tuple[str, str], float]:
    """``(role, condition) -> EER`` averaged over the (set, gender) rows of a
    :func:`spkadv.evaluation.tables.verification_rows` table, as notebook 40 reports them."""
    return {
        (role, cond): float(grp["eer"].mean())
        for (role, cond), grp in table.groupby(["encoder", "condition"], sort=False)
    }


def adaptive_trials(trials: pd.DataFrame, protected: Collection[str]) -> pd.DataFrame:
    """The trials an attacker in the protected domain (adv-adv, oracle-adv) can be scored on: those
    whose enrolment is in ``protected`` (the utterances notebook 20 protected), in the (set, gender)
    groups that keep a target and a non-target trial (an EER needs both). Index reset."""
    kept = trials[trials["enrol"].isin(set(protected))]
    target = kept.groupby(["set", "gender"], sort=False)["target"].transform("sum")
    size = kept.groupby(["set", "gender"], sort=False)["target"].transform("size")
    return kept[(target > 0) & (target < size)].reset_index(drop=True)


def undone_percent(eer: float, eer_protected: float, eer_clean: float) -> float:
    """Share of the protection undone: 100 · (EER(rec-adv) − EER) / (EER(rec-adv) − EER(rec-rec))."""
    gap = eer_protected - eer_clean
    return math.nan if not gap > 0 else 100.0 * (eer_protected - eer) / gap


def paper_mean_eer(condition: str, role: str) -> float:
    """The paper's Table 1 EER for a condition, averaged over its four (set, gender) rows."""
    values = [v for (s, g, r, c), v in PAPER_TABLE1.items() if r == role and c == condition]
    return float(np.mean(values)) if values else math.nan


def knowledge_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The attackers table: one row per attacker, EERs (white, black box), SNR, share of the
    protection undone, and the paper's / journal's findings."""

    def num(v, digits: int = 2) -> str:
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return "–"
        return f"{v:.{digits}f}"

    head = (
        "| knows | attacker | trial | EER white % | EER black % | SNR dB | undone % (white) "
        "| paper (white / black EER, SNR) | journal (arXiv 2510.09504) |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        paper = r.get("paper")
        lines.append(
            f"| {r['knows']} | {r['attacker']} | {r['trial']} | {num(r['eer_white'])} | "
            f"{num(r['eer_black'])} | {num(r.get('snr_db'), 1)} | {num(r.get('undone_white'), 0)} | "
            f"{paper or '–'} | {r.get('journal') or '–'} |"
        )
    return "\n".join(lines) + "\n"


def plot_learning_curves(
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    data_curve: Sequence[Mapping[str, float]] = (),
    snr_adv_db: float | None = None,
):
    """What the attacker gains: SNR of x̂ and white-box cosine to x vs training minutes (one line
    per network), and SNR vs hours of pairs (``data_curve``, one network at equal steps)."""
    setup()
    import matplotlib.pyplot as plt  # after setup(), which picks the backend; and a slow import

    panels = 3 if data_curve else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4), squeeze=False)
    for ax, key, label in (
        (axes[0][0], "snr_db", "SNR of x̂ against x (dB)"),
        (axes[0][1], "cos_white", "white-box cos(f(x), f(x̂))"),
    ):
        for name, hist in histories.items():
            if all(key in h for h in hist):
                ax.plot(
                    [h["minutes"] for h in hist],
                    [h[key] for h in hist],
                    marker="o",
                    ms=3,
                    label=name,
                )
        ax.set_xlabel("training minutes")
        ax.set_ylabel(label)
    if snr_adv_db is not None:
        axes[0][0].axhline(snr_adv_db, color="grey", ls="--", lw=0.8, label="protected x'")
    axes[0][0].legend(fontsize=8)
    if data_curve:
        ax = axes[0][2]
        ax.plot(
            [d["pair_hours"] for d in data_curve], [d["snr_db"] for d in data_curve], marker="o"
        )
        if snr_adv_db is not None:
            ax.axhline(snr_adv_db, color="grey", ls="--", lw=0.8)
        ax.set_xlabel("hours of (x, x') pairs")
        ax.set_ylabel("SNR of x̂ against x (dB)")
        ax.set_title(f"{data_curve[-1].get('kind', '')}, same steps", fontsize=9)
    fig.tight_layout()
    return fig
