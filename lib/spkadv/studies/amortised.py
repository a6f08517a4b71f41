"""The amortised-code study (95): a code predictor instead of the per-file code optimisation.

Protection with a per-segment code model optimises the code against the white-box encoder for
``code_steps`` Adam steps per file (:func:`spkadv.core.protect.protection_code`), slower than real
time on one CPU thread. This study trains a :class:`spkadv.core.predictor.CodePredictor` on codes
optimised for train-speaker utterances (:func:`optimised_codes`, cached) and measures on the dev
subset, with the white-box encoder only, the frontier of protection strength against protect
cost: the predicted code refined for k steps (k = 0: no encoder at all), against today's
protection (the zero code and ``code_steps`` steps). A variant is ``{"start": "predicted" |
"zero" | "mean", "steps": k}`` (:func:`spkadv.core.predictor.amortised_code`).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from spkadv import SAMPLE_RATE
from spkadv.audio.io import load_audio
from spkadv.base.fileio import atomic_path
from spkadv.core import modelfile, predictor, predictor_train, protect
from spkadv.evaluation import conditions, metrics, plotting
from spkadv.studies import settings, study
from spkadv.studies.settings import one_thread

K0 = {"start": "predicted", "steps": 0}  # the amortised protection: no encoder at protect time
REGRESSION_K0 = "regression predictor, 0 steps"  # beside an attack-trained predictor's rows


def spread_rows(rows: pd.DataFrame, count: int, skip: int = 0) -> pd.DataFrame:
    """``count`` rows of ``rows`` after the first ``skip``, taken round robin over its speakers
    (each speaker's utterances in manifest order): as many speakers as possible."""
    order = rows.assign(_k=rows.groupby("speaker", sort=False).cumcount())
    order = order.sort_values("_k", kind="stable").drop(columns="_k")
    return order.iloc[skip : skip + count].reset_index(drop=True)


def code_cache(model: modelfile.ProtectionModel, root: Path, max_seconds: float) -> Path:
    """The folder of cached optimised codes: keyed by the model, its code settings and the cut."""
    key = {
        "model": model.fingerprint,
        "max_seconds": max_seconds,
        **{k: model.meta.get(k) for k in ("code_steps", "code_lr", "code_radius", "snr_target_db",
                                          "code_bf16", "code_shift", "code_surrogates")},
    }  # fmt: skip
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = root / f"codes-{digest}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def optimised_codes(
    model: modelfile.ProtectionModel,
    rows: pd.DataFrame,
    max_seconds: float,
    cache: Path,
    progress: bool = False,
) -> tuple[dict[str, np.ndarray], list[np.ndarray], dict[str, float]]:
    """(utt_id -> code* [segments, code_dim], the waveforms cut to ``max_seconds``, cost): each
    utterance's code optimised as protection does (the model's steps, learning rate and ball, one
    torch thread), read from ``cache`` when there. ``cost``: CPU seconds and audio seconds of the
    utterances optimised in this call, and how many came from the cache."""
    codes, waves, cpu, audio, cached = {}, [], 0.0, 0.0, 0
    cut = int(max_seconds * SAMPLE_RATE)
    with one_thread():
        for utt, path in tqdm(list(zip(rows["utt_id"], rows["path"], strict=True)),
                              desc="code*", disable=not progress):  # fmt: skip
            x = load_audio(path)[:cut]
            waves.append(x)
            file = cache / f"{utt}.npy"
            if file.is_file():
                codes[utt] = np.load(file)
                cached += 1
                continue
            started = time.process_time()
            codes[utt] = protect.protection_code(model, x)
            cpu += time.process_time() - started
            audio += len(x) / SAMPLE_RATE
            with atomic_path(file) as tmp, open(tmp, "wb") as fh:
                np.save(fh, codes[utt])
    return codes, waves, {"cpu_seconds": cpu, "audio_seconds": audio, "cached": cached}


def training_set(
    net: predictor.CodePredictor, waves: list[np.ndarray], codes: list[np.ndarray]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(segment features, target codes) of utterances and their optimised codes, row by segment."""
    feats = [predictor.training_features(net, x) for x in waves]
    for f, c in zip(feats, codes, strict=True):
        if len(f) != len(c):
            raise ValueError(f"{len(f)} segments of audio for a code of {len(c)} segments")
    return torch.cat(feats), torch.from_numpy(np.concatenate(codes))


def attack_rows(train: pd.DataFrame, held: pd.DataFrame, count: int) -> pd.DataFrame:
    """The train-speaker utterances the attack objective trains on: ``count`` of them (0: all)
    round robin over the speakers, the held-out ones left out (the fitted ones come first: the
    attack objective needs no optimised code, so it can use more utterances than regression)."""
    rest = train[~train["utt_id"].isin(held["utt_id"])]
    return spread_rows(rest, count if count > 0 else len(rest))


def train_attack(
    model: modelfile.ProtectionModel,
    config: predictor.PredictorConfig,
    rows: pd.DataFrame,
    codes: dict[str, np.ndarray],
    max_seconds: float,
    progress: bool = False,
    **settings_: Any,
) -> tuple[predictor.CodePredictor, list[float], dict[str, float]]:
    """(a predictor trained on the attack objective, its loss per step, cost): the utterances of
    ``rows`` cut to ``max_seconds``, their optimised code where ``codes`` has one (the mean
    training code, and the regression term of ``regression_weight``), one torch thread;
    ``settings_``: :func:`spkadv.core.predictor_train.fit_attack`'s steps, lr, crops,
    crop_segments, regression_weight, seed. ``cost``: CPU seconds of the training."""
    cut = int(max_seconds * SAMPLE_RATE)
    waves = [load_audio(path)[:cut] for path in rows["path"]]
    net = predictor.CodePredictor(config)
    with one_thread():
        started = time.process_time()
        history = predictor_train.fit_attack(
            net, model, waves, [codes.get(u) for u in rows["utt_id"]], progress=progress,
            **settings_,
        )  # fmt: skip
        cpu = time.process_time() - started
    return net, history, {"cpu_seconds": cpu, "utterances": len(waves)}


def held_cosines(
    model: modelfile.ProtectionModel,
    waves: list[np.ndarray],
    nets: dict[str, predictor.CodePredictor],
) -> dict[str, float]:
    """Mean cos(z(x), z(x')) on held-out train-speaker utterances (the attack objective at
    k = 0, the model's code encoder) with the zero code, each net's mean training code
    (``mean_code``) and each net's predicted code: ``held_cos_zero``, ``held_cos_<name>``,
    ``held_cos_mean_<name>``."""
    dim = model.config.code_dim
    with one_thread():
        out = {
            "held_cos_zero": predictor_train.attack_cosine(
                model, waves, [np.zeros(dim)] * len(waves)
            )
        }
        for name, net in nets.items():
            mean = net.mean_code.cpu().numpy()
            out[f"held_cos_mean_{name}"] = predictor_train.attack_cosine(
                model, waves, [mean] * len(waves)
            )
            predicted = [predictor.predict_codes(net, x) for x in waves]
            out[f"held_cos_{name}"] = predictor_train.attack_cosine(model, waves, predicted)
    return out


def attack_text(held: dict[str, float], cost: dict[str, float], steps: int) -> str:
    """One sentence on the attack-trained predictor, for the conclusion."""
    return (
        f"The attack-trained predictor ({steps} steps on {cost['utterances']} train-speaker "
        f"utterances, {cost['cpu_seconds'] / 60:.1f} CPU min): on the held-out train-speaker "
        f"utterances cos(x, x') at k = 0 {held['held_cos_attack']:.3f}, against "
        f"{held['held_cos_regression']:.3f} for the regression predictor and "
        f"{held['held_cos_zero']:.3f} for the zero code (lower: stronger)."
    )


def measure(
    model: modelfile.ProtectionModel,
    net: predictor.CodePredictor,
    evalset: study.EvalSet,
    trials: pd.DataFrame,
    rec: dict[str, np.ndarray],
    variant: dict[str, Any],
    noise_seed: int = 0,
    progress: bool = False,
    blackbox: dict[str, Scorer] | None = None,
) -> dict[str, float]:
    """One variant on the dev subset with the white-box encoder (as notebook 94's ``measure``):
    each utterance protected with the variant's code and restored one-shot by F_R with that code
    (the sidecar's). rec-adv, rec-gn and rec-rst EER (%), mean cos(x, x') and cos(x, gn), SNR(adv)
    and SNR(rst) (dB), the largest code norm, and the CPU seconds per audio second (one torch
    thread) of the code (``code_cost``) and of code and protection together (``protect_cost``).
    ``blackbox``: name -> (encoder, its embeddings of the originals), each scored on the same
    waveforms as ``<name>_eer_recadv``, ``<name>_eer_recgn``, ``<name>_cos_x_adv`` ...; an
    encoder never used by the protection (held out) measures transfer."""
    start, steps = str(variant.get("start", "predicted")), int(variant.get("steps", 0))
    to_radius = bool(variant.get("to_radius", False))
    encoder = model.encoder()
    advs, gns, rsts, snr_adv, snr_rst, norms = [], [], [], [], [], []
    cpu_code = cpu_all = 0.0
    with one_thread():
        pairs = list(zip(evalset.utt_ids, evalset.waves, strict=True))
        for utt, x in tqdm(pairs, desc=f"{start}, {steps} steps", disable=not progress):
            started = time.process_time()
            code = predictor.amortised_code(model, net, x, steps, start, to_radius)
            cpu_code += time.process_time() - started
            adv = protect.protect(model, x, code=code)
            cpu_all += time.process_time() - started
            rst = protect.restore(model, adv, code=code)
            advs.append(adv)
            rsts.append(rst)
            gns.append(conditions.matched_noise(x, adv - x, noise_seed, utt))
            snr_adv.append(metrics.snr_db(x, adv))
            snr_rst.append(metrics.snr_db(x, rst))
            norms.append(float(np.linalg.norm(code, axis=-1).max()))
        scores = settings.score_protected(encoder, evalset, trials, rec, advs, gns)
        scores["eer_recrst"] = restored_eer(encoder, evalset, trials, rec, rsts)
        scores |= scored_elsewhere(blackbox, evalset, trials, advs, gns)
    audio_seconds = sum(len(x) for x in evalset.waves) / SAMPLE_RATE
    return {
        "start": start,
        "steps": steps,
        "to_radius": to_radius,
        **scores,
        "snr_adv_db": conditions.mean_db(snr_adv),
        "snr_rst_db": conditions.mean_db(snr_rst),
        "max_code_norm": max(norms),
        "code_cost": cpu_code / audio_seconds,
        "protect_cost": cpu_all / audio_seconds,
    }


# an encoder and its embeddings of the originals (utt_id -> unit embedding)
Scorer = tuple[torch.nn.Module, dict[str, np.ndarray]]


def restored_eer(
    encoder: torch.nn.Module,
    evalset: study.EvalSet,
    trials: pd.DataFrame,
    rec: dict[str, np.ndarray],
    rsts: list[np.ndarray],
) -> float:
    """rec-rst EER (%) on ``trials``: the restored waveforms of ``evalset`` against the originals."""
    rst = dict(zip(evalset.utt_ids, study.embed(encoder, rsts), strict=True))
    return conditions.condition_eers(trials, {"rec": rec, "rst": rst}, ["rec-rst"])["rec-rst"]


def scored_elsewhere(
    scorers: dict[str, Scorer] | None,
    evalset: study.EvalSet,
    trials: pd.DataFrame,
    advs: list[np.ndarray],
    gns: list[np.ndarray],
) -> dict[str, float]:
    """``<name>_<score>`` of :func:`spkadv.studies.settings.score_protected` per scorer."""
    out: dict[str, float] = {}
    for name, (encoder, rec) in (scorers or {}).items():
        scores = settings.score_protected(encoder, evalset, trials, rec, advs, gns)
        out |= {f"{name}_{key}": value for key, value in scores.items()}
    return out


def named(variants: dict[str, dict[str, Any]], code_steps: int) -> tuple[str, str]:
    """(the k = 0 variant's name, today's protection's name: the zero code with the model's
    ``code_steps``) in ``variants``; both must be there."""

    def find(want: dict[str, Any], what: str) -> str:
        for name, v in variants.items():
            if (
                v.get("start", "predicted") == want["start"]
                and int(v.get("steps", 0)) == want["steps"]
                and not v.get("to_radius", False)
            ):
                return name
        raise ValueError(f"CODE_PREDICTOR_VARIANTS needs {what} ({want}); it has {variants}")

    k0 = find(K0, "the predicted code without refinement")
    return k0, find({"start": "zero", "steps": code_steps}, "today's protection")


def conclusion(table: pd.DataFrame, k0: str, current: str, fit_text: str) -> str:
    """The study's conclusion from ``table`` (indexed by variant, columns of :func:`measure`)."""
    a, b = table.loc[k0], table.loc[current]
    speed = b["protect_cost"] / a["protect_cost"]
    realtime = "faster" if a["protect_cost"] < 1 else "slower"
    text = (
        f"Predicted code, no refinement: {a['protect_cost']:.3f} CPU s per audio second on one thread "
        f"({realtime} than real time; today's {int(b['steps'])}-step optimisation {b['protect_cost']:.3f}, "
        f"{speed:.0f}x more), rec-adv EER {a['eer_recadv']:.2f} % against {b['eer_recadv']:.2f} % today "
        f"(noise of the same power {a['eer_recgn']:.2f} % and {b['eer_recgn']:.2f} %), SNR(adv) "
        f"{a['snr_adv_db']:.1f} against {b['snr_adv_db']:.1f} dB, cos(x, x') {a['cos_x_adv']:.3f} against "
        f"{b['cos_x_adv']:.3f}, SNR(rst) {a['snr_rst_db']:.1f} against "
        f"{b['snr_rst_db']:.1f} dB."
    )
    refs = table[(table["steps"] == 0) & (table.index != k0)]
    if len(refs):
        text += (
            " Other codes without steps: "
            + "; ".join(
                f"{name} {r['eer_recadv']:.2f} % (cos {r['cos_x_adv']:.3f}, SNR(rst) {r['snr_rst_db']:.1f} dB)"
                for name, r in refs.iterrows()
            )
            + "."
        )
    predicted = _on_line(table, k0)
    refined = table[predicted & (table["steps"] > 0)].sort_values("steps")
    match = refined[refined["eer_recadv"] >= b["eer_recadv"]]
    if len(match):
        row = match.iloc[0]
        text += (
            f" From the predicted code, {int(row['steps'])} refinement step(s) reach today's rec-adv "
            f"({row['eer_recadv']:.2f} %) at {row['protect_cost']:.3f} CPU s per audio second."
        )
    elif len(refined):
        text += f" No refinement measured ({', '.join(str(int(s)) for s in refined['steps'])} steps) reaches today's rec-adv."
    return f"{text} {fit_text}"


def _on_line(table: pd.DataFrame, k0: str) -> pd.Series:
    """Rows of the chosen predictor's code refined for k steps (k0's predictor when the table
    has a ``predictor`` column: an attack-trained one beside the regression reference)."""
    line = (table["start"] == "predicted") & ~table["to_radius"].astype(bool)
    if "predictor" in table:
        line &= table["predictor"] == table.loc[k0, "predictor"]
    return line


def figures_of_merit(table: pd.DataFrame, k0: str, current: str, text: str) -> dict[str, Any]:
    """Flat metrics: ``protect_rtf_k0``, ``protect_rtf_current``, ``speedup_k0``, the k = 0 and
    current rec-adv and SNR(rst), and ``<variant slug>__<column>`` per variant."""
    a, b = table.loc[k0], table.loc[current]
    out: dict[str, Any] = {
        "k0": k0,
        "current": current,
        "protect_rtf_k0": float(a["protect_cost"]),
        "protect_rtf_current": float(b["protect_cost"]),
        "speedup_k0": float(b["protect_cost"] / a["protect_cost"]),
        "eer_recadv_k0": float(a["eer_recadv"]),
        "eer_recadv_current": float(b["eer_recadv"]),
        "snr_rst_db_k0": float(a["snr_rst_db"]),
        "snr_rst_db_current": float(b["snr_rst_db"]),
        "conclusion": text,
    }
    for name, row in table.iterrows():
        slug = "".join(ch if ch.isalnum() else "_" for ch in str(name)).strip("_")
        out.update({f"{slug}__{k}": v for k, v in row.items()})
    return out


def frontier_figure(table: pd.DataFrame, k0: str, current: str, title: str):
    """rec-adv EER (left) and cos(x, x') (right) against protect cost (log scale): the predicted
    code refined for k steps as a line, the other variants as points, today's protection (a
    star) and real time marked. ``k0`` names the line's first point."""
    plotting.setup()
    import matplotlib.pyplot as plt  # lazy: after setup() has chosen the backend (Agg in batch)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    on_line = _on_line(table, k0)
    line, others = table[on_line].sort_values("steps"), table[~on_line]
    panels = [("eer_recadv", "rec-adv EER (%), white box, dev trials"),
              ("cos_x_adv", "cos(x, x'), white box (lower: stronger)")]  # fmt: skip
    for ax, (column, label) in zip(axes, panels, strict=True):
        ax.plot(
            line["protect_cost"], line[column], "o-", color="C0", label="predicted code + k steps"
        )
        for name, row in line.iterrows():
            text = f"k={int(row['steps'])}" + (" (amortised)" if name == k0 else "")
            ax.annotate(text, (row["protect_cost"], row[column]), textcoords="offset points",
                        xytext=(5, 4), fontsize=8)  # fmt: skip
        for i, (name, row) in enumerate(others.iterrows()):
            today = name == current
            ax.scatter(row["protect_cost"], row[column], marker="*" if today else "s",
                       s=120 if today else 50, color=f"C{i + 1}", zorder=3,
                       label=f"{name}{' (today)' if today else ''}")  # fmt: skip
        ax.axvline(1.0, color="grey", ls="--", lw=1, label="real time")
        ax.set_xscale("log")
        ax.set_xlabel("protect cost (CPU s per audio second, one thread)")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def fit_summary(
    net: predictor.CodePredictor,
    fitted: tuple[torch.Tensor, torch.Tensor],
    held: tuple[torch.Tensor, torch.Tensor],
) -> dict[str, float]:
    """Mean squared error of the predictor on the fitted and the held-out (features, codes), the
    held-out error of the mean training code (a predictor that learned nothing about x), and the
    share of that error the predictor removes (``held_explained``; negative: worse than the mean)."""
    held_mean = (
        float(((held[1].float() - net.mean_code) ** 2).mean()) if len(held[1]) else float("nan")
    )
    held_mse = predictor.mse(net, *held) if len(held[1]) else float("nan")
    return {
        "fit_mse": predictor.mse(net, *fitted),
        "held_mse": held_mse,
        "held_mse_mean_code": held_mean,
        "held_explained": 1 - held_mse / held_mean if held_mean > 0 else float("nan"),
    }


def fit_text(summary: dict[str, float], utterances: int, segments: int) -> str:
    """One sentence on the predictor's fit, for the conclusion."""
    return (
        f"The predictor learned from {utterances} train-speaker utterances ({segments} segments): "
        f"held-out code MSE {summary['held_mse']:.4f} against {summary['held_mse_mean_code']:.4f} "
        f"for the mean training code ({summary['held_explained']:.0%} of it explained; fitted "
        f"{summary['fit_mse']:.4f})."
    )
