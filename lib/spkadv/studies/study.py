"""The attack study: generator variants trained for the same CPU budget, scored on one fixed subset.

Each variant is the profile's SSED configuration with a few parameters changed (``VARIANTS``). It is
trained alone (L_SSED, eq. 4: the attack is what is compared) for ``cpu_minutes`` of process CPU
time, scored at a few points of that budget (the learning curve), and, for variants with a
per-utterance code, scored again with the code optimised per utterance. All variants see the same
seeds, crops and subset of held-out speakers (:func:`subset_rows`: the profile's ``STUDY_SUBSET``,
dev, never the eval speakers the tables report). Scores use all pairs of the subset (enrolment: the
original of utterance i, test: condition c of utterance j ≠ i) with the white-box encoder:

- ``rec-rec``: originals on both sides; ``rec-adv``: protected test; ``rec-gn``: Gaussian noise of the
  same power as each utterance's δ (same SNR as adv); ``adversarial_gain`` = rec-adv / rec-gn.
- PGD at the best variant's SNR (per utterance) is the frontier a per-utterance optimiser reaches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from spkadv import SAMPLE_RATE
from spkadv.audio.io import load_audio
from spkadv.base.fileio import read_json, write_json
from spkadv.core import modelfile, protect, train
from spkadv.core.models import SSEDGenerator
from spkadv.data.manifest import SUBSETS
from spkadv.evaluation import conditions, metrics
from spkadv.evaluation.attacks import pgd

# What every variant starts from, whatever the profile now adopts: the SSED generator as it was
# before the study (no code, no context, fp32, eq. 2 to the utterance, SNR hinge at 27 dB), so the
# study stays reproducible after its winner became the profile's setting.
BASELINE: dict[str, Any] = {
    "MODEL_EMBED_DIM": 0,
    "MODEL_CODE_FILM": False,
    "MODEL_CODE_SEGMENT_SECONDS": 0.0,
    "CODE_SIGMA": 0.0,
    "ATTACK_TARGET": "utterance",
    "ATTACK_MARGIN": 1.0,
    "CPU_BF16": False,
    "SNR_TARGET_DB": 27.0,
    "RPT_FORM": "eq8",
    "MODEL_MASK_INIT": 0.0,
}

# name -> (parameter overrides on top of the profile and BASELINE, what it tests)
VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "base": ({}, "the generator before the study (BASELINE), fp32"),
    "bf16": ({"CPU_BF16": True}, "CPU bf16 autocast: more steps in the same budget"),
    "centroid": (
        {"CPU_BF16": True, "ATTACK_TARGET": "centroid", "ATTACK_MARGIN": 0.2},
        "bf16 + loss to the speaker centroid, hinge at cos 0.2",
    ),
    "context": (
        {"CPU_BF16": True, "MODEL_EMBED_DIM": 192},
        "bf16 + FiLM from the white-box embedding of the utterance (utterance context)",
    ),
    "wide": (
        {"CPU_BF16": True, "MODEL_RES_BLOCKS": 5},
        "bf16 + 5 dilated residual blocks (receptive field about ±0.15 s)",
    ),
    "crop2s": ({"CPU_BF16": True, "CROP_SECONDS": 2.0, "BATCH_SIZE": 2}, "bf16 + 2 s crops"),
    "code": (
        {"CPU_BF16": True, "MODEL_CODE_FILM": True, "CODE_SIGMA": 0.3},
        "bf16 + bottleneck FiLM code (random in training; optimised per utterance when protecting)",
    ),
    "segcode": (
        {
            "CPU_BF16": True,
            "MODEL_CODE_FILM": True,
            "MODEL_CODE_SEGMENT_SECONDS": 0.25,
            "CODE_SIGMA": 0.3,
        },
        "bf16 + one bottleneck FiLM code per 0.25 s segment (random in training; optimised)",
    ),
}


def subset_rows(manifest: pd.DataFrame, subset: str = "dev") -> pd.DataFrame:
    """The manifest rows a study measures on: those of ``subset`` (the profile's ``STUDY_SUBSET``).

    Every study compares settings, so it measures on the dev speakers: held out from training and
    from the tables. ``eval`` (or ``train``) is accepted with a warning, to reproduce a measurement
    made before the dev speakers existed; a choice made there is not held out.

    Raises:
        ValueError: ``subset`` is not a manifest subset, or the manifest has no rows of it.
    """
    if subset not in SUBSETS:
        raise ValueError(f"STUDY_SUBSET {subset!r}: choose one of {SUBSETS} (dev: held out)")
    rows = manifest[manifest["subset"] == subset]
    if rows.empty:
        raise ValueError(
            f"the manifest has no {subset} rows; rebuild the corpus with held-out dev speakers "
            "(SYNTH_DEV_SPEAKERS_PER_GENDER, LIBRISPEECH_DEV_SUBSET, speechocean762's dev "
            "selection) by running 00_data_prep"
        )
    if subset != "dev":
        warnings.warn(
            f"STUDY_SUBSET {subset!r}: measured on {subset} speakers, not on held-out dev ones",
            stacklevel=2,
        )
    return rows.reset_index(drop=True)


@dataclasses.dataclass
class EvalSet:
    """The fixed subset a study scores: waveforms (cut to a common maximum length) and speakers,
    built from :func:`subset_rows` (dev speakers)."""

    utt_ids: list[str]
    speakers: list[str]
    waves: list[np.ndarray]

    @classmethod
    def from_manifest(
        cls, eval_rows: pd.DataFrame, per_speaker: int, max_seconds: float
    ) -> EvalSet:
        rows = eval_rows.groupby("speaker", sort=False).head(per_speaker)
        cut = int(max_seconds * SAMPLE_RATE)
        waves = [load_audio(p)[:cut] for p in rows["path"]]
        return cls(list(rows["utt_id"]), list(rows["speaker"]), waves)


def embed(encoder: torch.nn.Module, waves: Sequence[np.ndarray]) -> np.ndarray:
    """Unit-norm embeddings ``[N, D]`` of ``waves`` (one at a time, whole utterances) by ``encoder``."""
    out = []
    with torch.no_grad():  # not inference_mode: the encoder may cache tensors reused with grad
        for wave in waves:
            z = encoder.embed(torch.from_numpy(np.ascontiguousarray(wave)).unsqueeze(0))
            out.append(F.normalize(z.float(), dim=-1)[0].numpy())
    return np.stack(out)


def pair_eer(enrol: np.ndarray, test: np.ndarray, speakers: Sequence[str]) -> float:
    """EER (%) over all pairs i ≠ j of unit embeddings: enrolment row i, test row j."""
    scores = enrol @ test.T
    spk = np.asarray(speakers)
    if len(set(spk.tolist())) == len(spk):
        raise ValueError(
            "the subset has one utterance per speaker: no target pairs; "
            "take at least 2 utterances per speaker"
        )
    same = spk[:, None] == spk[None, :]
    off = ~np.eye(len(spk), dtype=bool)
    return metrics.eer(scores[same & off], scores[~same])


def score(
    encoder: torch.nn.Module,
    evalset: EvalSet,
    rec_emb: np.ndarray,
    protect_fn: Callable[[int, np.ndarray], np.ndarray],
    pesq_utts: int = 0,
    noise_seed: int = 0,
    restore_fn: Callable[[int, np.ndarray], np.ndarray] | None = None,
) -> dict[str, float]:
    """Protect every subset utterance with ``protect_fn(i, x)`` and score adv and gn (and the
    restoration ``restore_fn(i, x')`` when given: rec-rst EER and SNR)."""
    advs, gns, snrs, pesqs, rsts, snr_rst = [], [], [], [], [], []
    for i, (utt, x) in enumerate(zip(evalset.utt_ids, evalset.waves, strict=True)):
        adv = protect_fn(i, x)
        advs.append(adv)
        if restore_fn is not None:
            rsts.append(restore_fn(i, adv))
            snr_rst.append(metrics.snr_db(x, rsts[-1]))
        gns.append(conditions.matched_noise(x, adv - x, noise_seed, utt))
        snrs.append(metrics.snr_db(x, adv))
        if i < pesq_utts:
            pesqs.append(metrics.pesq_nb_raw(x, adv))
    adv_emb, gn_emb = embed(encoder, advs), embed(encoder, gns)
    out = {
        "eer_recrec": pair_eer(rec_emb, rec_emb, evalset.speakers),
        "eer_recadv": pair_eer(rec_emb, adv_emb, evalset.speakers),
        "eer_recgn": pair_eer(rec_emb, gn_emb, evalset.speakers),
        "cos_x_adv": float(np.mean(np.sum(rec_emb * adv_emb, axis=1))),
        "cos_x_gn": float(np.mean(np.sum(rec_emb * gn_emb, axis=1))),
        "snr_adv_db": conditions.mean_db(snrs),
        "pesq_adv_nb_raw": float(np.mean(pesqs)) if pesqs else float("nan"),
    }
    if restore_fn is not None:
        out["eer_recrst"] = pair_eer(rec_emb, embed(encoder, rsts), evalset.speakers)
        out["snr_rst_db"] = conditions.mean_db(snr_rst)
    gn = out["eer_recgn"]
    out["adversarial_gain"] = out["eer_recadv"] / gn if gn > 0 else float("nan")
    return out


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def score_model(
    model: modelfile.ProtectionModel,
    encoder: torch.nn.Module,
    evalset: EvalSet,
    rec_emb: np.ndarray,
    pesq_utts: int = 0,
) -> dict[str, float]:
    """:func:`score` of a model as its users get it: each utterance protected with its optimised
    code (models with ``code_film``; see :func:`spkadv.core.protect.protection_code`) and restored with
    the same code, as the key holder does from the sidecar."""
    codes: dict[int, np.ndarray | None] = {}

    def protect_fn(i: int, x: np.ndarray) -> np.ndarray:
        codes[i] = protect.protection_code(model, x)
        return protect.protect(model, x, code=codes[i])

    def restore_fn(i: int, adv: np.ndarray) -> np.ndarray:
        return protect.restore(model, adv, code=codes[i])

    return score(
        encoder, evalset, rec_emb, protect_fn, pesq_utts=pesq_utts,
        restore_fn=restore_fn if model.removal is not None else None,
    )  # fmt: skip


# Fields added to the configuration after runs were cached: left out of the digest at their default
# (the behaviour before they existed), so those runs keep their names and are reused.
_LATER_MODEL_FIELDS = {"mask_init": 0.0}
_LATER_TRAIN_FIELDS = {"removal_fresh_optimizer": False, "removal_lr_schedule": "constant"}


def config_digest(cfg: train.TrainConfig) -> str:
    """Short hash of a training configuration (names a variant's checkpoint folder)."""
    data = cfg.to_dict()
    for name, default in _LATER_MODEL_FIELDS.items():
        if data["model"].get(name) == default:
            del data["model"][name]
    for name, default in _LATER_TRAIN_FIELDS.items():
        if data.get(name) == default:
            del data[name]
    return _digest(data)


def run_variant(
    name: str,
    params: dict[str, Any],
    waves: Sequence[np.ndarray],
    speakers: Sequence[str],
    encoder: torch.nn.Module,
    evalset: EvalSet,
    rec_emb: np.ndarray,
    out_dir: Path,
    cpu_minutes: float,
    curve_points: int = 2,
    code_steps: int = 0,
    pesq_utts: int = 20,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Train one variant for ``cpu_minutes`` of CPU time and score it at ``curve_points`` points.

    Returns one record per point (and one more with optimised codes for code variants). Resumable:
    training resumes from the checkpoint of the same configuration under ``out_dir`` (a cache that
    outlives the stage, so adding a variant or raising the budget trains only what is new); scores
    are recomputed.
    """
    overrides, _ = VARIANTS[name]
    cfg = train.config_from_params(
        {**params, **BASELINE, **overrides}, "SSED_STEPS", "SSED_WARM_START_STEPS", joint=False
    )
    cfg = dataclasses.replace(cfg, steps=10**9, checkpoint_every=10**9)  # the budget stops it
    ckpt_dir = Path(out_dir) / f"{name}-{config_digest(cfg)}"  # resumes across reruns of the study
    eval_key = _digest(
        {"utts": evalset.utt_ids, "samples": [len(w) for w in evalset.waves], "pesq": pesq_utts,
         "code_steps": code_steps}
    )  # fmt: skip
    records = []
    for point in range(1, curve_points + 1):
        budget = 60.0 * cpu_minutes * point / curve_points
        scores_path = ckpt_dir / f"cpu{budget:.0f}s-scores-{eval_key}.json"
        if scores_path.exists():  # this point was trained and scored on this subset before
            records += read_json(scores_path)["records"]
            continue
        snapshot = ckpt_dir / f"cpu{budget:.0f}s.pt"
        if not snapshot.exists():
            train.train(
                cfg, waves, encoder, ckpt_dir, progress=progress, speakers=speakers,
                max_cpu_seconds=budget, device=torch.device("cpu"),
            )  # fmt: skip
            state = train.load_checkpoint(ckpt_dir / train.CHECKPOINT_NAME)
            if state.get("cpu_s", 0.0) > budget + 60:
                raise RuntimeError(
                    f"{ckpt_dir}: the checkpoint is past {budget:.0f} CPU s and that point's snapshot is "
                    "missing; delete the folder to train this variant again"
                )
            shutil.copyfile(ckpt_dir / train.CHECKPOINT_NAME, snapshot)
        state = train.load_checkpoint(snapshot)
        generator = SSEDGenerator(cfg.model)
        generator.load_state_dict(state["generator"])
        generator.eval()
        model = modelfile.ProtectionModel(
            generator, None, cfg.eps, "", cfg.model, {"encoder": "study"}, encoder
        )
        base = {
            "variant": name,
            "cpu_minutes": state.get("cpu_s", budget) / 60,
            "steps": state["step"],
            "audio_hours_seen": state["step"] * cfg.batch_size * cfg.crop_seconds / 3600,
            "steps_per_cpu_second": state["step"] / max(state.get("cpu_s", budget), 1e-9),
        }
        point_records = []
        t0 = time.process_time()
        scores = score(
            encoder,
            evalset,
            rec_emb,
            lambda i, x, m=model: protect.protect(m, x),
            pesq_utts=pesq_utts if point == curve_points else 0,
        )
        point_records.append({**base, **scores, "eval_cpu_s": time.process_time() - t0})
        if point == curve_points and cfg.model.code_film and code_steps > 0:
            model.meta.update(code_steps=code_steps, snr_target_db=cfg.weights.snr_target_db)
            t0 = time.process_time()
            scores = score(
                encoder,
                evalset,
                rec_emb,
                lambda i, x, m=model: protect.protect(m, x, code=protect.protection_code(m, x)),
                pesq_utts=pesq_utts,
            )
            point_records.append(
                {
                    **base,
                    **scores,
                    "variant": f"{name}+opt{code_steps}",
                    "eval_cpu_s": time.process_time() - t0,
                }
            )
        write_json(scores_path, {"records": point_records})
        records += point_records
    return records


def pgd_frontier(
    encoder: torch.nn.Module,
    evalset: EvalSet,
    rec_emb: np.ndarray,
    snr_db: float,
    steps: int,
) -> dict[str, Any]:
    """Per-utterance PGD on the white-box encoder at ``snr_db`` (L2 budget), scored like a variant."""
    t0 = time.process_time()
    scores = score(
        encoder,
        evalset,
        rec_emb,
        lambda i, x: pgd(encoder, x, snr_db=snr_db, steps=steps, seed=i).x_adv,
    )
    return {"variant": f"pgd{steps}", **scores, "eval_cpu_s": time.process_time() - t0}


def joint_run(
    params: dict[str, Any],
    seed: int,
    threads: int,
    step_fraction: float,
    waves: Sequence[np.ndarray],
    speakers: Sequence[str],
    encoder: torch.nn.Module,
    evalset: EvalSet,
    rec_emb: np.ndarray,
    out_dir: Path,
    removal_fraction: float | None = None,
) -> dict[str, Any]:
    """Joint training (notebook 20's configuration, ``step_fraction`` of its joint steps and
    ``removal_fraction`` (default: the same) of its F_R-alone steps) with one seed and thread count,
    scored on the subset with protection and one-shot restoration.

    ``collapsed`` flags a run whose removal is a no-op (SNR(rst) < SNR(adv) + 3 dB) or whose
    attack moves embeddings no more than noise of the same power (cos(x, x') >= cos(x, gn)).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cfg = train.config_from_params(
            {**params, "SEED": seed}, "JOINT_STEPS", "JOINT_WARM_START_STEPS", joint=True
        )
        cfg = dataclasses.replace(
            cfg,
            steps=max(1, round(cfg.steps * step_fraction)),
            removal_steps=round(
                cfg.removal_steps
                * (step_fraction if removal_fraction is None else removal_fraction)
            ),
        )
        run_dir = out_dir / f"seed{seed}_threads{threads}-{config_digest(cfg)}"
        meta = {
            "encoder": "study",
            "code_steps": params.get("CODE_STEPS", 0),
            "code_bf16": bool(params.get("CODE_BF16", False)),
            "snr_target_db": cfg.weights.snr_target_db,
            "code_radius": cfg.code_sigma * cfg.model.code_dim**0.5,
        }
        eval_key = _digest(
            {"utts": evalset.utt_ids, "samples": [len(w) for w in evalset.waves], **meta}
        )
        scores_path = run_dir / f"scores-{eval_key}.json"
        if scores_path.exists():  # trained and scored on this subset before: a rerun is free
            cached = read_json(scores_path)
            scores, minutes, steps = cached["scores"], cached["train_wall_minutes"], cached["steps"]
        else:
            t0 = time.perf_counter()
            result = train.train(
                cfg, waves, encoder, run_dir, progress=False, speakers=speakers,
                device=torch.device("cpu"),
            )  # fmt: skip
            minutes, steps = (time.perf_counter() - t0) / 60, result.steps
            model = modelfile.ProtectionModel(
                result.generator, result.removal, cfg.eps, "", cfg.model, meta, encoder
            )
            scores = score_model(model, encoder, evalset, rec_emb)
            write_json(
                scores_path, {"scores": scores, "train_wall_minutes": minutes, "steps": steps}
            )
    finally:
        torch.set_num_threads(previous)
    collapsed = (
        scores["snr_rst_db"] < scores["snr_adv_db"] + 3 or scores["cos_x_adv"] >= scores["cos_x_gn"]
    )
    return {
        "seed": seed,
        "threads": threads,
        "steps": steps,
        "train_wall_minutes": minutes,
        **scores,
        "collapsed": bool(collapsed),
    }
