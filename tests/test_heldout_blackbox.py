"""The black-box encoder stays held out: never in a training loss, never in the protect-time code.

The profiles choose encoders by name, so the last test checks that no profile names its black box
as the white box or among the code's surrogates."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import spkadv.core
from spkadv.base import config

BLACK_BOX_MODULES = ("spkadv.encoders.ge2e", "resemblyzer")
CORE = Path(spkadv.core.__file__).parent  # training, losses, protection


def _imported_black_box(code: str) -> list[str]:
    probe = (
        code + f"\nimport sys\nprint(sorted(m for m in {BLACK_BOX_MODULES!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300
    )
    return ast.literal_eval(out.stdout.strip())


def test_the_training_loss_never_imports_the_black_box():
    assert _imported_black_box("import spkadv.core.losses") == []
    # the probe sees an import when there is one
    assert _imported_black_box("import spkadv.core.losses, spkadv.encoders.ge2e") == [
        "spkadv.encoders.ge2e"
    ]


def _direct_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found


@pytest.mark.parametrize("module", sorted(CORE.glob("*.py")), ids=lambda p: p.stem)
def test_no_training_or_protection_module_imports_the_black_box(module):
    hits = {m for m in _direct_imports(module) if m.startswith(BLACK_BOX_MODULES)}
    assert not hits, f"{module.name} imports {sorted(hits)}"


@pytest.mark.parametrize("profile", sorted(p.stem for p in config.params_dir().glob("*.yaml")))
def test_no_profile_trains_or_protects_against_its_black_box(profile):
    values = config.load_profile(profile)
    black = {values["BLACKBOX_ENCODER"], values.get("BLACKBOX_STUDY_ENCODER", "")} - {""}
    white = values["WHITEBOX_ENCODER"]
    assert white not in black, f"{profile}: the white box {white!r} is also the black box"
    surrogates = values.get("CODE_SURROGATES") or {}
    assert not (set(surrogates) & black), f"{profile}: the code's surrogates name the black box"
    # the black-box study: no setting puts the black box into the code's loss, and no further
    # encoder scored (and attackable by PGD as a non-oracle) is the black box under another name
    for name, setting in (values.get("BLACKBOX_VARIANTS") or {}).items():
        named = {
            str(i.get("encoder")) for i in setting.get("code_surrogates") or [] if "encoder" in i
        }
        assert not (named & black), (
            f"{profile}: BLACKBOX_VARIANTS[{name!r}] optimises against the black box"
        )
    more = set(values.get("BLACKBOX_MORE_ENCODERS") or [])
    assert not (more & black), f"{profile}: BLACKBOX_MORE_ENCODERS names the black box"
