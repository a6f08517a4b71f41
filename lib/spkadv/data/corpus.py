"""Corpus preparation: the chosen source turned into the corpus manifest, and its summaries.

Sources (profile key ``CORPUS_SOURCE``):

- ``synthetic``: the embedded default, built by :mod:`spkadv.data.synth`;
- ``manifest``: any folder holding ``manifest.tsv`` (columns ``utt_id speaker gender subset path``,
  optional ``duration``/``duration_s``, ``transcript``/``text``, ``set``, ``age``; paths relative to
  the folder; subset ``train``, ``dev`` or ``eval``);
- ``speechocean762``: the project's adult train / dev / eval selection of OpenSLR SLR101, built
  from its archive (opt-in download) or read from an extracted copy, see
  :mod:`spkadv.data.speechocean762`;
- ``librispeech``: a LibriSpeech root, see :mod:`spkadv.data.librispeech` (with an opt-in download
  of the subsets from openslr.org).

The manifest format and the trial list are in :mod:`spkadv.data.manifest` (described in
docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from spkadv.base.config import project_root
from spkadv.base.fileio import write_json
from spkadv.data import speechocean762, synth
from spkadv.data.librispeech import download_librispeech, load_librispeech
from spkadv.data.manifest import (
    MANIFEST_COLUMNS,
    SUBSETS,
    CorpusError,
    check_rows,
    read_manifest,
    write_manifest,
)

# ----------------------------------------------------------------------------- source: manifest

_MANIFEST_LAYOUT = (
    "expected a folder holding manifest.tsv: tab-separated, header with columns utt_id, speaker, gender "
    "(M/F), subset (train/dev/eval), path (audio file relative to the folder), optional duration (or "
    "duration_s), transcript (or text), set, age"
)
_OPTIONAL = {
    "duration": "duration",
    "duration_s": "duration",
    "transcript": "transcript",
    "text": "transcript",
    "set": "set",
    "age": None,
}
_REQUIRED = ("utt_id", "speaker", "gender", "subset", "path")


def load_manifest_source(
    root: str | os.PathLike, set_name: str, progress: bool = True, filename: str = "manifest.tsv"
) -> tuple[pd.DataFrame, list[str]]:
    """Read a corpus folder's ``manifest.tsv`` (or ``filename``) into the project's manifest columns.

    Returns (manifest with absolute paths, list of skipped files with the reason).

    Raises:
        CorpusError: missing folder/manifest, unknown or missing columns, bad values, a path that
            escapes the folder or a file that does not exist (all with the line number).
    """
    root = Path(root).resolve()
    src = root / filename
    if not root.is_dir() or not src.exists():
        raise CorpusError(f"{src}: not found; {_MANIFEST_LAYOUT}")
    with open(src, encoding="utf-8", newline="") as handle:
        lines = handle.read().splitlines()
    if not lines:
        raise CorpusError(f"{src}: empty file; {_MANIFEST_LAYOUT}")
    header = lines[0].split("\t")
    unknown = [c for c in header if c not in _REQUIRED and c not in _OPTIONAL]
    missing = [c for c in _REQUIRED if c not in header]
    if unknown or missing:
        raise CorpusError(
            f"{src}:1: unknown column(s) {unknown}, missing column(s) {missing}; {_MANIFEST_LAYOUT}"
        )
    rows = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise CorpusError(f"{src}:{lineno}: {len(fields)} fields, header has {len(header)}")
        rec = dict(zip(header, fields, strict=True))
        gender = {"m": "M", "male": "M", "f": "F", "female": "F"}.get(rec["gender"].strip().lower())
        if gender is None:
            raise CorpusError(f"{src}:{lineno}: gender {rec['gender']!r}; expected M or F")
        if rec["subset"] not in SUBSETS:
            raise CorpusError(
                f"{src}:{lineno}: subset {rec['subset']!r}; expected train, dev or eval"
            )
        if rec["utt_id"] in seen:
            raise CorpusError(
                f"{src}:{lineno}: utt_id {rec['utt_id']!r} already on line {seen[rec['utt_id']]}"
            )
        seen[rec["utt_id"]] = lineno
        rel = Path(rec["path"])
        audio = (root / rel).resolve()
        if rel.is_absolute() or not audio.is_relative_to(root):
            raise CorpusError(
                f"{src}:{lineno}: path {rec['path']!r} escapes the corpus folder {root}; use a path inside it"
            )
        if not audio.is_file():
            raise CorpusError(f"{src}:{lineno}: audio file {audio} does not exist")
        out = {
            "utt_id": rec["utt_id"],
            "speaker": rec["speaker"],
            "gender": gender,
            "subset": rec["subset"],
        }
        out["set"] = rec.get("set") or set_name
        out["path"] = str(audio)
        out["transcript"] = " ".join(
            (rec.get("transcript") or rec.get("text") or "").upper().split()
        )
        rows.append(out)
    if not rows:
        raise CorpusError(f"{src}: no utterances listed")
    df, skipped = check_rows(pd.DataFrame(rows), progress)
    return df.loc[:, list(MANIFEST_COLUMNS)], skipped


# ----------------------------------------------------------------------------- summaries


def corpus_summary(manifest: pd.DataFrame) -> dict:
    """Speaker and utterance counts, hours (flat dict for metrics.json)."""
    ev = manifest[manifest["subset"] == "eval"]
    tr = manifest[manifest["subset"] == "train"]
    dev = manifest[manifest["subset"] == "dev"]
    spk_gender = ev.groupby("speaker")["gender"].first()
    return {
        "eval_speakers_male": int((spk_gender == "M").sum()),
        "eval_speakers_female": int((spk_gender == "F").sum()),
        "train_speakers": int(tr["speaker"].nunique()),
        "eval_utterances": len(ev),
        "train_utterances": len(tr),
        "hours": float(manifest["duration"].sum() / 3600.0),
        "eval_hours": float(ev["duration"].sum() / 3600.0),
        "min_utterances_per_speaker": int(manifest.groupby("speaker").size().min()),
        "shared_speakers_train_eval": len(set(ev["speaker"]) & set(tr["speaker"])),
        "dev_speakers": int(dev["speaker"].nunique()),  # held out: neither trained on nor tabled
        "dev_utterances": len(dev),
        "dev_hours": float(dev["duration"].sum() / 3600.0),
        "shared_speakers_dev_train_eval": len(
            set(dev["speaker"]) & (set(ev["speaker"]) | set(tr["speaker"]))
        ),
    }


def loo_identification(speakers: Sequence[str], embeddings: np.ndarray) -> float:
    """Leave-one-out closed-set speaker identification accuracy.

    Each utterance is compared (cosine) with every speaker's centroid of length-normalised
    embeddings, its own speaker's centroid computed without it; correct when its speaker scores
    highest. Speakers with a single utterance are left out.
    """
    speakers = np.asarray(speakers)
    emb = np.asarray(embeddings, dtype=np.float64)
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    names, inverse, counts = np.unique(speakers, return_inverse=True, return_counts=True)
    sums = np.zeros((len(names), emb.shape[1]))
    np.add.at(sums, inverse, emb)
    correct = total = 0
    for i in range(len(emb)):
        if counts[inverse[i]] < 2:
            continue
        cents = sums.copy()
        cents[inverse[i]] -= emb[i]
        cents /= np.linalg.norm(cents, axis=1, keepdims=True)
        correct += int(np.argmax(cents @ emb[i]) == inverse[i])
        total += 1
    if total == 0:
        raise ValueError("leave-one-out identification needs speakers with at least two utterances")
    return correct / total


# ----------------------------------------------------------------------------- one entry point


def _speechocean762(
    corpus_dir: Path, root, archive, download: bool, set_name: str, progress: bool
) -> tuple[pd.DataFrame, list[str], dict]:
    """The speechocean762 selection from wherever it is (read in place, or built from the archive)."""
    origin = speechocean762.locate(root, archive, download, progress)
    if origin.kind != "selection":
        return speechocean762.build_manifest(origin, corpus_dir / "audio", set_name, progress)
    parts, skipped = [], []
    for filename in speechocean762.SELECTION_MANIFESTS:
        part, problems = load_manifest_source(origin.path, set_name, progress, filename=filename)
        parts.append(part)
        skipped += problems
    manifest = pd.concat(parts, ignore_index=True)
    if manifest["utt_id"].duplicated().any():
        dup = manifest.loc[manifest["utt_id"].duplicated(), "utt_id"].iloc[0]
        raise CorpusError(
            f"{origin.path}: utt_id {dup!r} listed twice in {speechocean762.SELECTION_MANIFESTS}"
        )
    speechocean762.check_selection(manifest, origin.path)
    return manifest, skipped, {"origin": origin.kind, "origin_path": str(origin.path)}


def prepare_corpus(
    corpus_dir: str | os.PathLike,
    source: str,
    *,
    root: str | os.PathLike | None = None,
    set_name: str = "",
    synth_config=None,
    embed_fn=None,
    embed_name: str = "",
    librispeech_train: Sequence[str] = ("train-clean-100", "train-clean-360", "train-other-500"),
    librispeech_eval: Sequence[str] = ("test-clean", "dev-clean"),
    librispeech_download: bool = False,
    librispeech_dev: str = "",
    librispeech_dev_speakers_per_gender: int = 0,
    speechocean762_archive: str | os.PathLike | None = None,
    speechocean762_download: bool = False,
    eval_speakers_per_gender: int = 20,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict]:
    """Build (or reuse) ``corpus_dir/manifest.tsv`` from the chosen source.

    The build settings are hashed into ``corpus_dir/build.json``; when a manifest built with the same
    settings exists and all its audio files are present, it is reused (``info["reused"] = True``).

    Args:
        source: ``synthetic``, ``manifest``, ``speechocean762`` or ``librispeech``.
        root: corpus folder (manifest / librispeech sources; for speechocean762 optional, see
            :func:`spkadv.data.speechocean762.locate`).
        set_name: evaluation-set name for a manifest source without a ``set`` column.
        librispeech_dev, librispeech_dev_speakers_per_gender: the LibriSpeech subset the held-out
            dev speakers come from (e.g. dev-other; empty: none) and how many per gender.
        speechocean762_archive, speechocean762_download: a local copy of the SLR101 archive; the
            opt-in download of it when no corpus is found. Its build is keyed by the speaker
            selection, not by where the corpus came from (every origin gives the same selection).
        synth_config: :class:`spkadv.data.synth.SynthConfig` (synthetic source).
        embed_fn, embed_name: speaker encoder used to drop near-duplicate synthetic voices.

    Returns (manifest, info) with info holding ``skipped`` (list of "path: reason"), ``reused``,
    ``fingerprint``, ``build_minutes`` (of the build that made it) and source-specific details.
    """
    corpus_dir = Path(corpus_dir)
    if source not in ("synthetic", "manifest", "speechocean762", "librispeech"):
        raise CorpusError(
            f"CORPUS_SOURCE {source!r}: choose synthetic, manifest, speechocean762 or librispeech"
        )
    settings: dict = {"source": source, "seed": seed}
    if source == "synthetic":
        if synth_config is None:
            raise CorpusError("the synthetic source needs a SynthConfig")
        settings.update(synth=synth_config.fingerprint(), encoder=embed_name if embed_fn else "")
    elif source == "speechocean762":
        set_name = set_name or "speechocean762"
        selection = speechocean762.SELECTION_FILE.read_bytes()
        settings.update(set_name=set_name, selection=hashlib.sha256(selection).hexdigest()[:16])
    else:
        if not root:
            raise CorpusError(f"CORPUS_SOURCE {source!r} needs CORPUS_ROOT (the corpus folder)")
        root = Path(root).resolve()
        settings.update(root=str(root), set_name=set_name)
        if source == "librispeech":
            settings.update(
                train=list(librispeech_train),
                eval=list(librispeech_eval),
                per_gender=eval_speakers_per_gender,
            )
            if librispeech_dev:  # absent otherwise: builds without dev speakers keep their hash
                settings.update(
                    dev=librispeech_dev, dev_per_gender=librispeech_dev_speakers_per_gender
                )
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    mpath, bpath = corpus_dir / "manifest.tsv", corpus_dir / "build.json"
    build = json.loads(bpath.read_text(encoding="utf-8")) if bpath.exists() else {}
    same = build.get("fingerprint") == fingerprint
    if not force and same and build.get("complete") and mpath.exists():
        manifest = read_manifest(mpath)
        if all(Path(p).exists() for p in manifest["path"]):
            return manifest, {**build, "reused": True}
    if source in ("synthetic", "speechocean762") and (force or not same):
        # Generated audio of other settings would be mistaken for this build's: start afresh.
        # (An interrupted build with the same settings resumes from the files it left.)
        for folder in ("audio", ".work"):
            shutil.rmtree(corpus_dir / folder, ignore_errors=True)
    corpus_dir.mkdir(parents=True, exist_ok=True)
    write_json(bpath, {"fingerprint": fingerprint, "settings": settings, "complete": False})

    info: dict = {}
    started = time.time()
    if source == "synthetic":
        manifest, info = synth.build_corpus(
            synth_config, corpus_dir, embed_fn=embed_fn, progress=progress
        )
        info.pop("embeddings", None)
        skipped: list[str] = []
    elif source == "manifest":
        manifest, skipped = load_manifest_source(root, set_name or root.name, progress=progress)
    elif source == "speechocean762":
        manifest, skipped, info = _speechocean762(
            corpus_dir, root, speechocean762_archive, speechocean762_download, set_name, progress
        )
    else:
        dev_subsets = [librispeech_dev] if librispeech_dev else []
        if librispeech_download:
            download_librispeech(
                root, [*librispeech_train, *librispeech_eval, *dev_subsets], progress=progress
            )
        manifest, skipped = load_librispeech(
            root, librispeech_train, librispeech_eval, eval_speakers_per_gender, seed, progress,
            dev_subset=librispeech_dev, dev_speakers_per_gender=librispeech_dev_speakers_per_gender,
        )  # fmt: skip
    write_manifest(manifest, mpath)
    build = {"fingerprint": fingerprint, "settings": settings, "skipped": skipped, **info}
    build["build_minutes"] = (time.time() - started) / 60
    write_json(bpath, {**build, "complete": True})
    return read_manifest(mpath), {**build, "reused": False}


def repo_path(text: str) -> Path | None:
    """A path parameter (relative paths from the repository root), resolved; None when empty."""
    return (project_root() / text).resolve() if text else None


def _names(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def synth_config_from_params(params: dict) -> synth.SynthConfig:
    """The synthetic corpus's :class:`~spkadv.data.synth.SynthConfig` from notebook 00's parameters."""
    return synth.SynthConfig(
        eval_speakers_per_gender=params["EVAL_SPEAKERS_PER_GENDER"],
        train_speakers_per_gender=params["SYNTH_TRAIN_SPEAKERS_PER_GENDER"],
        dev_speakers_per_gender=params["SYNTH_DEV_SPEAKERS_PER_GENDER"],
        utterances_per_speaker=params["SYNTH_UTTERANCES_PER_SPEAKER"],
        candidates_per_gender=params["SYNTH_CANDIDATES_PER_GENDER"],
        base_voices=tuple(_names(params["SYNTH_BASE_VOICES"])),
        base_reuse=params["SYNTH_BASE_REUSE"],
        screen_utterances=params["SYNTH_SCREEN_UTTERANCES"],
        duplicate_cosine=params["SYNTH_DUPLICATE_COSINE"],
        seed=params["SEED"],
        workers=params["SYNTH_WORKERS"],
    )


def prepare_from_params(
    corpus_dir: str | os.PathLike, params: dict, embed_fn=None
) -> tuple[pd.DataFrame, dict]:
    """:func:`prepare_corpus` with notebook 00's parameters (``CORPUS_SOURCE``, ``SYNTH_*``,
    ``LIBRISPEECH_*``, ``SPEECHOCEAN762_*``, ...); ``embed_fn`` embeds paths with the white box."""
    p = params
    return prepare_corpus(
        corpus_dir,
        p["CORPUS_SOURCE"],
        root=repo_path(p["CORPUS_ROOT"]),
        set_name=p["CORPUS_SET_NAME"],
        synth_config=synth_config_from_params(p),
        embed_fn=embed_fn,
        embed_name=p["WHITEBOX_ENCODER"],
        librispeech_train=_names(p["LIBRISPEECH_TRAIN_SUBSETS"]),
        librispeech_eval=_names(p["LIBRISPEECH_EVAL_SUBSETS"]),
        librispeech_download=p["LIBRISPEECH_DOWNLOAD"],
        librispeech_dev=p["LIBRISPEECH_DEV_SUBSET"],
        librispeech_dev_speakers_per_gender=p["LIBRISPEECH_DEV_SPEAKERS_PER_GENDER"],
        speechocean762_archive=repo_path(p["SPEECHOCEAN762_ARCHIVE"]),
        speechocean762_download=p["SPEECHOCEAN762_DOWNLOAD"],
        eval_speakers_per_gender=p["EVAL_SPEAKERS_PER_GENDER"],
        seed=p["SEED"],
        force=p["FORCE_REBUILD"],
    )


__all__ = [
    "corpus_summary",
    "load_manifest_source",
    "loo_identification",
    "prepare_corpus",
    "prepare_from_params",
    "repo_path",
    "synth_config_from_params",
]
