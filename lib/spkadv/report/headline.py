"""The report's headline: the run's figures beside the paper's, with the gap said in words."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from spkadv.evaluation import tables as evaluation

# EER condition -> (better direction, what it measures)
_EER_MEANING = {
    "rec_rec": (0, "clean verification, the baseline"),
    "rec_adv": (1, "protection: higher EER = the speaker is hidden better"),
    "adv_adv": (1, "protection when both sides are protected"),
    "rec_rst": (-1, "restoration: should come back to rec-rec"),
    "rec_an": (1, "protection left after noise purification"),
}
_TABLE2_ROWS = (  # (metrics.json prefix, paper metric, unit, better direction, tolerance)
    ("pesq", "PESQ", "", 1, 0.1),
    ("snr", "SNR", " dB", 1, 1.0),
    ("wer", "WER", " %", -1, 1.0),
)
_CONDITION_WORDS = {"adv": "protected", "rst": "restored", "an": "noise-purified"}


def number(v: Any) -> float:
    """A metrics.json value as a float (``"inf"`` included); NaN when it is not a number."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def gap_words(ours: float, paper: float, better: int, tolerance: float, unit: str) -> str:
    """The gap to the paper in words, e.g. '3.2 % below the paper: worse'."""
    if any(isinstance(v, float) and math.isnan(v) for v in (ours, paper)):
        return "not comparable"
    if math.isinf(ours) or math.isinf(paper):
        return "as the paper" if ours == paper else "not comparable (infinite value)"
    diff = ours - paper
    if abs(diff) <= tolerance:
        return f"close to the paper (within {tolerance:g}{unit})"
    side = "above" if diff > 0 else "below"
    words = f"{abs(diff):.2f}{unit} {side} the paper"
    if better:
        words += ": better" if diff * better > 0 else ": worse"
    return words


def verdict(gap: str) -> str:
    """'better', 'worse' or '' from a :func:`gap_words` sentence (the CSS class of the cell)."""
    return next((w for w in ("better", "worse") if gap.endswith(w)), "")


def _row(what: str, ours: Any, paper: Any, gap: str, meaning: str) -> dict[str, Any]:
    return {
        "what": what,
        "ours": number(ours),
        "paper": float(paper),
        "gap": gap,
        "verdict": verdict(gap),
        "meaning": meaning,
    }


def headline_rows(metrics: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows (what, ours, paper, gap, verdict, meaning) from stages 40 and 50 and the paper."""
    rows = []
    m40 = next((m for s, m in metrics.items() if s.startswith("40_")), {})
    for role in ("whitebox", "blackbox"):
        for cond, (better, meaning) in _EER_MEANING.items():
            ours, paper = m40.get(f"eer_{role}_{cond}"), m40.get(f"paper_eer_{role}_{cond}")
            if ours is None or paper is None:
                continue
            what = (
                f"EER {cond.replace('_', '-')}, {role} (paper: {evaluation.PAPER_ENCODERS[role]})"
            )
            gap = gap_words(number(ours), float(paper), better, 1.0, " points")
            rows.append(_row(what, ours, paper, gap, meaning))
    m50 = next((m for s, m in metrics.items() if s.startswith("50_")), {})
    for key, paper_metric, unit, better, tol in _TABLE2_ROWS:
        for cond in ("adv", "rst", "an"):
            ours = m50.get(f"{key}_{cond}")
            paper = evaluation.PAPER_TABLE2.get((paper_metric, cond))
            if ours is None or paper is None:
                continue
            gap = gap_words(number(ours), float(paper), better, tol, unit)
            meaning = f"{_CONDITION_WORDS[cond]} audio against the original"
            rows.append(_row(f"{paper_metric} {cond}", ours, paper, gap, meaning))
    return rows
