"""What the command's parts share: output formats and the usage error (no torch here)."""

from __future__ import annotations

SUBTYPES = {"pcm16": "PCM_16", "float": "FLOAT"}  # --format -> soundfile subtype


class UsageError(ValueError):
    """The command line cannot be carried out (message says why)."""
