"""Item 2: the generator against PGD (``spkadv.evaluation.attacks.pgd``) on the same white-box encoder.

Per utterance: the generator protects it as ``spkadv protect`` does (for a model with per-utterance
codes, the code optimisation against the white-box encoder and then one forward pass; timed, best
of 3), which gives an embedding similarity cos(z, z') and an SNR. The one forward pass alone (the
zero code) is timed and scored beside it. PGD then attacks the same utterance under an SNR
budget equal to the generator's SNR (step length a tenth of the budget's radius, so that it can
use the whole budget in 10 steps) and stops at the first iterate whose similarity is at or below
the generator's: the same similarity drop at a similar SNR, at PGD's least cost. Both run in this
process, one after the other, on the same number of threads.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks import common

UTTERANCES, QUICK_UTTERANCES = 8, 1
MAX_SECONDS, QUICK_MAX_SECONDS = 6.0, 2.0
PGD_MAX_STEPS = 100
CURVE_UTTERANCES, CURVE_STEPS = 4, 20
CURVE_TARGETS = (0.9, 0.8, 0.7, 0.5, 0.3)
PGD_STEP_FRACTION = (
    0.1  # step length as a fraction of the budget radius: reaches the boundary in 10 steps
)


def _protect(protect, model, x: np.ndarray) -> np.ndarray:
    """Protection as ``spkadv protect`` applies it: with the utterance's optimised code, if any."""
    return protect.protect(model, x, code=protect.protection_code(model, x))


def _cost_curve(attacks, encoder, model, protect, paths, limit: int, quick: bool) -> dict[str, Any]:
    """PGD time to reach several similarity targets, against the generator's time.

    One fixed-length PGD run per utterance (SNR budget = the generator's SNR) records the
    similarity after every step; the time to reach a target is (steps needed + 1) × the mean time
    of a step. This tells what the speed ratio would be for a generator reaching that similarity.
    """
    from spkadv.audio.io import load_audio
    from spkadv.evaluation.metrics import snr_db

    steps = 3 if quick else CURVE_STEPS
    per_target: dict[float, list[float]] = {t: [] for t in CURVE_TARGETS}
    for path in paths:
        x = load_audio(path)[:limit]
        t_gen = common.best_time(lambda x=x: _protect(protect, model, x), repeat=3)
        snr = snr_db(x, _protect(protect, model, x))
        radius = float(np.linalg.norm(x)) * 10 ** (-snr / 20)
        t0 = time.perf_counter()
        result = attacks.pgd(
            encoder, x, snr_db=snr, steps=steps, step_size=PGD_STEP_FRACTION * radius
        )
        per_step = (time.perf_counter() - t0) / (steps + 1)
        for target in CURVE_TARGETS:
            reached = next((i for i, c in enumerate(result.history) if c <= target), None)
            per_target[target].append(
                float("nan") if reached is None else (reached + 1) * per_step / t_gen
            )
    return {
        f"cos<={t:g}": {
            "speed_ratio_median": float(np.nanmedian(v)) if not np.isnan(v).all() else None,
            "reached_fraction": float(np.mean(~np.isnan(v))),
        }
        for t, v in ((t, np.asarray(v)) for t, v in per_target.items())
    } | {"pgd_steps": steps, "utterances": len(paths)}


def run(quick: bool = False, encoder_name: str = "campplus") -> dict[str, Any]:
    import torch

    protect = common.require("spkadv.core.protect", "the generator side")
    attacks = common.require("spkadv.evaluation.attacks", "the PGD side")
    encoders = common.require("spkadv.encoders.speaker", "the white-box encoder")
    from spkadv.audio.io import load_audio
    from spkadv.evaluation.metrics import snr_db

    try:
        encoder = encoders.load(encoder_name, device="cpu")
    except Exception as err:  # asset missing or not fetched
        raise common.Unavailable(
            f"white-box encoder {encoder_name!r} cannot be loaded: {err}"
        ) from err
    model, model_source = common.default_model()
    paths, audio_source = common.speech_files(QUICK_UTTERANCES if quick else UTTERANCES)
    limit = int((QUICK_MAX_SECONDS if quick else MAX_SECONDS) * common.SAMPLE_RATE)
    rows = []
    for path in paths:
        x = load_audio(path)[:limit]
        t_gen = common.best_time(lambda x=x: _protect(protect, model, x), repeat=3)
        t_pass = common.best_time(lambda x=x: protect.protect(model, x), repeat=3)
        x_gen, x_pass = _protect(protect, model, x), protect.protect(model, x)
        with torch.no_grad():
            z, z_gen, z_pass = encoder.embed(torch.from_numpy(np.stack([x, x_gen, x_pass])))
        cos_gen = float(torch.nn.functional.cosine_similarity(z, z_gen, dim=0))
        cos_pass = float(torch.nn.functional.cosine_similarity(z, z_pass, dim=0))
        snr_gen = snr_db(x, x_gen)
        radius = float(np.linalg.norm(x)) * 10 ** (-snr_gen / 20)
        t0 = time.perf_counter()
        result = attacks.pgd(
            encoder,
            x,
            snr_db=snr_gen,
            steps=PGD_MAX_STEPS,
            step_size=PGD_STEP_FRACTION * radius,
            target_cos=cos_gen,
        )
        t_pgd = time.perf_counter() - t0
        rows.append(
            {
                "utt": path.stem,
                "seconds": len(x) / common.SAMPLE_RATE,
                "generator_s": t_gen,
                "generator_one_pass_s": t_pass,
                "cos_generator_one_pass": cos_pass,
                "pgd_s": t_pgd,
                "speed_ratio": t_pgd / t_gen,
                "cos_generator": cos_gen,
                "cos_pgd": result.cos,
                "snr_generator_db": snr_gen,
                "snr_pgd_db": result.snr_db,
                "pgd_steps": result.steps,
                "pgd_reached_target": result.cos <= cos_gen,
            }
        )
        r = rows[-1]
        print(
            f"  {r['utt']}: generator {t_gen * 1e3:.0f} ms (cos {cos_gen:.3f}, {snr_gen:.1f} dB), "
            f"PGD {t_pgd * 1e3:.0f} ms in {result.steps} steps (cos {result.cos:.3f}, "
            f"{result.snr_db:.1f} dB): ratio {r['speed_ratio']:.1f}x",
            flush=True,
        )
    curve = _cost_curve(
        attacks, encoder, model, protect, paths[: 1 if quick else CURVE_UTTERANCES], limit, quick
    )
    ratios = [r["speed_ratio"] for r in rows]
    return {
        "cost_by_target_similarity": curve,
        "model": model_source,
        "audio": audio_source,
        "encoder": encoder_name,
        "threads": torch.get_num_threads(),
        "rows": rows,
        "pgd_speed_ratio": float(np.median(ratios)),
        "pgd_speed_ratio_total_time": sum(r["pgd_s"] for r in rows)
        / sum(r["generator_s"] for r in rows),
        "pgd_median_steps": float(np.median([r["pgd_steps"] for r in rows])),
        "pgd_reached_target_fraction": float(np.mean([r["pgd_reached_target"] for r in rows])),
        "mean_cos_generator": float(np.mean([r["cos_generator"] for r in rows])),
        "mean_cos_generator_one_pass": float(np.mean([r["cos_generator_one_pass"] for r in rows])),
        "generator_code_time_fraction": float(
            1 - np.median([r["generator_one_pass_s"] / r["generator_s"] for r in rows])
        ),
        "mean_cos_pgd": float(np.mean([r["cos_pgd"] for r in rows])),
        "mean_snr_generator_db": float(np.mean([r["snr_generator_db"] for r in rows])),
        "mean_snr_pgd_db": float(np.mean([r["snr_pgd_db"] for r in rows])),
    }
