"""The LibriSpeech source: a LibriSpeech root read into the corpus manifest, and its download.

A LibriSpeech root holds ``SPEAKERS.TXT`` and ``<subset>/<spk>/<chapter>/*.flac`` with
``*.trans.txt``; the subsets can be downloaded from openslr.org (opt-in: md5-checked, resumed with
HTTP Range, safe tar extraction).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from spkadv.data.download import DownloadError, download, safe_extract
from spkadv.data.manifest import MANIFEST_COLUMNS, CorpusError, check_rows

LIBRISPEECH_MIRROR = "https://www.openslr.org/resources/12"
# Archive md5 sums published at https://www.openslr.org/resources/12/md5sum.txt
LIBRISPEECH_MD5 = {
    "dev-clean": "42e2234ba48799c1f50f24a7926300a1",
    "dev-other": "c8d0bcc9cca99d4f8b62fcc847357931",
    "test-clean": "32fa31d27d2e1cad72775fee3f4849a9",
    "test-other": "fb5a50374b501bb3bac4815ee91d3135",
    "train-clean-100": "2a93770f6d5c6c964bc36631d331a522",
    "train-clean-360": "c0e676e450a7ff2f54aeade5171606fa",
    "train-other-500": "d1a0fd59409feb2c614ce4d30c387708",
}
_LIBRI_LAYOUT = (
    "expected a LibriSpeech root holding SPEAKERS.TXT and subset folders "
    "<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<nnnn>.flac with <speaker>-<chapter>.trans.txt "
    "(subsets {subsets}); get it from https://www.openslr.org/12 (extract the .tar.gz files into one "
    "folder and point CORPUS_ROOT at its LibriSpeech/ folder) or set LIBRISPEECH_DOWNLOAD = True"
)


def read_speakers_txt(path: str | os.PathLike) -> dict[str, str]:
    """Speaker id -> gender (M/F) from LibriSpeech's ``SPEAKERS.TXT`` (``;`` lines are comments)."""
    genders = {}
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if line.startswith(";") or not line.strip():
                continue
            fields = [f.strip() for f in line.split("|")]
            if len(fields) < 2 or fields[1] not in ("M", "F"):
                raise CorpusError(
                    f"{path}:{lineno}: expected 'ID | SEX | SUBSET | MINUTES | NAME', got {line.strip()!r}"
                )
            genders[fields[0]] = fields[1]
    return genders


def scan_librispeech_subset(root: Path, subset: str) -> pd.DataFrame:
    """Every utterance of one subset (utt_id, speaker, path, transcript) from its ``*.trans.txt``."""
    rows = []
    for trans in sorted((root / subset).glob("*/*/*.trans.txt")):
        with open(trans, encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                utt_id, _, text = line.strip().partition(" ")
                audio = trans.parent / f"{utt_id}.flac"
                if not audio.exists():
                    raise CorpusError(f"{trans}:{lineno}: audio file {audio} does not exist")
                rows.append(
                    {
                        "utt_id": utt_id,
                        "speaker": utt_id.split("-")[0],
                        "path": str(audio.resolve()),
                        "transcript": text.upper(),
                    }
                )
    return pd.DataFrame(rows, columns=["utt_id", "speaker", "path", "transcript"])


def _seeded_speakers(df: pd.DataFrame, subset: str, per_gender: int, seed: int) -> list[str]:
    """``per_gender`` male and female speakers of one subset, a seeded choice when it has more."""
    keep = []
    for g in ("M", "F"):
        spk = sorted(df.loc[df["gender"] == g, "speaker"].unique())
        if len(spk) < per_gender:
            raise CorpusError(f"{subset} has {len(spk)} {g} speakers; need {per_gender}")
        rng = np.random.default_rng([seed, len(subset), sum(map(ord, subset + g))])
        keep += sorted(rng.choice(spk, size=per_gender, replace=False).tolist())
    return keep


def load_librispeech(
    root: str | os.PathLike,
    train_subsets: Sequence[str],
    eval_subsets: Sequence[str],
    eval_speakers_per_gender: int = 20,
    seed: int = 0,
    progress: bool = True,
    dev_subset: str = "",
    dev_speakers_per_gender: int = 0,
) -> tuple[pd.DataFrame, list[str]]:
    """Build the manifest from a LibriSpeech root.

    Each eval subset (test-clean, dev-clean) contributes ``eval_speakers_per_gender`` male and female
    speakers (a seeded choice when it has more; all utterances of each); train subsets contribute
    everything. ``dev_subset`` (e.g. dev-other, none when empty) contributes
    ``dev_speakers_per_gender`` male and female held-out speakers the same way, as subset ``dev``;
    it must be another subset than the train and eval ones, and its speakers may be in neither.
    Eval and dev files are fully decoded, train files header-checked; unusable ones are skipped and
    returned with the reason.
    """
    root = Path(root).resolve()
    subsets = list(train_subsets) + list(eval_subsets)
    if dev_subset:
        if dev_subset in subsets:
            raise CorpusError(
                f"LIBRISPEECH_DEV_SUBSET {dev_subset!r} is also a train or eval subset ({subsets}); "
                "dev speakers must be held out: name another subset (e.g. dev-other)"
            )
        if dev_speakers_per_gender < 1:
            raise CorpusError(
                f"LIBRISPEECH_DEV_SUBSET {dev_subset!r} with {dev_speakers_per_gender} speakers per "
                "gender: ask for at least 1, or set LIBRISPEECH_DEV_SUBSET to '' (no dev speakers)"
            )
        subsets.append(dev_subset)
    layout = _LIBRI_LAYOUT.format(subsets=", ".join(subsets))
    if not (root / "SPEAKERS.TXT").exists():
        raise CorpusError(f"{root}: no SPEAKERS.TXT; {layout}")
    absent = [s for s in subsets if not (root / s).is_dir()]
    if dev_subset in absent:
        raise CorpusError(
            f"{root}: the dev subset {dev_subset!r} (LIBRISPEECH_DEV_SUBSET, held-out speakers for "
            f"the studies and the verification thresholds) is missing; get {dev_subset}.tar.gz from "
            "https://www.openslr.org/12 into this folder or set LIBRISPEECH_DOWNLOAD = True, or set "
            "LIBRISPEECH_DEV_SUBSET to '' to build the corpus without dev speakers"
        )
    if absent:
        raise CorpusError(f"{root}: subset folder(s) {absent} missing; {layout}")
    genders = read_speakers_txt(root / "SPEAKERS.TXT")
    parts = []
    for subset in subsets:
        df = scan_librispeech_subset(root, subset)
        if df.empty:
            raise CorpusError(f"{root / subset}: no *.trans.txt files; {layout}")
        unknown = sorted(set(df["speaker"]) - set(genders))
        if unknown:
            raise CorpusError(f"{root}/SPEAKERS.TXT lacks speaker(s) {unknown[:5]} of {subset}")
        df["gender"] = df["speaker"].map(genders)
        df["set"] = subset
        if subset in eval_subsets:
            df["subset"] = "eval"
            keep = _seeded_speakers(df, subset, eval_speakers_per_gender, seed)
            df = df[df["speaker"].isin(keep)]
        elif subset == dev_subset:
            df["subset"] = "dev"
            keep = _seeded_speakers(df, subset, dev_speakers_per_gender, seed)
            df = df[df["speaker"].isin(keep)]
        else:
            df["subset"] = "train"
        parts.append(df)
    manifest = pd.concat(parts, ignore_index=True)
    dev_speakers = set(manifest.loc[manifest["subset"] == "dev", "speaker"])
    shared = sorted(dev_speakers & set(manifest.loc[manifest["subset"] != "dev", "speaker"]))
    if shared:
        raise CorpusError(
            f"dev speaker(s) {shared[:5]} of {dev_subset} also read in a train or eval subset; "
            "dev speakers must be held out: name another LIBRISPEECH_DEV_SUBSET"
        )
    manifest, skipped = check_rows(manifest, progress)
    return manifest.loc[:, list(MANIFEST_COLUMNS)], skipped


def download_librispeech(
    root: str | os.PathLike,
    subsets: Iterable[str],
    mirror: str = LIBRISPEECH_MIRROR,
    progress: bool = True,
) -> Path:
    """Download and extract LibriSpeech subsets so that ``root`` is a LibriSpeech root.

    Archives go to ``<root>/.downloads/`` (kept, so a later run does not fetch them again); the
    archives hold ``LibriSpeech/<subset>/...``, extracted into ``root``'s parent. Subsets already
    present are skipped.
    """
    root = Path(root).resolve()
    for subset in subsets:
        if subset not in LIBRISPEECH_MD5:
            raise CorpusError(
                f"unknown LibriSpeech subset {subset!r}; choose from {sorted(LIBRISPEECH_MD5)}"
            )
        if (root / subset).is_dir() and (root / "SPEAKERS.TXT").exists():
            continue
        archive = download(
            f"{mirror}/{subset}.tar.gz",
            root / ".downloads" / f"{subset}.tar.gz",
            md5=LIBRISPEECH_MD5[subset],
            progress=progress,
        )
        staging = root / ".downloads" / f"{subset}.extract"
        safe_extract(archive, staging)
        inner = staging / "LibriSpeech"
        if not (inner / subset).is_dir():
            raise DownloadError(f"{archive}: expected LibriSpeech/{subset}/ inside the archive")
        for item in inner.iterdir():
            target = root / item.name
            if not target.exists():
                os.replace(item, target)
        shutil.rmtree(staging, ignore_errors=True)
    return root


__all__ = [
    "LIBRISPEECH_MD5",
    "LIBRISPEECH_MIRROR",
    "download_librispeech",
    "load_librispeech",
    "read_speakers_txt",
    "scan_librispeech_subset",
]
