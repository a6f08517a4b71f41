"""Notebooks follow the house conventions: committed clean, one parameters cell, smoke defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from spkadv.base import config

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = config.notebook_paths(ROOT / "notebooks")  # the paper's stages, then notebooks/studies/


def test_pipeline_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == list(config.NOTEBOOK_STAGES + config.STUDY_STAGES)
    studies = ROOT / "notebooks" / config.STUDIES_DIR
    assert sorted(p.stem for p in studies.glob("*.ipynb")) == sorted(config.STUDY_STAGES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean_and_parameterised(path: Path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), (
        f"{path.name} holds outputs; strip them (nbstripout)"
    )
    params = config.notebook_parameters(path)
    assert params.get("PROFILE") == "smoke", (
        f"{path.name}: the parameters cell must default to PROFILE = 'smoke'"
    )
    source = "".join(
        next(c for c in code if "parameters" in c["metadata"].get("tags", []))["source"]
    )
    for line in source.strip().splitlines():
        assert "#" in line, f"{path.name}: parameter line without a '# meaning' comment: {line!r}"
    text = "".join("".join(c["source"]) for c in code)
    assert "sys.path" not in text
    assert "write_metrics" in text, f"{path.name} must write its metrics.json"
