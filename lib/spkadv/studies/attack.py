"""The attack study's result (notebook 90): its learning-curve figure, its figures of merit and its
conclusion, written from the scored variants (:func:`spkadv.studies.study.run_variant`).

``final`` is the study's table: one row per variant (its last point of the budget), the ``+opt``
rows (the code optimised per utterance) and the PGD row (``pgd<steps>``), indexed by name, with the
columns of :func:`spkadv.studies.study.score` and the training rates.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from spkadv.base import precision
from spkadv.evaluation import plotting
from spkadv.studies.wording import COS_TOLERANCE, bullets, change, listing, signed, times

# A variant whose δ is this far below the speech (SNR(adv), dB) has collapsed to no perturbation:
# below the 16-bit quantisation floor (about 77 dB), inaudible and harmless to any encoder.
VANISHED_SNR_DB = 80.0

# Variants that change only how the generator is trained (target, crops, context, field), on top of
# bf16; the code variants change what can be optimised per utterance.
TRAINING_ONLY = ("centroid", "context", "wide", "crop2s")


# The columns of the study's table (study.md).
TABLE_COLUMNS = [
    "eer_recrec",
    "eer_recadv",
    "eer_recgn",
    "adversarial_gain",
    "cos_x_adv",
    "snr_adv_db",
    "pesq_adv_nb_raw",
    "steps",
    "steps_per_cpu_second",
    "audio_hours_seen",
    "cpu_minutes",
]


def is_pgd(name: str) -> bool:
    """Whether a row of the study's table is the PGD frontier (``pgd<steps>``), not a variant."""
    return name.startswith("pgd") and name[3:].isdigit()


def curve_figure(curve: pd.DataFrame, final: pd.DataFrame, pgd_steps: int, profile: str):
    """rec-adv EER against training CPU minutes per variant, the ``+opt`` rows as stars, PGD
    (dashed), rec-gn (dotted) and rec-rec (thin) of the first variant as lines."""
    plotting.setup()
    import matplotlib.pyplot as plt  # after plotting.setup(), which picks the backend

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for name, grp in curve[~curve["variant"].str.contains("opt")].groupby("variant", sort=False):
        ax.plot(grp["cpu_minutes"], grp["eer_recadv"], marker="o", label=name)
    for name in final.index:
        if "opt" in name:
            ax.scatter([final.loc[name, "cpu_minutes"]], [final.loc[name, "eer_recadv"]], marker="*", s=120, label=name, zorder=3)  # fmt: skip
    if pgd_steps:
        ax.axhline(final.loc[f"pgd{pgd_steps}", "eer_recadv"], ls="--", c="k", lw=1, label=f"PGD {pgd_steps} steps, matched SNR")  # fmt: skip
    ax.axhline(final["eer_recgn"].iloc[0], ls=":", c="gray", lw=1, label="rec-gn (noise, same SNR)")
    ax.axhline(final["eer_recrec"].iloc[0], ls="-", c="gray", lw=0.6, label="rec-rec")
    ax.set_xlabel("training CPU minutes (1 thread)")
    ax.set_ylabel("rec-adv EER (%)")
    ax.set_title(f"attack study, {profile}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def study_metrics(
    final: pd.DataFrame, best: str, cpu_minutes: float, subset: str, utterances: int
) -> dict[str, Any]:
    """The study's ``metrics.json``: per row rec-adv, rec-gn, SNR(adv) and adversarial gain (None
    where rec-gn is 0), the best variant (largest rec-adv) and the subset."""
    m: dict[str, Any] = {
        "variants": ",".join(final.index),
        "best_variant": best,
        "cpu_minutes_per_variant": cpu_minutes,
        "subset": subset,
        "subset_utterances": utterances,
    }
    for name, r in final.iterrows():
        for key in ("eer_recadv", "eer_recgn", "snr_adv_db", "adversarial_gain"):
            m[f"{name}.{key}"] = None if pd.isna(r[key]) else float(r[key])
    m["eer_recrec"] = float(final["eer_recrec"].iloc[0])
    return m


def _moved(what: str, before: float, after: float, digits: int, unit: str, tol: float) -> str:
    """ "raised rec-adv from 6.66 to 8.33 %" / "left rec-adv unchanged (6.66 %)"."""
    verb = change(after - before, tol)
    if verb == "left unchanged":
        return f"left {what} unchanged ({after:.{digits}f}{unit})"
    return f"{verb} {what} from {before:.{digits}f} to {after:.{digits}f}{unit}"


def _range(values: pd.Series, digits: int) -> str:
    lo, hi = signed(values.min(), digits), signed(values.max(), digits)
    return lo if lo == hi else f"{lo} to {hi}"


def conclusion(
    final: pd.DataFrame, best: str, params: dict[str, Any], bf16_native: bool | None = None
) -> str:
    """The study's conclusion in Markdown, every number and every comparison word taken from
    ``final`` (see the module): the strongest variant, collapses, what the training-only changes
    and the per-utterance code optimisation moved, bf16's speed, the distance to PGD, and what the
    profile's own generator (``params``, notebooks 10/20) uses. ``bf16_native``: whether this CPU
    has native bf16 (default: asked of :func:`spkadv.base.precision.bf16_available`)."""
    if bf16_native is None:
        bf16_native = precision.bf16_available()
    gen = final[[not is_pgd(n) for n in final.index]]
    ref = "base" if "base" in gen.index else gen.index[0]
    rr = float(final["eer_recrec"].iloc[0])
    lines = [
        f"rec-rec EER on this subset is {rr:.2f} %"
        + (
            ": the white-box encoder separates these speakers perfectly, so the EERs rest on a few "
            "errors and cos(x, x′) is the telling measure"
            if rr == 0
            else ""
        )
    ]
    top = gen["eer_recadv"].max()
    tied = list(gen.index[gen["eer_recadv"] == top])
    low = gen["cos_x_adv"].idxmin()
    if len(tied) == 1:
        gain = gen.loc[best, "adversarial_gain"]
        gain_text = "undefined, rec-gn 0 %" if pd.isna(gain) else f"{gain:.2f}"
        head = (
            f"**{best}** gave the largest rec-adv EER, {top:.2f} % ({ref}: {gen.loc[ref, 'eer_recadv']:.2f} %; "
            f"noise of the same power: {gen.loc[best, 'eer_recgn']:.2f} %, adversarial gain {gain_text})"
        )
    else:
        head = (
            f"rec-adv ties at {top:.2f} % among {listing(tied)} ({best}, the first, sets PGD's SNR)"
        )
    lines.append(
        f"{head}; the lowest cos(x, x′) is **{low}**'s, {gen.loc[low, 'cos_x_adv']:.3f} "
        f"({ref}: {gen.loc[ref, 'cos_x_adv']:.3f}; noise of the same power: {gen.loc[low, 'cos_x_gn']:.3f})"
    )
    vanished = list(gen.index[gen["snr_adv_db"] >= VANISHED_SNR_DB])
    lines.append(
        f"{listing(vanished)}: δ vanished (SNR(adv) ≥ {VANISHED_SNR_DB:g} dB), the generator collapsed to no perturbation at this budget"
        if vanished
        else f"No variant collapsed to δ = 0 (every SNR(adv) is below {VANISHED_SNR_DB:g} dB)"
    )
    trained_ref = "bf16" if "bf16" in gen.index else ref
    trained = [n for n in TRAINING_ONLY if n in gen.index and n not in vanished]
    drop_training = None
    if trained:
        d_eer = gen.loc[trained, "eer_recadv"] - gen.loc[trained_ref, "eer_recadv"]
        d_cos = gen.loc[trained, "cos_x_adv"] - gen.loc[trained_ref, "cos_x_adv"]
        drop_training = float(-d_cos.min())
        lines.append(
            f"Changes to how the generator is trained only ({listing(trained)}) moved rec-adv by "
            f"{_range(d_eer, 2)} points against {trained_ref} and cos(x, x′) by {_range(d_cos, 3)}"
        )
    for name in gen.index:
        if "+opt" not in name:
            continue
        plain, steps = name.split("+opt")
        if plain not in gen.index:
            continue
        a, b = gen.loc[plain], gen.loc[name]
        drop = float(a["cos_x_adv"] - b["cos_x_adv"])
        text = (
            f"Optimising the code of `{plain}` per utterance ({steps} steps) "
            f"{_moved('rec-adv', a['eer_recadv'], b['eer_recadv'], 2, ' %', 0.0)} and "
            f"{_moved('cos(x, x′)', a['cos_x_adv'], b['cos_x_adv'], 3, '', COS_TOLERANCE)}"
        )
        if drop_training is not None:
            word = "more" if drop > drop_training else "no more"
            text += f": {word} than the largest drop any training-only change gave ({signed(drop_training, 3)})"
        lines.append(text)
    if {"base", "bf16"} <= set(gen.index):
        rate = times(
            gen.loc["bf16", "steps_per_cpu_second"], gen.loc["base", "steps_per_cpu_second"]
        )
        lines.append(
            f"CPU bf16 autocast ran {rate} the training steps per CPU second of fp32 base "
            f"({'native bf16 on this CPU' if bf16_native else 'this CPU has no native bf16, so it trained in float32'}), "
            f"at rec-adv {gen.loc['bf16', 'eer_recadv']:.2f} against {gen.loc['base', 'eer_recadv']:.2f} %"
        )
    for name in final.index[[is_pgd(n) for n in final.index]]:
        p, b = final.loc[name], gen.loc[best]
        stronger = (
            p["eer_recadv"] > b["eer_recadv"] or p["cos_x_adv"] < b["cos_x_adv"] - COS_TOLERANCE
        )
        lines.append(
            f"Per-utterance PGD ({name[3:]} steps on the white box) at {best}'s SNR reaches rec-adv "
            f"{p['eer_recadv']:.2f} % and cos(x, x′) {p['cos_x_adv']:.3f} at {p['snr_adv_db']:.1f} dB, "
            f"against {b['eer_recadv']:.2f} % and {b['cos_x_adv']:.3f} for {best}"
            + (
                ": at the same power an optimiser per utterance goes further, so what limits the "
                "protection is the generator's family (one network, a code in its bottleneck), not the power"
                if stronger
                else ": PGD does no better than the generator at this budget"
            )
        )
    lines.append(_profile_line(params))
    return bullets(lines)


def _profile_line(params: dict[str, Any]) -> str:
    """What the profile's own generator (notebooks 10 and 20) took of the study's variants."""
    if params.get("MODEL_CODE_FILM"):
        seg = float(params.get("MODEL_CODE_SEGMENT_SECONDS", 0.0))
        code = f"one code per {seg:g} s segment" if seg > 0 else "one code per utterance"
        code += f", optimised for {params.get('CODE_STEPS', 0)} steps per utterance when protecting"
    else:
        code = "no per-utterance code"
    bf16 = "on" if params.get("CPU_BF16") else "off"
    return (
        f"This profile's own generator (notebooks 10 and 20) uses {code}, CPU bf16 {bf16}, and eq. 2 "
        f"against the {params.get('ATTACK_TARGET', 'utterance')}"
    )
