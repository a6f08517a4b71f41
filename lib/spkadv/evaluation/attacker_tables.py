"""What the attackers achieved, as numbers, tables and figures (notebook 60): SNRs, EERs, the share
of the protection undone, the attackers table (:func:`knowledge_rows`), its figures of merit
(:func:`attacker_metrics`) and the learning curves."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spkadv.audio.io import load_audio
from spkadv.evaluation.conditions import mean_db
from spkadv.evaluation.metrics import snr_db
from spkadv.evaluation.plotting import setup
from spkadv.evaluation.tables import PAPER_TABLE1, PAPER_TABLE2


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


# --- the table and the figures of merit of notebook 60 -----------------------------------------

ATTACKER_NAMES = {
    "removal": "own F_R (architecture known)",
    "stft_mask": "STFT complex-mask enhancer",
}
JOURNAL_SEMI_INFORMED = (
    "semi-informed: cannot be fully removed; feed-forward ones considerably reduced"
)
PAPER_PURIFIERS = ("an", "qt", "ms")

Eers = Mapping[tuple[str, str], float]


@dataclass(frozen=True)
class Purifier:
    """The ignorant attacker's best purifier: the lowest white-box EER among the paper's three."""

    name: str
    candidates: tuple[str, ...]
    eer_white: float
    eer_black: float
    snr_db: float

    @classmethod
    def best(cls, metrics30: Mapping[str, Any], metrics40: Mapping[str, Any]) -> Purifier:
        """From the metrics of notebooks 30 (SNR) and 40 (EER); the purifiers 40 scored."""
        names = tuple(p for p in PAPER_PURIFIERS if f"eer_whitebox_rec_{p}" in metrics40)
        if not names:
            raise ValueError(f"notebook 40 scored none of the purifiers {PAPER_PURIFIERS}")
        best = min(names, key=lambda p: metrics40[f"eer_whitebox_rec_{p}"])
        return cls(
            best,
            names,
            metrics40[f"eer_whitebox_rec_{best}"],
            metrics40[f"eer_blackbox_rec_{best}"],
            metrics30[f"snr_{best}_db"],
        )


def _paper_cell(condition: str, snr_condition: str | None = None) -> str:
    """'white / black' mean EER of the paper's Table 1 for a condition, and its Table 2 SNR."""
    cell = (
        f"{paper_mean_eer(condition, 'whitebox'):.2f} / {paper_mean_eer(condition, 'blackbox'):.2f}"
    )
    if snr_condition:
        cell += f", {PAPER_TABLE2[('SNR', snr_condition)]:.1f} dB"
    return cell


def knowledge_rows(
    eer: Eers,
    eer_adaptive: Eers,
    snr: Mapping[str, float],
    purifier: Purifier,
    attackers: Sequence[str],
    pair_hours: float,
    other_seed: int,
) -> list[dict[str, Any]]:
    """The attackers table's rows, ordered by what the attacker knows (see notebook 60).

    Args:
        eer: ``(role, trial condition) -> EER`` on the trials of Table 1 (:func:`mean_eers`), with
            the adaptive verifier's ``adv-adv`` and ``oracle-adv`` added.
        eer_adaptive: the same on the adaptive trials (their undone share is measured there).
        snr: ``audio condition -> SNR`` against x (``adv``, ``rst``, ``rst_refined``, ``xrst``,
            ``att_<network>``).
        attackers: the attacker networks (``att_<network>`` conditions).
    """

    def row(knows, who, trial, snr_db, paper=None, journal=None, white=None, black=None, base=eer):
        e_w = eer[("whitebox", trial)] if white is None else white
        e_b = eer[("blackbox", trial)] if black is None else black
        undone = undone_percent(
            e_w,
            base.get(("whitebox", "rec-adv"), math.nan),
            base.get(("whitebox", "rec-rec"), math.nan),
        )
        return {
            "knows": knows,
            "attacker": who,
            "trial": trial,
            "eer_white": e_w,
            "eer_black": e_b,
            "snr_db": snr_db,
            "undone_white": undone,
            "paper": paper,
            "journal": journal,
        }

    p = purifier
    return [
        row("—", "nobody (clean reference)", "rec-rec", math.inf, _paper_cell("rec-rec")),
        row("nothing", "uses x' as found", "rec-adv", snr["adv"], _paper_cell("rec-adv", "adv")),
        row(
            "nothing",
            f"purifier `{p.name}` (best of {', '.join(p.candidates)})",
            f"rec-{p.name}",
            p.snr_db,
            _paper_cell("rec-an", "an") if p.name == "an" else None,
            "ignorant: purifiers",
            p.eer_white,
            p.eer_black,
        ),
        row(
            "oracle",
            "adaptive verifier: both sides protected",
            "adv-adv",
            None,
            _paper_cell("adv-adv"),
            base=eer_adaptive,
        ),
        row(
            "oracle",
            "adaptive verifier: oracle(clean enrolment)",
            "oracle-adv",
            None,
            base=eer_adaptive,
        ),
        *(
            row(
                f"oracle + {pair_hours * 60:.0f} min of pairs",
                ATTACKER_NAMES.get(k, k),
                f"rec-att_{k}",
                snr[f"att_{k}"],
                None,
                JOURNAL_SEMI_INFORMED,
            )
            for k in attackers
        ),
        row("another user's model", f"its F_R (seed {other_seed})", "rec-xrst", snr["xrst"]),
        row(
            "the generator F_P",
            "fixed-point refinement (from F_R's estimate, notebook 20)",
            "rec-rst_refined",
            snr["rst_refined"],
        ),
        row(
            "the removal module F_R",
            "key holder, one shot (eq. 5)",
            "rec-rst",
            snr["rst"],
            _paper_cell("rec-rst", "rst"),
            "well-informed: joint removal module",
        ),
    ]


def knowledge_note(n_trials: int, n_test: int, n_adaptive: int) -> str:
    """The attackers table's footnote: what its EERs and SNRs are measured on."""
    return (
        f"\nEER % averaged over (set, gender) on {n_trials} trials ({n_test} test utterances); the adaptive "
        f"verifier on the {n_adaptive} of them whose enrolment notebook 20 protected, its undone % against "
        f"rec-adv and rec-rec on those trials; SNR of the "
        f"recovered audio against x, dB (mean over test utterances). Paper: white / black box EER (ECAPA-TDNN / ENSKD), SNR.\n"
    )


def attacker_metrics(
    eer: Eers,
    eer_adaptive: Eers,
    snr: Mapping[str, float],
    purifier: Purifier,
    runs: Mapping[str, Any],
    data_curve: Sequence[Mapping[str, Any]],
    other_model: Mapping[str, float],
) -> dict[str, Any]:
    """Notebook 60's figures of merit: per attacker the white / black-box EER and SNR, the
    attacker networks' training (``runs``: :func:`spkadv.evaluation.attackers.fit` results), what a
    minute of training and an hour of pairs buy, and which adaptive verifier beats the protection.

    ``data_curve``: the data-size curve (its last point the main run, each with ``kind``,
    ``fraction``, ``pair_hours``, ``snr_db``); ``other_model``: ``train_minutes`` and ``steps`` of
    the second model.
    """
    w, b = "whitebox", "blackbox"
    out: dict[str, Any] = {
        "eer_white_recrec": eer[(w, "rec-rec")],
        "eer_black_recrec": eer[(b, "rec-rec")],
        "none_eer_white": eer[(w, "rec-adv")],
        "none_eer_black": eer[(b, "rec-adv")],
        "none_snr_db": snr["adv"],
        "purifier_best": purifier.name,
        "purifier_eer_white": purifier.eer_white,
        "purifier_eer_black": purifier.eer_black,
        "purifier_snr_db": purifier.snr_db,
        "adaptive_advadv_eer_white": eer[(w, "adv-adv")],
        "adaptive_advadv_eer_black": eer[(b, "adv-adv")],
        "adaptive_oracle_eer_white": eer[(w, "oracle-adv")],
        "adaptive_oracle_eer_black": eer[(b, "oracle-adv")],
        "adaptive_recadv_eer_white": eer_adaptive.get((w, "rec-adv"), math.nan),
        "other_model_eer_white": eer[(w, "rec-xrst")],
        "other_model_eer_black": eer[(b, "rec-xrst")],
        "other_model_snr_db": snr["xrst"],
        "other_model_train_minutes": other_model["train_minutes"],
        "other_model_steps": other_model["steps"],
        "generator_eer_white": eer[(w, "rec-rst_refined")],
        "generator_eer_black": eer[(b, "rec-rst_refined")],
        "generator_snr_db": snr["rst_refined"],
        "keyholder_eer_white": eer[(w, "rec-rst")],
        "keyholder_eer_black": eer[(b, "rec-rst")],
        "keyholder_snr_db": snr["rst"],
    }
    for k, run in runs.items():
        e_w = eer[(w, f"rec-att_{k}")]
        out.update(
            {
                f"attacker_{k}_eer_white": e_w,
                f"attacker_{k}_eer_black": eer[(b, f"rec-att_{k}")],
                f"attacker_{k}_snr_db": snr[f"att_{k}"],
                f"attacker_{k}_train_minutes": run.minutes,
                f"attacker_{k}_steps": run.settings.steps,
                f"attacker_{k}_pairs": run.pairs,
                f"attacker_{k}_pair_hours": run.pair_hours,
                f"attacker_{k}_undone_white_pct": undone_percent(
                    e_w, eer[(w, "rec-adv")], eer[(w, "rec-rec")]
                ),
            }
        )
    for k, run in runs.items():  # what a minute of training buys, on the curve utterances
        gain = run.history[-1]["snr_db"] - run.history[0]["snr_db"]
        out[f"attacker_{k}_curve_snr_gain_db"] = gain
        out[f"attacker_{k}_curve_snr_gain_db_per_minute"] = gain / max(run.minutes, 1e-9)
    for d in data_curve[:-1]:
        out[f"curve_{d['kind']}_pairs{d['fraction']:g}_snr_db"] = d["snr_db"]
    if len(data_curve) > 1:  # what an hour of pairs buys at equal steps
        lo, hi = data_curve[0], data_curve[-1]
        out[f"curve_{lo['kind']}_snr_gain_db_per_pair_hour"] = (hi["snr_db"] - lo["snr_db"]) / (
            hi["pair_hours"] - lo["pair_hours"]
        )
    beats = [c for c in ("adv-adv", "oracle-adv") if eer[(w, c)] < out["adaptive_recadv_eer_white"]]
    out["adaptive_beats_protection"] = ", ".join(beats) or "none"
    return out
