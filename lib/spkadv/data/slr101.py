"""Reading the OpenSLR SLR101 (speechocean762) layout in one pass: its Kaldi files and its audio.

The archive ``speechocean762.tar.gz`` (or a folder it was extracted to) holds
``WAVE/SPEAKERxxxx/<utt_id>.WAV`` and Kaldi-style ``train/`` and ``test/`` folders with
``wav.scp``, ``text``, ``utt2spk``, ``spk2gender`` and ``spk2age``. :class:`Collector` keeps the
Kaldi files and converts the audio of chosen speakers to 16 kHz mono 16-bit FLAC as the members
come by, so a compressed archive is read once and nothing else is written to disk (no member
name is ever used as an output path).
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from spkadv import SAMPLE_RATE
from spkadv.audio.io import resample, save_audio
from spkadv.data.download import progress_disabled
from spkadv.data.manifest import CorpusError

KALDI_FILES = ("wav.scp", "text", "utt2spk", "spk2gender", "spk2age")
KALDI_SPLITS = ("train", "test")
_UTT_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


def find_extracted(folder: Path) -> Path | None:
    """``folder`` (or its ``speechocean762/``) when it holds an extracted archive, else None."""
    for cand in (folder, folder / "speechocean762"):
        if (cand / "WAVE").is_dir() and all((cand / s).is_dir() for s in KALDI_SPLITS):
            return cand
    return None


class _CountingReader:
    """A file wrapper that advances a progress bar and an md5 by the bytes read."""

    def __init__(self, handle, bar):
        self.handle, self.bar, self.md5 = handle, bar, hashlib.md5()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.bar.update(len(data))
        self.md5.update(data)
        return data


def decode(data: bytes, name: str) -> np.ndarray:
    """16 kHz mono float32 of an audio file's bytes."""
    x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if sr != SAMPLE_RATE:
        x = resample(x, sr, SAMPLE_RATE)
    if len(x) == 0 or not np.isfinite(x).all():
        raise ValueError(f"{name}: empty or non-finite audio")
    return np.ascontiguousarray(x, dtype=np.float32)


class Collector:
    """Keeps the Kaldi files and converts the selected speakers' audio as members come by."""

    def __init__(self, speakers: Iterable[str], audio_dir: Path, where: Path):
        self.speakers, self.audio_dir, self.where = set(speakers), audio_dir, where
        self.kaldi: dict[tuple[str, str], str] = {}
        self.audio: dict[str, Path] = {}  # "wave/speakerxxxx/name.wav" (lower case) -> FLAC
        self.skipped: list[str] = []
        self.unreadable: set[str] = set()  # keys of ``audio`` whose file could not be decoded
        self.converted = 0

    def offer(self, name: str, read: Callable[[], bytes]) -> None:
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if len(parts) >= 2 and parts[-2] in KALDI_SPLITS and parts[-1] in KALDI_FILES:
            key = (parts[-2], parts[-1])
            if key in self.kaldi:
                raise CorpusError(f"{self.where}: two copies of {'/'.join(key)} ({name})")
            try:
                self.kaldi[key] = read().decode("utf-8")
            except UnicodeDecodeError as err:
                raise CorpusError(f"{self.where}: {name} is not UTF-8 text ({err})") from err
        elif len(parts) >= 3 and parts[-3] == "WAVE" and parts[-2].startswith("SPEAKER"):
            speaker, stem = parts[-2][len("SPEAKER") :], PurePosixPath(parts[-1]).stem
            if speaker not in self.speakers or not parts[-1].lower().endswith(".wav"):
                return
            if parts[-1].startswith("."):  # hidden files (e.g. "._x.WAV" of some tar tools)
                return
            if not _UTT_ID.match(stem):
                raise CorpusError(f"{self.where}: unexpected audio file name {name!r}")
            key, out = "/".join(parts[-3:]).lower(), self.audio_dir / speaker / f"{stem}.flac"
            if not out.exists():
                try:
                    x = decode(read(), name)
                except (sf.LibsndfileError, RuntimeError, ValueError) as err:
                    self.skipped.append(f"{self.where}: {name}: {err}")
                    self.unreadable.add(key)
                    return
                out.parent.mkdir(parents=True, exist_ok=True)
                save_audio(out, x, subtype="PCM_16")
                self.converted += 1
            self.audio[key] = out


def scan_archive(archive: Path, collector: Collector, progress: bool) -> str:
    """One pass over the compressed archive; returns its md5."""
    with (
        open(archive, "rb") as raw,
        tqdm(
            total=archive.stat().st_size,
            unit="B",
            unit_scale=True,
            desc=f"reading {archive.name}",
            disable=progress_disabled(progress),
        ) as bar,
    ):
        reader = _CountingReader(raw, bar)
        try:
            with tarfile.open(fileobj=reader, mode="r|*") as tar:
                for member in tar:
                    if member.isfile():
                        collector.offer(member.name, lambda m=member: tar.extractfile(m).read())
        except (tarfile.TarError, EOFError, OSError) as err:
            raise CorpusError(
                f"{archive}: unreadable archive ({err}); replace it with a complete copy"
            ) from err
        while reader.read(1 << 20):  # the rest (tar padding), for the md5 of the whole file
            pass
    return reader.md5.hexdigest()


def scan_folder(folder: Path, collector: Collector, progress: bool) -> None:
    for split in KALDI_SPLITS:
        for name in KALDI_FILES:
            if (folder / split / name).is_file():
                collector.offer(f"{split}/{name}", (folder / split / name).read_bytes)
    files = sorted(
        f
        for spk in sorted(collector.speakers)
        for f in (folder / "WAVE" / f"SPEAKER{spk}").glob("*")
        if f.is_file()
    )
    for f in tqdm(files, desc="converting audio", disable=progress_disabled(progress)):
        collector.offer(f.relative_to(folder).as_posix(), f.read_bytes)


def kaldi_map(collector: Collector, name: str) -> dict[str, tuple[str, str]]:
    """key -> (value, "split/name:line") over both splits' copies of one Kaldi file."""
    out: dict[str, tuple[str, str]] = {}
    for split in KALDI_SPLITS:
        text = collector.kaldi.get((split, name))
        if text is None:
            raise CorpusError(
                f"{collector.where}: {split}/{name} not found; expected the SLR101 layout (WAVE/, "
                f"train/ and test/ with {', '.join(KALDI_FILES)})"
            )
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            key, value = (re.split(r"\s+", line.strip(), maxsplit=1) + [""])[:2]
            out[key] = (value, f"{split}/{name}:{lineno}")
    return out


__all__ = [
    "KALDI_FILES",
    "KALDI_SPLITS",
    "Collector",
    "decode",
    "find_extracted",
    "kaldi_map",
    "scan_archive",
    "scan_folder",
]
