"""Resumable, md5-checked downloads and safe tar extraction (the LibriSpeech download path)."""

from __future__ import annotations

import hashlib
import http.client
import os
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm


class DownloadError(RuntimeError):
    """A download failed or its checksum does not match."""


def progress_disabled(progress: bool) -> bool:
    """Whether a progress bar stays hidden: ``progress`` off, or ``TQDM_DISABLE`` set."""
    return (not progress) or os.environ.get("TQDM_DISABLE", "") not in ("", "0")


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
                        disable=progress_disabled(progress),
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
    """Extract a tar archive under ``dest`` with tarfile's ``data`` filter.

    Every member is checked with that filter before anything is written: one that would land
    outside ``dest``, a link that is absolute or points outside it, or a device or fifo refuses
    the whole archive. Absolute member names lose their leading ``/`` (extracted under ``dest``).
    """
    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        try:
            for member in members:
                tarfile.data_filter(member, str(dest))
        except tarfile.FilterError as err:
            raise DownloadError(f"{archive}: {err}; refusing to extract") from err
        tar.extractall(dest, members=members, filter="data")


__all__ = ["DownloadError", "download", "progress_disabled", "safe_extract"]
