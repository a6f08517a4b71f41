"""The training-time settings study: notebook 20's loss and optimiser settings re-chosen on dev.

Some settings of the joint training (the quality loss and its weight, the attack intensity, the
learning rate, the mask's initialisation and the removal phase's optimiser) were chosen by earlier
runs that measured on eval speakers. Notebook 96 retrains notebook 20's configuration once per
*arm* (the profile's settings with a few keys changed) and seed, at a fraction of its joint steps
(a CPU budget), and scores each model on the held-out dev subset exactly as study 94 scores a
protect-time setting (:func:`spkadv.studies.settings.measure`: trials made as Table 1's, the
white-box encoder only). :func:`choose` then picks an arm with a stated rule (:class:`ArmRule`).

Each (arm, seed) run lives in its own cache folder named by the training configuration's digest:
the model file and the scores of a subset are written there, so an interrupted study resumes where
it stopped and a rerun with the same settings costs nothing.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from spkadv.base import config
from spkadv.base.fileio import read_json, write_json
from spkadv.core import modelfile, train
from spkadv.evaluation import plotting
from spkadv.studies import settings, study
from spkadv.studies.wording import listing

CURRENT = "current"  # the arm with the profile's own settings (always measured)
# what the arm table reports per arm: the mean over its seeds (and min / max of the SNRs)
_MEAN_KEYS = ("eer_recadv", "eer_recgn", "cos_x_adv", "cos_x_gn", "snr_adv_db", "snr_rst_db")


def arms(params: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The study's arms: :data:`CURRENT` (``params``), then one per entry of ``overrides``
    (name -> profile keys to change), in that order.

    Raises:
        ValueError: an arm named :data:`CURRENT`, an empty arm, an arm equal to the profile, or a
            key that neither the profile nor notebook 20 has.
    """
    known = set(params) | set(
        config.notebook_parameters(config.notebooks_dir() / "20_joint_training.ipynb")
    )
    out = {CURRENT: dict(params)}
    for name, changes in overrides.items():
        if name == CURRENT:
            raise ValueError(f"arm name {CURRENT!r} is the profile's own settings: rename the arm")
        if not changes:
            raise ValueError(f"arm {name!r} changes no key: every arm must differ from the profile")
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(
                f"arm {name!r} names keys that neither the profile nor notebook 20 has: {unknown}"
            )
        if all(params.get(k) == v for k, v in changes.items()):
            raise ValueError(f"arm {name!r} ({changes}) equals the profile's settings")
        out[name] = {**params, **changes}
    return out


def training_config(
    params: dict[str, Any], seed: int, step_fraction: float, removal_fraction: float
) -> train.TrainConfig:
    """Notebook 20's training configuration of ``params`` with ``seed``, ``step_fraction`` of its
    joint steps and ``removal_fraction`` of its F_R-alone steps."""
    if not (0 < step_fraction <= 1 and 0 <= removal_fraction <= 1):
        raise ValueError(
            f"step fractions {step_fraction}, {removal_fraction}: expected 0 < joint <= 1 and "
            "0 <= removal <= 1"
        )
    cfg = train.config_from_params(
        {**params, "SEED": seed}, "JOINT_STEPS", "JOINT_WARM_START_STEPS", joint=True
    )
    return dataclasses.replace(
        cfg,
        steps=max(1, round(cfg.steps * step_fraction)),
        removal_steps=round(cfg.removal_steps * removal_fraction),
    )


def trained_model(
    params: dict[str, Any],
    cfg: train.TrainConfig,
    waves: Sequence[np.ndarray],
    speakers: Sequence[str],
    encoder: torch.nn.Module,
    run_dir: Path,
) -> modelfile.ProtectionModel:
    """The model of one run: read from ``run_dir/model.pt``, or trained there (resuming its
    checkpoint) and written with the meta notebook 20 writes (same protect-time settings)."""
    path = run_dir / "model.pt"
    if not path.exists():
        result = train.train(
            cfg, waves, encoder, run_dir, progress=False, speakers=speakers,
            device=torch.device("cpu"),
        )  # fmt: skip
        meta = modelfile.model_meta(
            "study", params.get("WHITEBOX_ENCODER", "campplus"), result.steps,
            int(params.get("CODE_STEPS", 0)), cfg.weights.snr_target_db, cfg.code_sigma,
            cfg.model.code_dim, code_bf16=bool(params.get("CODE_BF16", False)),
        )  # fmt: skip
        modelfile.save_model(path, result.generator, result.removal, cfg.eps, meta=meta)
    return modelfile.load_model(path)


def run_grid(
    grid: dict[str, dict[str, Any]],
    seeds: Sequence[int],
    step_fraction: float,
    removal_fraction: float,
    waves: Sequence[np.ndarray],
    speakers: Sequence[str],
    encoder: torch.nn.Module,
    evalset: study.EvalSet,
    trials: pd.DataFrame,
    rec: dict[str, np.ndarray],
    cache: Path,
    report: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Every arm × seed trained (one torch thread) and scored on the subset with
    :func:`spkadv.studies.settings.measure` (the model's own protect-time settings); one row per
    run with ``arm``, ``seed``, ``steps`` and the scores, one line per run to ``report``.

    ``collapsed`` flags a run whose removal is a no-op (SNR(rst) < SNR(adv) + 3 dB) or whose
    attack moves embeddings no more than noise of the same power (cos(x, x') >= cos(x, gn)).
    """
    subset_key = study._digest(
        {"utts": evalset.utt_ids, "samples": [len(w) for w in evalset.waves],
         "trials": trials[["enrol", "test", "target"]].astype(str).values.tolist()}
    )  # fmt: skip
    rows = []
    total = len(grid) * len(seeds)
    for arm, params in grid.items():
        for seed in seeds:
            cfg = training_config(params, seed, step_fraction, removal_fraction)
            run_dir = cache / f"seed{seed}-{study.config_digest(cfg)}"
            scores_path = run_dir / f"scores-{subset_key}.json"
            if scores_path.exists():
                scores = read_json(scores_path)
            else:
                with settings.one_thread():
                    model = trained_model(params, cfg, waves, speakers, encoder, run_dir)
                scores = {"steps": int(model.meta["steps"]), **settings.measure(model, evalset, trials, rec, {})}  # fmt: skip
                write_json(scores_path, scores)
            collapsed = bool(
                scores["snr_rst_db"] < scores["snr_adv_db"] + 3
                or scores["cos_x_adv"] >= scores["cos_x_gn"]
            )
            ordered = {k: scores[k] for k in sorted(scores)}  # the same columns fresh or resumed
            rows.append({"arm": arm, "seed": seed, **ordered, "collapsed": collapsed})
            report(
                f"[{len(rows)}/{total}] {arm}, seed {seed}: rec-adv {scores['eer_recadv']:.2f} % "
                f"(gn {scores['eer_recgn']:.2f}), cos {scores['cos_x_adv']:.3f} (gn {scores['cos_x_gn']:.3f}), "
                f"SNR(adv) {scores['snr_adv_db']:.1f} dB, SNR(rst) {scores['snr_rst_db']:.1f} dB"
                + (", collapsed" if collapsed else "")
            )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class ArmRule:
    """The choice among arms (an assumption, beyond the paper): among the arms whose every run has
    SNR(adv) >= ``min_snr_adv_db``, one-shot SNR(rst) >= ``min_snr_rst_db`` and no collapse, the
    highest mean rec-adv EER over the seeds, ties by the lower mean cos(x, x'). A changed arm
    replaces the profile's settings only when its mean rec-adv exceeds theirs by more than
    ``margin_points`` and by more than the spread over seeds of the profile's own arm: smaller
    differences are within what a seed or one trial changes, and the profile keeps its value."""

    min_snr_adv_db: float = 30.0
    min_snr_rst_db: float = 45.0
    margin_points: float = 0.0

    def text(self) -> str:
        return (
            f"every seed's run with SNR(adv) >= {self.min_snr_adv_db:g} dB, SNR(rst) >= "
            f"{self.min_snr_rst_db:g} dB and no collapse; the highest mean rec-adv EER, ties by "
            "the lower mean cos(x, x'); a changed arm must beat the profile's mean rec-adv by more "
            f"than {self.margin_points:.2f} points and more than the profile's spread over seeds"
        )


def margin_for(trials: pd.DataFrame, target_trials: float) -> float:
    """EER points worth ``target_trials`` target trials of ``trials`` (the EER's resolution on a
    small subset: one target trial of 32 is 3.1 points)."""
    n = int(trials["target"].astype(bool).sum())
    if n == 0:
        raise ValueError("the trials hold no target trial: the EER is undefined")
    return float(target_trials) * 100.0 / n


def arm_table(runs: pd.DataFrame, rule: ArmRule) -> pd.DataFrame:
    """One row per arm (index, in the runs' order): the mean of :data:`_MEAN_KEYS` over its
    seeds, the lowest SNR(adv) and SNR(rst) of its runs, the spread (max - min) of its rec-adv,
    its runs and collapsed runs, and ``meets_rule``."""
    order = list(dict.fromkeys(runs["arm"]))
    g = runs.groupby("arm", sort=False)
    out = g[list(_MEAN_KEYS)].mean()
    out["snr_adv_db_min"] = g["snr_adv_db"].min()
    out["snr_rst_db_min"] = g["snr_rst_db"].min()
    out["eer_recadv_spread"] = g["eer_recadv"].max() - g["eer_recadv"].min()
    out["runs"] = g.size()
    out["collapsed_runs"] = g["collapsed"].sum().astype(int)
    out["meets_rule"] = (
        (out["snr_adv_db_min"] >= rule.min_snr_adv_db)
        & (out["snr_rst_db_min"] >= rule.min_snr_rst_db)
        & (out["collapsed_runs"] == 0)
    )
    return out.loc[order]


def choose(table: pd.DataFrame, rule: ArmRule) -> str | None:
    """The arm :class:`ArmRule` picks from :func:`arm_table`, or None when no arm meets it."""
    ok = table[table["meets_rule"]]
    if ok.empty:
        return None
    ranked = ok.assign(_neg=-ok["eer_recadv"]).sort_values(["_neg", "cos_x_adv"], kind="stable")
    best = str(ranked.index[0])
    if best != CURRENT and CURRENT in ok.index:
        cur = ok.loc[CURRENT]
        if ok.loc[best, "eer_recadv"] - cur["eer_recadv"] <= max(rule.margin_points, cur["eer_recadv_spread"]):  # fmt: skip
            return CURRENT  # within a seed's or a trial's worth: the profile keeps its value
    return best


def _changes_text(changes: dict[str, Any]) -> str:
    return ", ".join(f"{k} {json.dumps(v)}" for k, v in changes.items())


def conclusion(
    table: pd.DataFrame,
    overrides: dict[str, dict[str, Any]],
    chosen: str | None,
    rule: ArmRule,
    step_fraction: float,
) -> str:
    """The study's conclusion in words, from :func:`arm_table` and the choice."""
    cur = table.loc[CURRENT]

    def arm_line(name: str) -> str:
        r = table.loc[name]
        what = "the profile's settings" if name == CURRENT else _changes_text(overrides[name])
        return (
            f"'{name}' ({what}): rec-adv {r['eer_recadv']:.2f} % (noise {r['eer_recgn']:.2f} %), "
            f"cos(x, x') {r['cos_x_adv']:.3f}, SNR(adv) {r['snr_adv_db']:.1f} dB, "
            f"SNR(rst) {r['snr_rst_db']:.1f} dB (lowest {r['snr_rst_db_min']:.1f}), "
            f"{int(r['collapsed_runs'])} of {int(r['runs'])} runs collapsed"
            + ("" if r["meets_rule"] else "; outside the rule")
        )

    if chosen is None:
        head = "No arm meets the rule on the dev speakers: the study chooses nothing."
    elif chosen == CURRENT:
        rivals = table[table["meets_rule"]].drop(index=CURRENT)
        top = rivals["eer_recadv"].idxmax() if not rivals.empty else None
        head = "**Dev confirms the profile's training settings**: no changed arm beats them within the rule" + (
            f" (the best changed arm, '{top}', {table.loc[top, 'eer_recadv'] - cur['eer_recadv']:+.2f} points)."
            if top is not None else "."
        )  # fmt: skip
    else:
        margin = table.loc[chosen, "eer_recadv"] - cur["eer_recadv"]
        head = (
            f"**Dev does not confirm the profile's training settings: it would choose "
            f"'{chosen}' ({_changes_text(overrides[chosen])})**, rec-adv {margin:+.2f} points over "
            f"the profile's, against a spread over seeds of {cur['eer_recadv_spread']:.2f} points "
            "within the profile's own arm."
        )
    outside = [n for n in table.index if not table.loc[n, "meets_rule"]]
    lines = [
        head,
        f"Rule: {rule.text()}. Runs at {step_fraction:g} of notebook 20's joint steps, "
        f"{int(cur['runs'])} seed(s) per arm; a full-length run may rank the arms otherwise.",
        *[f"- {arm_line(n)}" for n in table.index],
    ]
    if outside:
        lines.append(f"Outside the rule: {listing(repr(n) for n in outside)}.")
    return "\n".join(lines)


def figures_of_merit(
    table: pd.DataFrame,
    overrides: dict[str, dict[str, Any]],
    chosen: str | None,
    rule: ArmRule,
    text: str,
) -> dict[str, Any]:
    """The study's flat metrics: ``current``, ``chosen`` (None: no arm within the rule),
    ``dev_confirms_current``, the arms' changes, the rule, the conclusion ``text`` and
    ``<arm slug>__<column>`` per arm of :func:`arm_table`."""
    out: dict[str, Any] = {
        "current": CURRENT,
        "chosen": chosen,
        "dev_confirms_current": chosen == CURRENT,
        "arms": json.dumps(overrides, sort_keys=True),
        "rule": rule.text(),
        "conclusion": text,
    }
    for name, row in table.iterrows():
        slug = "".join(ch if ch.isalnum() else "_" for ch in str(name)).strip("_")
        out.update(
            {f"{slug}__{k}": (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        )
    return out


def arms_figure(runs: pd.DataFrame, chosen: str | None, title: str):
    """rec-adv EER and cos(x, x') of every run by arm (one point per seed, the mean as a bar);
    the chosen arm's bar outlined, cos(x, gn) as grey dashes."""
    plotting.setup()
    import matplotlib.pyplot as plt  # after plotting.setup(), which picks the backend

    names = list(dict.fromkeys(runs["arm"]))
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.3 * len(names) + 3), 3.8))
    for ax, key, label in ((axes[0], "eer_recadv", "rec-adv EER (%)"), (axes[1], "cos_x_adv", "cos(x, x′)")):  # fmt: skip
        for i, name in enumerate(names):
            sel = runs[runs["arm"] == name]
            ax.bar(i, sel[key].mean(), color=f"C{i}", alpha=0.5, edgecolor="black" if name == chosen else "none", linewidth=2)  # fmt: skip
            ax.scatter([i] * len(sel), sel[key], color="black", s=12, zorder=3)
            if key == "cos_x_adv":
                ax.scatter([i] * len(sel), sel["cos_x_gn"], color="gray", marker="_", s=150, zorder=3)  # fmt: skip
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(label)
    axes[0].set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
