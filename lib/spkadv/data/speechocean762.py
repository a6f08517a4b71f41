"""The speechocean762 source: the project's adult selection of OpenSLR SLR101, built by the project.

speechocean762 (Zhang et al., Interspeech 2021; https://www.openslr.org/101) is read English by
Mandarin-L1 speakers: 250 speakers, 20 utterances each, 16 kHz. Its archive
``speechocean762.tar.gz`` holds ``WAVE/SPEAKERxxxx/*.WAV`` and Kaldi-style ``train/`` and ``test/``
folders (``wav.scp``, ``text``, ``utt2spk``, ``spk2gender``, ``spk2age``).

The project uses 112 of its 128 adults (age >= 18), listed with gender, age and subset in
``speechocean762_selection.tsv`` beside this module (how they were drawn is in its header):
eval 20 M + 20 F, train 20 M + 20 F, dev 16 M + 16 F, all utterances of each. The corpus comes from,
in this order:

1. ``archive``: a local copy of ``speechocean762.tar.gz`` (profile key ``SPEECHOCEAN762_ARCHIVE``);
2. the folder ``root`` (``CORPUS_ROOT``; when empty the environment variable
   ``SPKADV_SPEECHOCEAN762``, else ``data/speechocean762`` in the repository), holding either an
   extracted selection (``manifest.tsv`` and ``manifest-dev.tsv``, audio referenced in place), an
   extracted archive (``WAVE/``, ``train/``, ``test/``, also one level down in ``speechocean762/``)
   or the archive ``speechocean762.tar.gz``;
3. with ``download`` (``SPEECHOCEAN762_DOWNLOAD``), the archive fetched from openslr.org into that
   folder (resumed with HTTP Range when interrupted).

From an archive, the selected speakers' audio is converted to 16 kHz mono 16-bit FLAC under the
corpus folder's ``audio/<speaker>/`` in one pass over the compressed file (nothing else is
extracted); an interrupted build keeps the files it wrote. OpenSLR publishes no md5 for this
archive: it is checked by its size in bytes (:data:`SPEECHOCEAN762_SIZE`, from the corpus authors'
Kaldi download recipe), and also by md5 when :data:`SPEECHOCEAN762_MD5` is set. The md5 of the
archive a build read is recorded in its ``build.json`` (``archive_md5``).

Command line (regenerating the selection from an extracted selection, fetching the archive)::

    python -m spkadv.data.speechocean762 selection --from DIR
    python -m spkadv.data.speechocean762 download [--dest DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from spkadv.base.config import project_root
from spkadv.base.fileio import write_text
from spkadv.data import slr101
from spkadv.data.download import DownloadError, download
from spkadv.data.manifest import MANIFEST_COLUMNS, SUBSETS, CorpusError, check_rows

SPEECHOCEAN762_URL = "https://www.openslr.org/resources/101/speechocean762.tar.gz"
SPEECHOCEAN762_MD5: str | None = None  # OpenSLR lists none for SLR101; set it to check by md5
SPEECHOCEAN762_SIZE: int | None = 520_810_923  # bytes (the corpus authors' Kaldi download recipe)
ARCHIVE_NAME = "speechocean762.tar.gz"
ENV_VAR = "SPKADV_SPEECHOCEAN762"
SELECTION_FILE = Path(__file__).with_name("speechocean762_selection.tsv")
SELECTION_COLUMNS = ("speaker", "gender", "age", "subset")
SUBSET_ORDER = ("eval", "train", "dev")  # row order of the manifest (as in the extracted selection)
SELECTION_MANIFESTS = ("manifest.tsv", "manifest-dev.tsv")
_GENDERS = {"m": "M", "male": "M", "f": "F", "female": "F"}
_SELECTION_HEADER = (
    "speechocean762 (OpenSLR SLR101): the project's selection of 112 of its 128 adult speakers",
    "(age >= 18; 20 utterances each). eval: 20 M + 20 F and train: 20 M + 20 F other speakers,",
    "drawn at random (seed 762) from the adults; dev: 16 M + 16 F, disjoint from both (all 16",
    "remaining men, 16 of the 32 remaining women drawn at random, seed 763). The 16 other women",
    "are not used. Regenerate: python -m spkadv.data.speechocean762 selection --from DIR",
)
HOW_TO_GET = (
    "get the corpus one of these ways: set SPEECHOCEAN762_DOWNLOAD = True (downloads "
    f"{ARCHIVE_NAME}, about 520 MB, from https://www.openslr.org/101 into {{where}}; resumable), or "
    f"run `python -m spkadv.data.speechocean762 download`; put a copy of {ARCHIVE_NAME} in that "
    "folder or point SPEECHOCEAN762_ARCHIVE at it; or point CORPUS_ROOT or the environment variable "
    f"{ENV_VAR} at an extracted archive (WAVE/, train/, test/) or an extracted selection "
    "(manifest.tsv and manifest-dev.tsv)"
)


# ----------------------------------------------------------------------------- the selection


def read_selection(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The speaker selection (speaker, gender, age, subset), in manifest order; checked."""
    path = Path(path) if path is not None else SELECTION_FILE
    df = pd.read_csv(path, sep="\t", comment="#", dtype=str, keep_default_na=False)
    if tuple(df.columns) != SELECTION_COLUMNS:
        raise CorpusError(
            f"{path}: header {list(df.columns)} != expected {list(SELECTION_COLUMNS)}"
        )
    bad = df[~df["gender"].isin(["M", "F"]) | ~df["subset"].isin(SUBSETS)]
    if len(bad) or df["speaker"].duplicated().any() or not df["age"].str.isdigit().all():
        raise CorpusError(
            f"{path}: a gender not M/F, a subset not in {SUBSETS}, an age not a whole number or a "
            "duplicate speaker; regenerate it: python -m spkadv.data.speechocean762 selection --from DIR"
        )
    df["age"] = df["age"].astype(int)
    return df


def selection_from_copy(folder: str | os.PathLike) -> pd.DataFrame:
    """The selection of an extracted selection folder (its ``manifest.tsv`` and ``manifest-dev.tsv``)."""
    folder = Path(folder)
    rows = []
    for name in SELECTION_MANIFESTS:
        src = folder / name
        if not src.is_file():
            raise CorpusError(
                f"{src}: not found; expected an extracted selection with {SELECTION_MANIFESTS}"
            )
        df = pd.read_csv(src, sep="\t", dtype=str, keep_default_na=False)
        missing = [c for c in SELECTION_COLUMNS if c not in df.columns]
        if missing:
            raise CorpusError(f"{src}: missing column(s) {missing}")
        rows.append(df.loc[:, list(SELECTION_COLUMNS)])
    df = pd.concat(rows, ignore_index=True)
    df["gender"] = df["gender"].str.lower().map(_GENDERS)
    per_speaker = df.drop_duplicates()
    if per_speaker["speaker"].duplicated().any() or per_speaker["gender"].isna().any():
        dup = per_speaker.loc[per_speaker["speaker"].duplicated(), "speaker"].tolist()
        raise CorpusError(
            f"{folder}: speaker(s) {dup[:5]} with two genders, ages or subsets, or a bad gender"
        )
    if not per_speaker["age"].str.isdigit().all() or not per_speaker["subset"].isin(SUBSETS).all():
        raise CorpusError(
            f"{folder}: an age that is not a whole number or a subset not in {SUBSETS}"
        )
    per_speaker = per_speaker.assign(age=per_speaker["age"].astype(int))
    return _ordered(per_speaker).reset_index(drop=True)


def _ordered(df: pd.DataFrame) -> pd.DataFrame:
    rank = df["subset"].map({s: i for i, s in enumerate(SUBSET_ORDER)})
    return (
        df.assign(_rank=rank).sort_values(["_rank", "speaker"], kind="stable").drop(columns="_rank")
    )


def write_selection(selection: pd.DataFrame, path: str | os.PathLike | None = None) -> Path:
    """Write the selection file (``#`` header lines, then the TSV) atomically."""
    text = "".join(f"# {line}\n" for line in _SELECTION_HEADER)
    text += selection.loc[:, list(SELECTION_COLUMNS)].to_csv(
        sep="\t", index=False, lineterminator="\n"
    )
    return write_text(path if path is not None else SELECTION_FILE, text)


def check_selection(manifest: pd.DataFrame, where: str | os.PathLike) -> None:
    """Raise when the manifest's speakers, genders or subsets differ from the selection's."""
    sel = read_selection().set_index("speaker")
    got = manifest.groupby("speaker")[["gender", "subset"]].first()
    missing = sorted(set(sel.index) - set(got.index))
    extra = sorted(set(got.index) - set(sel.index))
    common = sorted(set(sel.index) & set(got.index))
    differ = [
        s for s in common if tuple(got.loc[s]) != (sel.loc[s, "gender"], sel.loc[s, "subset"])
    ]
    if missing or extra or differ:
        raise CorpusError(
            f"{where}: not the project's speechocean762 selection ({SELECTION_FILE.name}): "
            f"missing speaker(s) {missing[:5]}, extra {extra[:5]}, other gender or subset {differ[:5]}; "
            "use CORPUS_SOURCE manifest for another selection"
        )


# ----------------------------------------------------------------------------- where the corpus is


@dataclass(frozen=True)
class Origin:
    """Where the corpus comes from: ``kind`` is ``selection``, ``extracted`` or ``archive``."""

    kind: str
    path: Path


def default_root() -> Path:
    """``$SPKADV_SPEECHOCEAN762`` when set, else ``data/speechocean762`` in the repository."""
    env = os.environ.get(ENV_VAR, "").strip()
    return Path(env).expanduser().resolve() if env else project_root() / "data" / "speechocean762"


def verify_archive(path: Path, md5: str | None = None, size: int | None = None) -> None:
    """Check an archive by md5 (when given) and size (when given); never deletes it."""
    md5 = md5 if md5 is not None else SPEECHOCEAN762_MD5
    size = size if size is not None else SPEECHOCEAN762_SIZE
    got = path.stat().st_size
    if size is not None and got != size:
        raise CorpusError(
            f"{path}: {got} bytes, expected {size}: incomplete or not the SLR101 archive; "
            "replace it with a complete copy (or remove it and download again)"
        )
    if md5 is not None:
        digest = hashlib.md5()  # the publisher's checksum kind
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        if digest.hexdigest() != md5:
            raise CorpusError(f"{path}: md5 {digest.hexdigest()} != expected {md5}; replace it")


def download_archive(
    dest_dir: str | os.PathLike,
    url: str | None = None,
    md5: str | None = None,
    size: int | None = None,
    progress: bool = True,
) -> Path:
    """Download the archive into ``dest_dir`` (kept; resumed from ``*.part`` when interrupted).

    A download whose md5 or size does not match is deleted and raises :class:`DownloadError`.
    """
    url = url or SPEECHOCEAN762_URL
    md5 = md5 if md5 is not None else SPEECHOCEAN762_MD5
    size = size if size is not None else SPEECHOCEAN762_SIZE
    dest = Path(dest_dir) / ARCHIVE_NAME
    if dest.exists():
        verify_archive(dest, md5, size)
        return dest
    download(url, dest, md5=md5, progress=progress)
    got = dest.stat().st_size
    if size is not None and got != size:
        dest.unlink()
        raise DownloadError(
            f"{url}: {got} bytes, expected {size}; the file was deleted, run again (if the archive "
            "changed upstream, update SPEECHOCEAN762_SIZE in spkadv.data.speechocean762)"
        )
    return dest


def locate(
    root: str | os.PathLike | None = None,
    archive: str | os.PathLike | None = None,
    download_missing: bool = False,
    progress: bool = True,
) -> Origin:
    """Find the corpus (see the module text for the order); download it when allowed and absent.

    Raises:
        CorpusError: nothing usable found (the message says how to get the corpus), or an
            archive that fails its check.
    """
    if archive:
        path = Path(archive).expanduser().resolve()
        if not path.is_file():
            raise CorpusError(
                f"SPEECHOCEAN762_ARCHIVE {path}: no such file; {HOW_TO_GET.format(where=path.parent)}"
            )
        verify_archive(path)
        return Origin("archive", path)
    where = Path(root).expanduser().resolve() if root else default_root()
    if where.is_file() and where.name.endswith(".tar.gz"):
        verify_archive(where)
        return Origin("archive", where)
    if (where / "manifest.tsv").is_file():
        return Origin("selection", where)
    if (extracted := slr101.find_extracted(where)) is not None:
        return Origin("extracted", extracted)
    if (where / ARCHIVE_NAME).is_file():
        verify_archive(where / ARCHIVE_NAME)
        return Origin("archive", where / ARCHIVE_NAME)
    if download_missing:
        return Origin("archive", download_archive(where, progress=progress))
    raise CorpusError(f"speechocean762: no corpus at {where}; {HOW_TO_GET.format(where=where)}")


# ----------------------------------------------------------------------------- building from the archive


def _manifest_rows(
    collector: slr101.Collector, selection: pd.DataFrame, set_name: str
) -> list[dict]:
    where = collector.where
    wav, text, utt2spk = (slr101.kaldi_map(collector, n) for n in ("wav.scp", "text", "utt2spk"))
    gender, age = slr101.kaldi_map(collector, "spk2gender"), slr101.kaldi_map(collector, "spk2age")
    by_speaker: dict[str, list[str]] = {}
    for utt, (spk, _) in utt2spk.items():
        by_speaker.setdefault(spk, []).append(utt)
    rows = []
    for sel in selection.itertuples(index=False):
        if sel.speaker not in gender or sel.speaker not in by_speaker:
            raise CorpusError(
                f"{where}: speaker {sel.speaker} of the selection is not in the archive"
            )
        g = _GENDERS.get(gender[sel.speaker][0].lower())
        a = age.get(sel.speaker, ("", ""))[0]
        if g != sel.gender or a != str(sel.age):
            raise CorpusError(
                f"{where}: speaker {sel.speaker} is {g} aged {a!r} here ({gender[sel.speaker][1]}), "
                f"{sel.gender} aged {sel.age} in the selection: not the SLR101 archive it was made from"
            )
        for utt in sorted(by_speaker[sel.speaker]):
            if utt not in wav or utt not in text:
                raise CorpusError(f"{where}: utterance {utt} lacks a wav.scp or text line")
            rel = wav[utt][0].replace("\\", "/")
            rel = rel[rel.find("WAVE/") :] if "WAVE/" in rel else rel
            out = collector.audio.get(rel.lower())
            if out is None:
                if rel.lower() in collector.unreadable:
                    continue  # reported in skipped
                raise CorpusError(f"{where}: audio {rel} of {wav[utt][1]} not found in the corpus")
            rows.append(
                {
                    "utt_id": utt,
                    "speaker": sel.speaker,
                    "gender": sel.gender,
                    "subset": sel.subset,
                    "set": set_name,
                    "path": str(out.resolve()),
                    "transcript": " ".join(text[utt][0].upper().split()),
                }
            )
    return rows


def build_manifest(
    origin: Origin,
    audio_dir: str | os.PathLike,
    set_name: str = "speechocean762",
    progress: bool = True,
) -> tuple[pd.DataFrame, list[str], dict]:
    """Build the manifest of the selection from an archive or an extracted archive.

    Audio goes to ``audio_dir/<speaker>/<utt_id>.flac`` (16 kHz mono, 16-bit); files already there
    are kept. Returns (manifest, skipped files with the reason, info for build.json).
    """
    if origin.kind not in ("archive", "extracted"):
        raise ValueError(
            f"build_manifest reads an archive or an extracted archive, not {origin.kind!r}"
        )
    selection = read_selection()
    collector = slr101.Collector(selection["speaker"], Path(audio_dir), origin.path)
    info: dict = {"origin": origin.kind, "origin_path": str(origin.path)}
    if origin.kind == "archive":
        info["archive_md5"] = slr101.scan_archive(origin.path, collector, progress)
        info["archive_bytes"] = origin.path.stat().st_size
    else:
        slr101.scan_folder(origin.path, collector, progress)
    rows = _manifest_rows(collector, selection, set_name)
    manifest, skipped = check_rows(pd.DataFrame(rows), progress)
    info["converted_files"] = collector.converted
    return manifest.loc[:, list(MANIFEST_COLUMNS)], collector.skipped + skipped, info


# ----------------------------------------------------------------------------- command line


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spkadv.data.speechocean762", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sel = sub.add_parser("selection", help="write the selection file from an extracted selection")
    sel.add_argument(
        "--from", dest="source", required=True, help="folder with manifest.tsv and manifest-dev.tsv"
    )
    sel.add_argument(
        "--out", default=None, help=f"output file (default: {SELECTION_FILE.name} in the package)"
    )
    get = sub.add_parser("download", help=f"download {ARCHIVE_NAME} (resumable, checked)")
    get.add_argument(
        "--dest",
        default=None,
        help="folder (default: $SPKADV_SPEECHOCEAN762, else data/speechocean762)",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        if args.command == "selection":
            selection = selection_from_copy(args.source)
            path = write_selection(selection, args.out)
            counts = selection.groupby(["subset", "gender"]).size().to_dict()
            print(f"{path}: {len(selection)} speakers {counts}")
        else:
            print(download_archive(Path(args.dest).resolve() if args.dest else default_root()))
    except (CorpusError, DownloadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "ARCHIVE_NAME",
    "ENV_VAR",
    "Origin",
    "SELECTION_FILE",
    "SPEECHOCEAN762_MD5",
    "SPEECHOCEAN762_SIZE",
    "SPEECHOCEAN762_URL",
    "build_manifest",
    "check_selection",
    "default_root",
    "download_archive",
    "locate",
    "read_selection",
    "selection_from_copy",
    "verify_archive",
    "write_selection",
]
