"""The conda environment file must stay in step with the pip requirements."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_parses_and_names_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert any(str(d).startswith("python=3.11") for d in deps)
    pip_sections = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert pip_sections, "environment.yml needs a pip: section"
    pip = pip_sections[0]
    assert "-r requirements.txt" in pip
    assert "-e ." in pip


def test_every_requirement_is_pinned():
    lines = [
        ln.split("#")[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()
    ]
    reqs = [ln for ln in lines if ln]
    unpinned = [r for r in reqs if not re.search(r"==|<", r)]
    assert not unpinned, f"unpinned requirements: {unpinned}"
    names = {re.split(r"[=<>!~]", r)[0].lower() for r in reqs}
    required = {
        "jupyterlab",
        "papermill",
        "torch",
        "torchaudio",
        "speechbrain",
        "pesq",
        "openai-whisper",
        "pyworld",
        "seaborn",
        "nbval",
    }
    assert required <= names, f"missing: {required - names}"
