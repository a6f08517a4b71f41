"""The run report: ``runs/<profile>/report/index.html``, the reproduced paper to read in a browser.

``make report [PROFILE=...]``, ``python -m spkadv.report.build --profile NAME`` or the pipeline's
``--report``. The landing page follows the paper (data, method, purification, Table 1, Table 2,
then what goes beyond it): headline figures of the run beside the paper's with the gap said in
words, the run's figures and tables, a listening panel, stage times, the profile and package
versions, and every executed notebook rendered to HTML.

The report is a folder that works from the file system with no network request: equations are
converted to MathML when the report is built (no MathJax or require.js from a CDN), audio is
written as Ogg Opus files beside the pages (the notebooks' inline WAV players included), and
nothing refers to an ``http(s)`` address.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spkadv.base import config
from spkadv.base.fileio import read_json
from spkadv.evaluation import tables as evaluation
from spkadv.report.notebook_html import (
    notebook_css,
    protect_math,
    render_notebook,
    restore_math,
    write_ogg,
)

PAPER_STAGES = {  # stage number -> (section id, section title), in the paper's order
    "00": ("data", "Data"),
    "10": ("method", "Method: the SSED baseline"),
    "20": ("method", "Method: joint training of protection and removal"),
    "30": ("purification", "Purification"),
    "40": ("table1", "Table 1: speaker verification under protection"),
    "50": ("table2", "Table 2: speech quality"),
}
LISTEN_PER_GENDER = 2  # eval utterances per gender in the listening panel
PERTURBATION_GAIN = 20.0  # the perturbation is played amplified, or it is inaudible
PACKAGES = (
    "torch",
    "torchaudio",
    "speechbrain",
    "numpy",
    "scipy",
    "pesq",
    "faster-whisper",
    "openai-whisper",
    "soundfile",
    "papermill",
    "nbconvert",
    "latex2mathml",
)


class ReportError(RuntimeError):
    """The report cannot be built (the message says what to run first)."""


# --- reading the run --------------------------------------------------------------------------------


def _stage_notebook(stage_path: Path) -> Path | None:
    for name in (f"{stage_path.name}.ipynb", f"{stage_path.name}.failed.ipynb"):
        if (stage_path / name).exists():
            return stage_path / name
    return None


def stages_of(root: Path, summary: Mapping[str, Any]) -> list[str]:
    """Every stage of the run: those in ``summary.json`` and any other ``NN_name`` folder."""
    found = set(summary.get("stages", {}))
    found |= {p.name for p in root.glob("[0-9][0-9]_*") if p.is_dir()}
    return sorted(found)


def notebook_intro(nb_path: Path | None) -> tuple[str, str]:
    """(title, first paragraph) of a notebook's first markdown cell."""
    if nb_path is None:
        return "", ""
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            lines = src.strip().splitlines()
            title = lines[0].lstrip("# ").strip() if lines and lines[0].startswith("#") else ""
            paras = [p.strip() for p in "\n".join(lines[1:] if title else lines).split("\n\n")]
            intro = []
            for para in (p for p in paras if p):  # the opening paragraphs, about 600 characters
                intro.append(para)
                if sum(map(len, intro)) > 600 or len(intro) == 3:
                    break
            return title, "\n\n".join(intro)
    return "", ""


_SAVE_FIGURE = re.compile(r"save_figure\(\s*\w+\s*,\s*f?[\"']([^\"'{]+)")


def figure_prefixes(nb_path: Path | None) -> list[str]:
    """Names (or f-string prefixes) of the figures a notebook saves with ``save_figure``."""
    if nb_path is None:
        return []
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    code = "\n".join(
        "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        for c in nb.get("cells", [])
        if c.get("cell_type") == "code"
    )
    return _SAVE_FIGURE.findall(code)


# --- headline figures -------------------------------------------------------------------------------

# (metric key template, paper key / value source, label, unit, better direction, tolerance)
_EER_MEANING = {
    "rec_rec": (0, "clean verification, the baseline"),
    "rec_adv": (1, "protection: higher EER = the speaker is hidden better"),
    "adv_adv": (1, "protection when both sides are protected"),
    "rec_rst": (-1, "restoration: should come back to rec-rec"),
    "rec_an": (1, "protection left after noise purification"),
}
_TABLE2_ROWS = (  # (metrics.json prefix, paper metric, unit, better direction, tolerance)
    ("pesq", "PESQ", "", 1, 0.1),
    ("snr", "SNR", " dB", 1, 1.0),
    ("wer", "WER", " %", -1, 1.0),
)


def gap_words(ours: float, paper: float, better: int, tolerance: float, unit: str) -> str:
    """The gap to the paper in words, e.g. '3.2 % below the paper: worse'."""
    if any(isinstance(v, float) and math.isnan(v) for v in (ours, paper)):
        return "not comparable"
    if math.isinf(ours) or math.isinf(paper):
        return "as the paper" if ours == paper else "not comparable (infinite value)"
    diff = ours - paper
    if abs(diff) <= tolerance:
        return f"close to the paper (within {tolerance:g}{unit})"
    side = "above" if diff > 0 else "below"
    words = f"{abs(diff):.2f}{unit} {side} the paper"
    if better:
        words += ": better" if diff * better > 0 else ": worse"
    return words


def headline_rows(metrics: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows (what, ours, paper, gap, meaning) from stages 40 and 50 and the paper's numbers."""
    rows = []
    m40 = next((m for s, m in metrics.items() if s.startswith("40_")), {})
    for role in ("whitebox", "blackbox"):
        for cond, (better, meaning) in _EER_MEANING.items():
            ours, paper = m40.get(f"eer_{role}_{cond}"), m40.get(f"paper_eer_{role}_{cond}")
            if ours is None or paper is None:
                continue
            rows.append(
                {
                    "what": f"EER {cond.replace('_', '-')}, {role} "
                    f"(paper: {evaluation.PAPER_ENCODERS[role]})",
                    "ours": _num(ours),
                    "paper": float(paper),
                    "gap": gap_words(_num(ours), float(paper), better, 1.0, " points"),
                    "meaning": meaning,
                }
            )
    m50 = next((m for s, m in metrics.items() if s.startswith("50_")), {})
    for key, paper_metric, unit, better, tol in _TABLE2_ROWS:
        for cond in ("adv", "rst", "an"):
            ours = m50.get(f"{key}_{cond}")
            paper = evaluation.PAPER_TABLE2.get((paper_metric, cond))
            if ours is None or paper is None:
                continue
            rows.append(
                {
                    "what": f"{paper_metric} {cond}",
                    "ours": _num(ours),
                    "paper": float(paper),
                    "gap": gap_words(_num(ours), float(paper), better, tol, unit),
                    "meaning": {"adv": "protected", "rst": "restored", "an": "noise-purified"}[cond]
                    + " audio against the original",
                }
            )
    return rows


def _num(v: Any) -> float:
    if isinstance(v, str) and v in ("inf", "-inf"):
        return float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _fmt(v: Any, digits: int = 2) -> str:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return html.escape(str(v))
    if math.isnan(v):
        return "–"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


# --- the listening panel ------------------------------------------------------------------------------


def listening_items(profile: str, per_gender: int = LISTEN_PER_GENDER) -> list[dict[str, Any]]:
    """Eval utterances (male and female) that have protected and restored audio."""
    from spkadv.data import corpus as data

    root = config.runs_root() / profile
    needed = [root / data.STAGE, root / config.CONDITION_STAGE["adv"]]
    if not all(p.is_dir() for p in needed):  # stage_dir would create them
        return []
    try:
        manifest = data.read_manifest(data.manifest_path(profile))
    except (OSError, ValueError):
        return []
    rows = manifest[manifest["subset"] == "eval"]
    items = []
    for gender in ("M", "F"):
        taken = 0
        for utt, path in zip(
            rows.loc[rows["gender"] == gender, "utt_id"],
            rows.loc[rows["gender"] == gender, "path"],
            strict=True,
        ):
            adv = config.condition_dir(profile, "adv") / f"{utt}.wav"
            rst = config.condition_dir(profile, "rst") / f"{utt}.wav"
            if taken < per_gender and Path(path).exists() and adv.exists():
                items.append(
                    {"utt": utt, "gender": gender, "rec": Path(path), "adv": adv, "rst": rst}
                )
                taken += 1
    return items


def write_listening_audio(items: Sequence[Mapping[str, Any]], audio_dir: Path) -> list[dict]:
    """Write original / protected / restored / perturbation×gain clips; return what was written."""
    from spkadv import SAMPLE_RATE
    from spkadv.audio.io import load_audio
    from spkadv.evaluation.metrics import snr_db

    written = []
    for item in items:
        x, adv = load_audio(item["rec"]), load_audio(item["adv"])
        clips = {"original": x, "protected": adv}
        if item["rst"].exists():
            clips["restored"] = load_audio(item["rst"])
        clips[f"perturbation ×{PERTURBATION_GAIN:g}"] = PERTURBATION_GAIN * (adv - x)
        files = {}
        for label, wave in clips.items():
            name = f"{item['utt']}_{label.split()[0]}.ogg"
            write_ogg(audio_dir / name, wave, SAMPLE_RATE)
            files[label] = f"{audio_dir.name}/{name}"
        written.append({**item, "files": files, "snr_adv": snr_db(x, adv)})
    return written


# --- versions -------------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    """Python, the key packages and the code's git commit."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    try:
        root = str(config.project_root())
        commit = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        out["spkadv code (git)"] = (commit or "unknown") + (" with local changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        out["spkadv code (git)"] = "unknown"
    return out


# --- HTML pieces --------------------------------------------------------------------------------------------

_CSS = """
body { font: 16px/1.5 Georgia, 'Times New Roman', serif; margin: 0; color: #222; background: #fdfdfb; }
header, main { max-width: 1100px; margin: 0 auto; padding: 0 1.2em; }
header { border-bottom: 1px solid #ccc; padding-bottom: 0.6em; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; margin-top: 2em; }
nav a { margin-right: 1em; font-family: sans-serif; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.8em 0; font: 13px/1.4 sans-serif; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f0f0ea; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.worse { color: #a02020; } .better { color: #206020; }
figure { display: inline-block; margin: 0.5em 1em 1em 0; max-width: 100%; }
figure img { max-width: 520px; width: 100%; border: 1px solid #ddd; }
figcaption { font: 13px sans-serif; color: #555; }
.note { font-size: 0.92em; color: #555; } .warn { color: #a02020; }
.listen audio { width: 210px; height: 32px; }
details { margin: 0.5em 0; } summary { cursor: pointer; font-family: sans-serif; font-size: 0.92em; }
pre { background: #f5f5f0; padding: 0.6em; overflow-x: auto; font-size: 12px; }
.table-wrap { overflow-x: auto; }
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="table-wrap"><table class="{cls}"><tr>{head}</tr>{body}</table></div>'


def _markdown(text: str) -> str:
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    store: list[str] = []
    return restore_math(markdown2html_mistune(protect_math(text, store)), store)


def _figures(names: Sequence[Path], fig_dir_name: str) -> str:
    return "".join(
        f'<figure><img src="{fig_dir_name}/{html.escape(p.name)}" alt="{html.escape(p.stem)}">'
        f"<figcaption>{html.escape(p.stem)}</figcaption></figure>"
        for p in names
    )


def _metrics_details(metrics: Mapping[str, Any]) -> str:
    if not metrics:
        return '<p class="note">no metrics.json</p>'
    rows = [[html.escape(k), _fmt(v, 3)] for k, v in sorted(metrics.items())]
    return (
        f"<details><summary>all {len(rows)} figures of merit (metrics.json)</summary>"
        + _table(["key", "value"], rows)
        + "</details>"
    )


def _stage_block(stage: str, info: Mapping[str, Any]) -> str:
    parts = [f'<h3 id="stage-{stage}">{html.escape(info["title"] or stage)}</h3>']
    status = info["status"]
    seconds = info.get("seconds")
    when = f", {seconds / 60:.1f} min" if isinstance(seconds, int | float) else ""
    link = (
        f' · <a href="notebooks/{stage}.html">executed notebook</a>'
        if info.get("page")
        else ' · <span class="warn">no executed notebook</span>'
    )
    parts.append(f'<p class="note">stage <code>{stage}</code>: {status}{when}{link}</p>')
    if info.get("intro"):
        parts.append(_markdown(info["intro"]))
    for name, text in info.get("tables", []):
        parts.append(f'<p class="note">{html.escape(name)}</p>{_markdown(text)}')
    parts.append(_figures(info.get("figures", []), "figures"))
    parts.append(_metrics_details(info.get("metrics", {})))
    return "\n".join(parts)


# --- building -------------------------------------------------------------------------------------------------


def build(profile: str, out: Path | None = None, per_gender: int = LISTEN_PER_GENDER) -> Path:
    """Write the report of ``runs/<profile>/`` and return the path of its ``index.html``."""
    root = config.runs_root() / profile
    summary_path = root / "summary.json"
    if not summary_path.exists():
        raise ReportError(
            f"no run of profile {profile!r} at {root} (no summary.json); run "
            f"`python -m spkadv.run.pipeline --profile {profile}` first"
        )
    summary = read_json(summary_path)
    out = out or root / "report"
    tmp = out.with_name(out.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "figures").mkdir(parents=True)
    (tmp / "notebooks").mkdir()
    (tmp / "notebooks" / "notebook.css").write_text(notebook_css(), encoding="utf-8")

    fig_dir = config.figures_dir(profile)
    all_figures = sorted(fig_dir.glob("*.png"))
    used: set[Path] = set()
    stages: dict[str, dict[str, Any]] = {}
    for stage in stages_of(root, summary):
        stage_path = root / stage
        entry = summary.get("stages", {}).get(stage, {})
        nb_path = _stage_notebook(stage_path)
        title, intro = notebook_intro(nb_path)
        metrics = (
            config.read_metrics(profile, stage) if (stage_path / "metrics.json").exists() else {}
        )
        prefixes = figure_prefixes(nb_path)
        figures = [p for p in all_figures if any(p.stem.startswith(x) for x in prefixes)]
        used.update(figures)
        tables = [(p.name, p.read_text(encoding="utf-8")) for p in sorted(stage_path.glob("*.md"))]
        info = {
            "title": title,
            "intro": intro,
            "status": entry.get("status", "not in summary.json"),
            "seconds": entry.get("seconds"),
            "metrics": metrics or entry.get("metrics", {}),
            "figures": figures,
            "tables": tables,
            "problems": [],
        }
        if nb_path is not None:
            info["problems"] = render_notebook(
                nb_path, tmp / "notebooks" / f"{stage}.html", tmp / "notebooks" / "media"
            )
            info["page"] = True
            info["executed_at"] = (
                json.loads(nb_path.read_text(encoding="utf-8"))
                .get("metadata", {})
                .get("papermill", {})
                .get("end_time", "")
            )
        stages[stage] = info
    for p in all_figures:
        shutil.copy2(p, tmp / "figures" / p.name)
    items = write_listening_audio(listening_items(profile, per_gender), tmp / "audio")
    page = index_html(profile, summary, stages, [p for p in all_figures if p not in used], items)
    (tmp / "index.html").write_text(page, encoding="utf-8")
    (tmp / "style.css").write_text(_CSS, encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out / "index.html"


def index_html(
    profile: str,
    summary: Mapping[str, Any],
    stages: Mapping[str, Mapping[str, Any]],
    other_figures: Sequence[Path],
    items: Sequence[Mapping[str, Any]],
) -> str:
    """The landing page."""
    e = html.escape
    metrics = {s: i["metrics"] for s, i in stages.items()}
    m00 = next((m for s, m in metrics.items() if s.startswith("00_")), {})
    source = m00.get("corpus_source", "?")
    sections = {"data": [], "method": [], "purification": [], "table1": [], "table2": []}
    beyond = []
    for stage, info in stages.items():
        key = PAPER_STAGES.get(stage[:2], (None,))[0]
        (sections[key] if key else beyond).append(_stage_block(stage, info))

    rows = []
    for r in headline_rows(metrics):
        cls = (
            "worse"
            if r["gap"].endswith("worse")
            else "better"
            if r["gap"].endswith("better")
            else ""
        )
        rows.append(
            [
                e(r["what"]),
                f'<span class="num">{_fmt(r["ours"])}</span>',
                f'<span class="num">{_fmt(r["paper"])}</span>',
                f'<span class="{cls}">{e(r["gap"])}</span>',
                e(r["meaning"]),
            ]
        )
    headline = (
        _table(["figure", "this run", "paper", "gap", "what it measures"], rows, "headline")
        if rows
        else '<p class="warn">Stages 40 and 50 have not written their metrics yet.</p>'
    )
    caveat = (
        f"This run evaluates on the <b>{e(str(source))}</b> corpus; the paper's numbers are "
        "LibriSpeech test-clean / dev-clean averages (its encoders were ECAPA-TDNN and ENSKD, ours "
        "are named in each row), so the gaps compare like with unlike unless the corpus is "
        "LibriSpeech."
    )
    if profile == "smoke":
        caveat += (
            " <b>This is the smoke profile</b>: a few utterances and training steps to test the "
            "plumbing; its numbers say nothing about the method."
        )

    listen_rows = []
    for it in items:
        cells = [f"{e(it['utt'])} ({'male' if it['gender'] == 'M' else 'female'})"]
        for label in ("original", "protected", "restored", f"perturbation ×{PERTURBATION_GAIN:g}"):
            src = it["files"].get(label)
            cells.append(
                f'<audio controls preload="auto" src="{e(src)}" title="{e(label)}"></audio>'
                if src
                else "–"
            )
        cells.append(_fmt(it["snr_adv"], 1))
        listen_rows.append(cells)
    listen = (
        _table(
            ["utterance", "original", "protected", "restored", "perturbation ×20", "SNR dB"],
            listen_rows,
            "listen",
        )
        if listen_rows
        else '<p class="warn">No protected eval audio found (stage 20 writes it).</p>'
    )

    stage_rows = []
    for stage, entry in summary.get("stages", {}).items():
        problems = stages.get(stage, {}).get("problems", [])
        seconds = entry.get("seconds")
        stage_rows.append(
            [
                f'<a href="#stage-{e(stage)}">{e(stage)}</a>',
                e(str(entry.get("status", "?"))),
                f'<span class="num">{seconds / 60:.2f}</span>' if seconds is not None else "–",
                e(stages.get(stage, {}).get("executed_at", "")[:16].replace("T", " ")),
                e("; ".join(problems)) if problems else "clean",
            ]
        )
    times = _table(
        ["stage", "status", "minutes", "finished (UTC)", "executed notebook"], stage_rows
    )
    total = summary.get("total_minutes")
    params = config.params_dir() / f"{profile}.yaml"
    profile_text = (
        f"<details><summary>params/{e(profile)}.yaml</summary><pre>{e(params.read_text())}</pre></details>"
        if params.exists()
        else f'<p class="note">profile file params/{e(profile)}.yaml not found</p>'
    )
    vers = _table(["package", "version"], [[e(k), e(v)] for k, v in versions().items()])
    notebooks = "".join(
        f'<li><a href="notebooks/{e(s)}.html">{e(s)}</a> {e(i["title"])}</li>'
        for s, i in stages.items()
        if i.get("page")
    )
    extra_figs = _figures(other_figures, "figures")
    built = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    section = {
        "data": "1. Data",
        "method": "2. Method: protection (F<sub>P</sub>) and removal (F<sub>R</sub>)",
        "purification": "3. Purification",
        "table1": "4. Table 1: speaker verification EER",
        "table2": "5. Table 2: speech quality",
    }
    body_sections = "".join(
        f'<section id="{k}"><h2>{section[k]}</h2>{"".join(v) or "<p class=warn>stage not run</p>"}</section>'
        for k, v in sections.items()
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>spkadv report: {e(profile)}</title>
<link rel="stylesheet" href="style.css"></head>
<body><header>
<h1>On the generation and removal of speaker adversarial perturbation for voice-privacy protection: the reproduction</h1>
<p class="note">profile <b>{e(profile)}</b> · report built {built} · total pipeline time {_fmt(total)} min ·
stages {len(stages)}</p>
<nav><a href="#headline">headline</a><a href="#data">data</a><a href="#method">method</a>
<a href="#purification">purification</a><a href="#table1">Table 1</a><a href="#table2">Table 2</a>
<a href="#listen">listen</a><a href="#beyond">beyond the paper</a><a href="#run">the run</a></nav>
</header><main>
<section id="headline"><h2>Headline figures beside the paper</h2>
<p>{caveat}</p>{headline}
<p class="note">EER in % (averaged over the evaluation set's rows, as stage 40's metrics.json);
PESQ narrow-band raw P.862; SNR in dB against the original; WER in %. “Better” or “worse”
reads each figure in the direction the paper wants it.</p></section>
{body_sections}
<section id="listen"><h2>Listening panel</h2>
<p>Eval utterances, male and female: the original, the protected file x′ = x + ε·n⊙m, the
restored file x̂ from the removal module, and the perturbation x′ − x amplified
{PERTURBATION_GAIN:g}× (clipped to [−1, 1]) so that it can be heard. SNR of the protected file.</p>
{listen}</section>
<section id="beyond"><h2>6. Beyond the paper</h2>
{"".join(beyond) or '<p class="note">No stages beyond the paper in this run.</p>'}
{('<h3>Other figures</h3><p class="note">In figures/ for this profile but saved by no notebook of this run (an older or separate run, e.g. a study run with --only).</p>' + extra_figs) if extra_figs else ""}</section>
<section id="run"><h2>The run</h2>
<h3>Stage times (summary.json)</h3>{times}
<h3>Profile</h3>{profile_text}
<h3>Versions</h3>{vers}
<h3>Executed notebooks</h3><ul>{notebooks}</ul>
</section></main></body></html>
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spkadv.report.build", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--profile", default="default", help="the run's profile name")
    parser.add_argument("--out", type=Path, help="output folder (default runs/<profile>/report)")
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
