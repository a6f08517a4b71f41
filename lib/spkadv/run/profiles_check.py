"""Check parameter profiles against the notebooks' parameters cells.

Profiles are flat, but each key sits in a block headed ``# --- <notebook stem> ---`` naming the
notebook it targets (``# --- shared ---`` for keys several notebooks read). papermill only warns
about unknown parameters, so a misspelt key would silently fall back to a notebook default:
this check makes it an error that names the key and the notebook.
"""

from __future__ import annotations

import re
from pathlib import Path

from spkadv.base import config

BLOCK = re.compile(r"^#\s*---\s*(?P<name>[\w.-]+)\s*---")
KEY = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*:")


def key_blocks(profile_path: Path) -> dict[str, str]:
    """Map each top-level key of a profile file to the block (notebook stem or ``shared``) it sits in."""
    blocks: dict[str, str] = {}
    current = "shared"
    for line in profile_path.read_text(encoding="utf-8").splitlines():
        if match := BLOCK.match(line):
            current = match["name"]
        elif match := KEY.match(line):
            blocks[match["key"]] = current
    return blocks


def problems(profile_path: Path, notebooks: Path) -> list[str]:
    """Every key of ``profile_path`` that its target notebook (or, for shared keys, no notebook) declares."""
    declared = {
        nb.stem: config.notebook_parameters(nb)
        for nb in config.notebook_paths(notebooks)  # the stages and notebooks/studies/
    }
    values = config.load_profile(profile_path)
    blocks = key_blocks(profile_path)
    found = []
    for key, value in values.items():
        block = blocks.get(key, "shared")
        if block == "shared":
            users = [stem for stem, params in declared.items() if key in params]
            if not users:
                found.append(
                    f"{profile_path.name}: shared key {key} is not declared in the parameters cell of any notebook"
                )
            continue
        if block not in declared:
            found.append(
                f"{profile_path.name}: key {key} sits in block '{block}', but no notebook {block}.ipynb exists in notebooks/ or notebooks/studies/"
            )
            continue
        params = declared[block]
        if key not in params:
            found.append(
                f"{profile_path.name}: key {key} targets {block}.ipynb, whose parameters cell does not declare it"
            )
        elif not _compatible(params[key], value):
            found.append(
                f"{profile_path.name}: key {key} = {value!r} ({type(value).__name__}) but {block}.ipynb "
                f"declares {params[key]!r} ({type(params[key]).__name__})"
            )
    return found


def _compatible(default, value) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, int | float) and isinstance(value, int | float):
        return not (isinstance(default, int) and isinstance(value, float))
    return type(default) is type(value) or (
        isinstance(default, list | tuple) and isinstance(value, list | tuple)
    )
