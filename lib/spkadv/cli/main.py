"""The ``spkadv`` command: protect recordings against speaker recognition, and restore them.

    spkadv protect IN -o OUT --model model.pt [--format pcm16|float]
    spkadv restore IN -o OUT --model model.pt [--refine 10]
    spkadv check ORIGINAL PROTECTED [--model model.pt] [--json]   (see spkadv.cli.check)

IN is an audio file or a folder (processed recursively; outputs keep the relative layout as
``.wav``). Each protected file gets a sidecar ``OUT.spkadv.json`` holding only the model's
fingerprint; ``restore`` refuses a file protected by another model. Inputs are never overwritten,
existing outputs only with ``--overwrite``; outputs are written atomically. A folder run reports
every file's outcome, goes on past bad files, and exits with status 1 if any failed.

Files are read, processed and written block by block (``spkadv.audio.streaming``), so memory does not
grow with the file's length; the output is bit for bit the whole-file result (``--low-memory``:
a lower, steadier peak at some speed, see ``spkadv.base.allocator``). Threads: see
``spkadv.base.threads`` (``--threads`` or ``SPKADV_THREADS``; default: the cores free at start).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from spkadv.audio import sidecar
from spkadv.core import modelfile

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
        p.add_argument(
            "--threads",
            type=int,
            metavar="N",
            help="CPU threads (default: SPKADV_THREADS, else OMP_NUM_THREADS, else the cores free now)",
        )
        p.add_argument(
            "--bf16",
            action="store_true",
            help="run the networks in bfloat16 on CPU (faster with AMX/AVX512-BF16; output differs "
            "from float32 by bf16 rounding of the perturbation)",
        )
        p.add_argument(
            "--low-memory",
            action="store_true",
            help="return every large buffer to the system as soon as it is freed (glibc): a lower, "
            "steadier peak memory, about 1.5-2x slower; same output",
        )
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
    from spkadv.cli.check import add_parser as add_check_parser

    add_check_parser(sub)
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


def _block_function(args: argparse.Namespace, model, **conditioning):
    """(per-block function ``fn(block, start)``, context samples per side) of the command, for
    ``streaming.process_file``.

    Each block is processed in one pass with its context, exactly as ``protect.chunked`` processes
    it inside a whole-file call; ``conditioning`` (a protection ``code``) is passed on to
    protect/restore with the block's position in the file.
    """
    from spkadv import SAMPLE_RATE
    from spkadv.core import protect as P

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
    from spkadv.core import protect as P

    def run(x: np.ndarray, start: int = 0) -> np.ndarray:
        if args.command == "protect":
            return P.protect(model, x, args.chunk_seconds, progress=progress, **conditioning)
        if args.refine > 0:
            return P.restore_refined(
                model, x, args.refine, args.chunk_seconds, progress=progress, **conditioning
            )
        return P.restore(model, x, args.chunk_seconds, progress=progress, **conditioning)

    return run


def _check_fingerprint(args: argparse.Namespace, model, src: Path) -> None:

    tag = sidecar.read_tag(src)
    if tag is None and not args.ignore_fingerprint:
        raise UsageError(
            f"{src}: no fingerprint sidecar {sidecar.tag_path(src).name}; it may not be a protected file. "
            "Pass --ignore-fingerprint to restore anyway"
        )
    if tag is not None and tag != model.fingerprint and not args.ignore_fingerprint:
        raise UsageError(
            f"{src} was protected by another model (fingerprint {tag[:12]}…, this model {model.fingerprint[:12]}…); "
            "restore it with the model that protected it"
        )


def _process(args: argparse.Namespace, model, src: Path, dst: Path) -> None:
    from spkadv import SAMPLE_RATE
    from spkadv.audio import streaming
    from spkadv.core import protect as P

    if dst.resolve() == src.resolve():
        raise UsageError(f"output {dst} would overwrite the input; choose another output path")
    if dst.exists() and not args.overwrite:
        raise UsageError(f"output {dst} exists; pass --overwrite to replace it")
    if args.command == "restore":
        _check_fingerprint(args, model, src)
        if args.refine <= 0 and model.removal is None:
            raise modelfile.ModelFileError(
                "this model has no removal module F_R (an SSED baseline model); use --refine N"
            )
    with streaming.AudioSource(src) as source:
        progress = not args.quiet and len(source) > PROGRESS_SECONDS * SAMPLE_RATE
        conditioning = {}  # the file's code: optimised in a first pass, or the sidecar's
        code = (
            P.protection_code(model, source, progress=progress)
            if args.command == "protect"
            else sidecar.read_code(src)
        )
        if code is not None:
            conditioning["code"] = code
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
        result = streaming.process_file(
            source,
            dst,
            fn,
            chunk,
            context,
            model.alignment,
            SUBTYPES[args.format],
            progress,
            args.command,
        )
        source.warn_if_clipped()
    if args.format == "pcm16" and result.peak_out > 1.0:
        print(
            f"warning: {src}: output reaches {result.peak_out:.3f}, clipped to [-1, 1] in 16-bit PCM",
            file=sys.stderr,
        )
    if args.command == "protect":
        sidecar.write_tag(dst, model.fingerprint, code)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spkadv`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "check":
        from spkadv.cli import check

        return check.run(args)
    import os

    from spkadv.base import threads

    if args.threads is not None:
        if args.threads < 1:
            print(f"error: --threads {args.threads}: need at least 1", file=sys.stderr)
            return 2
        os.environ[threads.ENV_THREADS] = str(args.threads)
    try:
        threads.configure()  # before torch is imported: the OpenMP waiting policy is read once
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.low_memory:
        from spkadv.base.allocator import low_memory

        if not low_memory():
            print("note: --low-memory needs glibc's allocator; running as usual", file=sys.stderr)
    from spkadv.audio.io import AudioError

    try:
        model = modelfile.load_model(args.model)
        pairs = _pairs(args.input, args.output)
    except (modelfile.ModelFileError, sidecar.SidecarError, UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.bf16:
        from spkadv.base.precision import bf16_available, bf16_model

        if not bf16_available():
            print(
                "note: --bf16 on a CPU without native bf16 (AMX-BF16 or AVX512-BF16) is emulated "
                "and likely slower than float32",
                file=sys.stderr,
            )
        model = bf16_model(model)
    from tqdm.auto import tqdm

    failed = 0
    for src, dst in tqdm(
        pairs, desc=args.command, disable=args.quiet or len(pairs) == 1, unit="file"
    ):
        try:
            _process(args, model, src, dst)
        except (
            AudioError,
            UsageError,
            modelfile.ModelFileError,
            sidecar.SidecarError,
            ValueError,
            RuntimeError,
            OSError,
        ) as err:
            failed += 1
            print(f"FAILED {src}: {err}", file=sys.stderr)
        else:
            print(f"ok     {src} -> {dst}")
    if len(pairs) > 1:
        print(f"{len(pairs) - failed} of {len(pairs)} file(s) done, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
