"""Parameter profiles and the run-folder convention shared by every notebook.

Profiles live in ``params/<name>.yaml`` as flat maps of UPPER_CASE keys. Each notebook declares
the keys it reads in its cell tagged ``parameters`` (whose defaults are the smoke profile) and
writes everything under ``runs/<profile>/<notebook stem>/``, with its figures of merit in
``metrics.json`` there.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path
from typing import Any

import yaml

from spkadv.base.fileio import read_json, write_json

NOTEBOOK_STAGES = (
    "00_data_prep",
    "10_ssed_baseline",
    "20_joint_training",
    "30_purification",
    "40_table1_eer",
    "50_table2_quality",
    "60_attackers",
)
STUDY_STAGES = (
    "90_attack_study",
    "91_joint_robustness",
    "92_transfer",
    "93_blackbox",
    "94_protect_settings",
    "95_code_predictor",
    "96_training_settings",
)  # notebooks/studies/, run only when named


def project_root() -> Path:
    """The repository root (``SPKADV_ROOT`` overrides; default: two levels above this package)."""
    env = os.environ.get("SPKADV_ROOT")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[3]


def runs_root() -> Path:
    """Where run outputs go (``SPKADV_RUNS`` overrides; default ``<root>/runs``)."""
    env = os.environ.get("SPKADV_RUNS")
    return Path(env).resolve() if env else project_root() / "runs"


def params_dir() -> Path:
    return project_root() / "params"


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


STUDIES_DIR = "studies"  # notebooks/studies/: the studies beyond the paper, run only when named


def notebook_paths(notebooks: Path | None = None) -> list[Path]:
    """The numbered notebooks ``NN_name.ipynb``: the paper's stages in ``notebooks/`` in number
    order, then the studies in ``notebooks/studies/`` (:data:`STUDY_STAGES`)."""
    root = Path(notebooks) if notebooks is not None else notebooks_dir()
    pattern = "[0-9][0-9]_*.ipynb"
    return sorted(root.glob(pattern)) + sorted((root / STUDIES_DIR).glob(pattern))


def figures_dir(profile: str | None = None) -> Path:
    """``figures/`` (default profile and paper-like runs) or ``figures/<profile>/`` for others."""
    base = project_root() / "figures"
    path = base if profile in (None, "default") else base / profile
    path.mkdir(parents=True, exist_ok=True)
    return path


def stage_dir(profile: str, stage: str, create: bool = True) -> Path:
    """``runs/<profile>/<stage>/``: the one folder a notebook writes into."""
    path = runs_root() / profile / stage
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(profile: str | None = None) -> Path:
    """Per-profile cache (embeddings, transcripts) shared across stages: ``runs/<profile>/cache``."""
    path = runs_root() / (profile or "shared") / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


class ProfileError(ValueError):
    """A parameter profile is missing or malformed."""


def available_profiles() -> list[str]:
    return sorted(p.stem for p in params_dir().glob("*.yaml"))


def load_profile(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """Load ``params/<name>.yaml`` (or a YAML path) as a flat dict of UPPER_CASE keys."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = params_dir() / f"{name_or_path}.yaml"
    if not path.exists():
        raise ProfileError(
            f"profile {str(name_or_path)!r} not found at {path}; available: {', '.join(available_profiles())}"
        )
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: expected a flat map of KEY: value, got {type(data).__name__}")
    for key, value in data.items():
        if not isinstance(key, str) or key != key.upper():
            raise ProfileError(f"{path}: key {key!r} must be an UPPER_CASE string")
        if isinstance(value, str) and _looks_like_float(value):
            raise ProfileError(
                f"{path}: {key}: {value!r} is read as a string by YAML; write it with a dot, e.g. 1.0e-4"
            )
    return data


def _looks_like_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return any(c in text.lower() for c in "e.") and text.strip().lower() not in ("inf", "nan")


def notebook_parameters(notebook: str | os.PathLike) -> dict[str, Any]:
    """The literal ``NAME = value`` assignments of a notebook's cell tagged ``parameters``."""
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ProfileError(
            f"{notebook}: expected exactly one cell tagged 'parameters', found {len(cells)}"
        )
    source = "".join(cells[0]["source"])
    params: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if not (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            raise ProfileError(
                f"{notebook}: the parameters cell may only hold `NAME = literal` lines"
            )
        params[node.targets[0].id] = ast.literal_eval(node.value)
    return params


def write_metrics(profile: str, stage: str, metrics: dict[str, Any]) -> Path:
    """Write a stage's flat ``metrics.json`` (numbers in SI units or percent, as the keys say)."""
    bad = [k for k, v in metrics.items() if isinstance(v, dict | list)]
    if bad:
        raise ValueError(f"metrics must be flat; nested values under {bad}")
    return write_json(stage_dir(profile, stage) / "metrics.json", metrics)


def read_metrics(profile: str, stage: str) -> dict[str, Any]:
    path = stage_dir(profile, stage, create=False) / "metrics.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: run notebook {stage} for profile {profile!r} first"
        )
    return read_json(path)


# Audio of each evaluation condition (see docs/ARCHITECTURE.md). "rec" is the corpus itself.
CONDITION_STAGE = {
    "adv": "20_joint_training",
    "rst": "20_joint_training",
    "rst_refined": "20_joint_training",
    "gn": "20_joint_training",
    "adv_ssed": "10_ssed_baseline",
}


def condition_dir(profile: str, condition: str) -> Path:
    """Folder holding ``<utt_id>.wav`` for an evaluation condition (adv, rst, an, qt, ms, ...)."""
    if condition == "rec":
        raise ValueError("'rec' audio is the corpus itself: read paths from the manifest")
    stage = CONDITION_STAGE.get(condition, "30_purification")
    return stage_dir(profile, stage) / "audio" / condition
