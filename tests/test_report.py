"""The run report (spkadv.report) and clean executed notebooks (spkadv.run.batchlog + the pipeline)."""

from __future__ import annotations

import base64
import io
import json
import math
import os
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from IPython.display import Audio
from matplotlib.figure import Figure
from spkadv.base import config
from spkadv.base.fileio import write_json
from spkadv.data import manifest as data
from spkadv.report import build as report
from spkadv.report import headline, notebook_html, output, page
from spkadv.run import pipeline

from .conftest import write_notebook

PROFILE = "reporttest"
SR = 16_000
MARKDOWN = (
    "# {stem} · a stage\n\nThe protected speech $x' = x + \\epsilon \\cdot n \\odot m$ keeps "
    "`$HOME` literal.\n\n$$s = \\frac{{z_e \\cdot z_t}}{{\\lVert z_e \\rVert}}$$\n"
)


def _png() -> str:
    fig = Figure(figsize=(2, 1))  # no pyplot: no GUI backend, nothing to close
    fig.subplots().plot([0, 1], [1, 0])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode()


def _tone(seconds: float, freq: float, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    noise = np.random.default_rng(seed).standard_normal(t.size)
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * noise).astype(np.float32)


def _executed_notebook(path: Path, stem: str, png: str, extra_outputs=()) -> None:
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell(
        f'fig = make()\nplotting.save_figure(fig, "{stem}_fig", PROFILE)', execution_count=1
    )
    code.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="one summary line\n"),
        nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"}),
        nbformat.v4.new_output(
            "display_data",
            data={"text/html": Audio(_tone(0.5, 330, 0), rate=SR)._repr_html_(), "text/plain": "a"},
        ),
        *extra_outputs,
    ]
    nb.cells = [nbformat.v4.new_markdown_cell(MARKDOWN.format(stem=stem)), code]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)


def make_fake_run(runs: Path, figures: Path, profile: str = PROFILE) -> Path:
    """A small but complete run: summary, notebooks, metrics, tables, figures and audio."""
    root = runs / profile
    png = _png()
    stages = [
        "00_data_prep",
        "10_ssed_baseline",
        "20_joint_training",
        "30_purification",
        "40_table1_eer",
        "50_table2_quality",
        "60_extra_study",
    ]
    for stem in stages:
        (root / stem).mkdir(parents=True)
        _executed_notebook(root / stem / f"{stem}.ipynb", stem, png)
        (figures / f"{stem}_fig.png").write_bytes(base64.b64decode(png))
    (figures / "unclaimed.png").write_bytes(base64.b64decode(png))
    write_json(root / "00_data_prep" / "metrics.json", {"corpus_source": "synthetic"})
    write_json(
        root / "40_table1_eer" / "metrics.json",
        {
            "eer_whitebox_rec_adv": 20.5,
            "paper_eer_whitebox_rec_adv": 13.945,
            "eer_whitebox_rec_rst": 1.5,
            "paper_eer_whitebox_rec_rst": 1.425,
        },
    )
    write_json(
        root / "50_table2_quality" / "metrics.json",
        {"pesq_adv": 3.1, "snr_adv": 30.0, "wer_rst": 4.1},
    )
    write_json(root / "60_extra_study" / "metrics.json", {"extra_value": 1.0})
    (root / "40_table1_eer" / "table1.md").write_text(
        "| set | gender | encoder | rec-adv |\n|---|---|---|---|\n"
        "| synthetic | M | whitebox (campplus) | 20.50 [18.0, 23.0] (paper 18.62, Δ +1.88) |\n"
    )
    (root / "50_table2_quality" / "table2.md").write_text(
        "| metric | adv |\n|---|---|\n| PESQ | 3.10 (3.67) |\n\nOurs (paper).\n"
    )
    rows = []
    for i, (gender, freq) in enumerate((("M", 120.0), ("M", 140.0), ("F", 220.0), ("F", 250.0))):
        utt = f"utt{gender}{i}"
        x = _tone(1.0, freq, i)
        wav = root / "00_data_prep" / "corpus" / "audio" / f"{utt}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        sf.write(wav, x, SR, subtype="FLOAT")
        for cond, noise in (("adv", 0.01), ("rst", 0.001)):
            folder = root / "20_joint_training" / "audio" / cond
            folder.mkdir(parents=True, exist_ok=True)
            y = x + noise * np.random.default_rng(i).standard_normal(x.size).astype(np.float32)
            sf.write(folder / f"{utt}.wav", y, SR, subtype="FLOAT")
        rows.append([utt, f"s{gender}{i}", gender, "eval", "synthetic", str(wav), 1.0, "A B"])
    data.write_manifest(
        pd.DataFrame(rows, columns=list(data.MANIFEST_COLUMNS)),
        root / "00_data_prep" / "corpus" / "manifest.tsv",
    )
    summary = {
        "profile": profile,
        "stages": {
            s: {"status": "ok", "seconds": 60.0 + i, "metrics": {}} for i, s in enumerate(stages)
        },
        "total_minutes": 7.35,
    }
    write_json(root / "summary.json", summary)
    return root


@pytest.fixture
def fake_run(tmp_path: Path, tmp_runs: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    figures = tmp_path / "figures"
    figures.mkdir()
    monkeypatch.setattr(config, "figures_dir", lambda profile=None: figures)
    return make_fake_run(tmp_runs, figures)


@pytest.fixture
def built(fake_run: Path) -> Path:
    return report.build(PROFILE)


def test_report_has_the_papers_sections_and_headline_gaps(built: Path) -> None:
    page = built.read_text()
    for section in ("headline", "data", "method", "purification", "table1", "table2", "listen"):
        assert f'id="{section}"' in page
    assert "13.95" in page and "20.50" in page  # paper and ours side by side
    assert "6.55 points above the paper: better" in page  # rec-adv: higher EER hides better
    assert "PESQ adv" in page and "0.57 below the paper: worse" in page
    assert "(paper 18.62, Δ +1.88)" in page  # Table 1 as stage 40 wrote it
    beyond = page.split('id="beyond"')[1].split('id="run"')[0]
    assert "60_extra_study" in beyond and "unclaimed" in beyond
    assert "60_extra_study" in page.split('id="run"')[1]  # stage times list every stage


def test_report_audio_is_compressed_files_beside_the_page(built: Path) -> None:
    page = built.read_text()
    assert "base64" not in page
    clips = sorted((built.parent / "audio").glob("*.ogg"))
    assert len(clips) == 16  # 2 male + 2 female utterances x 4 clips
    info = sf.info(str(clips[0]))
    assert info.format == "OGG" and info.duration == pytest.approx(1.0, abs=0.05)
    for clip in clips:
        assert f'src="audio/{clip.name}"' in page


def test_notebook_pages_render_math_offline_and_externalize_audio(built: Path) -> None:
    page = (built.parent / "notebooks" / "40_table1_eer.html").read_text()
    assert page.count("<math") == 2 and "\\frac" not in page.split("<body")[1]
    assert "<code>$HOME</code>" in page  # code spans keep their dollars
    assert "http://" not in page.replace('xmlns="http://www.w3.org/1998/Math/MathML"', "")
    assert "https://" not in page
    assert "data:audio" not in page and 'type="audio/ogg"' in page
    assert list((built.parent / "notebooks" / "media").glob("*.ogg"))
    assert (built.parent / "notebooks" / "notebook.css").stat().st_size > 10_000


def test_report_is_small_and_rebuilds_in_place(built: Path) -> None:
    size = sum(p.stat().st_size for p in built.parent.rglob("*") if p.is_file())
    assert size < 5e6
    (built.parent / "audio" / sorted(os.listdir(built.parent / "audio"))[0]).unlink()
    again = report.build(PROFILE)  # into its own folder, and a file of its own gone is fine
    assert again == built and (built.parent / output.MARKER).is_file()
    assert len(list((built.parent / "audio").glob("*.ogg"))) == 16
    assert sorted(p.name for p in built.parent.parent.glob("*report*")) == ["report"]


def test_report_without_a_run_says_what_to_run(tmp_runs: Path) -> None:
    with pytest.raises(report.ReportError, match="spkadv.run.pipeline --profile nothing"):
        report.build("nothing")


def test_report_never_creates_stage_folders(tmp_runs: Path) -> None:
    root = tmp_runs / "partial"
    root.mkdir(parents=True)
    write_json(root / "summary.json", {"profile": "partial", "stages": {}})
    report.build("partial")
    assert sorted(p.name for p in root.iterdir()) == ["report", "summary.json"]


# --- the output folder: the report deletes only what it wrote --------------------------------


def test_report_refuses_a_folder_holding_a_users_file(fake_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "somewhere"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(report.ReportError, match=r"notes\.txt.*never deletes them"):
        report.build(PROFILE, folder)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    assert (folder / "notes.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_report_refuses_the_run_folder_and_a_users_file_in_its_own_folder(
    built: Path, capsys: pytest.CaptureFixture
) -> None:
    run = built.parent.parent
    before = {p.relative_to(run) for p in run.rglob("*")}
    assert report.main(["--profile", PROFILE, "--out", str(run)]) == 1
    assert "holds the run itself" in capsys.readouterr().err
    (built.parent / "figures" / "mine.png").write_text("a file the report did not write")
    assert report.main(["--profile", PROFILE]) == 1
    assert "figures/mine.png" in capsys.readouterr().err
    assert {p.relative_to(run) for p in run.rglob("*")} == before | {
        Path("report/figures/mine.png")
    }


def test_report_fills_an_empty_folder_and_rebuilds_into_it(fake_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    inode = folder.stat().st_ino
    assert report.build(PROFILE, folder, per_gender=0) == folder / "index.html"
    assert folder.stat().st_ino == inode  # the folder is kept and filled
    assert report.build(PROFILE, folder, per_gender=0) == folder / "index.html"
    assert (folder / output.MARKER).is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".empty.building")]


def test_report_leaves_a_folder_named_like_its_build_folder(fake_run: Path) -> None:
    lookalike = fake_run / "report.building"  # the name the build folder once had
    lookalike.mkdir()
    (lookalike / "keep.txt").write_text("mine")
    report.build(PROFILE, per_gender=0)
    assert (lookalike / "keep.txt").read_text() == "mine"


def test_report_from_before_the_marker_is_replaced(fake_run: Path) -> None:
    old = fake_run / "report"
    (old / "figures").mkdir(parents=True)
    (old / "index.html").write_text("<html><head><title>spkadv report: x</title></head></html>")
    (old / "figures" / "a.png").write_bytes(b"png")
    report.build(PROFILE, per_gender=0)
    assert (old / output.MARKER).is_file() and not (old / "figures" / "a.png").exists()


def test_failed_build_keeps_the_previous_report(
    built: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page_before = built.read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("broken page")

    monkeypatch.setattr(report, "index_html", broken)
    with pytest.raises(RuntimeError, match="broken page"):
        report.build(PROFILE)
    assert built.read_text() == page_before
    assert sorted(p.name for p in built.parent.parent.glob("*report*")) == ["report"]


def test_page_escapes_run_text_and_renders_markdown() -> None:
    stages = {
        "60_x": {
            "title": "<script>alert(1)</script>",
            "intro": "**bold** and $x^2$",
            "status": "ok <i>",
            "seconds": 90.0,
            "metrics": {"a<b": 1.0},
            "figures": [],
            "tables": [("t.md", "| a |\n|---|\n| 1 |\n")],
            "problems": [],
            "page": False,
            "executed_at": "",
        }
    }
    html = page.index_html("x<y", {"stages": {}}, stages, [], [])
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "x&lt;y" in html and "ok &lt;i&gt;" in html and "a&lt;b" in html
    assert "<strong>bold</strong>" in html and "<math" in html and "<td>1</td>" in html
    assert ", 1.5 min" in html


# --- pieces ------------------------------------------------------------------------------------


def test_math_outside_code_becomes_mathml() -> None:
    store: list[str] = []
    text = notebook_html.protect_math("a $x_1$ b `$y$` c $$\\frac{1}{2}$$ costs $5 and $6", store)
    assert text.count("SPKADVMATH") == 2 and "`$y$`" in text and "$5 and $6" in text
    out = notebook_html.restore_math(text, store)
    assert 'display="block"' in out and "<mfrac>" in out


def test_unconvertible_tex_is_shown_as_code() -> None:
    assert notebook_html.tex_to_mathml("\\begin{nonsense}").startswith('<code class="tex">')


@pytest.mark.parametrize(
    ("ours", "paper", "better", "words"),
    [
        (20.0, 14.0, 1, "6.00 x above the paper: better"),
        (10.0, 14.0, 1, "4.00 x below the paper: worse"),
        (5.0, 1.0, -1, "4.00 x above the paper: worse"),
        (1.2, 1.0, 0, "close to the paper (within 0.5 x)"),
        (math.inf, math.inf, 1, "as the paper"),
    ],
)
def test_gap_words(ours, paper, better, words) -> None:
    assert headline.gap_words(ours, paper, better, 0.5, " x") == words


def _nb(*outputs) -> dict:
    return {"cells": [{"cell_type": "code", "outputs": list(outputs)}]}


def test_notebook_problems_flag_stderr_progress_bars_and_widgets() -> None:
    clean = _nb({"output_type": "stream", "name": "stdout", "text": "trained 3 steps\n"})
    assert notebook_html.notebook_problems(clean) == []
    bars = "\r".join(f"train: {i}%|#  | {i}/100" for i in range(0, 100, 10))
    assert (
        "progress-bar lines"
        in notebook_html.notebook_problems(
            _nb({"output_type": "stream", "name": "stdout", "text": bars})
        )[0]
    )
    assert (
        "stderr"
        in notebook_html.notebook_problems(
            _nb({"output_type": "stream", "name": "stderr", "text": "TqdmWarning: IProgress"})
        )[0]
    )
    widget = {
        "output_type": "display_data",
        "data": {"application/vnd.jupyter.widget-view+json": {}},
    }
    assert "widget" in notebook_html.notebook_problems(_nb(widget))[0]


# --- clean executed notebooks: the pipeline routes progress and warnings to the log ------------

NOISY_CODE = """
import sys, time, warnings
from tqdm.auto import tqdm
from spkadv.base.config import write_metrics
for _ in tqdm(range(50), desc="steps", mininterval=0):
    time.sleep(0.002)
warnings.warn("a warning for the log")
print("progress for the log", file=sys.stderr)
print("one summary line")
write_metrics(PROFILE, "00_noisy", {"value": 1})
"""


def test_pipeline_keeps_progress_and_warnings_out_of_the_notebook(
    tmp_path: Path, tmp_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TQDM_DISABLE", raising=False)  # draw the bars, as a batch run does
    notebooks = tmp_path / "nb"
    notebooks.mkdir()
    write_notebook(notebooks / "00_noisy.ipynb", 'PROFILE = "smoke"  # profile\n', NOISY_CODE)
    profile = tmp_path / "noisy.yaml"
    profile.write_text("{}\n")
    assert (
        pipeline.main(["--profile", str(profile), "--notebooks", str(notebooks), "--report"]) == 0
    )
    assert (tmp_runs / "noisy" / "report" / "notebooks" / "00_noisy.html").exists()
    stage = tmp_runs / "noisy" / "00_noisy"
    nb = json.loads((stage / "00_noisy.ipynb").read_text())
    assert notebook_html.notebook_problems(nb) == []
    texts = [o.get("text", "") for c in nb["cells"] for o in c.get("outputs", [])]
    assert "one summary line\n" in ["".join(t) for t in texts]
    log = (stage / "log.txt").read_text()
    assert "steps: 100%" in log and "a warning for the log" in log
    assert "progress for the log" in log and "one summary line" in log


def _smoke_root() -> Path:
    return Path(os.environ.get("SPKADV_SMOKE_RUN", config.runs_root() / "smoke"))


def test_executed_smoke_notebooks_are_clean() -> None:
    root = _smoke_root()
    found = sorted(root.glob("[0-9][0-9]_*/[0-9][0-9]_*.ipynb"))
    found = [p for p in found if p.stem == p.parent.name]
    if not found:
        pytest.skip(
            f"no executed smoke run under {root}: run python -m spkadv.run.pipeline --profile smoke"
        )
    problems = {p.name: notebook_html.notebook_problems(json.loads(p.read_text())) for p in found}
    assert {k: v for k, v in problems.items() if v} == {}
