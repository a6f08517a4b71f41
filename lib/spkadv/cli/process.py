"""``spkadv protect`` / ``restore`` on one file: read it block by block, write the output and (for
protect) its sidecar as a pair.

This module imports torch; :mod:`spkadv.cli.main` imports it only after it has set the thread
policy (:mod:`spkadv.base.threads`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from spkadv import SAMPLE_RATE
from spkadv.audio import sidecar, streaming
from spkadv.audio.io import AudioSource
from spkadv.base.fileio import atomic_paths
from spkadv.cli.common import SUBTYPES, UsageError
from spkadv.core import modelfile
from spkadv.core import protect as P

PROGRESS_SECONDS = 120.0  # show a per-chunk progress bar for files longer than this


def _block_function(args: argparse.Namespace, model, **conditioning):
    """(per-block function ``fn(block, start)``, context samples per side) of the command, for
    ``streaming.process_file``.

    Each block is processed in one pass with its context, exactly as ``protect.chunked`` processes
    it inside a whole-file call; ``conditioning`` (a protection ``code``) is passed on to
    protect/restore with the block's position in the file.
    """

    def whole(x: np.ndarray) -> float:  # chunk_seconds that makes a block one pass
        return len(x) / SAMPLE_RATE + 1.0

    if args.command == "protect":
        return (
            lambda x, start: P.protect(model, x, whole(x), code_offset=start, **conditioning)
        ), model.overlap
    if args.refine > 0:  # each fixed-point iteration reaches one more overlap further
        return (
            lambda x, start: P.restore_refined(
                model, x, args.refine, whole(x), code_offset=start, **conditioning
            ),
            (args.refine + 1) * model.overlap,
        )
    return (
        lambda x, start: P.restore(model, x, whole(x), code_offset=start, **conditioning)
    ), model.overlap


def _whole_file_reason(model) -> str | None:
    """Why this model needs the whole file at once, or None when it can stream (a model with a
    per-file code streams too: the code is optimised in a first pass over the file)."""
    if not model.config.is_local:
        return "uses per-utterance statistics (mask_norm minmax or norm instance)"
    if getattr(model, "conditioned", False):
        return "is conditioned on an embedding of the whole utterance"
    return None


def _whole_file_function(args: argparse.Namespace, model, progress: bool, **conditioning):
    """The command on the whole signal at once (models that cannot stream), with the file's
    ``conditioning`` (a protection code) as the block-by-block path gets it."""

    def run(x: np.ndarray, start: int = 0) -> np.ndarray:
        if args.command == "protect":
            return P.protect(model, x, args.chunk_seconds, progress=progress, **conditioning)
        if args.refine > 0:
            return P.restore_refined(
                model, x, args.refine, args.chunk_seconds, progress=progress, **conditioning
            )
        return P.restore(model, x, args.chunk_seconds, progress=progress, **conditioning)

    return run


def _warn(message: str) -> None:
    print(f"WARNING: {message}", file=sys.stderr)


def _restore_code(args: argparse.Namespace, model, src: Path) -> np.ndarray | None:
    """The protection code to restore ``src`` with, after checking its sidecar's fingerprint.

    Refuses a file without a sidecar, or protected by another model, unless
    ``--ignore-fingerprint``; then it warns, and for a model that takes a code says that the
    restoration runs with the zero code (or the other model's code).
    """
    tag = sidecar.read_tag(src)
    name = sidecar.tag_path(src).name
    if tag is None and not args.ignore_fingerprint:
        raise UsageError(
            f"{src}: no fingerprint sidecar {name}; it may not be a protected file. "
            "Pass --ignore-fingerprint to restore anyway"
        )
    if tag is not None and tag != model.fingerprint:
        if not args.ignore_fingerprint:
            raise UsageError(
                f"{src} was protected by another model (fingerprint {tag[:12]}…, this model "
                f"{model.fingerprint[:12]}…); restore it with the model that protected it"
            )
        _warn(
            f"{src} was protected by another model (fingerprint {tag[:12]}…, this model "
            f"{model.fingerprint[:12]}…); restoring anyway (--ignore-fingerprint)"
            + (", with the other model's protection code" if model.config.code_film else "")
        )
    code = sidecar.read_code(src) if tag is not None else None
    if code is None and model.config.code_film:
        why = f"no sidecar {name}" if tag is None else f"its sidecar {name} holds no code"
        _warn(
            f"{src}: {why}, so it is restored with the ZERO protection code. This model protects "
            "each file with its own code: unless the file was protected with the zero code, the "
            f"perturbation is NOT removed. Put the sidecar written by 'spkadv protect' next to {src} "
            "and run restore again"
        )
    return code


def process(args: argparse.Namespace, model, src: Path, dst: Path, predictor=None) -> None:
    """Protect or restore ``src`` into ``dst``.

    ``predictor`` (protect, a model with per-segment codes): the file's code is predicted by it
    and refined for ``args.refine_steps`` steps (:func:`spkadv.core.protect.protection_code`)
    instead of optimised from the zero code; the sidecar holds it as usual.

    Protect writes the output and its sidecar to temporary files and renames both into place only
    when both are complete (an interruption leaves neither). Restore removes a sidecar left at
    ``dst`` by an earlier protection (the output is no longer protected).
    """
    if dst.resolve() == src.resolve():
        raise UsageError(f"output {dst} would overwrite the input; choose another output path")
    if dst.exists() and not args.overwrite:
        raise UsageError(f"output {dst} exists; pass --overwrite to replace it")
    code = None
    if args.command == "restore":
        code = _restore_code(args, model, src)
        if args.refine <= 0 and model.removal is None:
            raise modelfile.ModelFileError(
                "this model has no removal module F_R (an SSED baseline model); use --refine N"
            )
    with AudioSource(src) as source:
        progress = not args.quiet and len(source) > PROGRESS_SECONDS * SAMPLE_RATE
        if args.command == "protect":  # the file's code, optimised in a first pass
            if predictor is None:
                code = P.protection_code(model, source, progress=progress)
            else:  # predicted (and refined) in a first pass, in pieces: the same code
                steps = int(getattr(args, "refine_steps", None) or 0)
                code = P.protection_code(model, source, steps, progress, predictor=predictor)
        conditioning = {} if code is None else {"code": code}
        reason = _whole_file_reason(model)
        if reason is None:  # block by block
            fn, context = _block_function(args, model, **conditioning)
            chunk = int(args.chunk_seconds * SAMPLE_RATE)
        else:  # one block: the whole file
            fn, context = _whole_file_function(args, model, progress, **conditioning), 0
            chunk, progress = len(source) + model.alignment, False
            if len(source) > PROGRESS_SECONDS * SAMPLE_RATE:
                print(
                    f"note: {src}: this model {reason}, so the whole file "
                    f"({len(source) / SAMPLE_RATE:.0f} s) is held in memory",
                    file=sys.stderr,
                )
        tag = sidecar.tag_path(dst)
        targets = (dst, tag) if args.command == "protect" else (dst,)
        with atomic_paths(*targets) as temps:  # the sidecar is renamed after the audio
            result = streaming.write_blocks(
                source,
                temps[0],
                fn,
                chunk,
                context,
                model.alignment,
                SUBTYPES[args.format],
                progress,
                args.command,
            )
            if args.command == "protect":
                sidecar.write_tag(dst, model.fingerprint, code, to=temps[1])
        source.warn_if_clipped()
    if args.command == "restore" and tag.exists():
        tag.unlink()  # a protected file's sidecar, left from before --overwrite
    if args.format == "pcm16" and result.peak_out > 1.0:
        print(
            f"warning: {src}: output reaches {result.peak_out:.3f}, clipped to [-1, 1] in 16-bit PCM",
            file=sys.stderr,
        )
