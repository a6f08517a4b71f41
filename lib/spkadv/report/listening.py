"""The report's listening panel: original, protected, restored and amplified perturbation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spkadv import SAMPLE_RATE
from spkadv.audio.io import load_audio
from spkadv.base import config
from spkadv.data import manifest as data
from spkadv.evaluation.metrics import snr_db
from spkadv.report.notebook_html import write_ogg

LISTEN_PER_GENDER = 2  # eval utterances per gender in the listening panel
PERTURBATION_GAIN = 20.0  # the perturbation is played amplified, or it is inaudible
PERTURBATION_LABEL = f"perturbation ×{PERTURBATION_GAIN:g}"
CLIP_LABELS = ("original", "protected", "restored", PERTURBATION_LABEL)


def listening_items(profile: str, per_gender: int = LISTEN_PER_GENDER) -> list[dict[str, Any]]:
    """Eval utterances (male and female) that have protected and restored audio."""
    root = config.runs_root() / profile
    needed = [root / data.STAGE, root / config.CONDITION_STAGE["adv"]]
    if not all(p.is_dir() for p in needed):  # stage_dir would create them
        return []
    try:
        manifest = data.read_manifest(data.manifest_path(profile))
    except (OSError, ValueError):
        return []
    rows = manifest[manifest["subset"] == "eval"]
    items = []
    for gender in ("M", "F"):
        taken = 0
        for utt, path in zip(
            rows.loc[rows["gender"] == gender, "utt_id"],
            rows.loc[rows["gender"] == gender, "path"],
            strict=True,
        ):
            adv = config.condition_dir(profile, "adv") / f"{utt}.wav"
            rst = config.condition_dir(profile, "rst") / f"{utt}.wav"
            if taken < per_gender and Path(path).exists() and adv.exists():
                items.append(
                    {"utt": utt, "gender": gender, "rec": Path(path), "adv": adv, "rst": rst}
                )
                taken += 1
    return items


def write_listening_audio(items: Sequence[Mapping[str, Any]], audio_dir: Path) -> list[dict]:
    """Write original / protected / restored / perturbation×gain clips; return what was written.

    Each item gains ``files`` (clip label -> path relative to the report) and ``snr_adv``.
    """
    written = []
    for item in items:
        x, adv = load_audio(item["rec"]), load_audio(item["adv"])
        clips = {"original": x, "protected": adv}
        if item["rst"].exists():
            clips["restored"] = load_audio(item["rst"])
        clips[PERTURBATION_LABEL] = PERTURBATION_GAIN * (adv - x)
        files = {}
        for label, wave in clips.items():
            name = f"{item['utt']}_{label.split()[0]}.ogg"
            write_ogg(audio_dir / name, wave, SAMPLE_RATE)
            files[label] = f"{audio_dir.name}/{name}"
        written.append({**item, "files": files, "snr_adv": snr_db(x, adv)})
    return written
