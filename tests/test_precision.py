"""CPU bf16 is used only where the CPU has native bf16, unless forced."""

from __future__ import annotations

import pytest
from spkadv.base import precision


def test_cpu_bf16_is_turned_down_without_native_bf16(monkeypatch, capsys) -> None:
    monkeypatch.delenv(precision.ENV_CPU_BF16, raising=False)
    monkeypatch.setattr(precision, "bf16_available", lambda: False)
    assert precision.cpu_bf16_enabled(True, log=True) is False
    assert "no native bf16" in capsys.readouterr().err
    assert precision.cpu_bf16_enabled(False) is False
    monkeypatch.setenv(precision.ENV_CPU_BF16, "force")
    assert precision.cpu_bf16_enabled(True) is True


@pytest.mark.parametrize("native", [True, False])
def test_cpu_bf16_follows_the_request_where_the_cpu_has_it(monkeypatch, native: bool) -> None:
    monkeypatch.delenv(precision.ENV_CPU_BF16, raising=False)
    monkeypatch.setattr(precision, "bf16_available", lambda: True)
    assert precision.cpu_bf16_enabled(native) is native
