"""Notebook 60's experiment around the attackers of :mod:`spkadv.evaluation.attackers`: which trials
the protected-domain verifiers are scored on, the learning-curve probe, each network's settings,
the data-size curve, and every attacker scored on the same trials. The tables and figures of merit
are in :mod:`spkadv.evaluation.attacker_tables`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from spkadv.audio import purify
from spkadv.base.fileio import sha256_file
from spkadv.core import protect
from spkadv.core.train import TrainConfig
from spkadv.evaluation.attacker_tables import mean_eers
from spkadv.evaluation.attackers import AttackerRun, AttackerSettings, PairSet, fit
from spkadv.evaluation.conditions import mean_db
from spkadv.evaluation.metrics import snr_db
from spkadv.evaluation.tables import select_test_utterances, verification_rows

# the trial conditions every attacker is scored on (then rec-att_<network> for each network)
TRIAL_CONDITIONS = ("rec-rec", "rec-adv", "rec-rst", "rec-rst_refined", "rec-xrst")
# the protected-domain verifiers, beside rec-rec and rec-adv on the same trials
ADAPTIVE_CONDITIONS = ("rec-rec", "rec-adv", "adv-adv", "oracle-adv")


def protected_utterances(
    eval_rows: pd.DataFrame, test_rows: pd.DataFrame, per_speaker: int, test_per_speaker: int
) -> set[str]:
    """The eval utterances notebook 20 protected (its first ``per_speaker`` per speaker, 0: all):
    the enrolments of the protected-domain verifiers.

    Raises:
        ValueError: a scored test utterance (``test_rows``) is not among them.
    """
    protected = set(select_test_utterances(eval_rows, per_speaker)["utt_id"])
    if not set(test_rows["utt_id"]) <= protected:
        raise ValueError(
            f"EVAL_TEST_UTTS_PER_SPEAKER={test_per_speaker} scores test utterances notebook 20 did "
            f"not protect (EVAL_UTTS_PER_SPEAKER={per_speaker}); use at most as many"
        )
    return protected


class CurveProbe:
    """The attackers' learning-curve probe: SNR against the clean x and white-box cosine
    cos(f(x), f(x̂)) of what a restoring function makes of the protected curve utterances."""

    def __init__(self, encoder, clean: Sequence[np.ndarray], protected: Sequence[np.ndarray]):
        self.encoder = encoder
        self.clean = list(clean)
        self.protected = list(protected)
        self.clean_z = [self.embed(x) for x in self.clean]

    def embed(self, wave: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return self.encoder.embed(torch.from_numpy(wave).unsqueeze(0))[0]

    def __call__(self, restore_fn: Callable[[np.ndarray], np.ndarray]) -> dict[str, float]:
        out = [restore_fn(xp) for xp in self.protected]
        cos = [
            torch.nn.functional.cosine_similarity(z, self.embed(y), dim=0)
            for z, y in zip(self.clean_z, out, strict=True)
        ]
        return {
            "snr_db": mean_db([snr_db(x, y) for x, y in zip(self.clean, out, strict=True)]),
            "cos_white": float(np.mean(cos)),
        }

    def snr_adv_db(self) -> float:
        """Mean SNR of the protected curve utterances themselves (where every curve starts)."""
        return mean_db([snr_db(x, y) for x, y in zip(self.clean, self.protected, strict=True)])


def settings_from_params(
    base: TrainConfig, params: Mapping[str, Any]
) -> dict[str, AttackerSettings]:
    """Each network of ``ATTACKER_MODELS`` with its ``ATTACKER_STEPS`` and the shared
    ``ATTACKER_*`` settings; a removal network takes the protection model's architecture and ε
    (``base``: its training configuration)."""
    kinds, steps = params["ATTACKER_MODELS"], params["ATTACKER_STEPS"]
    if len(steps) != len(kinds):
        raise ValueError(
            f"ATTACKER_STEPS {steps} needs one number per network of ATTACKER_MODELS {kinds}"
        )
    return {
        kind: AttackerSettings(
            kind=kind,
            model=base.model.to_dict(),
            eps=base.eps,
            hidden=params["ATTACKER_ENHANCER_HIDDEN"],
            n_fft=params["ATTACKER_ENHANCER_NFFT"],
            steps=steps[kinds.index(kind)],
            batch_size=params["ATTACKER_BATCH_SIZE"],
            crop_seconds=params["ATTACKER_CROP_SECONDS"],
            lr=params["ATTACKER_LEARNING_RATE"],
            seed=params["ATTACKER_SEED"],
            eval_every=params["ATTACKER_CURVE_EVERY"],
        )
        for kind in kinds
    }


def run_summary(kind: str, run: AttackerRun) -> str:
    """One line on a trained network: steps, minutes, and its first and last curve points."""
    first, last = run.history[0], run.history[-1]
    return (
        f"{kind}: {run.settings.steps} steps in {run.minutes:.2f} min"
        + (" (loaded)" if run.loaded else "")
        + f"; curve utterances: SNR {first['snr_db']:.1f} -> {last['snr_db']:.1f} dB, "
        f"white-box cos {first['cos_white']:.3f} -> {last['cos_white']:.3f}"
    )


def data_size_curve(
    settings: AttackerSettings,
    pairs: PairSet,
    main_run: AttackerRun,
    fractions: Iterable[float],
    folder: str | os.PathLike,
    probe: Callable,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """The network of ``settings`` trained again, with the same steps, on nested shares of the
    pairs (stored as ``<folder>/<kind>_pairs<fraction>.pt``), probed at the start and the end only;
    one point per fraction (ascending), then the main run as fraction 1.0."""
    curve = []
    for fraction in sorted(fractions):
        subset = pairs.head(max(1, round(fraction * len(pairs.utt_ids))))
        short = dataclasses.replace(settings, eval_every=0)
        run = fit(
            short, subset, Path(folder) / f"{settings.kind}_pairs{fraction:g}.pt", probe, progress
        )
        curve.append(_curve_point(settings.kind, fraction, run))
    curve.append(_curve_point(settings.kind, 1.0, main_run))
    return curve


def _curve_point(kind: str, fraction: float, run: AttackerRun) -> dict[str, Any]:
    return {
        "kind": kind,
        "fraction": fraction,
        "pairs": run.pairs,
        "pair_hours": run.pair_hours,
        **run.history[-1],
    }


def own_protection_snrs(model, x: np.ndarray) -> tuple[float, float]:
    """SNR(x') and the one-shot SNR(x̂) of a model on its own protection of ``x`` (for scale)."""
    snr_adv = snr_db(x, protect.protect(model, x))
    snr_rst = snr_db(x, protect.restore(model, protect.protect(model, x)))
    return snr_adv, snr_rst


def trial_conditions(attacked: Iterable[str]) -> list[str]:
    """:data:`TRIAL_CONDITIONS`, then ``rec-<condition>`` of each attacker network's audio."""
    return [*TRIAL_CONDITIONS, *(f"rec-{c}" for c in attacked)]


def score_attackers(
    trials: pd.DataFrame,
    adaptive_trials: pd.DataFrame,
    embeddings: Mapping[tuple[str, str], Mapping[str, np.ndarray]],
    conditions: Sequence[str],
    roles: Mapping[str, str],
    **scoring: Any,
) -> tuple[pd.DataFrame, pd.DataFrame, dict, dict]:
    """Every attacker on the same trials (:func:`~spkadv.evaluation.tables.verification_rows`
    with ``scoring``'s bootstrap and minDCF settings), and the protected-domain verifiers
    (:data:`ADAPTIVE_CONDITIONS`) on ``adaptive_trials``.

    Returns:
        Both tables and the EERs averaged over (set, gender): ``(role, condition) -> EER`` of all
        conditions (adv-adv and oracle-adv from the adaptive trials, NaN without any), and those of
        the adaptive trials alone.
    """
    adaptive = list(ADAPTIVE_CONDITIONS) if len(adaptive_trials) else []
    table = verification_rows(trials, embeddings, conditions, roles=roles, **scoring)[0]
    adaptive_table = verification_rows(
        adaptive_trials, embeddings, adaptive, roles=roles, **scoring
    )[0]
    eer = mean_eers(table)
    eer_adaptive = mean_eers(adaptive_table) if adaptive else {}
    for (
        role
    ) in roles:  # the protected-domain rows; NaN when notebook 20 protected no usable enrolment
        for c in ("adv-adv", "oracle-adv"):
            eer[(role, c)] = eer_adaptive.get((role, c), math.nan)
    return table, adaptive_table, eer, eer_adaptive


def eer_frame(eer: Mapping[tuple[str, str], float], conditions: Iterable[str]) -> pd.DataFrame:
    """White- and black-box EER of each condition, one row per condition."""
    return pd.DataFrame(
        {
            c: {"EER white": eer[("whitebox", c)], "EER black": eer[("blackbox", c)]}
            for c in conditions
        }
    ).T


def setup_metrics(
    trials: pd.DataFrame,
    test_rows: pd.DataFrame,
    pairs: PairSet,
    attacker_rows: pd.DataFrame,
    oracle,
    enrol_query: Mapping[str, Any],
    adaptive_trials: pd.DataFrame,
) -> dict[str, Any]:
    """What notebook 60 measured on: trials, test utterances, the attacker's pairs and speakers, the
    oracle's calls and audio, the enrolments it was asked, and the adaptive verifier's trials."""
    return {
        "n_trials": len(trials),
        "n_test_utterances": len(test_rows),
        "pairs": len(pairs.utt_ids),
        "pair_hours": pairs.hours,
        "pair_speakers": int(attacker_rows["speaker"].nunique()),
        "oracle_calls": oracle.calls,
        "oracle_audio_seconds": oracle.audio_seconds,
        "oracle_enrol_queried": enrol_query["queried"],
        "oracle_deterministic": enrol_query["deterministic"],
        "adaptive_trials": len(adaptive_trials),
    }


def outcomes(
    snr: Mapping[str, float], kinds: Iterable[str], beats: Collection[str]
) -> dict[str, bool]:
    """Notebook 60's reported (not asserted) outcomes: does another model restore, does each
    attacker network recover less than the key holder, does each adaptive verifier (``beats``:
    those that beat the protection) beat it."""
    return {
        "another model does not restore (SNR(xrst) below SNR(rst) and at most SNR(adv) + 1 dB)": snr[
            "xrst"
        ]
        < snr["rst"]
        and snr["xrst"] <= snr["adv"] + 1.0,
        **{
            f"the attacker's {k} recovers less than the key holder (SNR)": snr[f"att_{k}"]
            < snr["rst"]
            for k in kinds
        },
        **{
            f"adaptive verifier {c} beats the protection (white box)": c in beats
            for c in ("adv-adv", "oracle-adv")
        },
    }


def apply_networks(
    runs: Mapping[str, AttackerRun],
    sources: Mapping[str, str | os.PathLike],
    audio_dir: str | os.PathLike,
    weights_dir: str | os.PathLike,
    progress: bool = True,
) -> dict[str, dict[str, Path]]:
    """Each trained network on every protected file of ``sources``: condition ``att_<network>``
    under ``audio_dir``, redone only when a file or the network's weights
    (``<weights_dir>/<network>.pt``) changed (:func:`spkadv.audio.purify.process_files`)."""
    attacked = {}
    for kind, run in runs.items():
        weights = sha256_file(Path(weights_dir) / f"{kind}.pt")
        attacked[f"att_{kind}"] = purify.process_files(
            lambda x, seed, run=run: run(x),
            sources,
            Path(audio_dir) / f"att_{kind}",
            key=f"attacker|{kind}|{weights}",
            progress=progress,
            desc=f"att_{kind}",
        )
    return attacked


def cross_restore(
    other,
    sources: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    progress: bool = True,
) -> dict[str, Path]:
    """Another model's removal module on this model's protected files (condition ``xrst``), redone
    only when a file or that model (its fingerprint) changed."""
    return purify.process_files(
        lambda x, seed: protect.restore(other, x),
        sources,
        out_dir,
        key=f"xrst|{other.fingerprint}",
        progress=progress,
        desc="xrst",
    )
