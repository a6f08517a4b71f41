"""The black-box study's scoring (notebook 93): protected sets, noise probes and PGD sets scored by
every encoder on the subset's pairs, the band figure and the figures of merit.

:class:`Scorer` holds the subset's originals and their embeddings by each scoring encoder (``white``,
``black``, and ``surrogate`` when a setting needs one); every set is scored by all of them, all pairs
as in the attack study (:func:`spkadv.studies.study.pair_eer`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from spkadv.core import modelfile
from spkadv.encoders import surrogate
from spkadv.evaluation import conditions, metrics, plotting
from spkadv.studies import blackbox
from spkadv.studies.study import embed, pair_eer


@dataclasses.dataclass
class Scorer:
    """The subset's originals (``clean``, ``speakers``), the scoring encoders by side (in scoring
    order) and the originals' unit embeddings by each (``rec``)."""

    clean: list[np.ndarray]
    speakers: list[str]
    encoders: dict[str, torch.nn.Module]
    rec: dict[str, np.ndarray]

    @classmethod
    def build(
        cls, clean: list[np.ndarray], speakers: list[str], encoders: dict[str, torch.nn.Module]
    ) -> Scorer:
        return cls(
            clean, speakers, dict(encoders), {s: embed(e, clean) for s, e in encoders.items()}
        )

    def add(self, side: str, encoder: torch.nn.Module) -> None:
        """Score with ``encoder`` too (as ``side``), from now on."""
        self.encoders[side] = encoder
        self.rec[side] = embed(encoder, self.clean)

    def recrec(self, side: str) -> float:
        """rec-rec EER (%) of ``side`` on the subset."""
        return pair_eer(self.rec[side], self.rec[side], self.speakers)

    def score_set(self, advs: Sequence[np.ndarray], gns: Sequence[np.ndarray]) -> dict[str, float]:
        """SNR of a protected set, and per scoring encoder rec-rec / rec-adv / rec-gn EER (%) and
        mean cos(x, x′), cos(x, gn)."""
        snrs = [metrics.snr_db(x, a) for x, a in zip(self.clean, advs, strict=False)]
        row = {"snr_adv_db": conditions.mean_db(snrs)}
        for side, enc in self.encoders.items():
            adv_emb, gn_emb = embed(enc, advs), embed(enc, gns)
            rec = self.rec[side]
            row[f"{side}_recrec"] = pair_eer(rec, rec, self.speakers)
            row[f"{side}_recadv"] = pair_eer(rec, adv_emb, self.speakers)
            row[f"{side}_recgn"] = pair_eer(rec, gn_emb, self.speakers)
            row[f"{side}_cos_adv"] = float(np.mean(np.sum(rec * adv_emb, axis=1)))
            row[f"{side}_cos_gn"] = float(np.mean(np.sum(rec * gn_emb, axis=1)))
        return row


def setting_row(
    scorer: Scorer,
    model: modelfile.ProtectionModel,
    rows: pd.DataFrame,
    name: str,
    settings: dict[str, Any],
    sur: blackbox.Surrogate | None,
    cache: Path,
    workers: int = 1,
    progress: bool = True,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One protect-time setting: the subset protected with it (cached under ``cache``, see
    :func:`spkadv.studies.blackbox.protect_set`), scored, with the feature change of adv and of gn
    (``logmel_*``, ``linmel_*``); and the mean band SNR (dB) of each (``{"adv": ..., "gn": ...}``)."""
    run_settings, key_settings = blackbox.protect_settings(settings, sur)
    folder = Path(cache) / blackbox.variant_key(model, list(rows["utt_id"]), key_settings)
    paths = blackbox.protect_set(model, rows, folder, run_settings, workers, progress)
    advs = blackbox.load_set(paths)
    gns = blackbox.load_set([folder / "gn" / f"{u}.wav" for u in rows["utt_id"]])
    row = {"variant": name, **scorer.score_set(advs, gns)}
    bands = {}
    for cond, waves in (("adv", advs), ("gn", gns)):
        pairs = list(zip(scorer.clean, waves, strict=False))
        changes = [blackbox.feature_change(x, y) for x, y in pairs]
        row[f"logmel_{cond}"] = float(np.mean([c["logmel"] for c in changes]))
        row[f"linmel_{cond}"] = float(np.mean([c["linmel"] for c in changes]))
        bands[cond] = np.mean([blackbox.band_snr(x, y) for x, y in pairs], axis=0)
    return row, bands


def setting_line(row: dict[str, Any]) -> str:
    """One line on a scored setting: rec-adv and cos against noise per encoder."""
    text = (
        f"{row['variant']}: white rec-adv {row['white_recadv']:.2f} % (gn {row['white_recgn']:.2f}), cos {row['white_cos_adv']:.3f} (gn {row['white_cos_gn']:.3f}); "
        f"black rec-adv {row['black_recadv']:.2f} % (gn {row['black_recgn']:.2f}, rec {row['black_recrec']:.2f}), cos {row['black_cos_adv']:.4f} (gn {row['black_cos_gn']:.4f})"
    )  # fmt: skip
    if "surrogate_recadv" in row:
        text += f"; surrogate rec-adv {row['surrogate_recadv']:.2f} % (rec {row['surrogate_recrec']:.2f}), cos {row['surrogate_cos_adv']:.3f} (gn {row['surrogate_cos_gn']:.3f})"  # fmt: skip
    return text + _more_sides(row)


def _more_sides(row: dict[str, Any]) -> str:
    """The scores of the scorer's further sides (``BLACKBOX_MORE_ENCODERS``), one clause each."""
    sides = [k.removesuffix("_recadv") for k in row if k.endswith("_recadv")]
    more = [s for s in sides if s not in ("white", "black", "surrogate")]
    return "".join(
        f"; {s} rec-adv {row[f'{s}_recadv']:.2f} % (gn {row[f'{s}_recgn']:.2f}, rec {row[f'{s}_recrec']:.2f}), "
        f"cos {row[f'{s}_cos_adv']:.4f} (gn {row[f'{s}_cos_gn']:.4f})"
        for s in more
    )  # fmt: skip


def noise_probe(
    scorer: Scorer, snrs: Sequence[float], shapes: Sequence[str], sides: Sequence[str] = ("white", "black")
) -> list[dict[str, Any]]:  # fmt: skip
    """Each subset utterance with noise of each shape (:func:`spkadv.studies.blackbox.shaped_noise`)
    at each SNR, scored by the black box at every SNR and the white box at the first only (CPU
    budget): rec-noise EER, rec-rec EER and mean cos(x, x + noise) per (SNR, shape, side)."""
    out = []
    for k, snr in enumerate(snrs):
        for shape in shapes:
            noisy = [
                blackbox.shaped_noise(x, shape, snr, seed=i) for i, x in enumerate(scorer.clean)
            ]
            for side in sides:
                if side == "white" and k > 0:
                    continue  # the white box at the first SNR only
                enc, rec = scorer.encoders[side], scorer.rec[side]
                emb = embed(enc, noisy)
                out.append({
                    "snr_db": snr, "shape": shape, "encoder": enc.name, "side": side,
                    "eer_rec": pair_eer(rec, emb, scorer.speakers),
                    "eer_recrec": pair_eer(rec, rec, scorer.speakers),
                    "cos": float(np.mean(np.sum(rec * emb, axis=1))),
                })  # fmt: skip
    return out


def noise_wide(noise: pd.DataFrame) -> pd.DataFrame:
    """The noise probe as one row per (side, shape), columns ``eer_rec @ <snr> dB`` and ``cos @ ...``."""
    wide = noise.pivot_table(index=["side", "shape"], columns="snr_db", values=["eer_rec", "cos"], sort=False)  # fmt: skip
    wide.columns = [f"{v} @ {s:g} dB" for v, s in wide.columns]
    return wide.reset_index()


def pgd_row(
    scorer: Scorer,
    name: str,
    spec: dict[str, Any],
    utt_ids: Sequence[str],
    cache: Path,
    snr_db: float,
    progress: bool = True,
) -> tuple[dict[str, Any], float]:
    """Per-utterance PGD of ``spec`` (``{"encoders": {side: weight}, "steps": n}``; several sides:
    their weighted ensemble) in the L2 ball of ``snr_db``, cached under ``cache/pgd-<key>`` and
    scored like a protected set. Returns the row and the minutes it took (cache reads included).

    Raises:
        ValueError: ``spec`` attacks no side, or one the scorer does not have.
    """
    attacked = dict(spec.get("encoders", {}))
    if not attacked or not set(attacked) <= set(scorer.encoders):
        raise ValueError(
            f"BLACKBOX_PGD[{name!r}] attacks {sorted(attacked)}: choose among {sorted(scorer.encoders)} "
            "(the surrogate exists when a setting of BLACKBOX_VARIANTS has surrogate_weight)"
        )
    steps = int(spec.get("steps", 10))
    members = [scorer.encoders[side] for side in attacked]
    weights = list(attacked.values())
    target = members[0] if len(members) == 1 else surrogate.EnsembleEncoder(members, weights)
    settings = {"snr_db": snr_db, "steps": steps, "weights": weights}
    key = blackbox.pgd_key(target, list(utt_ids), settings)
    started = time.perf_counter()
    folder = Path(cache) / f"pgd-{key}"
    paths = blackbox.pgd_set(target, scorer.clean, list(utt_ids), folder, snr_db, steps, progress)
    advs = blackbox.load_set(paths)
    gns = blackbox.load_set([p.parent.parent / "gn" / p.name for p in paths])
    row = {"attack": name, "attacked": "+".join(attacked), "steps": steps, "oracle": "black" in attacked, **scorer.score_set(advs, gns)}  # fmt: skip
    return row, (time.perf_counter() - started) / 60


def pgd_line(row: dict[str, Any], minutes: float) -> str:
    """One line on a scored PGD set."""
    return (
        f"{row['attack']} ({row['attacked']}, {row['steps']} steps, {row['snr_adv_db']:.1f} dB{', an oracle' if row['oracle'] else ''}; {minutes:.1f} min incl. cache): "
        f"white rec-adv {row['white_recadv']:.2f} % (gn {row['white_recgn']:.2f}), cos {row['white_cos_adv']:.3f}; "
        f"black rec-adv {row['black_recadv']:.2f} % (gn {row['black_recgn']:.2f}, rec {row['black_recrec']:.2f}), cos {row['black_cos_adv']:.4f} (gn {row['black_cos_gn']:.4f})"
    ) + _more_sides(row)  # fmt: skip


def bands_figure(
    bands: dict[tuple[str, str], np.ndarray], share: np.ndarray, first: str, profile: str
):
    """δ's SNR per mel band for each setting, the matched noise's (of setting ``first``), and the
    share of the clean speech's power per band (grey bars)."""
    plotting.setup()
    import matplotlib.pyplot as plt  # after plotting.setup(), which picks the backend

    fig, ax = plt.subplots(figsize=(8, 4))
    for (name, cond), snr in bands.items():
        if cond == "adv":
            ax.plot(snr, label=f"δ: {name}")
    ax.plot(bands[(first, "gn")], "k--", label="matched Gaussian noise")
    ax.set_xlabel(f"mel band (of {blackbox.MEL_BANDS}, 0-8 kHz)")
    ax.set_ylabel("SNR in the band (dB)")
    ax2 = ax.twinx()
    ax2.bar(np.arange(len(share)), 100 * share, color="grey", alpha=0.25)
    ax2.set_ylabel("share of speech power (%)")
    ax.legend(fontsize=8)
    ax.set_title(f"{profile}: where the perturbation sits")
    fig.tight_layout()
    return fig


def speech_share(clean: Sequence[np.ndarray]) -> np.ndarray:
    """Mean share of each mel band in the clean utterances' power."""
    band_power = [blackbox.mel_power(x).sum(-1).numpy() for x in clean]
    return np.mean([p / p.sum() for p in band_power], axis=0)


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")


def blackbox_metrics(
    table: pd.DataFrame,
    noise_rows: Sequence[dict[str, Any]],
    pgd_rows: Sequence[dict[str, Any]],
    head: dict[str, Any],
) -> dict[str, Any]:
    """The study's ``metrics.json``: ``head`` (subset, encoder, surrogate), then per setting
    ``<slug>__<column>``, per noise probe ``noise__<side>_<shape>_<snr>dB_{eer,cos}`` and per PGD
    set ``pgd__<slug>__<column>``."""
    m = dict(head)
    for row in table.to_dict("records"):
        m.update({f"{_slug(row['variant'])}__{k}": v for k, v in row.items() if k != "variant"})
    for row in noise_rows:
        key = f"noise__{row['side']}_{row['shape']}_{row['snr_db']:g}dB"
        m.update({f"{key}_eer": row["eer_rec"], f"{key}_cos": row["cos"]})
    for row in pgd_rows:
        skip = ("attack", "attacked", "oracle")
        m.update({f"pgd__{_slug(row['attack'])}__{k}": v for k, v in row.items() if k not in skip})
    return m
