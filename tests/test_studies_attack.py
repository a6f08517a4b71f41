"""The attack study's result: its figures of merit and its conclusion, written from the table."""

from __future__ import annotations

import math

import pandas as pd
from spkadv.studies import attack


def _final() -> pd.DataFrame:
    rows = {
        # variant: rec-adv, rec-gn, cos(x, x'), SNR(adv), steps per CPU s
        "base": (6.0, 3.0, 0.80, 27.0, 1.0),
        "bf16": (6.2, 3.0, 0.79, 27.5, 1.4),
        "wide": (3.5, 3.5, 1.00, 200.0, 1.3),
        "crop2s": (6.4, 3.0, 0.78, 27.2, 1.3),
        "segcode": (6.5, 3.0, 0.77, 26.0, 1.4),
        "segcode+opt5": (11.0, 3.0, 0.63, 26.5, 1.4),
        "pgd5": (60.0, 3.0, -0.09, 26.6, math.nan),
    }
    return pd.DataFrame(
        [
            {"eer_recrec": 3.5, "eer_recadv": a, "eer_recgn": g, "adversarial_gain": a / g,
             "cos_x_adv": c, "cos_x_gn": 0.94, "snr_adv_db": s, "steps_per_cpu_second": r}
            for a, g, c, s, r in rows.values()
        ],
        index=pd.Index(list(rows), name="variant"),
    )  # fmt: skip


PARAMS = {
    "MODEL_CODE_FILM": True,
    "MODEL_CODE_SEGMENT_SECONDS": 0.25,
    "CODE_STEPS": 10,
    "CPU_BF16": True,
}


def test_conclusion_names_the_winner_the_collapse_the_code_gain_and_the_frontier() -> None:
    text = attack.conclusion(_final(), "segcode+opt5", PARAMS, bf16_native=True)
    assert "**segcode+opt5** gave the largest rec-adv EER, 11.00 %" in text
    assert "wide: δ vanished" in text
    assert (
        "Changes to how the generator is trained only (crop2s) moved rec-adv by +0.20 points against bf16"
        in text
    )
    assert (
        "raised rec-adv from 6.50 to 11.00 %" in text
        and "lowered cos(x, x′) from 0.770 to 0.630" in text
    )
    assert "more than the largest drop any training-only change gave" in text
    assert "1.40× the training steps per CPU second" in text and "native bf16" in text
    assert "the generator's family" in text  # PGD goes much further at the same power
    assert "one code per 0.25 s segment, optimised for 10 steps" in text
    assert all(line.startswith("- ") for line in text.splitlines())


def test_conclusion_reads_ties_and_a_perfectly_separated_subset() -> None:
    final = _final().drop(index=["wide", "pgd5"])
    final["eer_recrec"] = 0.0
    final["eer_recadv"] = 0.0
    final["eer_recgn"] = 0.0
    final["adversarial_gain"] = math.nan
    text = attack.conclusion(final, "base", {}, bf16_native=False)
    assert (
        "separates these speakers perfectly" in text and "cos(x, x′) is the telling measure" in text
    )
    assert (
        "rec-adv ties at 0.00 % among" in text
        and "the lowest cos(x, x′) is **segcode+opt5**'s" in text
    )
    assert "No variant collapsed" in text and "no native bf16" in text
    assert "no per-utterance code" in text


def test_metrics_keep_their_keys_and_give_none_for_an_undefined_gain() -> None:
    final = _final()
    final.loc["base", "adversarial_gain"] = math.nan
    m = attack.study_metrics(final, "segcode+opt5", 4.0, "dev", 120)
    assert m["variants"] == "base,bf16,wide,crop2s,segcode,segcode+opt5,pgd5"
    assert m["best_variant"] == "segcode+opt5" and m["eer_recrec"] == 3.5
    assert m["base.adversarial_gain"] is None and m["pgd5.eer_recadv"] == 60.0
    assert attack.is_pgd("pgd5") and not attack.is_pgd("pgdx") and not attack.is_pgd("base")


def test_curve_figure_draws_each_variant_and_the_frontier() -> None:
    final = _final()
    final["cpu_minutes"] = 4.0
    curve = final.drop(index="pgd5").reset_index()
    fig = attack.curve_figure(curve, final, 5, "test")
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "segcode+opt5" in labels and "PGD 5 steps, matched SNR" in labels
