"""Every profile key must be declared by the notebook it targets (papermill only warns)."""

from __future__ import annotations

from pathlib import Path

import pytest
from spkadv.base import config
from spkadv.run.profiles_check import key_blocks, problems

from .conftest import write_notebook

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted((ROOT / "params").glob("*.yaml"))


def test_the_three_named_profiles_exist():
    names = {p.stem for p in PROFILES}
    assert {"smoke", "default", "paper"} <= names


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_profile_keys_are_declared_by_their_notebooks(profile: Path):
    found = problems(profile, ROOT / "notebooks")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_profile_values_carry_a_comment(profile: Path):
    lines = [ln for ln in profile.read_text().splitlines() if ln and not ln.startswith(("#", " "))]
    missing = [ln for ln in lines if "#" not in ln]
    assert not missing, f"{profile.name}: values without a '# meaning' comment: {missing}"


def test_unknown_key_is_reported_with_key_andwrite_notebook(tmp_path: Path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    write_notebook(
        notebooks / "00_data_prep.ipynb", 'PROFILE = "smoke"  # profile\nSEED = 0  # seed\n'
    )
    profile = tmp_path / "bad.yaml"
    profile.write_text("# --- 00_data_prep ---\nSEED: 1  # seed\nSEEED: 2  # a typo\n")
    found = problems(profile, notebooks)
    assert len(found) == 1
    assert "SEEED" in found[0] and "00_data_prep" in found[0]


def test_study_keys_are_checked_against_notebooks_studies(tmp_path: Path):
    notebooks = tmp_path / "notebooks"
    (notebooks / "studies").mkdir(parents=True)
    write_notebook(notebooks / "00_data_prep.ipynb", "SEED = 0  # seed\n")
    write_notebook(notebooks / "studies" / "90_study.ipynb", "STEPS = 1  # steps\n")
    profile = tmp_path / "p.yaml"
    profile.write_text("# --- 90_study ---\nSTEPS: 2  # ok\n# --- shared ---\nSEED: 1  # ok\n")
    assert problems(profile, notebooks) == []
    profile.write_text("# --- 90_study ---\nSTEPS: 2  # ok\nSTEPZ: 3  # a typo\n")
    assert ["STEPZ" in f and "90_study" in f for f in problems(profile, notebooks)] == [True]


def test_shared_key_must_be_declared_somewhere(tmp_path: Path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "10_x.ipynb", "A = 1  # a\n")
    profile = tmp_path / "p.yaml"
    profile.write_text("# --- shared ---\nA: 2  # ok\nB: 3  # nobody reads it\n")
    assert key_blocks(profile) == {"A": "shared", "B": "shared"}
    found = problems(profile, notebooks)
    assert len(found) == 1 and "B" in found[0]


def test_type_mismatch_is_reported(tmp_path: Path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "10_x.ipynb", "STEPS = 10  # steps\n")
    profile = tmp_path / "p.yaml"
    profile.write_text("# --- 10_x ---\nSTEPS: 1.5  # a float where an int is expected\n")
    assert "STEPS" in problems(profile, notebooks)[0]


def test_yaml_float_without_dot_is_refused(tmp_path: Path):
    profile = tmp_path / "p.yaml"
    profile.write_text("LR: 1e-4  # PyYAML reads this as a string\n")
    with pytest.raises(config.ProfileError, match="LR"):
        config.load_profile(profile)
