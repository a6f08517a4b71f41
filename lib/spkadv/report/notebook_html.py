"""Executed notebooks as offline HTML pages, and what a stored notebook should not hold.

Used by :mod:`spkadv.report.build`. A page needs no network: LaTeX in markdown cells becomes MathML
when the page is written (no MathJax or require.js from a CDN), inline WAV players become Ogg
Opus files beside the page, and JupyterLab's CSS is one shared file rather than inlined per page.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import logging
import re
from collections.abc import Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import soundfile as sf
from jinja2 import DictLoader
from jupyter_core.paths import jupyter_path
from latex2mathml.converter import convert
from nbconvert import HTMLExporter

MAX_BAR_LINES = 3  # progress-bar lines an executed notebook may hold per output


# --- executed-notebook hygiene ----------------------------------------------------------------

_BAR = re.compile(r"\d+%\|")


def notebook_problems(nb: Mapping[str, Any]) -> list[str]:
    """What an executed notebook holds that a reader should not see (empty when clean).

    Flags stderr output (warnings, logs, progress bars), outputs with more than
    ``MAX_BAR_LINES`` text progress-bar refreshes, and widget outputs (blank once stored).
    """
    problems = []
    for i, cell in enumerate(nb.get("cells", [])):
        for out in cell.get("outputs", []):
            text = out.get("text", "")
            text = "".join(text) if isinstance(text, list) else text
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                first = text.strip().splitlines()[0][:80] if text.strip() else ""
                problems.append(f"cell {i}: stderr output ({first!r})")
            bars = sum(bool(_BAR.search(seg)) for seg in re.split(r"[\r\n]", text))
            if bars > MAX_BAR_LINES:
                problems.append(f"cell {i}: {bars} progress-bar lines")
            if "application/vnd.jupyter.widget-view+json" in out.get("data", {}):
                problems.append(f"cell {i}: a widget output (empty in a stored notebook)")
    return problems


# --- equations: LaTeX -> MathML at build time --------------------------------------------------

_CODE = re.compile(r"```.*?```|`[^`\n]+`", re.S)
_MATH = re.compile(r"\$\$(.+?)\$\$|(?<![\\$\w])\$(?![\s$])([^$\n]+?)(?<![\s\\])\$(?![\w$])", re.S)
_PLACEHOLDER = re.compile(r"SPKADVMATH(\d+)X")


def tex_to_mathml(tex: str, display: bool = False) -> str:
    """MathML for a LaTeX formula; the formula as code when it cannot be converted."""
    try:
        return convert(tex.strip(), display="block" if display else "inline")
    except Exception:  # an unsupported command: show the source rather than nothing
        return f'<code class="tex">{html.escape(tex)}</code>'


def protect_math(markdown: str, store: list[str]) -> str:
    """Replace ``$...$`` / ``$$...$$`` outside code by placeholders; MathML goes into ``store``."""
    codes: list[str] = []

    def keep_code(m: re.Match) -> str:
        codes.append(m.group(0))
        return f"\x00{len(codes) - 1}\x00"

    def math(m: re.Match) -> str:
        display = m.group(1) is not None
        store.append(tex_to_mathml(m.group(1) if display else m.group(2), display))
        return f"SPKADVMATH{len(store) - 1}X"

    text = _MATH.sub(math, _CODE.sub(keep_code, markdown))
    return re.sub("\x00(\\d+)\x00", lambda m: codes[int(m.group(1))], text)


def restore_math(text: str, store: Sequence[str]) -> str:
    return _PLACEHOLDER.sub(lambda m: store[int(m.group(1))], text)


# --- audio -------------------------------------------------------------------------------------


def write_ogg(path: Path, x: np.ndarray, sr: int) -> Path:
    """Write compressed audio (Ogg Opus; Ogg Vorbis for rates Opus lacks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0)
    try:
        sf.write(str(path), x, sr, format="OGG", subtype="OPUS")
    except (sf.LibsndfileError, RuntimeError, ValueError):
        sf.write(str(path), x, sr, format="OGG", subtype="VORBIS")
    return path


_DATA_AUDIO = re.compile(
    r'src="data:audio/[\w.+-]+;base64,([A-Za-z0-9+/=\s]+)"(\s+type="audio/[\w.+-]+")?'
)


def externalize_audio(markup: str, media: Path, prefix: str) -> str:
    """Turn inline base64 audio players into Ogg files in ``media`` (deduplicated by content)."""

    def replace(m: re.Match) -> str:
        raw = base64.b64decode(re.sub(r"\s", "", m.group(1)))
        name = hashlib.sha256(raw).hexdigest()[:16] + ".ogg"
        target = media / name
        if not target.exists():
            x, sr = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)
            write_ogg(target, x.mean(axis=1), sr)
        return f'src="{prefix}{name}" type="audio/ogg"'

    return _DATA_AUDIO.sub(replace, markup)


# --- notebooks to HTML ----------------------------------------------------------------------------

# nbconvert's lab template without CDN scripts (package data: templates/notebook.html.j2)
_NB_TEMPLATE = files("spkadv.report") / "templates" / "notebook.html.j2"
_NB_CSS_EXTRA = """
a.anchor-link { display: none; }
.jp-Collapser { display: none; }
.jp-InputArea { overflow: hidden; }
.jp-RenderedText pre { color: var(--jp-content-font-color1); font-size: var(--jp-code-font-size); }
.spkadv-nav { padding: 0.5em 1em; font: 15px sans-serif; }
body.jp-Notebook { max-width: 1100px; margin: 0 auto; }
math[display="block"] { margin: 0.6em 0; }
"""
_REMOTE = re.compile(
    r"<(script|link)\b[^>]*\b(src|href)=\"(https?:)?//[^\"]*\"[^>]*>(\s*</script>)?"
)


def notebook_css() -> str:
    """JupyterLab's light theme CSS, shared by every notebook page (one file, not one per page)."""
    for base in jupyter_path("nbconvert", "templates", "lab", "static"):
        index, theme = Path(base, "index.css"), Path(base, "theme-light.css")
        if index.exists() and theme.exists():
            return index.read_text() + "\n" + theme.read_text() + _NB_CSS_EXTRA
    raise FileNotFoundError(
        "nbconvert's lab template CSS not found; reinstall nbconvert (make setup)"
    )


def render_notebook(nb_path: Path, out_html: Path, media: Path) -> list[str]:
    """Render an executed notebook to ``out_html`` offline; returns its hygiene problems."""
    nb = nbformat.read(nb_path, as_version=4)
    problems = notebook_problems(nb)
    store: list[str] = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = protect_math(cell.source, store)
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "text/html" in data:
                data["text/html"] = externalize_audio(data["text/html"], media, f"{media.name}/")
    nb.metadata.pop("widgets", None)
    quiet = logging.getLogger("spkadv.report.build.nbconvert")
    quiet.setLevel(logging.ERROR)  # not one "alternative text is missing" line per figure
    exporter = HTMLExporter(
        extra_loaders=[
            DictLoader({"spkadv_notebook.html.j2": _NB_TEMPLATE.read_text(encoding="utf-8")})
        ],
        template_file="spkadv_notebook.html.j2",
        log=quiet,
    )
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": nb_path.stem}})
    body = _REMOTE.sub("", restore_math(body, store))
    out_html.write_text(body, encoding="utf-8")
    return problems
