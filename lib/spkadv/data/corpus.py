"""Corpora and trial lists: the one manifest format every later stage reads.

Sources (profile key ``CORPUS_SOURCE``):

- ``synthetic``: the embedded default, built by :mod:`spkadv.data.synth`;
- ``manifest``: any folder holding ``manifest.tsv`` (columns ``utt_id speaker gender subset path``,
  optional ``duration``/``duration_s``, ``transcript``/``text``, ``set``, ``age``; paths relative to
  the folder), e.g. ``../shared/data/speechocean762-adults``;
- ``librispeech``: a LibriSpeech root (``SPEAKERS.TXT`` + ``<subset>/<spk>/<chapter>/*.flac`` and
  ``*.trans.txt``), with an opt-in download of the subsets from openslr.org (md5-checked, resumed
  with HTTP Range, safe tar extraction).

The corpus manifest and the trial list are described in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import json
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm.auto import tqdm

from spkadv.audio.io import MIN_SAMPLES, AudioError, load_audio
from spkadv.base.config import stage_dir
from spkadv.base.fileio import atomic_path, write_json, write_text

STAGE = "00_data_prep"
MANIFEST_COLUMNS = (
    "utt_id",
    "speaker",
    "gender",
    "subset",
    "set",
    "path",
    "duration",
    "transcript",
)
TRIAL_COLUMNS = ("set", "gender", "enrol", "test", "target")


class CorpusError(ValueError):
    """A corpus root, manifest or trial list cannot be used; the message says what to do."""


def _progress_disabled(progress: bool) -> bool:
    return (not progress) or os.environ.get("TQDM_DISABLE", "") not in ("", "0")


# ----------------------------------------------------------------------------- manifest / trials


def manifest_path(profile: str) -> Path:
    """``runs/<profile>/00_data_prep/corpus/manifest.tsv``."""
    return stage_dir(profile, STAGE) / "corpus" / "manifest.tsv"


def trials_path(profile: str) -> Path:
    """``runs/<profile>/00_data_prep/trials.tsv``."""
    return stage_dir(profile, STAGE) / "trials.tsv"


def write_manifest(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the corpus manifest (columns in :data:`MANIFEST_COLUMNS` order) atomically."""
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise CorpusError(f"manifest to write lacks column(s) {missing}")
    out = df.loc[:, list(MANIFEST_COLUMNS)].copy()
    out["duration"] = out["duration"].map(lambda d: f"{float(d):.3f}")
    with atomic_path(path) as tmp:
        out.to_csv(tmp, sep="\t", index=False, quoting=csv.QUOTE_NONE, lineterminator="\n")
    return Path(path)


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read a manifest written by :func:`write_manifest`, checking columns and values.

    Raises:
        CorpusError: wrong header, or a bad gender / subset / duration (with the line number).
    """
    path = Path(path)
    if not path.exists():
        raise CorpusError(
            f"{path}: no manifest; run notebooks/00_data_prep.ipynb for this profile first"
        )
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
    if tuple(df.columns) != MANIFEST_COLUMNS:
        raise CorpusError(
            f"{path}:1: header {list(df.columns)} != expected {list(MANIFEST_COLUMNS)}"
        )
    for i, row in enumerate(df.itertuples(index=False), start=2):
        if row.gender not in ("M", "F"):
            raise CorpusError(f"{path}:{i}: gender {row.gender!r} is not M or F")
        if row.subset not in ("train", "eval"):
            raise CorpusError(f"{path}:{i}: subset {row.subset!r} is not train or eval")
    try:
        df["duration"] = df["duration"].astype(float)
    except ValueError as err:
        raise CorpusError(f"{path}: a duration is not a number ({err})") from err
    if df["utt_id"].duplicated().any():
        dup = df.loc[df["utt_id"].duplicated(), "utt_id"].iloc[0]
        raise CorpusError(f"{path}: duplicate utt_id {dup!r}")
    return df


def make_trials(manifest: pd.DataFrame, nontargets: int = 30, seed: int = 0) -> pd.DataFrame:
    """Per-utterance verification trials on the eval subset (REFERENCE §5; *assumptions* marked).

    For every eval utterance (the test side) of a speaker, within its evaluation set and gender:

    - 1 target trial: enrolment = another utterance of the same speaker, drawn at random;
    - ``nontargets`` non-target trials: enrolment utterances of other speakers of the *same gender*
      (assumption), drawn without replacement, spread evenly over those speakers (each speaker is
      used ``nontargets // n_others`` or one more times), so with 19 other speakers every one
      appears once or twice.

    Enrolment utterances are drawn per test utterance (assumption: the paper does not say), so an
    utterance serves as a test utterance once and as an enrolment utterance in other trials, never
    both in the same trial. Seeded per (set, gender) with ``seed``.
    """
    ev = manifest[manifest["subset"] == "eval"]
    rows = []
    for (set_name, gender), group in ev.groupby(["set", "gender"], sort=True):
        key = int.from_bytes(hashlib.sha256(f"{set_name}/{gender}".encode()).digest()[:4], "little")
        rng = np.random.default_rng([seed, key])
        by_spk = {s: sorted(g["utt_id"]) for s, g in group.groupby("speaker", sort=True)}
        speakers = sorted(by_spk)
        for spk in speakers:
            others = [s for s in speakers if s != spk]
            if len(by_spk[spk]) < 2:
                raise CorpusError(
                    f"eval speaker {spk} ({set_name}) has one utterance; a target trial needs two"
                )
            for test in by_spk[spk]:
                pool = [u for u in by_spk[spk] if u != test]
                rows.append((set_name, gender, pool[rng.integers(len(pool))], test, 1))
                if not others:
                    continue
                order = rng.permutation(len(others))
                counts = np.zeros(len(others), dtype=int)
                for k in range(nontargets):
                    counts[order[k % len(others)]] += 1
                for s_idx in np.flatnonzero(counts):
                    utts = by_spk[others[s_idx]]
                    take = min(counts[s_idx], len(utts))
                    for u in rng.choice(len(utts), size=take, replace=False):
                        rows.append((set_name, gender, utts[u], test, 0))
    return pd.DataFrame(rows, columns=list(TRIAL_COLUMNS))


def write_trials(trials: pd.DataFrame, path: str | os.PathLike, header: Sequence[str]) -> Path:
    """Write the trial list with ``# `` comment lines (protocol, assumptions) before the TSV."""
    text = "".join(f"# {line}\n" for line in header)
    text += trials.loc[:, list(TRIAL_COLUMNS)].to_csv(sep="\t", index=False, lineterminator="\n")
    return write_text(path, text)


def read_trials(path: str | os.PathLike) -> pd.DataFrame:
    """Read a trial list (``#`` lines skipped); ``target`` as int 0/1."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(
            f"{path}: no trial list; run notebooks/00_data_prep.ipynb for this profile first"
        )
    df = pd.read_csv(path, sep="\t", comment="#", dtype=str, keep_default_na=False)
    if tuple(df.columns) != TRIAL_COLUMNS:
        raise CorpusError(f"{path}: header {list(df.columns)} != expected {list(TRIAL_COLUMNS)}")
    df["target"] = df["target"].astype(int)
    return df


def trial_header_lines(path: str | os.PathLike) -> list[str]:
    """The ``#`` comment lines of a trial list, without the leading ``# ``."""
    lines = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.startswith("#"):
                break
            lines.append(line[1:].strip())
    return lines


# ----------------------------------------------------------------------------- audio checks


def check_audio(path: str | os.PathLike, full: bool) -> tuple[float | None, str | None]:
    """(duration in s, None) for a usable file, (None, reason) for an unreadable or empty one.

    ``full`` decodes the whole file (catches truncation, NaN); otherwise only the header is read.
    """
    try:
        if full:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                x = load_audio(path)
            return len(x) / 16000.0, None
        path = Path(path)
        if path.stat().st_size == 0:
            return None, f"{path}: empty file (0 bytes)"
        info = sf.info(str(path))
        if info.frames < MIN_SAMPLES:
            return None, f"{path}: only {info.frames} sample(s)"
        return info.frames / info.samplerate, None
    except (AudioError, sf.LibsndfileError, RuntimeError, OSError) as err:
        return None, str(err)


def _check_rows(df: pd.DataFrame, progress: bool) -> tuple[pd.DataFrame, list[str]]:
    """Verify every file (eval fully decoded, train header only); drop unusable ones, report them."""
    durations, skipped = [], []
    for row in tqdm(
        df.itertuples(index=False),
        total=len(df),
        desc="checking audio",
        disable=_progress_disabled(progress),
    ):
        duration, problem = check_audio(row.path, full=row.subset == "eval")
        durations.append(duration)
        if problem:
            skipped.append(problem)
    df = df.assign(duration=[d if d is not None else np.nan for d in durations])
    for problem in skipped:
        warnings.warn(f"skipped unusable audio: {problem}", stacklevel=3)
    return df[df["duration"].notna()].reset_index(drop=True), skipped


# ----------------------------------------------------------------------------- source: manifest

_MANIFEST_LAYOUT = (
    "expected a folder holding manifest.tsv: tab-separated, header with columns utt_id, speaker, gender "
    "(M/F), subset (train/eval), path (audio file relative to the folder), optional duration (or "
    "duration_s), transcript (or text), set, age; e.g. ../shared/data/speechocean762-adults"
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
    root: str | os.PathLike, set_name: str, progress: bool = True
) -> tuple[pd.DataFrame, list[str]]:
    """Read a corpus folder's ``manifest.tsv`` into the project's manifest columns.

    Returns (manifest with absolute paths, list of skipped files with the reason).

    Raises:
        CorpusError: missing folder/manifest, unknown or missing columns, bad values, a path that
            escapes the folder or a file that does not exist (all with the line number).
    """
    root = Path(root).resolve()
    src = root / "manifest.tsv"
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
        if rec["subset"] not in ("train", "eval"):
            raise CorpusError(f"{src}:{lineno}: subset {rec['subset']!r}; expected train or eval")
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
    df, skipped = _check_rows(pd.DataFrame(rows), progress)
    return df.loc[:, list(MANIFEST_COLUMNS)], skipped


# ----------------------------------------------------------------------------- source: LibriSpeech

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


def load_librispeech(
    root: str | os.PathLike,
    train_subsets: Sequence[str],
    eval_subsets: Sequence[str],
    eval_speakers_per_gender: int = 20,
    seed: int = 0,
    progress: bool = True,
) -> tuple[pd.DataFrame, list[str]]:
    """Build the manifest from a LibriSpeech root.

    Each eval subset (test-clean, dev-clean) contributes ``eval_speakers_per_gender`` male and female
    speakers (a seeded choice when it has more; all utterances of each); train subsets contribute
    everything. Eval files are fully decoded, train files header-checked; unusable ones are skipped
    and returned with the reason.
    """
    root = Path(root).resolve()
    subsets = list(train_subsets) + list(eval_subsets)
    layout = _LIBRI_LAYOUT.format(subsets=", ".join(subsets))
    if not (root / "SPEAKERS.TXT").exists():
        raise CorpusError(f"{root}: no SPEAKERS.TXT; {layout}")
    absent = [s for s in subsets if not (root / s).is_dir()]
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
            keep = []
            for g in ("M", "F"):
                spk = sorted(df.loc[df["gender"] == g, "speaker"].unique())
                if len(spk) < eval_speakers_per_gender:
                    raise CorpusError(
                        f"{subset} has {len(spk)} {g} speakers; need {eval_speakers_per_gender}"
                    )
                rng = np.random.default_rng([seed, len(subset), sum(map(ord, subset + g))])
                keep += sorted(
                    rng.choice(spk, size=eval_speakers_per_gender, replace=False).tolist()
                )
            df = df[df["speaker"].isin(keep)]
        else:
            df["subset"] = "train"
        parts.append(df)
    manifest = pd.concat(parts, ignore_index=True)
    manifest, skipped = _check_rows(manifest, progress)
    return manifest.loc[:, list(MANIFEST_COLUMNS)], skipped


# ----------------------------------------------------------------------------- download


class DownloadError(RuntimeError):
    """A download failed or its checksum does not match."""


def _md5_file(path: Path) -> str:
    digest = hashlib.md5()  # the publisher's checksum is md5
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def download(
    url: str,
    dest: str | os.PathLike,
    md5: str | None = None,
    progress: bool = True,
    retries: int = 3,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest``, resuming a partial ``dest.part`` with an HTTP Range request.

    The file appears at ``dest`` only after its md5 matches ``md5`` (when given); a mismatch deletes
    the partial file and raises :class:`DownloadError` naming both digests.
    """
    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last_error: Exception | None = None
    for _attempt in range(retries):
        have = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if have and response.status != 206:  # the server ignored Range: start again
                    have = 0
                length = response.headers.get("Content-Length")
                total = have + int(length) if length is not None else None
                mode = "ab" if have else "wb"
                with (
                    open(part, mode) as out,
                    tqdm(
                        total=total,
                        initial=have,
                        unit="B",
                        unit_scale=True,
                        desc=dest.name,
                        disable=_progress_disabled(progress),
                    ) as bar,
                ):
                    while block := response.read(1 << 16):
                        out.write(block)
                        bar.update(len(block))
                if total is not None and part.stat().st_size < total:
                    raise DownloadError(
                        f"{url}: connection closed at {part.stat().st_size} of {total} bytes"
                    )
            break
        except urllib.error.HTTPError as err:
            if err.code == 416 and have:  # already complete
                break
            raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from err
        except (urllib.error.URLError, OSError, DownloadError, http.client.HTTPException) as err:
            last_error = err
            time.sleep(0.2)
    else:
        raise DownloadError(
            f"{url}: failed after {retries} attempts ({last_error}); run again to resume from {part}"
        )
    if md5 is not None:
        got = _md5_file(part)
        if got != md5:
            part.unlink()
            raise DownloadError(
                f"{url}: md5 {got} != published {md5}; the partial file was deleted, run again"
            )
    os.replace(part, dest)
    return dest


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Extract a tar archive, refusing members that escape ``dest`` (absolute, ``..``, links)."""
    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:
            target = (dest / member.name).resolve()
            if not target.is_relative_to(dest):
                raise DownloadError(
                    f"{archive}: member {member.name!r} would be written outside {dest}; refusing to extract"
                )
            if member.issym() or member.islnk():
                link = (
                    (target.parent / member.linkname).resolve()
                    if member.issym()
                    else (dest / member.linkname).resolve()
                )
                if not link.is_relative_to(dest):
                    raise DownloadError(
                        f"{archive}: link {member.name!r} -> {member.linkname!r} points outside {dest}; refusing to extract"
                    )
            if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
                raise DownloadError(
                    f"{archive}: member {member.name!r} is a device or fifo; refusing to extract"
                )
        tar.extractall(dest, members=members, filter="data")


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


# ----------------------------------------------------------------------------- summaries


def corpus_summary(manifest: pd.DataFrame) -> dict:
    """Speaker and utterance counts, hours (flat dict for metrics.json)."""
    ev = manifest[manifest["subset"] == "eval"]
    tr = manifest[manifest["subset"] == "train"]
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
    eval_speakers_per_gender: int = 20,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict]:
    """Build (or reuse) ``corpus_dir/manifest.tsv`` from the chosen source.

    The build settings are hashed into ``corpus_dir/build.json``; when a manifest built with the same
    settings exists and all its audio files are present, it is reused (``info["reused"] = True``).

    Args:
        source: ``synthetic``, ``manifest`` or ``librispeech``.
        root: corpus folder (manifest / librispeech sources).
        set_name: evaluation-set name for a manifest source without a ``set`` column.
        synth_config: :class:`spkadv.data.synth.SynthConfig` (synthetic source).
        embed_fn, embed_name: speaker encoder used to drop near-duplicate synthetic voices.

    Returns (manifest, info) with info holding ``skipped`` (list of "path: reason"), ``reused``,
    ``fingerprint``, ``build_minutes`` (of the build that made it) and source-specific details.
    """
    corpus_dir = Path(corpus_dir)
    if source not in ("synthetic", "manifest", "librispeech"):
        raise CorpusError(f"CORPUS_SOURCE {source!r}: choose synthetic, manifest or librispeech")
    settings: dict = {"source": source, "seed": seed}
    if source == "synthetic":
        if synth_config is None:
            raise CorpusError("the synthetic source needs a SynthConfig")
        settings.update(synth=synth_config.fingerprint(), encoder=embed_name if embed_fn else "")
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
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    mpath, bpath = corpus_dir / "manifest.tsv", corpus_dir / "build.json"
    build = json.loads(bpath.read_text(encoding="utf-8")) if bpath.exists() else {}
    same = build.get("fingerprint") == fingerprint
    if not force and same and build.get("complete") and mpath.exists():
        manifest = read_manifest(mpath)
        if all(Path(p).exists() for p in manifest["path"]):
            return manifest, {**build, "reused": True}
    if source == "synthetic" and (force or not same):
        # Generated audio of other settings would be mistaken for this build's: start afresh.
        # (An interrupted build with the same settings resumes from the files it left.)
        for folder in ("audio", ".work"):
            shutil.rmtree(corpus_dir / folder, ignore_errors=True)
    corpus_dir.mkdir(parents=True, exist_ok=True)
    write_json(bpath, {"fingerprint": fingerprint, "settings": settings, "complete": False})

    info: dict = {}
    started = time.time()
    if source == "synthetic":
        from spkadv.data import synth

        manifest, info = synth.build_corpus(
            synth_config, corpus_dir, embed_fn=embed_fn, progress=progress
        )
        info.pop("embeddings", None)
        skipped: list[str] = []
    elif source == "manifest":
        manifest, skipped = load_manifest_source(root, set_name or root.name, progress=progress)
    else:
        if librispeech_download:
            download_librispeech(
                root, list(librispeech_train) + list(librispeech_eval), progress=progress
            )
        manifest, skipped = load_librispeech(
            root, librispeech_train, librispeech_eval, eval_speakers_per_gender, seed, progress
        )
    write_manifest(manifest, mpath)
    build = {"fingerprint": fingerprint, "settings": settings, "skipped": skipped, **info}
    build["build_minutes"] = (time.time() - started) / 60
    write_json(bpath, {**build, "complete": True})
    return read_manifest(mpath), {**build, "reused": False}


__all__ = [
    "CorpusError",
    "DownloadError",
    "MANIFEST_COLUMNS",
    "TRIAL_COLUMNS",
    "check_audio",
    "corpus_summary",
    "download",
    "download_librispeech",
    "load_librispeech",
    "load_manifest_source",
    "loo_identification",
    "make_trials",
    "manifest_path",
    "prepare_corpus",
    "read_manifest",
    "read_speakers_txt",
    "read_trials",
    "safe_extract",
    "trial_header_lines",
    "trials_path",
    "write_manifest",
    "write_trials",
]
