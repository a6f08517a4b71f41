"""Joint training across seeds and thread counts (notebook 91): the grid of runs, its figures of
merit, its figure and its conclusion.

Each run is notebook 20's configuration retrained with one seed and thread count
(:func:`spkadv.studies.study.joint_run`); an optional second arm (``ROBUST_COMPARE``) changes a
few profile keys at the same seeds, thread counts and subset. ``runs`` is the grid's table: one row
per run with ``arm``, ``seed``, ``threads`` and the scores of :func:`spkadv.studies.study.score`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from spkadv.base import config
from spkadv.evaluation import plotting
from spkadv.studies.study import EvalSet, joint_run
from spkadv.studies.wording import bullets, listing, spread

# Notebook 20's target for the one-shot restoration (SNR(rst), dB), which a run of the grid is read against.
RESTORE_TARGET_DB = 45.0
# rec-rst within this many EER points of rec-rec: notebook 20's target for the key holder.
RESTORE_EER_POINTS = 0.5

TABLE_COLUMNS = ["arm", "seed", "threads", "steps", "eer_recrec", "eer_recadv", "eer_recgn", "eer_recrst", "cos_x_adv", "cos_x_gn", "snr_adv_db", "snr_rst_db", "collapsed"]  # fmt: skip
_SUMMARY_KEYS = ("eer_recadv", "eer_recgn", "eer_recrst", "cos_x_adv", "snr_adv_db", "snr_rst_db")


def compare_arms(params: dict[str, Any], compare: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The arms of the grid: ``profile`` (``params``), and ``compare`` (``params`` with the keys of
    ``compare`` changed) when ``compare`` is not empty.

    Raises:
        ValueError: ``compare`` names a key that neither the profile nor notebook 20 has.
    """
    arms = {"profile": params}
    if compare:
        known = set(params) | set(
            config.notebook_parameters(config.notebooks_dir() / "20_joint_training.ipynb")
        )
        unknown = sorted(set(compare) - known)
        if unknown:
            raise ValueError(
                f"ROBUST_COMPARE names keys that neither the profile nor notebook 20 has: {unknown}"
            )
        arms["compare"] = {**params, **compare}
    return arms


def grid(
    arms: dict[str, dict[str, Any]],
    seeds: Sequence[int],
    threads: Sequence[int],
    step_fraction: float,
    waves: Sequence[np.ndarray],
    speakers: Sequence[str],
    encoder: torch.nn.Module,
    evalset: EvalSet,
    rec_emb: np.ndarray,
    cache: Path,
    removal_fraction: float | None = None,
    report: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Every arm × seed × thread count through :func:`spkadv.studies.study.joint_run` (cached
    under ``cache``), one line per run to ``report``; the grid's table in that order."""
    runs = []
    for arm, params in arms.items():
        for seed in seeds:
            for n in threads:
                r = joint_run(
                    params, seed, n, step_fraction, waves, speakers, encoder, evalset, rec_emb,
                    cache, removal_fraction=removal_fraction,
                )  # fmt: skip
                runs.append({"arm": arm, **r})
                report(
                    f"{arm}: seed {seed}, {n} thread(s): rec-adv {r['eer_recadv']:.2f} % (gn {r['eer_recgn']:.2f}, rec {r['eer_recrec']:.2f}), "
                    f"rec-rst {r['eer_recrst']:.2f} %, cos {r['cos_x_adv']:.3f} (gn {r['cos_x_gn']:.3f}), "
                    f"SNR adv {r['snr_adv_db']:.1f} / rst {r['snr_rst_db']:.1f} dB, collapsed: {r['collapsed']}"
                )
    return pd.DataFrame(runs)


def summary(frame: pd.DataFrame, prefix: str = "") -> dict[str, Any]:
    """Runs, collapsed runs, and mean / min / max of the scores of one arm's runs."""
    out: dict[str, Any] = {
        f"{prefix}runs": len(frame),
        f"{prefix}collapsed_runs": int(frame["collapsed"].sum()),
    }
    for key in _SUMMARY_KEYS:
        for stat in ("mean", "min", "max"):
            out[f"{prefix}{key}_{stat}"] = float(getattr(frame[key], stat)())
    return out


def grid_metrics(
    runs: pd.DataFrame,
    step_fraction: float,
    removal_fraction: float,
    subset: str,
    compare: dict[str, Any],
) -> dict[str, Any]:
    """The study's ``metrics.json``: :func:`summary` of the ``profile`` arm (no prefix) and of the
    ``compare`` arm (``compare_``), the budget fractions, rec-rec and the subset."""
    m = {
        **summary(runs[runs["arm"] == "profile"]),
        "step_fraction": step_fraction,
        "removal_step_fraction": removal_fraction,
        "eer_recrec": float(runs["eer_recrec"].iloc[0]),
        "subset": subset,
    }
    if compare:
        m.update(
            summary(runs[runs["arm"] == "compare"], "compare_"),
            compare=json.dumps(compare, sort_keys=True),
        )
    return m


def runs_figure(runs: pd.DataFrame, profile: str):
    """rec-adv EER and cos(x, x′) of every run, by seed (x), thread count (marker) and arm
    (colour); cos(x, gn) of each run as a grey dash (noise of the same power)."""
    plotting.setup()
    import matplotlib.pyplot as plt  # after plotting.setup(), which picks the backend

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    seeds = sorted(runs["seed"].unique())
    threads = sorted(runs["threads"].unique())
    arms = list(dict.fromkeys(runs["arm"]))
    markers = "osD^v<>"
    width = 0.6 / max(1, len(arms) * len(threads))
    for ax, key, label in ((axes[0], "eer_recadv", "rec-adv EER (%)"), (axes[1], "cos_x_adv", "cos(x, x′)")):  # fmt: skip
        for a, arm in enumerate(arms):
            for t, n in enumerate(threads):
                sel = runs[(runs["arm"] == arm) & (runs["threads"] == n)]
                x = [seeds.index(s) + (a * len(threads) + t - (len(arms) * len(threads) - 1) / 2) * width for s in sel["seed"]]  # fmt: skip
                ax.scatter(x, sel[key], color=f"C{a}", marker=markers[t % len(markers)], label=f"{arm}, {n} thread(s)")  # fmt: skip
                if key == "cos_x_adv":
                    ax.scatter(x, sel["cos_x_gn"], color="gray", marker="_", s=120)
        ax.set_xticks(range(len(seeds)), [str(s) for s in seeds])
        ax.set_xlabel("seed")
        ax.set_ylabel(label)
    axes[1].scatter([], [], color="gray", marker="_", s=120, label="cos(x, gn): noise, same power")
    axes[1].legend(fontsize=7)
    axes[0].set_title(f"joint training over seeds and threads, {profile}", fontsize=10)
    fig.tight_layout()
    return fig


def _collapse_pattern(arm: pd.DataFrame) -> str:
    """Why the collapsed runs of one arm collapsed, and whether they follow the seed, the thread
    count, or neither."""
    bad = arm[arm["collapsed"]]
    if bad.empty:
        return ""
    no_removal = int((bad["snr_rst_db"] < bad["snr_adv_db"] + 3).sum())
    no_attack = int((bad["cos_x_adv"] >= bad["cos_x_gn"]).sum())
    why = f"removal a no-op in {no_removal}, attack no better than noise in {no_attack}"
    whole_seeds = [s for s, g in arm.groupby("seed") if g["collapsed"].all()]
    whole_threads = [n for n, g in arm.groupby("threads") if g["collapsed"].all()]
    runs = listing(
        f"seed {s} with {n} thread(s)" for s, n in zip(bad["seed"], bad["threads"], strict=True)
    )
    if len(bad) == len(arm):
        return f"every run ({why})"
    if whole_seeds and len(bad) == int(arm["seed"].isin(whole_seeds).sum()):
        return f"{runs} ({why}): the collapse followed the seed (every thread count of seed {listing(whole_seeds)})"
    if whole_threads and len(bad) == int(arm["threads"].isin(whole_threads).sum()):
        return f"{runs} ({why}): the collapse followed the thread count ({listing(whole_threads)} thread(s), every seed)"
    return f"{runs} ({why}): the collapses follow neither the seed alone nor the thread count alone"


def _largest_gap(arm: pd.DataFrame, within: str, key: str) -> float:
    """The largest max - min of ``key`` among the runs sharing one value of ``within``."""
    gaps = [g[key].max() - g[key].min() for _, g in arm.groupby(within) if len(g) > 1]
    return float(max(gaps)) if gaps else float("nan")


def _arm_lines(arm: pd.DataFrame, name: str) -> list[str]:
    rr = float(arm["eer_recrec"].iloc[0])
    ok_rst = int((arm["snr_rst_db"] >= RESTORE_TARGET_DB).sum())
    ok_eer = int(((arm["eer_recrst"] - rr).abs() <= RESTORE_EER_POINTS).sum())
    pattern = _collapse_pattern(arm)
    lines = [
        f"**{name}: {int(arm['collapsed'].sum())} of {len(arm)} runs collapsed**" + (f"; {pattern}" if pattern else ""),
        f"{name}: rec-adv {spread(arm['eer_recadv'], 2, ' %')} against rec-gn {spread(arm['eer_recgn'], 2, ' %')} "
        f"(rec-rec {rr:.2f} %); cos(x, x′) {spread(arm['cos_x_adv'], 3)} against cos(x, gn) {spread(arm['cos_x_gn'], 3)}; "
        f"SNR(adv) {spread(arm['snr_adv_db'], 1, ' dB')}",
        f"{name}: one-shot SNR(rst) {spread(arm['snr_rst_db'], 1, ' dB')}, {ok_rst} of {len(arm)} runs at or above notebook 20's "
        f"{RESTORE_TARGET_DB:g} dB target; rec-rst within {RESTORE_EER_POINTS:g} points of rec-rec in {ok_eer} of {len(arm)}",
    ]  # fmt: skip
    by_threads = _largest_gap(arm, "seed", "eer_recadv")
    by_seed = _largest_gap(arm, "threads", "eer_recadv")
    if np.isfinite(by_threads) and np.isfinite(by_seed):
        cos_threads, cos_seed = (
            _largest_gap(arm, "seed", "cos_x_adv"),
            _largest_gap(arm, "threads", "cos_x_adv"),
        )
        word = "less than" if cos_threads < cos_seed else "as much as"
        lines.append(
            f"{name}: changing the thread count (the order of floating-point sums, hence the trajectory) moved one seed's "
            f"rec-adv by up to {by_threads:.2f} points and its cos(x, x′) by up to {cos_threads:.3f}; changing the seed at "
            f"one thread count, by up to {by_seed:.2f} points and {cos_seed:.3f}: the thread count matters {word} the seed"
        )  # fmt: skip
    return lines


def conclusion(runs: pd.DataFrame, compare: dict[str, Any]) -> str:
    """The study's conclusion in Markdown, every number and comparison word taken from ``runs``:
    per arm the collapses (and whether they follow the seed or the thread count), the spread of
    the attack and of the restoration, the thread count's effect against the seed's, and, with a
    ``compare`` arm, how the changed keys move the mean, the spread over seeds and the power."""
    lines = _arm_lines(runs[runs["arm"] == "profile"], "profile")
    if compare:
        a, b = runs[runs["arm"] == "profile"], runs[runs["arm"] == "compare"]
        lines += _arm_lines(b, "compare")
        width_a = a["cos_x_adv"].max() - a["cos_x_adv"].min()
        width_b = b["cos_x_adv"].max() - b["cos_x_adv"].min()
        snr_gap = b["snr_adv_db"].mean() - a["snr_adv_db"].mean()
        text = (
            f"The compare arm ({json.dumps(compare, sort_keys=True)}) against the profile: mean rec-adv "
            f"{b['eer_recadv'].mean():.2f} against {a['eer_recadv'].mean():.2f} %, mean cos(x, x′) "
            f"{b['cos_x_adv'].mean():.3f} against {a['cos_x_adv'].mean():.3f}, mean SNR(rst) "
            f"{b['snr_rst_db'].mean():.1f} against {a['snr_rst_db'].mean():.1f} dB; its cos(x, x′) spreads over "
            f"{width_b:.3f} against {width_a:.3f}: "
            + ("the profile's training depends less on the seed" if width_a < width_b else "the profile's training depends no less on the seed")
        )  # fmt: skip
        if abs(snr_gap) > 0.5:
            lower = "profile" if snr_gap > 0 else "compare"
            text += (
                f". The {lower} arm perturbs at a lower SNR(adv) (by {abs(snr_gap):.1f} dB on average): more power, "
                "so part of a difference in the attack may be power"
            )
        lines.append(text)
    return bullets(lines)
