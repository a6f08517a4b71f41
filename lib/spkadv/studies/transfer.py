"""Transfer (notebook 92): a profile's trained model on another profile's held-out speakers; the
reference of the target profile's own model on the same subset, the figure and the conclusion.

``scores`` are :func:`spkadv.studies.study.score_model`'s: rec-rec / rec-adv / rec-gn / rec-rst EER
(%), cos(x, x′) and cos(x, gn), SNR(adv), one-shot SNR(rst), PESQ.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from spkadv.base import config
from spkadv.core import modelfile
from spkadv.evaluation import plotting
from spkadv.studies.study import EvalSet, score_model
from spkadv.studies.wording import COS_TOLERANCE, bullets, times

# Notebook 20's target for the one-shot restoration (SNR(rst), dB).
RESTORE_TARGET_DB = 45.0


def own_model_scores(
    profile: str,
    model_profile: str,
    encoder: torch.nn.Module,
    evalset: EvalSet,
    rec_emb: np.ndarray,
    pesq_utts: int = 0,
) -> dict[str, float] | None:
    """:func:`score_model` of ``profile``'s own notebook-20 model on the same subset and encoder:
    the in-domain reference the transferred model is read against. None where the transferred
    model is that model (``profile == model_profile``) or ``profile`` has not run notebook 20."""
    path = config.stage_dir(profile, "20_joint_training", create=False) / "model.pt"
    if profile == model_profile or not path.is_file():
        return None
    return score_model(modelfile.load_model(path), encoder, evalset, rec_emb, pesq_utts=pesq_utts)


def transfer_metrics(
    scores: dict[str, Any], model_profile: str, subset: str, own: dict[str, float] | None
) -> dict[str, Any]:
    """The study's ``metrics.json``: the transferred model's scores, rec-adv / rec-rec (NaN where
    rec-rec is 0), the model's profile and the subset; the own model's scores as ``own_model.*``."""
    m = dict(scores)
    rr = m["eer_recrec"]
    m["recadv_over_recrec"] = m["eer_recadv"] / rr if rr > 0 else float("nan")
    m["model_profile"] = model_profile
    m["subset"] = subset
    if own is not None:
        m.update({f"own_model.{k}": v for k, v in own.items()})
    return m


def transfer_figure(
    scores: dict[str, Any], model_profile: str, profile: str, own: dict[str, float] | None = None
):
    """Two bar panels: cos(x, x′) against cos(x, gn) (noise of the same power), and the EERs
    (rec-rec, rec-adv, rec-gn, rec-rst), for the transferred model and, when given, the profile's
    own model on the same subset."""
    plotting.setup()
    import matplotlib.pyplot as plt  # after plotting.setup(), which picks the backend

    models = {f"{model_profile} model": scores}
    if own is not None:
        models[f"{profile}'s own model"] = own
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    width = 0.8 / len(models)
    eers = ["eer_recrec", "eer_recadv", "eer_recgn", "eer_recrst"]
    for k, (label, s) in enumerate(models.items()):
        offset = (k - (len(models) - 1) / 2) * width
        left.bar(
            np.arange(2) + offset,
            [s["cos_x_adv"], s["cos_x_gn"]],
            width,
            label=label,
            color=f"C{k}",
        )
        right.bar(np.arange(len(eers)) + offset, [s.get(e, math.nan) for e in eers], width, label=label, color=f"C{k}")  # fmt: skip
    left.set_xticks(range(2), ["cos(x, x′)", "cos(x, gn)"])
    low = min(min(s["cos_x_adv"], s["cos_x_gn"]) for s in models.values())
    left.set_ylim(max(-1.0, low - 0.1), 1.0)
    left.set_ylabel("mean cosine to the original")
    right.set_xticks(range(len(eers)), ["rec-rec", "rec-adv", "rec-gn", "rec-rst"])
    right.set_ylabel("EER (%)")
    right.set_ylim(bottom=0)
    left.legend(fontsize=7)
    left.set_title(f"transfer to {profile}'s dev speakers", fontsize=10)
    fig.tight_layout()
    return fig


def _drop_words(adv: float, gn: float) -> str:
    """How the perturbation's drop of cos(x, x′) compares with noise's drop of cos(x, gn)."""
    if adv < gn - COS_TOLERANCE:
        return f"the perturbation moves the speaker embedding {times(1 - adv, 1 - gn)} as far as noise of the same power does"
    if adv > gn + COS_TOLERANCE:
        return "the perturbation moves the speaker embedding less than noise of the same power does"
    return (
        "the perturbation moves the speaker embedding about as much as noise of the same power does"
    )


def conclusion(
    scores: dict[str, Any], model_profile: str, profile: str, own: dict[str, float] | None = None
) -> str:
    """The study's conclusion in Markdown, every number and comparison word taken from ``scores``
    (and ``own``, the profile's own model on the same subset): the similarity drop against
    noise's, the EERs and their resolution, the restoration and the quality, and how the
    transferred model compares with the in-domain one."""
    rr, ra = scores["eer_recrec"], scores["eer_recadv"]
    lines = [
        f"The {model_profile} model on {profile}'s held-out speakers: cos(x, x′) {scores['cos_x_adv']:.3f} where noise of the "
        f"same power leaves {scores['cos_x_gn']:.3f}: {_drop_words(scores['cos_x_adv'], scores['cos_x_gn'])}",
    ]
    if rr == 0:
        ratio = (
            "rec-adv is 0 % as well, so neither EER resolves anything here"
            if ra == 0
            else f"rec-adv ({ra:.2f} %) over rec-rec is unbounded: a ratio target is met only in that degenerate sense"
        )
        lines.append(
            f"rec-rec EER is 0 % on this subset (the white-box encoder separates it perfectly): {ratio}, "
            "and the similarity drop above is the honest measure"
        )
    else:
        lines.append(
            f"rec-adv {ra:.2f} % is {times(ra, rr)} rec-rec ({rr:.2f} %); noise of the same power gives {scores['eer_recgn']:.2f} %"
        )
    if "snr_rst_db" in scores:
        met = "at or above" if scores["snr_rst_db"] >= RESTORE_TARGET_DB else "below"
        lines.append(
            f"The key holder's one-shot restoration (F_R with each utterance's code) reaches SNR(rst) {scores['snr_rst_db']:.1f} dB, "
            f"{met} notebook 20's {RESTORE_TARGET_DB:g} dB target, with rec-rst {scores['eer_recrst']:.2f} % against rec-rec {rr:.2f} %: "
            + (
                "the removal carries over to this speech"
                if met != "below"
                else "the removal carries over only partly"
            )
        )
    lines.append(
        f"SNR(adv) {scores['snr_adv_db']:.1f} dB, PESQ (raw NB) {scores['pesq_adv_nb_raw']:.2f}"
    )
    if own is not None:
        words = (
            "hides these speakers less than"
            if own["cos_x_adv"] < scores["cos_x_adv"] - COS_TOLERANCE
            else "hides these speakers at least as well as"
        )
        lines.append(
            f"{profile}'s own model (trained on this kind of speech) on the same subset: cos(x, x′) {own['cos_x_adv']:.3f}, "
            f"rec-adv {own['eer_recadv']:.2f} %: the transferred model {words} the in-domain one"
        )
    elif model_profile == profile:
        lines.append(
            "The model is this profile's own (no transfer here): set TRANSFER_MODEL_PROFILE to another profile to measure one"
        )
    return bullets(lines)
