"""The verifier's EER thresholds that ``spkadv check`` decides with.

Notebook ``40_table1_eer`` computes each encoder's EER threshold on rec-rec trials of held-out
speakers (the manifest's dev subset, :func:`held_out_trials`: never the eval speakers Table 1
reports) and writes them, with the fingerprint of the run's model, into its own output
``runs/<profile>/40_table1_eer/verification.json`` (:func:`store_thresholds`); the model file is
never rewritten. ``spkadv check --model M`` finds them with :func:`find_thresholds`: a file given
with ``--thresholds``, else the file of M's own run when its fingerprint matches M, else the
thresholds older model files hold in ``meta["verification"]``, else none (with a note saying why).

The file::

    {"model_fingerprint": "<sha256 hex>",
     "thresholds": {"whitebox": {"encoder": "campplus", "threshold": 0.41, "eer": 3.2,
                                 "condition": "rec-rec", "n_target": 80, "n_nontarget": 800,
                                 "profile": "smoke", "subset": "dev"},
                    "blackbox": {...}}}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spkadv.base.fileio import read_json, write_json
from spkadv.data.manifest import make_trials
from spkadv.evaluation import metrics

FILE_NAME = "verification.json"
STAGE = "40_table1_eer"  # the notebook that writes FILE_NAME into its stage folder
MODEL_STAGE = "20_joint_training"  # the stage folder of the model file it belongs to
META_KEY = "verification"  # where older model files hold the thresholds in their meta


class VerificationFileError(ValueError):
    """A thresholds file cannot be read; the message names it and what to do."""


def held_out_trials(
    manifest: pd.DataFrame,
    subset: str = "dev",
    per_speaker: int = 0,
    nontargets: int = 30,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows, rec-rec trials) of the speakers the thresholds are measured on: the first
    ``per_speaker`` utterances (0: all) of each ``subset`` speaker, with trials made as Table 1's
    (:func:`spkadv.data.manifest.make_trials`). Both are empty when the manifest has no such rows.

    Raises:
        ValueError: ``subset`` is ``eval`` (a threshold measured there would be tuned on the
            speakers Table 1 reports).
    """
    if subset == "eval":
        raise ValueError(
            "verification thresholds are measured on held-out speakers (dev, or train), never on "
            "the eval speakers Table 1 reports"
        )
    rows = manifest[manifest["subset"] == subset]
    if per_speaker > 0:
        rows = rows.groupby("speaker", sort=False).head(per_speaker)
    return rows.reset_index(drop=True), make_trials(rows, nontargets, seed, subset=subset)


def rec_rec_scores(
    trials: pd.DataFrame, embeddings: Mapping[str, Mapping[str, np.ndarray]]
) -> dict[tuple, tuple[np.ndarray, np.ndarray]]:
    """``{(set, gender, role, "rec-rec"): (target scores, non-target scores)}`` of ``trials``
    scored with each role's ``{utt_id: embedding}`` (what :func:`eer_thresholds` takes)."""
    out = {}
    for role, by_utt in embeddings.items():
        for (set_name, gender), group in trials.groupby(["set", "gender"], sort=True):
            scores = metrics.score_trials(group, dict(by_utt))
            target = group["target"].to_numpy() == 1
            out[(set_name, gender, role, "rec-rec")] = (scores[target], scores[~target])
    return out


def eer_thresholds(
    scores: Mapping[tuple, tuple[np.ndarray, np.ndarray]],
    roles: Mapping[str, str],
    condition: str = "rec-rec",
    profile: str = "",
    subset: str = "",
) -> dict[str, dict[str, Any]]:
    """Each encoder's EER threshold on ``condition`` trials (:func:`metrics.eer_threshold`);
    ``subset`` names the manifest subset whose speakers the trials are of (recorded).

    Args:
        scores: ``(set, gender, role, condition) -> (target scores, non-target scores)``, as
            :func:`spkadv.evaluation.tables.verification_rows` returns; all sets and genders are
            pooled.
        roles: role (``whitebox`` / ``blackbox``) -> encoder name.
    """
    out = {}
    for role, encoder in roles.items():
        parts = [v for (_, _, r, c), v in scores.items() if r == role and c == condition]
        if not parts:
            raise ValueError(f"no {condition} scores for the {role} encoder")
        tar = np.concatenate([p[0] for p in parts])
        non = np.concatenate([p[1] for p in parts])
        threshold, eer = metrics.eer_threshold(tar, non)
        out[role] = {
            "encoder": encoder,
            "threshold": threshold,
            "eer": eer,
            "condition": condition,
            "n_target": int(tar.size),
            "n_nontarget": int(non.size),
            "profile": profile,
        }
        if subset:
            out[role]["subset"] = subset
    return out


def write_thresholds(
    path: str | os.PathLike, thresholds: Mapping[str, Mapping[str, Any]], model_fingerprint: str
) -> Path:
    """Write ``thresholds`` with the fingerprint of the model they belong to (atomically)."""
    return write_json(
        path, {"model_fingerprint": model_fingerprint, "thresholds": dict(thresholds)}
    )


def store_thresholds(
    stage_dir: str | os.PathLike,
    model_fingerprint: str,
    scores: Mapping[tuple, tuple[np.ndarray, np.ndarray]],
    roles: Mapping[str, str],
    condition: str = "rec-rec",
    profile: str = "",
    subset: str = "",
) -> dict[str, dict[str, Any]]:
    """Notebook 40's step: :func:`eer_thresholds` written to ``stage_dir/verification.json``."""
    thresholds = eer_thresholds(scores, roles, condition, profile, subset)
    write_thresholds(Path(stage_dir) / FILE_NAME, thresholds, model_fingerprint)
    return thresholds


def _valid(stored: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(stored, Mapping):
        return {}
    return {r: dict(v) for r, v in stored.items() if isinstance(v, Mapping) and "threshold" in v}


def read_thresholds(path: str | os.PathLike) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """(model fingerprint, thresholds) of a file :func:`write_thresholds` wrote."""
    path = Path(path)
    if not path.is_file():
        raise VerificationFileError(
            f"{path}: no such thresholds file; notebook {STAGE} writes runs/<profile>/{STAGE}/{FILE_NAME}"
        )
    try:
        record = read_json(path)
        fingerprint = record.get("model_fingerprint")
        thresholds = _valid(record.get("thresholds"))
    except (ValueError, AttributeError, UnicodeDecodeError) as err:
        raise VerificationFileError(
            f"{path}: not a thresholds file ({err}); run notebook {STAGE} again to rewrite it"
        ) from err
    if not thresholds:
        raise VerificationFileError(
            f"{path}: holds no thresholds; run notebook {STAGE} again to rewrite it"
        )
    return (str(fingerprint) if fingerprint else None), thresholds


def thresholds_in_meta(meta: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The thresholds an older model file holds in its metadata (empty when there are none)."""
    return _valid(meta.get(META_KEY))


def run_thresholds_path(model_path: str | os.PathLike) -> Path | None:
    """Where the model's own run keeps its thresholds: ``<runs>/<profile>/20_joint_training/
    model.pt`` -> ``<runs>/<profile>/40_table1_eer/verification.json``; None for a model file
    outside a run's stage folder."""
    model_path = Path(model_path).absolute()
    if model_path.parent.name != MODEL_STAGE:
        return None
    return model_path.parent.parent / STAGE / FILE_NAME


def find_thresholds(
    model_path: str | os.PathLike | None,
    model_fingerprint: str | None,
    meta: Mapping[str, Any] | None,
    thresholds_path: str | os.PathLike | None = None,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(thresholds, notes saying where they come from or why there are none) for ``spkadv check``.

    In this order: ``thresholds_path`` when given (a note when it was written for another model);
    the file of the model's own run when it exists and its fingerprint is the model's; the
    thresholds in the model's ``meta``; none.

    Raises:
        VerificationFileError: ``thresholds_path`` is missing or unreadable.
    """
    notes: list[str] = []
    if thresholds_path is not None:
        fingerprint, thresholds = read_thresholds(thresholds_path)
        notes.append(f"thresholds from {thresholds_path}")
        if model_fingerprint and fingerprint and fingerprint != model_fingerprint:
            notes.append(
                f"note: {thresholds_path} was written for another model (fingerprint "
                f"{fingerprint[:12]}…); the decisions use its thresholds as asked"
            )
        return thresholds, notes
    if model_path is None:
        return {}, notes
    own = run_thresholds_path(model_path)
    if own is not None and own.is_file():
        try:
            fingerprint, thresholds = read_thresholds(own)
        except VerificationFileError as err:
            notes.append(f"note: {err}")
        else:
            if fingerprint == model_fingerprint:
                notes.append(f"thresholds from {own} (this model's run)")
                return thresholds, notes
            notes.append(
                f"note: {own} belongs to another model (fingerprint {str(fingerprint)[:12]}…, this "
                f"model {str(model_fingerprint)[:12]}…); not used: run notebook {STAGE} again"
            )
    stored = thresholds_in_meta(meta or {})
    if stored:
        notes.append("thresholds from the model file's metadata")
        return stored, notes
    notes.append(
        "no verification thresholds for this model, so no decision is made; run notebook "
        f"{STAGE} on its profile (it writes runs/<profile>/{STAGE}/{FILE_NAME}) or pass "
        "--thresholds FILE"
    )
    return {}, notes
