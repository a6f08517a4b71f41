"""The amortised code (``spkadv.core.predictor``) against today's optimised code, in one run on one
torch thread: protect cost and what PGD needs to match each protection.

On the default profile's trained model (notebook 20) and its trained code predictor (study 95,
``runs/default/95_code_predictor/code_predictor.pt``), for ``UTTERANCES`` eval utterances cut to
``MAX_SECONDS``: each variant computes the code as ``spkadv protect`` does
(:func:`spkadv.core.protect.protection_code`) and protects with it; CPU seconds of code and
protection per audio second (best of ``REPEATS``, after a warm-up). The variants: today's code (the
zero code and the model's ``code_steps`` steps) and the predicted code refined for k = 0, 1, 2, 5
steps (k = 0: no pass through the white-box encoder). Then, per variant and utterance, PGD on CAM++
(``spkadv.evaluation.attacks.pgd``, as item ``pgd``: SNR budget the variant's SNR, step a tenth of
the budget's radius, stopped at the variant's similarity) and the ratio of its CPU time to the
variant's (``pgd_speed_ratio``: today's; ``pgd_speed_ratio_predictor_k0``). Also: the predicted
code stream of a file read in pieces equals the whole file's, and the cost of a training step.

A missing trained predictor is reported as unavailable (run ``make study PROFILE=default
STUDY=95_code_predictor``); ``--quick`` then uses a freshly initialised one (timings only).

    python -m benchmarks.run_all --only predictor [--quick]
    python -m benchmarks.bench_predictor [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from benchmarks import common

PROFILE = "default"
UTTERANCES, QUICK_UTTERANCES = 8, 1
MAX_SECONDS, QUICK_MAX_SECONDS = 6.0, 2.0
REPEATS, QUICK_REPEATS = 2, 1
REFINE_STEPS = (0, 1, 2, 5)  # k of the predicted code's variants
PGD_MAX_STEPS = 100
PGD_STEP_FRACTION = 0.1  # as item pgd: step length a tenth of the budget's radius
FIT_STEPS, QUICK_FIT_STEPS = 50, 5
FIT_SEGMENTS = 2000  # about the default study's training set
STUDY_COMMAND = f"make study PROFILE={PROFILE} STUDY=95_code_predictor"


def _cpu(fn) -> tuple[Any, float]:
    started = time.process_time()
    out = fn()
    return out, time.process_time() - started


def _load(predictor, config, quick: bool, encoder_name: str):
    """(model, predictor, how each was obtained): the profile's trained pair, or (quick only)
    fresh ones (a fresh model's code optimised against ``encoder_name``)."""
    model, model_source = common.default_model()
    if model_source.startswith("freshly"):
        if not quick:
            raise common.Unavailable(
                f"no trained {PROFILE} model ({common.trained_model_path()}): run the {PROFILE} "
                f"pipeline (notebook 20), then {STUDY_COMMAND}"
            )
        model.meta.update(
            {"encoder": encoder_name, "code_steps": 10, "code_radius": 0.5 * 128**0.5}
        )
    path = config.stage_dir(PROFILE, "95_code_predictor", create=False) / "code_predictor.pt"
    try:
        return model, predictor.load_predictor(path, model), model_source, f"trained ({path})"
    except predictor.PredictorFileError as err:
        if not quick:
            raise common.Unavailable(
                f"no code predictor for this model ({err}); run: {STUDY_COMMAND}"
            ) from err
    net = predictor.CodePredictor(predictor.PredictorConfig.for_model(model)).eval()
    return (
        model,
        net,
        model_source,
        f"freshly initialised, timings only ({path}: run {STUDY_COMMAND})",
    )


def _signals(quick: bool) -> tuple[list[np.ndarray], str]:
    from spkadv.audio.io import load_audio

    count = QUICK_UTTERANCES if quick else UTTERANCES
    limit = int((QUICK_MAX_SECONDS if quick else MAX_SECONDS) * common.SAMPLE_RATE)
    try:
        paths, source = common.speech_files(count)
    except common.Unavailable:
        if not quick:
            raise
        x, source = common.speech_signal(limit / common.SAMPLE_RATE)
        return [x], source
    return [load_audio(p)[:limit] for p in paths], source


def _variants(model, net) -> dict[str, tuple[Any, int]]:
    """name -> (predictor or None, steps): today's code, then the predicted code and k steps."""
    steps = int(model.meta.get("code_steps", 10))
    return {"current": (None, steps)} | {f"predictor_k{k}": (net, k) for k in REFINE_STEPS}


def run(quick: bool = False, encoder_name: str = "campplus") -> dict[str, Any]:
    import torch

    predictor = common.require("spkadv.core.predictor", "the amortised code")
    attacks = common.require("spkadv.evaluation.attacks", "the PGD side")
    encoders = common.require("spkadv.encoders.speaker", "the white-box encoder")
    from spkadv.base import config
    from spkadv.core import protect
    from spkadv.evaluation.metrics import snr_db

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        try:
            encoder = encoders.load(encoder_name, device="cpu")
        except Exception as err:  # asset missing or not fetched
            raise common.Unavailable(f"encoder {encoder_name!r} cannot be loaded: {err}") from err
        model, net, model_source, net_source = _load(predictor, config, quick, encoder_name)
        signals, audio_source = _signals(quick)
        variants = _variants(model, net)

        def protected(x, net, steps):
            code = protect.protection_code(model, x, steps, predictor=net)
            return protect.protect(model, x, code=code)

        warm = signals[0][: common.SAMPLE_RATE]
        for net_v, _ in variants.values():  # encoder backward set-up, predictor, allocator
            protected(warm, net_v, 1)
        audio = sum(len(x) for x in signals) / common.SAMPLE_RATE
        repeats = QUICK_REPEATS if quick else REPEATS
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        for i, x in enumerate(signals):
            with torch.no_grad():
                z = encoder.embed(torch.from_numpy(x)[None])
            for name, (net_v, steps) in variants.items():
                times = []
                for _ in range(repeats):
                    adv, seconds = _cpu(lambda x=x, n=net_v, s=steps: protected(x, n, s))
                    times.append(seconds)
                with torch.no_grad():
                    z_adv = encoder.embed(torch.from_numpy(adv)[None])
                cos = float(torch.nn.functional.cosine_similarity(z, z_adv).item())
                snr = snr_db(x, adv)
                radius = float(np.linalg.norm(x)) * 10 ** (-snr / 20)
                result, t_pgd = _cpu(
                    lambda x=x, snr=snr, radius=radius, cos=cos: attacks.pgd(
                        encoder, x, snr_db=snr, steps=PGD_MAX_STEPS,
                        step_size=PGD_STEP_FRACTION * radius, target_cos=cos,
                    )
                )  # fmt: skip
                rows[name].append(
                    {
                        "utterance": i,
                        "seconds": len(x) / common.SAMPLE_RATE,
                        "protect_cpu_s": min(times),
                        "cos": cos,
                        "snr_db": snr,
                        "pgd_cpu_s": t_pgd,
                        "pgd_steps": result.steps,
                        "pgd_reached": bool(result.cos <= cos),
                        "speed_ratio": t_pgd / min(times),
                    }
                )
            print(
                f"  utterance {i} ({len(x) / common.SAMPLE_RATE:.1f} s): "
                + ", ".join(
                    f"{n} {r[-1]['protect_cpu_s']:.2f} s cos {r[-1]['cos']:.3f} PGD x{r[-1]['speed_ratio']:.2f}"
                    for n, r in rows.items()
                ),
                flush=True,
            )
        out: dict[str, Any] = {
            "model": model_source,
            "predictor": net_source,
            "audio": audio_source,
            "audio_seconds": audio,
            "encoder": encoder_name,
            "threads": torch.get_num_threads(),
            "repeats": repeats,
            "current_code_steps": variants["current"][1],
        }
        for name, r in rows.items():
            rtf = sum(row["protect_cpu_s"] for row in r) / audio
            suffix = "" if name == "current" else f"_{name}"
            out[f"protect_rtf_1thread{suffix}"] = rtf
            out[f"pgd_speed_ratio{suffix}"] = float(np.median([row["speed_ratio"] for row in r]))
            out[f"mean_cos{suffix}"] = float(np.mean([row["cos"] for row in r]))
            out[f"mean_snr_db{suffix}"] = float(np.mean([row["snr_db"] for row in r]))
            out[f"pgd_reached_fraction{suffix}"] = float(np.mean([row["pgd_reached"] for row in r]))
        out["predictor_k0_speedup"] = (
            out["protect_rtf_1thread"] / out["protect_rtf_1thread_predictor_k0"]
        )
        out["rows"] = rows
        x = signals[0]
        whole = predictor.predict_codes(net, x)
        pieced = predictor.predict_codes(net, lambda a, b: x[a:b], len(x), piece_seconds=0.5)
        out["pieces_equal_whole"] = bool(np.array_equal(whole, pieced))
        fresh = predictor.CodePredictor(net.config)
        cfg = net.config
        feats = torch.randn(FIT_SEGMENTS, cfg.n_mels, cfg.frames)
        codes = torch.randn(FIT_SEGMENTS, cfg.code_dim)
        fit_steps = QUICK_FIT_STEPS if quick else FIT_STEPS
        _, t_fit = _cpu(lambda: predictor.fit(fresh, feats, codes, steps=fit_steps))
        out["fit_step_cpu_s"] = t_fit / fit_steps
        return out
    finally:
        torch.set_num_threads(threads)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short utterance, one repeat")
    result = run(parser.parse_args().quick)
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    return 0 if result["pieces_equal_whole"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
