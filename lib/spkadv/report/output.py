"""The report's output folder: a rebuild deletes only files an earlier build wrote.

Every report folder holds a marker file, :data:`MARKER`, listing the files the build wrote. A
rebuild replaces a folder that holds nothing else (or an empty folder, which it keeps and fills).
A folder holding any other file, a file in the way, or the run itself is refused with
:class:`ReportError` and left as it is. The new report is written to a fresh hidden folder beside
the target and moved into place once complete, so a failed build leaves the previous report as it
was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

MARKER = ".spkadv-report"
_ABOUT = (
    "A run report written by `python -m spkadv.report.build`; building it again replaces the "
    "files listed here and refuses to touch the folder if it holds any other file."
)
# what a report written before the marker existed holds, and the title its index.html carries
_UNMARKED_REPORT = frozenset({"index.html", "style.css", "figures", "notebooks", "audio"})
_UNMARKED_TITLE = "<title>spkadv report: "


class ReportError(RuntimeError):
    """The report cannot be built (the message says what to do instead)."""


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()}


def _is_unmarked_report(folder: Path) -> bool:
    """A report from before the marker: only the report's entries, and the report's page."""
    names = {p.name for p in folder.iterdir()}
    if "index.html" not in names or not names <= _UNMARKED_REPORT:
        return False
    with open(folder / "index.html", encoding="utf-8", errors="replace") as page:
        return _UNMARKED_TITLE in page.read(4096)


def foreign_files(folder: Path) -> list[str]:
    """Files in ``folder`` that no build of the report wrote (all of them when it is no report)."""
    marker = folder / MARKER
    if marker.is_file():
        try:
            written = set(json.loads(marker.read_text(encoding="utf-8"))["files"])
        except (OSError, ValueError, KeyError, TypeError):
            written = set()
        return sorted(_files(folder) - written - {MARKER})
    if _is_unmarked_report(folder):
        return []
    return sorted(_files(folder)) or sorted(p.name for p in folder.iterdir())


def check_target(out: Path, run_root: Path) -> Path:
    """The absolute output folder, or :class:`ReportError` when writing there could lose data."""
    out = Path(os.path.abspath(out))
    run_root = Path(os.path.abspath(run_root))
    if out == run_root or out in run_root.parents:
        raise ReportError(
            f"--out {out} holds the run itself ({run_root}); the report needs a folder of its "
            f"own: leave --out out to write {run_root / 'report'}, or name a new folder"
        )
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ReportError(
            f"--out {out} exists and is not a folder; it is left as it is: name a new folder"
        )
    if out.is_dir() and (foreign := foreign_files(out)):
        shown = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        raise ReportError(
            f"--out {out} holds files the report did not write ({shown}); the report never "
            "deletes them: move them elsewhere, or name a new or empty folder"
        )
    return out


def _write_marker(folder: Path) -> None:
    record = {"about": _ABOUT, "files": sorted(_files(folder) - {MARKER})}
    (folder / MARKER).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def new_build_folder(out: Path) -> Path:
    """A fresh, marked, hidden folder beside ``out`` to write the report into."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide the report from other readers
    _write_marker(tmp)
    return tmp


def discard(tmp: Path) -> None:
    """Remove a build folder after a failed build (only one :func:`new_build_folder` made)."""
    if (tmp / MARKER).is_file():
        shutil.rmtree(tmp, ignore_errors=True)


def move_into_place(tmp: Path, out: Path) -> None:
    """Replace ``out`` by the finished build folder ``tmp``.

    ``out`` is checked again: an earlier report is replaced whole, an empty folder is kept and
    receives the report's files, and anything else is refused (``tmp`` is then discarded).
    """
    try:
        _write_marker(tmp)
        if not out.exists():
            os.replace(tmp, out)
        elif out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
            for entry in tmp.iterdir():
                os.replace(entry, out / entry.name)
            tmp.rmdir()
        elif out.is_dir() and not out.is_symlink() and not foreign_files(out):
            shutil.rmtree(out)
            os.replace(tmp, out)
        else:
            raise ReportError(
                f"--out {out} changed while the report was built and now holds files the report "
                "did not write; it is left as it is: build again into a new or empty folder"
            )
    except BaseException:
        discard(tmp)
        raise
