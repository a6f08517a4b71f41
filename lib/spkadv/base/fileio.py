"""Crash-safe file writing: write to a temporary file in the same folder, sync it, then rename.

A reader never sees a half-written file, and an interrupted run (or a power cut) leaves either the
old file or the new one behind, never a mix or an empty file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file's data and metadata to the disk."""
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)  # Windows needs write access
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename into it) to the disk, where the OS allows it (not on
    Windows, nor on file systems that refuse to sync a folder)."""
    if os.name == "nt":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_paths(*paths: str | os.PathLike, suffix: str | None = None) -> Iterator[list[Path]]:
    """Yield a temporary path next to each of ``paths``; when the block succeeds, sync every
    temporary file, then rename each onto its destination in the given order, then sync the folders.

    A failure inside the block or while syncing leaves none of the destinations changed and no
    temporary file behind. Temporary files keep the destination's suffix (unless ``suffix`` is
    given), so that libraries which infer the format from the extension keep working.
    """
    finals = [Path(p) for p in paths]
    temps: list[Path] = []
    try:
        for path in finals:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(
                prefix=f".{path.stem}.",
                suffix=path.suffix if suffix is None else suffix,
                dir=path.parent,
            )
            os.close(fd)
            temps.append(Path(tmp))
        yield temps
        for tmp in temps:
            # mkstemp creates 0600 files; give the result the usual permissions (0666 minus umask)
            os.chmod(tmp, 0o666 & ~_UMASK)
            fsync_file(tmp)
        for tmp, path in zip(temps, finals, strict=True):
            os.replace(tmp, path)
        for folder in dict.fromkeys(path.parent for path in finals):
            fsync_dir(folder)
    finally:
        for tmp in temps:
            if tmp.exists():
                tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block succeeds, sync it to the disk,
    rename it onto ``path`` and sync the folder (:func:`atomic_paths` for one file).

    Args:
        path: final destination.
        suffix: suffix of the temporary file (defaults to the destination's).
    """
    with atomic_paths(path, suffix=suffix) as (tmp,):
        yield tmp


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _json_safe(value: Any) -> Any:
    """Make floats JSON-safe: inf becomes the string "inf" and NaN becomes None."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()  # numpy / torch scalars
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value


def json_text(data: Any) -> str:
    """``data`` as the indented JSON text :func:`write_json` writes."""
    return json.dumps(_json_safe(data), indent=2, sort_keys=True) + "\n"


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (numpy scalars, inf and NaN handled)."""
    return write_text(path, json_text(data))


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file written by :func:`write_json`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
