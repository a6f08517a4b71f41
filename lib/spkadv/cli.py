"""The ``spkadv`` command: protect recordings against speaker recognition, and restore them.

    spkadv protect IN -o OUT --model model.pt [--format pcm16|float]
    spkadv restore IN -o OUT --model model.pt [--refine 10]

IN is an audio file or a folder (processed recursively; outputs keep the relative layout as
``.wav``). Each protected file gets a sidecar ``OUT.spkadv.json`` holding only the model's
fingerprint; ``restore`` refuses a file protected by another model. Inputs are never overwritten,
existing outputs only with ``--overwrite``; outputs are written atomically. A folder run reports
every file's outcome, goes on past bad files, and exits with status 1 if any failed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
SUBTYPES = {"pcm16": "PCM_16", "float": "FLOAT"}
PROGRESS_SECONDS = 120.0  # show a per-chunk progress bar for files longer than this


class UsageError(ValueError):
    """The command line cannot be carried out (message says why)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spkadv", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("protect", "add the speaker adversarial perturbation (x' = x + eps·n⊙m)"),
        ("restore", "remove it with the model's removal module (x̂ = x' + eps·n'⊙m')"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("input", type=Path, help="audio file or folder")
        p.add_argument("-o", "--output", type=Path, required=True, help="output file or folder")
        p.add_argument(
            "--model",
            type=Path,
            required=True,
            help="model file (runs/<profile>/20_joint_training/model.pt)",
        )
        p.add_argument(
            "--format",
            choices=sorted(SUBTYPES),
            default="pcm16" if name == "protect" else "float",
            help="output sample format (default: %(default)s)",
        )
        p.add_argument(
            "--chunk-seconds",
            type=float,
            default=5.0,
            help="block length in seconds (bounded memory; the output does not depend on it)",
        )
        p.add_argument("--overwrite", action="store_true", help="replace existing output files")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        if name == "restore":
            p.add_argument(
                "--refine",
                type=int,
                default=0,
                metavar="N",
                help="then N fixed-point iterations with the generator (x̂ ← x' − eps·n(x̂)⊙m(x̂)); 0 = paper's one-shot",
            )
            p.add_argument(
                "--ignore-fingerprint",
                action="store_true",
                help="restore even without a matching fingerprint sidecar",
            )
    return parser


def _pairs(src: Path, dst: Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs; refuses any output that would be an input."""
    src_r, dst_r = src.resolve(), dst.resolve()
    if src_r == dst_r:
        raise UsageError(f"output {dst} is the input itself; choose another output path")
    if src.is_dir():
        if dst_r.is_relative_to(src_r):
            raise UsageError(
                f"output folder {dst} lies inside the input folder {src}; choose a folder outside it"
            )
        if dst.exists() and not dst.is_dir():
            raise UsageError(f"input {src} is a folder, so the output {dst} must be a folder too")
        files = sorted(
            p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
        )
        if not files:
            raise UsageError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) found under {src}")
        return [(f, (dst / f.relative_to(src)).with_suffix(".wav")) for f in files]
    if not src.exists():
        raise UsageError(f"input {src} does not exist")
    if dst.is_dir():
        return [(src, dst / (src.stem + ".wav"))]
    return [(src, dst)]


def _process(args: argparse.Namespace, model, src: Path, dst: Path) -> None:
    from spkadv import protect as P
    from spkadv.audio import load_audio, save_audio

    if dst.resolve() == src.resolve():
        raise UsageError(f"output {dst} would overwrite the input; choose another output path")
    if dst.exists() and not args.overwrite:
        raise UsageError(f"output {dst} exists; pass --overwrite to replace it")
    x = load_audio(src)
    progress = not args.quiet and len(x) > PROGRESS_SECONDS * 16_000
    if args.command == "protect":
        y = P.protect(model, x, args.chunk_seconds, progress=progress)
    else:
        tag = P.read_tag(src)
        if tag is None and not args.ignore_fingerprint:
            raise UsageError(
                f"{src}: no fingerprint sidecar {P.tag_path(src).name}; it may not be a protected file. "
                "Pass --ignore-fingerprint to restore anyway"
            )
        if tag is not None and tag != model.fingerprint and not args.ignore_fingerprint:
            raise UsageError(
                f"{src} was protected by another model (fingerprint {tag[:12]}…, this model {model.fingerprint[:12]}…); "
                "restore it with the model that protected it"
            )
        if args.refine > 0:
            y = P.restore_refined(model, x, args.refine, args.chunk_seconds, progress=progress)
        else:
            y = P.restore(model, x, args.chunk_seconds, progress=progress)
    if not np.isfinite(y).all():
        raise RuntimeError(f"{src}: the model produced NaN/Inf samples; nothing written")
    if args.format == "pcm16" and np.abs(y).max() > 1.0:
        print(
            f"warning: {src}: output reaches {np.abs(y).max():.3f}, clipped to [-1, 1] in 16-bit PCM",
            file=sys.stderr,
        )
    save_audio(dst, y, subtype=SUBTYPES[args.format])
    if args.command == "protect":
        P.write_tag(dst, model.fingerprint)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spkadv`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    from spkadv import protect as P
    from spkadv.audio import AudioError

    try:
        model = P.load_model(args.model)
        pairs = _pairs(args.input, args.output)
    except (P.ModelFileError, UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from tqdm.auto import tqdm

    failed = 0
    for src, dst in tqdm(
        pairs, desc=args.command, disable=args.quiet or len(pairs) == 1, unit="file"
    ):
        try:
            _process(args, model, src, dst)
        except (AudioError, UsageError, P.ModelFileError, ValueError, RuntimeError, OSError) as err:
            failed += 1
            print(f"FAILED {src}: {err}", file=sys.stderr)
        else:
            print(f"ok     {src} -> {dst}")
    if len(pairs) > 1:
        print(f"{len(pairs) - failed} of {len(pairs)} file(s) done, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
