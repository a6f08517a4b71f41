"""Static safety rules over the project's own code: no shell strings, no unpickling of code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*ROOT.glob("lib/spkadv/**/*.py"), *ROOT.glob("benchmarks/*.py")])


def calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_external_tools_are_called_with_argument_lists(path: Path):
    for node, name in calls(path):
        assert name not in (
            "os.system",
            "os.popen",
            "subprocess.getoutput",
            "subprocess.getstatusoutput",
        ), f"{path.name}:{node.lineno}: {name} runs a shell string"
        for kw in node.keywords:
            if kw.arg == "shell":
                assert isinstance(kw.value, ast.Constant) and kw.value.value is False, (
                    f"{path.name}:{node.lineno}: shell=True"
                )


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_weights_are_loaded_without_executing_code(path: Path):
    for node, name in calls(path):
        assert name not in ("pickle.load", "pickle.loads", "torch.jit.load"), (
            f"{path.name}:{node.lineno}: {name}"
        )
        if name == "torch.load":
            flags = {kw.arg: kw.value for kw in node.keywords}
            value = flags.get("weights_only")
            assert isinstance(value, ast.Constant) and value.value is True, (
                f"{path.name}:{node.lineno}: torch.load without weights_only=True"
            )


def test_the_rules_catch_a_violation(tmp_path: Path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import torch, subprocess\ntorch.load('x.pt')\nsubprocess.run('ls', shell=True)\n"
    )
    with pytest.raises(AssertionError, match="weights_only"):
        test_weights_are_loaded_without_executing_code(bad)
    with pytest.raises(AssertionError, match="shell=True"):
        test_external_tools_are_called_with_argument_lists(bad)
