"""Item bf16: CPU bfloat16 autocast for protect/restore and for a training step: speed against
float32, and whether quality holds.

* ``bf16_protect_speedup``: protect + restore of 60 s (quick: 10 s) with the default architecture,
  float32 time / bf16 time (``spkadv.base.precision.bf16_model``), best of 3, one thread.
  The same worker records SNR(x, x') and SNR(x, x̂) of both and the relative difference of the
  perturbations, with a trained model when there is one (see below).
* quality, with a trained model (``SPKADV_BENCH_MODEL``, else the default profile's, else the smoke
  profile's), at the lowest priority since it is not timed: on evaluation
  utterances of several speakers, float32 against bf16: SNR(x, x') and SNR(x, x̂) in dB,
  narrow-band raw PESQ(x, x'), the CAM++ EER of clean enrolment against protected tests (all pairs)
  and the mean cosine between clean and protected embeddings; also SNR(x'_fp32, x'_bf16).
* ``bf16_train_speedup``: one joint-training step (F_P and F_R forward, CAM++ on x and x', the
  losses, backward, Adam) with the default profile's batch and crop, float32 time / time with
  ``torch.autocast("cpu", dtype=torch.bfloat16)`` around the generator, removal and encoder
  forwards (losses in float32), best of several steps after a warm-up, one thread.
* ``bf16_code_speedup``, for a trained model with per-utterance codes (``MODEL_CODE_FILM``): the
  code optimisation of ``spkadv.core.protect.protection_code`` (the model's ``code_steps``) on evaluation
  utterances, float32 process CPU time / bf16 autocast CPU time, one thread; each code is then
  applied in float32 and scored: mean cos(z(x), z(x')) under CAM++ (lower protects more) and SNR.
"""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
from spkadv.core import modelfile

from benchmarks import common

PROTECT_SECONDS, QUICK_PROTECT_SECONDS = 60.0, 10.0
QUALITY_UTTERANCES, QUICK_QUALITY_UTTERANCES = 24, 6
TRAIN_STEPS, QUICK_TRAIN_STEPS = 4, 2
CODE_UTTERANCES, QUICK_CODE_UTTERANCES = 16, 4
QUALITY_TIMEOUT_S = 900


def protect_speed(seconds: float, repeat: int = 3) -> dict[str, Any]:
    """Worker: protect and restore time in float32 and bf16, and the SNRs of their outputs."""
    import torch
    from spkadv.base import precision
    from spkadv.core import modelfile, protect
    from spkadv.evaluation import metrics

    path, trained = _trained_model()
    if path is not None:
        model, source = modelfile.load_model(path), trained
    else:
        model, source = common.default_model()
    fast = precision.bf16_model(model)
    x, audio = common.speech_signal(seconds)
    out: dict[str, Any] = {
        "seconds": seconds,
        "model": source,
        "audio": audio,
        "threads": torch.get_num_threads(),
        "cpu_has_native_bf16": precision.bf16_available(),
    }
    advs = {}
    for name, m in (("fp32", model), ("bf16", fast)):
        adv = advs[name] = protect.protect(m, x)
        out[f"protect_s_{name}"] = common.best_time(lambda m=m: protect.protect(m, x), repeat)
        out[f"restore_s_{name}"] = common.best_time(
            lambda m=m, a=adv: protect.restore(m, a), repeat
        )
        out[f"snr_adv_db_{name}"] = metrics.snr_db(x, adv)
        out[f"snr_rst_db_{name}"] = min(200.0, metrics.snr_db(x, protect.restore(m, adv)))
    out["snr_adv_bf16_vs_fp32_db"] = metrics.snr_db(advs["fp32"], advs["bf16"])
    delta = advs["fp32"] - x
    out["perturbation_rel_error_bf16"] = float(
        np.linalg.norm(advs["bf16"] - advs["fp32"]) / max(np.linalg.norm(delta), 1e-20)
    )
    out["protect_speedup"] = out["protect_s_fp32"] / out["protect_s_bf16"]
    out["restore_speedup"] = out["restore_s_fp32"] / out["restore_s_bf16"]
    out["bf16_protect_speedup"] = (out["protect_s_fp32"] + out["restore_s_fp32"]) / (
        out["protect_s_bf16"] + out["restore_s_bf16"]
    )
    return out


def _trained_model() -> tuple[Path | None, str]:
    """``SPKADV_BENCH_MODEL`` if set, else the default profile's trained model, else smoke's."""
    from spkadv.base.config import stage_dir

    chosen = os.environ.get("SPKADV_BENCH_MODEL")
    if chosen:
        return Path(chosen), f"trained model {chosen} (SPKADV_BENCH_MODEL)"
    for profile in ("default", "smoke"):
        path = stage_dir(profile, "20_joint_training", create=False) / "model.pt"
        if path.is_file():
            return path, f"trained {profile} model {path}"
    return None, "no trained model (runs/default or runs/smoke 20_joint_training/model.pt)"


def _eval_rows(count: int) -> list[dict[str, str]]:
    """Up to ``count`` evaluation utterances spread over speakers, with absolute paths."""
    from spkadv.base.config import stage_dir

    manifest = stage_dir("default", "00_data_prep", create=False) / "corpus" / "manifest.tsv"
    base = manifest.parent
    if not manifest.is_file():
        folder = common._shared_corpus()
        if folder is None:
            raise common.Unavailable("no speech corpus for the quality check")
        manifest, base = folder / "manifest.tsv", folder
    with open(manifest, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t") if r["subset"] == "eval"]
    by_speaker: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_speaker.setdefault(r["speaker"], []).append(r)
    picked: list[dict[str, str]] = []
    while len(picked) < count and any(by_speaker.values()):  # round robin over speakers
        for utts in by_speaker.values():
            if utts and len(picked) < count:
                picked.append(utts.pop(0))
    for r in picked:
        p = Path(r["path"])
        r["path"] = str(p if p.is_absolute() else base / p)
    return picked


def quality(count: int) -> dict[str, Any]:
    """Worker: float32 against bf16 quality figures on ``count`` evaluation utterances."""
    import torch
    from spkadv.audio.io import load_audio
    from spkadv.base import precision
    from spkadv.core import protect
    from spkadv.encoders import speaker as encoders
    from spkadv.evaluation import metrics
    from spkadv.studies import study

    path, source = _trained_model()
    if path is None:
        return {"quality_reason": source}
    model = modelfile.load_model(path)
    fast = precision.bf16_model(model)
    rows = _eval_rows(count)
    encoder = encoders.load("campplus", device="cpu")
    per = {k: [] for k in ("snr_adv", "snr_rst", "pesq_adv", "snr_adv_vs_fp32")}
    figures: dict[str, dict[str, list[float]]] = {"fp32": {}, "bf16": {}}
    emb: dict[str, list[np.ndarray]] = {"rec": [], "fp32": [], "bf16": []}

    def embed(w: np.ndarray) -> np.ndarray:
        with (
            torch.no_grad()
        ):  # not inference_mode: the encoder caches tensors the code search reuses
            return encoder.embed(torch.from_numpy(w).unsqueeze(0))[0].float().numpy()

    for r in rows:
        x = load_audio(r["path"])
        emb["rec"].append(embed(x))
        advs = {}
        # the code as users get it (optimised in float32, CODE_BF16 is off); both precisions apply it
        code = protect.protection_code(model, x)
        for name, m in (("fp32", model), ("bf16", fast)):
            adv = protect.protect(m, x, code=code)
            advs[name] = adv
            got = figures[name]
            got.setdefault("snr_adv", []).append(metrics.snr_db(x, adv))
            if m.removal is not None:
                got.setdefault("snr_rst", []).append(
                    min(200.0, metrics.snr_db(x, protect.restore(m, adv, code=code)))
                )
            try:
                got.setdefault("pesq_adv", []).append(metrics.pesq_nb_raw(x, adv))
            except (ValueError, ImportError):
                pass
            emb[name].append(embed(adv))
        per["snr_adv_vs_fp32"].append(metrics.snr_db(advs["fp32"], advs["bf16"]))
    speakers = np.array([r["speaker"] for r in rows])
    same = speakers[:, None] == speakers[None, :]
    out: dict[str, Any] = {
        "model": source,
        "utterances": len(rows),
        "speakers": len(set(speakers)),
        "snr_adv_bf16_vs_fp32_db": float(np.mean(per["snr_adv_vs_fp32"])),
    }
    for name in ("fp32", "bf16"):
        for key, values in figures[name].items():
            out[f"{key}_{name}"] = float(np.mean(values)) if values else None
        enrol, test = (np.stack(emb[k]).astype(np.float64) for k in ("rec", name))
        out[f"cos_rec_adv_{name}"] = float(np.mean(metrics.cosine_scores(enrol, test)))
        unit = [e / np.linalg.norm(e, axis=1, keepdims=True) for e in (enrol, test)]
        has_pairs = (same & ~np.eye(len(rows), dtype=bool)).any() and not same.all()
        out[f"eer_rec_adv_{name}"] = study.pair_eer(*unit, speakers) if has_pairs else None
    return out


def code_speed(count: int) -> dict[str, Any]:
    """Worker: per-utterance code optimisation in float32 and bf16: CPU time and what it buys."""
    import time

    import torch
    from spkadv.audio.io import load_audio
    from spkadv.core import protect
    from spkadv.evaluation import metrics

    path, source = _trained_model()
    if path is None:
        return {"code_reason": source}
    model = modelfile.load_model(path)
    if not model.config.code_film or int(model.meta.get("code_steps", 0)) <= 0:
        return {"code_reason": f"{source} optimises no per-utterance code"}
    encoder = model.encoder()
    rows = _eval_rows(count)
    xs = [load_audio(r["path"]) for r in rows]

    def embed(w: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return encoder.embed(torch.from_numpy(w).unsqueeze(0))[0].float()

    protect.protection_code(model, xs[0][:16000])  # warm-up (encoder load, allocator)
    out: dict[str, Any] = {"model": source, "utterances": len(xs), "code_steps": model.meta["code_steps"],
                           "audio_seconds": sum(len(x) for x in xs) / 16000}  # fmt: skip
    for name, bf16 in (("fp32", False), ("bf16", True)):
        model.meta["code_bf16"] = bf16
        cpu, cos, snr = 0.0, [], []
        for x in xs:
            t0 = time.process_time()
            code = protect.protection_code(model, x)
            cpu += time.process_time() - t0
            adv = protect.protect(
                model, x, code=code
            )  # float32 either way (code_bf16: the search only)
            cos.append(float(torch.nn.functional.cosine_similarity(embed(x), embed(adv), dim=0)))
            snr.append(metrics.snr_db(x, adv))
        out[f"code_cpu_s_{name}"] = cpu
        out[f"code_cos_{name}"] = float(np.mean(cos))
        out[f"code_snr_db_{name}"] = float(np.mean(snr))
    out["cpu_s_per_audio_s_step_fp32"] = (
        out["code_cpu_s_fp32"] / out["audio_seconds"] / out["code_steps"]
    )
    out["bf16_code_speedup"] = out["code_cpu_s_fp32"] / out["code_cpu_s_bf16"]
    return out


def train_step_speed(quick: bool) -> dict[str, Any]:
    """Worker: one joint-training step in float32 and with CPU bf16 autocast."""
    import time

    import torch

    from benchmarks.bench_train import direct_joint_step

    step, config, where, audio = direct_joint_step(quick)

    steps = QUICK_TRAIN_STEPS if quick else TRAIN_STEPS
    out: dict[str, Any] = {
        "config": where,
        "audio": audio,
        "batch_size": config.batch_size,
        "crop_seconds": config.crop_seconds,
        "threads": torch.get_num_threads(),
        "method": "direct step (see module docstring)",
    }
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for name in ("fp32", "bf16"):
        step(name == "bf16")  # warm-up
    for _ in range(steps):  # alternate so that background load hits both alike
        for name in ("fp32", "bf16"):
            t0 = time.perf_counter()
            step(name == "bf16")
            times[name].append(time.perf_counter() - t0)
    for name, values in times.items():
        out[f"step_s_{name}"] = min(values)
    out["bf16_train_speedup"] = out["step_s_fp32"] / out["step_s_bf16"]
    return out


def run(quick: bool = False) -> dict[str, Any]:
    common.require("spkadv.base.precision", "the bf16 option")
    speed = common.run_worker(
        "benchmarks.bench_bf16:protect_speed",
        {"seconds": QUICK_PROTECT_SECONDS if quick else PROTECT_SECONDS},
        1,
    )
    print(
        f"  protect/restore bf16 speedup {speed['protect_speedup']:.2f} / {speed['restore_speedup']:.2f} "
        f"({speed['seconds']:g} s, {speed['model']})",
        flush=True,
    )
    train = common.run_worker("benchmarks.bench_bf16:train_step_speed", {"quick": quick}, 1)
    print(
        f"  training step {train['step_s_fp32']:.2f} s fp32, {train['step_s_bf16']:.2f} s bf16: "
        f"{train['bf16_train_speedup']:.2f}x",
        flush=True,
    )
    code = common.run_worker(
        "benchmarks.bench_bf16:code_speed",
        {"count": QUICK_CODE_UTTERANCES if quick else CODE_UTTERANCES},
        1,
    )
    if "code_reason" not in code:
        print(
            f"  code optimisation ({code['utterances']} utterances, {code['code_steps']} steps): "
            f"{code['code_cpu_s_fp32']:.1f} CPU s fp32, {code['code_cpu_s_bf16']:.1f} bf16 "
            f"({code['bf16_code_speedup']:.2f}x); cos(x, x') {code['code_cos_fp32']:.3f} / "
            f"{code['code_cos_bf16']:.3f}, SNR {code['code_snr_db_fp32']:.1f} / {code['code_snr_db_bf16']:.1f} dB",
            flush=True,
        )
    else:
        print(f"  code optimisation not measured: {code['code_reason']}", flush=True)
    try:  # not timed: at the lowest priority, within QUALITY_TIMEOUT_S
        qual = common.run_worker(
            "benchmarks.bench_bf16:quality",
            {"count": QUICK_QUALITY_UTTERANCES if quick else QUALITY_UTTERANCES},
            1,
            timeout=QUALITY_TIMEOUT_S,
            nice=19,
        )
    except subprocess.TimeoutExpired:
        qual = {
            "quality_reason": f"not finished within {QUALITY_TIMEOUT_S} s at the lowest priority "
            f"(load average {os.getloadavg()[0]:.1f})"
        }
    if "quality_reason" not in qual:
        print(
            "  quality fp32 / bf16: "
            + ", ".join(
                f"{k} {qual.get(k + '_fp32')} / {qual.get(k + '_bf16')}"
                for k in ("snr_adv", "snr_rst", "pesq_adv", "eer_rec_adv", "cos_rec_adv")
            ),
            flush=True,
        )
    else:
        print(f"  quality not measured: {qual['quality_reason']}", flush=True)
    return {
        "protect": speed,
        "train": train,
        "quality": qual,
        "code": code,
        "bf16_code_speedup": code.get("bf16_code_speedup"),
        "bf16_protect_speedup": speed["bf16_protect_speedup"],
        "bf16_train_speedup": train["bf16_train_speedup"],
    }
