"""Shared test setup: offline, one torch thread, outputs into a temporary runs folder."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

# An extracted speechocean762 selection (manifest.tsv and manifest-dev.tsv), named by this variable.
SHARED_DATA_ENV = "SPKADV_SPEECHOCEAN762"


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # the profile/environment tests do not need torch
        pass


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items) -> None:
    _drop_broken_lazy_modules()  # before hypothesis' own hook scans sys.modules


@pytest.fixture(autouse=True)
def _no_broken_lazy_modules():
    _drop_broken_lazy_modules()  # modules imported by earlier tests
    yield


def _drop_broken_lazy_modules() -> None:
    """Remove speechbrain's lazy shims whose targets cannot import (e.g. the optional k2 integration).

    speechbrain registers lazy modules in ``sys.modules``; touching their ``__file__`` imports the
    target. hypothesis scans ``sys.modules`` for constants and so crashes on the ones whose optional
    dependency is absent. Resolving them once here keeps the working ones and drops the broken ones.
    """
    import sys

    for name, module in list(sys.modules.items()):
        if any(cls.__name__ == "LazyModule" for cls in type(module).__mro__):
            try:
                getattr(module, "__file__", None)
            except ImportError:
                del sys.modules[name]


@pytest.fixture
def tmp_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``spkadv.base.config.runs_root()`` at a temporary folder."""
    runs = tmp_path / "runs"
    monkeypatch.setenv("SPKADV_RUNS", str(runs))
    return runs


@pytest.fixture
def shared_corpus() -> Path:
    """The extracted speechocean762 selection named by ``$SPKADV_SPEECHOCEAN762``; tests using it
    skip when the variable is unset or names no folder with a ``manifest.tsv``."""
    folder = os.environ.get(SHARED_DATA_ENV, "").strip()
    if not folder or not (Path(folder) / "manifest.tsv").is_file():
        pytest.skip(
            f"set {SHARED_DATA_ENV} to an extracted speechocean762 selection (manifest.tsv)"
        )
    return Path(folder).resolve()


def write_notebook(path: Path, params_source: str, *code_cells: str) -> Path:
    """A minimal notebook: a cell tagged ``parameters`` and the given code cells (kernel python3)."""
    import json

    sources = [params_source, *code_cells]
    cells = [
        {
            "cell_type": "code",
            "id": f"cell{i}",
            "metadata": {"tags": ["parameters"]} if i == 0 else {},
            "source": source,
            "outputs": [],
            "execution_count": None,
        }
        for i, source in enumerate(sources)
    ]
    nb = {
        "cells": cells,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb))
    return path
