"""The ``spkadv`` command: protect recordings against speaker recognition, and restore them.

    spkadv protect IN -o OUT --model model.pt [--format pcm16|float]
                   [--code-predictor PATH [--refine-steps K]]
    spkadv restore IN -o OUT --model model.pt [--refine 10]
    spkadv check ORIGINAL PROTECTED [--model model.pt] [--json]   (see spkadv.cli.check)

IN is an audio file or a folder (processed recursively; outputs keep the relative layout as
``.wav``, and inputs that would share an output name are refused before anything is written).
Each protected file gets a sidecar ``OUT.spkadv.json`` holding the model's fingerprint (and the
file's protection code for models that take one), written together with the audio: both or
neither. ``--code-predictor`` predicts the code instead of optimising it (beyond the paper,
``spkadv.core.predictor``; ``--refine-steps K`` optimisation steps follow from the prediction).
``restore`` refuses a file protected by another model. Inputs are never overwritten,
existing outputs only with ``--overwrite``; outputs are written atomically. A folder run reports
every file's outcome, goes on past bad files, and exits with status 1 if any failed.

Files are read, processed and written block by block (``spkadv.audio.streaming``, per file in
``spkadv.cli.process``), so memory does not grow with the file's length; the output is bit for
bit the whole-file result (``--low-memory``: a lower, steadier peak at some speed, see
``spkadv.base.allocator``). Threads: see ``spkadv.base.threads`` (``--threads`` or
``SPKADV_THREADS``; default: the cores free at start).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from spkadv.audio import sidecar
from spkadv.audio.io import AUDIO_SUFFIXES, AudioError
from spkadv.base import allocator, threads
from spkadv.cli import check
from spkadv.cli.common import SUBTYPES, UsageError


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
        if name == "protect":
            p.add_argument(
                "--code-predictor",
                type=Path,
                metavar="PATH",
                help="predict each segment's protection code with this network (notebook 95's "
                "code_predictor.pt, trained for this model) instead of optimising it against the "
                "white-box encoder: many times faster, but weaker protection than the default "
                "(beyond the paper); restore is unchanged (the code is in the sidecar)",
            )
            p.add_argument(
                "--refine-steps",
                type=int,
                metavar="K",
                help="with --code-predictor: then K optimisation steps from the predicted code "
                "(default 0: no pass through the white-box encoder at all)",
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
                help="restore even without a matching fingerprint sidecar (with a warning; a model "
                "that takes a protection code then restores with the zero code)",
            )
    check.add_parser(sub)
    return parser


def _refuse_shared_outputs(pairs: list[tuple[Path, Path]]) -> None:
    """Refuse inputs that would be written to the same output (``a.wav`` and ``a.flac`` both
    become ``a.wav``), naming them, before anything is written."""
    inputs: dict[Path, list[Path]] = {}
    for src, dst in pairs:
        inputs.setdefault(dst, []).append(src)
    shared = {dst: srcs for dst, srcs in inputs.items() if len(srcs) > 1}
    if shared:
        lines = [f"  {' and '.join(str(s) for s in srcs)} -> {dst}" for dst, srcs in shared.items()]
        raise UsageError(
            f"{sum(len(s) for s in shared.values())} inputs would be written to the same output "
            "(outputs take the input's name with .wav):\n"
            + "\n".join(lines)
            + "\nrename or move all but one of each group; nothing was written"
        )


def _pairs(src: Path, dst: Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs; refuses any output that would be an input or another input's."""
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
        pairs = [(f, (dst / f.relative_to(src)).with_suffix(".wav")) for f in files]
        _refuse_shared_outputs(pairs)
        return pairs
    if not src.exists():
        raise UsageError(f"input {src} does not exist")
    if dst.is_dir():
        return [(src, dst / (src.stem + ".wav"))]
    return [(src, dst)]


def _predictor_usage(args: argparse.Namespace) -> str | None:
    """What is wrong with ``--code-predictor`` / ``--refine-steps`` (None: nothing); no torch."""
    if args.refine_steps is not None:
        if args.code_predictor is None:
            return (
                "--refine-steps needs --code-predictor PATH (without a predictor the code is "
                "optimised for the model's own number of steps)"
            )
        if args.refine_steps < 0:
            return f"--refine-steps {args.refine_steps}: need 0 or more"
    if args.code_predictor is not None and not args.code_predictor.is_file():
        return (
            f"--code-predictor {args.code_predictor}: no such file (notebook 95 writes one to "
            "runs/<profile>/95_code_predictor/code_predictor.pt)"
        )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spkadv`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "check":
        return check.run(args)
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
    if args.command == "protect":
        usage = _predictor_usage(args)
        if usage:
            print(f"error: {usage}", file=sys.stderr)
            return 2
    if args.low_memory and not allocator.low_memory():
        print("note: --low-memory needs glibc's allocator; running as usual", file=sys.stderr)
    # lazy: these import torch, which must come after threads.configure()
    from spkadv.base.precision import bf16_available, bf16_model
    from spkadv.cli.process import process
    from spkadv.core import modelfile
    from spkadv.core import predictor as code_predictor

    try:
        model = modelfile.load_model(args.model)
        pairs = _pairs(args.input, args.output)
        predictor = None
        if getattr(args, "code_predictor", None) is not None:
            predictor = code_predictor.load_predictor(args.code_predictor, model)
    except (
        modelfile.ModelFileError,
        sidecar.SidecarError,
        UsageError,
        code_predictor.PredictorFileError,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # a predictor for a model without per-segment codes
        print(f"error: --code-predictor {args.code_predictor}: {err}", file=sys.stderr)
        return 2
    if args.bf16:
        if not bf16_available():
            print(
                "note: --bf16 on a CPU without native bf16 (AMX-BF16 or AVX512-BF16) is emulated "
                "and likely slower than float32",
                file=sys.stderr,
            )
        model = bf16_model(model)
    failed = 0
    for src, dst in tqdm(
        pairs, desc=args.command, disable=args.quiet or len(pairs) == 1, unit="file"
    ):
        try:
            process(args, model, src, dst, predictor)
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
