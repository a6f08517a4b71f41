"""The report's landing page, rendered from the Jinja2 templates shipped in ``templates/``.

Text from the run (titles, statuses, metric names, the profile file) is escaped by the template;
only HTML made here (markdown rendered by nbconvert, MathML) is marked safe.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from nbconvert.filters.markdown_mistune import markdown2html_mistune

from spkadv.base import config
from spkadv.report.headline import headline_rows
from spkadv.report.listening import CLIP_LABELS, PERTURBATION_GAIN
from spkadv.report.notebook_html import protect_math, restore_math
from spkadv.report.runinfo import versions

PAPER_STAGES = {  # stage number -> (section id, section title), in the paper's order
    "00": ("data", "Data"),
    "10": ("method", "Method: the SSED baseline"),
    "20": ("method", "Method: joint training of protection and removal"),
    "30": ("purification", "Purification"),
    "40": ("table1", "Table 1: speaker verification under protection"),
    "50": ("table2", "Table 2: speech quality"),
}
SECTIONS = ("data", "method", "purification", "table1", "table2")  # the paper's, in order


def fmt_number(v: Any, digits: int = 2) -> str:
    """A number for a table cell: '–' for NaN, '∞' for infinity, other values as text."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    if math.isnan(v):
        return "–"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def markdown_html(text: str) -> Markup:
    """Markdown as HTML, its LaTeX as MathML (nbconvert's renderer, as the notebook pages)."""
    store: list[str] = []
    return Markup(restore_math(markdown2html_mistune(protect_math(text, store)), store))


def environment() -> Environment:
    """The templates' environment: autoescaped HTML, undefined names an error."""
    env = Environment(
        loader=PackageLoader("spkadv.report", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = fmt_number
    env.filters["markdown"] = markdown_html
    return env


def stylesheet() -> str:
    """The landing page's CSS (``style.css`` beside ``index.html``)."""
    return environment().get_template("style.css.j2").render()


def _stage_rows(
    summary: Mapping[str, Any], stages: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    rows = []
    for stage, entry in summary.get("stages", {}).items():
        info = stages.get(stage, {})
        seconds = entry.get("seconds")
        rows.append(
            {
                "stage": stage,
                "status": entry.get("status", "?"),
                "minutes": seconds / 60 if isinstance(seconds, int | float) else None,
                "finished": info.get("executed_at", "")[:16].replace("T", " "),
                "problems": info.get("problems", []),
            }
        )
    return rows


def index_html(
    profile: str,
    summary: Mapping[str, Any],
    stages: Mapping[str, Mapping[str, Any]],
    other_figures: Sequence[Path],
    items: Sequence[Mapping[str, Any]],
) -> str:
    """The landing page.

    ``stages`` maps each stage to its title, intro (markdown), status, seconds, metrics, figures
    (paths), tables ((file name, markdown) pairs), notebook problems and, when its notebook was
    rendered, ``page`` and ``executed_at``; ``items`` are :func:`write_listening_audio`'s.
    """
    metrics = {s: i["metrics"] for s, i in stages.items()}
    m00 = next((m for s, m in metrics.items() if s.startswith("00_")), {})
    sections: dict[str, list] = {key: [] for key in SECTIONS}
    beyond = []
    for stage, info in stages.items():
        key = PAPER_STAGES.get(stage[:2], (None,))[0]
        (sections[key] if key else beyond).append((stage, info))
    params = config.params_dir() / f"{profile}.yaml"
    return (
        environment()
        .get_template("index.html.j2")
        .render(
            profile=profile,
            built=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            total_minutes=summary.get("total_minutes"),
            n_stages=len(stages),
            corpus_source=m00.get("corpus_source", "?"),
            headline=headline_rows(metrics),
            sections=sections,
            beyond=beyond,
            other_figures=other_figures,
            items=items,
            clip_labels=CLIP_LABELS,
            gain=PERTURBATION_GAIN,
            stage_rows=_stage_rows(summary, stages),
            params_text=params.read_text(encoding="utf-8") if params.exists() else None,
            versions=versions(),
            notebooks=[(s, i["title"]) for s, i in stages.items() if i.get("page")],
        )
    )
