"""The run report: ``runs/<profile>/report/index.html``, the reproduced paper to read in a browser.

``make report [PROFILE=...]``, ``python -m spkadv.report.build --profile NAME [--out DIR]`` or the
pipeline's ``--report``. The landing page follows the paper (data, method, purification, Table 1,
Table 2, then what goes beyond it): headline figures of the run beside the paper's with the gap
said in words, the run's figures and tables, a listening panel, stage times, the profile and
package versions, and every executed notebook rendered to HTML.

The report is a folder that works from the file system with no network request: equations are
converted to MathML when the report is built (no MathJax or require.js from a CDN), audio is
written as Ogg Opus files beside the pages (the notebooks' inline WAV players included), and
nothing refers to an ``http(s)`` address. A rebuild replaces only a folder the report wrote
(see :mod:`spkadv.report.output`); it refuses any other folder that is not empty.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spkadv.base import config
from spkadv.base.fileio import read_json
from spkadv.report import output
from spkadv.report.listening import LISTEN_PER_GENDER, listening_items, write_listening_audio
from spkadv.report.notebook_html import notebook_css, render_notebook
from spkadv.report.output import ReportError
from spkadv.report.page import index_html, stylesheet
from spkadv.report.runinfo import (
    executed_at,
    figure_prefixes,
    notebook_intro,
    stage_notebook,
    stages_of,
)

__all__ = ["ReportError", "build", "main"]


def _stage_info(
    profile: str, stage_path: Path, entry: dict[str, Any], all_figures: Sequence[Path], tmp: Path
) -> dict[str, Any]:
    """What the landing page shows of one stage; renders its executed notebook into ``tmp``."""
    nb_path = stage_notebook(stage_path)
    title, intro = notebook_intro(nb_path)
    metrics = (
        config.read_metrics(profile, stage_path.name)
        if (stage_path / "metrics.json").exists()
        else {}
    )
    prefixes = figure_prefixes(nb_path)
    info = {
        "title": title,
        "intro": intro,
        "status": entry.get("status", "not in summary.json"),
        "seconds": entry.get("seconds"),
        "metrics": metrics or entry.get("metrics", {}),
        "figures": [p for p in all_figures if any(p.stem.startswith(x) for x in prefixes)],
        "tables": [
            (p.name, p.read_text(encoding="utf-8")) for p in sorted(stage_path.glob("*.md"))
        ],
        "problems": [],
        "page": False,
        "executed_at": "",
    }
    if nb_path is not None:
        pages = tmp / "notebooks"
        info["problems"] = render_notebook(
            nb_path, pages / f"{stage_path.name}.html", pages / "media"
        )
        info["page"] = True
        info["executed_at"] = executed_at(nb_path)
    return info


def _write(profile: str, root: Path, summary: dict[str, Any], tmp: Path, per_gender: int) -> None:
    (tmp / "figures").mkdir()
    (tmp / "notebooks").mkdir()
    (tmp / "notebooks" / "notebook.css").write_text(notebook_css(), encoding="utf-8")
    all_figures = sorted(config.figures_dir(profile).glob("*.png"))
    stages = {
        stage: _stage_info(
            profile, root / stage, summary.get("stages", {}).get(stage, {}), all_figures, tmp
        )
        for stage in stages_of(root, summary)
    }
    used = {p for info in stages.values() for p in info["figures"]}
    for p in all_figures:
        shutil.copy2(p, tmp / "figures" / p.name)
    items = write_listening_audio(listening_items(profile, per_gender), tmp / "audio")
    others = [p for p in all_figures if p not in used]
    page = index_html(profile, summary, stages, others, items)
    (tmp / "index.html").write_text(page, encoding="utf-8")
    (tmp / "style.css").write_text(stylesheet(), encoding="utf-8")


def build(profile: str, out: Path | None = None, per_gender: int = LISTEN_PER_GENDER) -> Path:
    """Write the report of ``runs/<profile>/`` and return the path of its ``index.html``.

    ``out`` (default ``runs/<profile>/report``) must be new, empty or an earlier report: any
    other folder is refused with :class:`ReportError` and left untouched.
    """
    root = config.runs_root() / profile
    summary_path = root / "summary.json"
    if not summary_path.exists():
        raise ReportError(
            f"no run of profile {profile!r} at {root} (no summary.json); run "
            f"`python -m spkadv.run.pipeline --profile {profile}` first"
        )
    summary = read_json(summary_path)
    out = output.check_target(out or root / "report", root)
    tmp = output.new_build_folder(out)
    try:
        _write(profile, root, summary, tmp, per_gender)
    except BaseException:
        output.discard(tmp)
        raise
    output.move_into_place(tmp, out)
    return out / "index.html"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spkadv.report.build", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--profile", default="default", help="the run's profile name")
    parser.add_argument(
        "--out",
        type=Path,
        help="output folder (default runs/<profile>/report): new, empty or an earlier report",
    )
    args = parser.parse_args(argv)
    try:
        index = build(Path(args.profile).stem, args.out)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    size = sum(p.stat().st_size for p in index.parent.rglob("*") if p.is_file())
    print(f"report: {index} ({size / 1e6:.1f} MB); open it in a browser (works offline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
