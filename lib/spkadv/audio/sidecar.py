"""The sidecar of a protected file: ``<file>.spkadv.json`` with the model's fingerprint and, for
models that take one, the protection's code."""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Any

import numpy as np

from spkadv.base.fileio import json_text, read_json, write_json

TAG_SUFFIX = ".spkadv.json"


class SidecarError(ValueError):
    """A sidecar that cannot be read."""


def tag_path(audio_path: str | os.PathLike) -> Path:
    """The sidecar holding the model fingerprint of a protected file: ``<file>.spkadv.json``."""
    return Path(f"{audio_path}{TAG_SUFFIX}")


def write_tag(
    audio_path: str | os.PathLike,
    fingerprint: str,
    code: np.ndarray | None = None,
    to: str | os.PathLike | None = None,
) -> Path:
    """Write the sidecar: the model's fingerprint and, for models that take one, the protection's
    code (useless without the model; no copy of the audio, no other metadata).

    Args:
        to: write the sidecar's text to this (temporary) file instead of atomically to
            :func:`tag_path` of ``audio_path``; the caller renames it into place together with the
            audio (:func:`spkadv.base.fileio.atomic_paths`).
    """
    record: dict[str, Any] = {"spkadv_model_fingerprint": fingerprint}
    if code is not None:  # float32 bytes in base64: a tenth of the size of a JSON number list
        arr = np.ascontiguousarray(code, dtype="<f4")
        record["code"] = {
            "shape": list(arr.shape),
            "float32_base64": base64.b64encode(arr.tobytes()).decode("ascii"),
        }
    if to is None:
        return write_json(tag_path(audio_path), record)
    Path(to).write_text(json_text(record), encoding="utf-8")
    return Path(to)


def read_code(audio_path: str | os.PathLike) -> np.ndarray | None:
    """The protection code in a protected file's sidecar, or None when there is none."""
    path = tag_path(audio_path)
    if not path.exists():
        return None
    try:
        code = read_json(path).get("code")
        if code is None:
            return None
        if isinstance(code, dict):
            raw = base64.b64decode(code["float32_base64"], validate=True)
            return np.frombuffer(raw, dtype="<f4").reshape(code["shape"]).astype(np.float32)
        return np.asarray(code, dtype=np.float32)
    except (ValueError, TypeError, AttributeError, KeyError, binascii.Error) as err:
        raise SidecarError(f"{path}: unreadable code in the sidecar ({err})") from err


def read_tag(audio_path: str | os.PathLike) -> str | None:
    """The fingerprint in a protected file's sidecar, or None when there is no sidecar."""
    path = tag_path(audio_path)
    if not path.exists():
        return None
    try:
        return str(read_json(path)["spkadv_model_fingerprint"])
    except (ValueError, KeyError, TypeError) as err:
        raise SidecarError(f"{path}: unreadable fingerprint sidecar ({err})") from err
