"""The protect-time settings study: code steps, code learning rate and code ball, re-chosen on dev.

A trained model (notebook 20) protects each utterance with a per-utterance (or per-segment) code
optimised against the white-box encoder (:func:`spkadv.core.protect.protection_code`): ``code_steps``
Adam steps at ``code_lr`` within a ball of ``code_radius`` (the model's meta). Those were chosen on
eval speakers; this study measures a grid of them on the held-out dev subset
(:func:`spkadv.studies.study.subset_rows`) with trials made as Table 1's
(:func:`spkadv.data.manifest.make_trials`, scored with the white-box encoder only), and picks one
with a stated rule (:func:`choose`). A variant is a dict of ``VARIANT_KEYS``, applied to the model
by overriding its meta (:func:`overridden`), the model left as it was afterwards.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from spkadv import SAMPLE_RATE
from spkadv.core import modelfile, protect
from spkadv.core.conditioning import optimise_code
from spkadv.data.manifest import make_trials
from spkadv.evaluation import conditions, metrics, plotting
from spkadv.studies import study

# what a variant may set: steps and learning rate of the code's optimisation, and the radius of
# the ball the code stays in as a multiple of the model's (the region training covered)
VARIANT_KEYS = ("code_steps", "code_lr", "code_radius_scale")
CURRENT = "current"  # the name of the model's own setting when no variant of the grid equals it


def current_setting(model: modelfile.ProtectionModel) -> dict[str, Any]:
    """The code settings ``model`` protects with: ``code_steps``, ``code_lr``, ``code_radius``
    from its meta, missing ones at the defaults :func:`spkadv.core.protect.protection_code` falls
    back to (those of :func:`spkadv.core.conditioning.optimise_code`)."""
    defaults = inspect.signature(optimise_code).parameters
    meta = model.meta
    return {
        "code_steps": int(meta.get("code_steps", 0)),
        "code_lr": float(meta.get("code_lr", defaults["lr"].default)),
        "code_radius": float(meta.get("code_radius", defaults["radius"].default)),
    }


def resolve(settings: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """The meta values of a variant: ``current`` (:func:`current_setting`) with ``settings``
    applied (``code_radius_scale`` multiplies the current radius).

    Raises:
        ValueError: an unknown key, or a value out of range (steps < 0, lr or scale <= 0).
    """
    unknown = sorted(set(settings) - set(VARIANT_KEYS))
    if unknown:
        raise ValueError(
            f"unknown protect-time setting(s) {unknown} in {settings}: "
            f"a variant sets only {', '.join(VARIANT_KEYS)}"
        )
    steps = settings.get("code_steps", current["code_steps"])
    lr = float(settings.get("code_lr", current["code_lr"]))
    scale = float(settings.get("code_radius_scale", 1.0))
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"code_steps={steps!r}: expected an integer >= 0")
    if not (lr > 0 and scale > 0 and math.isfinite(lr) and math.isfinite(scale)):
        raise ValueError(f"code_lr={lr}, code_radius_scale={scale}: both must be finite and > 0")
    return {"code_steps": steps, "code_lr": lr, "code_radius": current["code_radius"] * scale}


@contextlib.contextmanager
def overridden(
    model: modelfile.ProtectionModel, settings: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """``model`` with a variant's code settings in its meta (what ``protection_code`` reads),
    yielding them resolved; the meta is restored on leaving, also after an error."""
    resolved = resolve(settings, current_setting(model))
    saved = dict(model.meta)
    model.meta.update(resolved)
    try:
        yield resolved
    finally:
        model.meta.clear()
        model.meta.update(saved)


def with_current(
    variants: dict[str, dict[str, Any]], current: dict[str, Any]
) -> tuple[dict[str, dict[str, Any]], str]:
    """(the grid, the name of its variant that equals ``current``): the first such variant, or
    :data:`CURRENT` added at the front when none does (the cost limit is relative to it)."""
    for name, settings in variants.items():
        if resolve(settings, current) == current:
            return dict(variants), name
    if CURRENT in variants:
        raise ValueError(
            f"variant {CURRENT!r} differs from the model's setting {current}: rename it"
        )
    return {CURRENT: {}, **variants}, CURRENT


def dev_set(
    rows: pd.DataFrame,
    per_speaker: int,
    max_seconds: float,
    nontargets: int,
    seed: int,
    speakers_per_gender: int = 0,
) -> tuple[study.EvalSet, pd.DataFrame]:
    """(the subset, its trials): the first ``per_speaker`` utterances of each speaker of ``rows``
    (:func:`spkadv.studies.study.subset_rows`; only the first ``speakers_per_gender`` speakers of
    each gender in their order, 0: all) cut to ``max_seconds``, and trials made on them as
    Table 1's (one target and up to ``nontargets`` same-gender enrolments per test utterance)."""
    if per_speaker < 2:
        raise ValueError(f"{per_speaker} utterance(s) per speaker: a target trial needs 2")
    if speakers_per_gender > 0:
        firsts = (
            rows.drop_duplicates("speaker").groupby("gender", sort=False).head(speakers_per_gender)
        )
        rows = rows[rows["speaker"].isin(firsts["speaker"])]
    evalset = study.EvalSet.from_manifest(rows, per_speaker, max_seconds)
    chosen = rows[rows["utt_id"].isin(evalset.utt_ids)]
    subset = str(chosen["subset"].iloc[0])
    return evalset, make_trials(chosen, nontargets, seed, subset=subset)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def warm_up(model: modelfile.ProtectionModel, evalset: study.EvalSet) -> None:
    """Protect the subset's first utterance once, untimed, on one thread: the first code
    optimisation of a process pays for one-time set-up (allocations, the encoder's first backward
    pass), which would otherwise be charged to whichever variant :func:`measure` times first."""
    with one_thread():
        x = evalset.waves[0]
        protect.protect(model, x, code=protect.protection_code(model, x))


def measure(
    model: modelfile.ProtectionModel,
    evalset: study.EvalSet,
    trials: pd.DataFrame,
    rec: dict[str, np.ndarray],
    settings: dict[str, Any],
    noise_seed: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """One variant on the dev subset, with the white-box encoder.

    Each utterance is protected with its code optimised under ``settings`` and restored one-shot
    by F_R with that code; gn is Gaussian noise of δ's power. Returns rec-adv and rec-gn EER (%)
    on ``trials`` (``rec``: utt_id -> embedding of the originals), mean cos(x, x') and cos(x, gn),
    SNR(adv) and SNR(rst) (dB, mean over utterances), and ``protect_cost``: the CPU seconds of
    code optimisation and protection per audio second, on one torch thread.
    """
    encoder = model.encoder()
    advs, gns, snr_adv, snr_rst, cpu = [], [], [], [], 0.0
    with overridden(model, settings) as resolved, one_thread():
        pairs = zip(evalset.utt_ids, evalset.waves, strict=True)
        for utt, x in tqdm(list(pairs), desc=str(resolved), disable=not progress):
            started = time.process_time()
            code = protect.protection_code(model, x)
            adv = protect.protect(model, x, code=code)
            cpu += time.process_time() - started
            rst = protect.restore(model, adv, code=code)
            advs.append(adv)
            gns.append(conditions.matched_noise(x, adv - x, noise_seed, utt))
            snr_adv.append(metrics.snr_db(x, adv))
            snr_rst.append(metrics.snr_db(x, rst))
        scores = score_protected(encoder, evalset, trials, rec, advs, gns)
    audio_seconds = sum(len(x) for x in evalset.waves) / SAMPLE_RATE
    return {
        **resolved,
        **scores,
        "snr_adv_db": conditions.mean_db(snr_adv),
        "snr_rst_db": conditions.mean_db(snr_rst),
        "protect_cost": cpu / audio_seconds,
    }


def score_protected(
    encoder: torch.nn.Module,
    evalset: study.EvalSet,
    trials: pd.DataFrame,
    rec: dict[str, np.ndarray],
    advs: list[np.ndarray],
    gns: list[np.ndarray],
) -> dict[str, float]:
    """rec-adv and rec-gn EER (%) on ``trials`` and mean cos(x, x') and cos(x, gn) of the
    protected (``advs``) and noised (``gns``) waveforms of ``evalset``, in its order."""
    embeddings = {
        "rec": rec,
        "adv": dict(zip(evalset.utt_ids, study.embed(encoder, advs), strict=True)),
        "gn": dict(zip(evalset.utt_ids, study.embed(encoder, gns), strict=True)),
    }
    eers = conditions.condition_eers(trials, embeddings, ["rec-adv", "rec-gn"])
    rec_stack = np.stack([rec[u] for u in evalset.utt_ids])

    def mean_cos(condition: str) -> float:
        emb = np.stack([embeddings[condition][u] for u in evalset.utt_ids])
        return float(np.mean(np.sum(rec_stack * emb, axis=1)))

    return {
        "eer_recadv": eers["rec-adv"],
        "eer_recgn": eers["rec-gn"],
        "cos_x_adv": mean_cos("adv"),
        "cos_x_gn": mean_cos("gn"),
    }


@dataclass(frozen=True)
class ChoiceRule:
    """The choice among variants (an assumption, beyond the paper): the highest rec-adv EER
    among those with SNR(adv) >= ``min_snr_adv_db``, SNR(rst) >= ``min_snr_rst_db`` and a
    protect cost at most ``max_cost_ratio`` times the current setting's; ties by lower cost."""

    min_snr_adv_db: float = 30.0
    min_snr_rst_db: float = 45.0
    max_cost_ratio: float = 2.0

    def text(self) -> str:
        return (
            f"SNR(adv) >= {self.min_snr_adv_db:g} dB, SNR(rst) >= {self.min_snr_rst_db:g} dB, "
            f"protect cost <= {self.max_cost_ratio:g}x the current setting's"
        )


def meets_rule(table: pd.DataFrame, current: str, rule: ChoiceRule) -> pd.Series:
    """Per row of ``table`` (indexed by variant, columns of :func:`measure`): within the rule's
    constraints, with costs relative to the row ``current``."""
    if current not in table.index:
        raise ValueError(f"the current setting {current!r} is not among {list(table.index)}")
    limit = rule.max_cost_ratio * table.loc[current, "protect_cost"]
    return (
        (table["snr_adv_db"] >= rule.min_snr_adv_db)
        & (table["snr_rst_db"] >= rule.min_snr_rst_db)
        & (table["protect_cost"] <= limit)
    )


def choose(table: pd.DataFrame, current: str, rule: ChoiceRule) -> str | None:
    """The variant :class:`ChoiceRule` picks from ``table`` (indexed by variant), or None when no
    variant meets its constraints."""
    ok = table[meets_rule(table, current, rule)]
    if ok.empty:
        return None
    ranked = ok.assign(_neg=-ok["eer_recadv"]).sort_values(["_neg", "protect_cost"], kind="stable")
    return str(ranked.index[0])


def summary_table(
    table: pd.DataFrame, current: str, chosen: str | None, rule: ChoiceRule
) -> pd.DataFrame:
    """The study's table: one row per variant, its settings and measures, its cost relative to
    the current setting, whether it meets the rule, and which is current and chosen."""
    out = table.copy()
    out["cost_ratio"] = out["protect_cost"] / out.loc[current, "protect_cost"]
    out["meets_rule"] = meets_rule(table, current, rule)
    out["current"] = out.index == current
    out["chosen"] = out.index == chosen
    return out.reset_index(names="variant")


def figures_of_merit(
    summary: pd.DataFrame, current: dict[str, Any], chosen: str | None, rule: ChoiceRule, text: str
) -> dict[str, Any]:
    """The study's flat metrics from :func:`summary_table`: the current setting (its variant and
    ``current_<key>`` of :func:`current_setting`), ``chosen`` (None: no variant within the rule),
    ``dev_confirms_current``, the rule and conclusion ``text``, and ``<variant slug>__<column>``
    per variant."""
    current_name = str(summary.loc[summary["current"], "variant"].iloc[0])
    out: dict[str, Any] = {
        "current": current_name,
        **{f"current_{k}": v for k, v in current.items()},
        "chosen": chosen,
        "dev_confirms_current": chosen == current_name,
        "rule": rule.text(),
        "conclusion": text,
    }
    for row in summary.to_dict("records"):
        slug = "".join(ch if ch.isalnum() else "_" for ch in row["variant"]).strip("_")
        out.update({f"{slug}__{k}": v for k, v in row.items() if k != "variant"})
    return out


def _setting_text(row) -> str:
    return f"CODE_STEPS {int(row['code_steps'])}, code lr {row['code_lr']:g}, code ball radius {row['code_radius']:.3g}"


def conclusion(table: pd.DataFrame, current: str, chosen: str | None, rule: ChoiceRule) -> str:
    """The study's conclusion, built from ``table`` (indexed by variant)."""
    cur = table.loc[current]
    measured = (
        f"rec-adv {cur['eer_recadv']:.2f} % (noise of the same power {cur['eer_recgn']:.2f} %), "
        f"SNR(adv) {cur['snr_adv_db']:.1f} dB, SNR(rst) {cur['snr_rst_db']:.1f} dB, "
        f"{cur['protect_cost']:.3f} CPU s per audio second"
    )
    if chosen is None:
        return (
            f"No variant meets the rule on dev ({rule.text()}); dev neither confirms nor replaces "
            f"the current setting ({current!r}: {_setting_text(cur)}: {measured})."
        )
    ok = meets_rule(table, current, rule)
    if chosen == current:
        others = table[ok & (table.index != current)].sort_values("eer_recadv", ascending=False)
        nxt = (
            f"; next best within the rule: {others.index[0]} at {others['eer_recadv'].iloc[0]:.2f} %"
            if len(others)
            else ""
        )
        return (
            f"dev confirms {_setting_text(cur)}: {measured}; "
            f"the highest rec-adv of the {int(ok.sum())} of {len(table)} variants within the rule "
            f"({rule.text()}){nxt}."
        )
    new = table.loc[chosen]
    return (
        f"dev would choose {chosen} ({_setting_text(new)}): rec-adv {new['eer_recadv']:.2f} % "
        f"(noise {new['eer_recgn']:.2f} %), SNR(adv) {new['snr_adv_db']:.1f} dB, SNR(rst) "
        f"{new['snr_rst_db']:.1f} dB, {new['protect_cost']:.3f} CPU s per audio second "
        f"({new['protect_cost'] / cur['protect_cost']:.2f}x), against the current setting "
        f"({current!r}: {_setting_text(cur)}): {measured}. Rule: {rule.text()}."
    )


def cost_figure(
    table: pd.DataFrame, current: str, chosen: str | None, rule: ChoiceRule, title: str
):
    """rec-adv EER against protect cost, one labelled point per variant (filled: within the
    rule; the current setting and the chosen one marked)."""
    plotting.setup()
    import matplotlib.pyplot as plt  # lazy: after setup() has chosen the backend (Agg in batch)

    ok = meets_rule(table, current, rule)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    offsets = [(6, 4), (6, -11), (6, 15), (6, -22)]  # staggered: variants often sit close
    for i, (name, row) in enumerate(table.iterrows()):
        point = (row["protect_cost"], row["eer_recadv"])
        ax.scatter(*point, s=60, edgecolors="C0", facecolors="C0" if ok[name] else "none", zorder=3)
        mark = " (current)" if name == current else ""
        mark += " ← chosen" if name == chosen else ""
        ax.annotate(f"{name}{mark}", point, textcoords="offset points",
                    xytext=offsets[i % len(offsets)], fontsize=8)  # fmt: skip
    limit = rule.max_cost_ratio * table.loc[current, "protect_cost"]
    ax.axvline(
        limit, color="grey", ls="--", lw=1, label=f"cost limit ({rule.max_cost_ratio:g}x current)"
    )
    ax.set_xlabel("protect cost (CPU s per audio second, one thread)")
    ax.set_ylabel("rec-adv EER (%), white box, dev trials")
    ax.set_title(title)
    ax.legend(fontsize=8, title="filled: within the rule", title_fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
