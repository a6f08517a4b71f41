"""The corpus manifest and the trial list: the one format every later stage reads.

Both are described in docs/ARCHITECTURE.md: reading and writing them (with their checks), making
the verification trials, and checking the audio files a manifest lists.
"""

from __future__ import annotations

import csv
import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm.auto import tqdm

from spkadv.audio.io import MIN_SAMPLES, AudioError, load_audio
from spkadv.base.config import stage_dir
from spkadv.base.fileio import atomic_path, write_text
from spkadv.data.download import progress_disabled

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
SUBSETS = ("train", "dev", "eval")  # dev: held-out speakers for choices, never trained on or tabled


class CorpusError(ValueError):
    """A corpus root, manifest or trial list cannot be used; the message says what to do."""


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
        if row.subset not in SUBSETS:
            raise CorpusError(f"{path}:{i}: subset {row.subset!r} is not train, dev or eval")
    try:
        df["duration"] = df["duration"].astype(float)
    except ValueError as err:
        raise CorpusError(f"{path}: a duration is not a number ({err})") from err
    if df["utt_id"].duplicated().any():
        dup = df.loc[df["utt_id"].duplicated(), "utt_id"].iloc[0]
        raise CorpusError(f"{path}: duplicate utt_id {dup!r}")
    return df


def make_trials(
    manifest: pd.DataFrame, nontargets: int = 30, seed: int = 0, subset: str = "eval"
) -> pd.DataFrame:
    """Per-utterance verification trials on the eval subset (docs/protocol.md §5; *assumptions* marked).

    ``subset``: the trials of another subset's speakers the same way (``dev``: the rec-rec trials
    the verification thresholds are measured on).

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
    ev = manifest[manifest["subset"] == subset]
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
                    f"{subset} speaker {spk} ({set_name}) has one utterance; a target trial needs two"
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


def eval_subset(
    manifest: pd.DataFrame, trials: pd.DataFrame, per_speaker: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The eval rows notebooks 10 and 20 process, and the trials among them.

    ``per_speaker`` > 0 keeps the first N utterances of each eval speaker in manifest order and the
    trials whose enrolment and test are both kept (a quicker look); 0 keeps every row and trial.
    The rows come back in manifest order with a fresh index.
    """
    rows = manifest[manifest["subset"] == "eval"]
    if per_speaker:
        rows = rows.groupby("speaker", sort=False).head(per_speaker)
        trials = trials[trials["enrol"].isin(rows["utt_id"]) & trials["test"].isin(rows["utt_id"])]
    return rows.reset_index(drop=True), trials


def seeded_subset(rows: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` rows drawn with ``seed``, sorted by ``utt_id``; all rows when ``n`` is 0 or covers them."""
    if n <= 0 or n >= len(rows):
        return rows
    return rows.sample(n, random_state=seed).sort_values("utt_id")


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


def check_rows(df: pd.DataFrame, progress: bool) -> tuple[pd.DataFrame, list[str]]:
    """Verify every file (eval and dev fully decoded, train header only); drop unusable ones, report
    them."""
    durations, skipped = [], []
    for row in tqdm(
        df.itertuples(index=False),
        total=len(df),
        desc="checking audio",
        disable=progress_disabled(progress),
    ):
        duration, problem = check_audio(row.path, full=row.subset in ("eval", "dev"))
        durations.append(duration)
        if problem:
            skipped.append(problem)
    df = df.assign(duration=[d if d is not None else np.nan for d in durations])
    for problem in skipped:
        warnings.warn(f"skipped unusable audio: {problem}", stacklevel=3)
    return df[df["duration"].notna()].reset_index(drop=True), skipped


__all__ = [
    "CorpusError",
    "MANIFEST_COLUMNS",
    "STAGE",
    "SUBSETS",
    "TRIAL_COLUMNS",
    "check_audio",
    "check_rows",
    "make_trials",
    "manifest_path",
    "read_manifest",
    "read_trials",
    "trial_header_lines",
    "trials_path",
    "write_manifest",
    "write_trials",
]
