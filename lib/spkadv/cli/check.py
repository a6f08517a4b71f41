"""How well is a recording protected? ``spkadv check ORIGINAL PROTECTED [--model M] [--json]``.

For each (original, protected) pair this measures what a speaker verifier would make of the
protected file, enrolled on the original:

- the cosine similarity of the two embeddings with the white-box encoder (the one the model was
  trained against, CAM++ ``campplus``) and a black-box one it never saw (``ge2e``);
- the verifier's decision at that encoder's own EER threshold: ``accepted`` (the verifier still
  takes the protected file for the original speaker: not protected against it) or ``rejected``;
- the audio quality: SNR and PESQ (narrow-band raw P.862, the paper's variant) against the original.

The EER thresholds are those of rec-rec trials on the evaluation set: notebook ``40_table1_eer``
writes them to ``runs/<profile>/40_table1_eer/verification.json``, and ``--model M`` finds the
file of M's own run (or take a file with ``--thresholds FILE``; see
:func:`spkadv.evaluation.verification.find_thresholds`). Without thresholds the check gives
similarities and quality but no decision, and says so.

ORIGINAL and PROTECTED are two files, or two folders whose audio files are matched by relative
path without the extension (``a/b.flac`` matches ``a/b.wav``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from spkadv.audio import sidecar
from spkadv.audio.io import AUDIO_SUFFIXES, load_audio
from spkadv.base.fileio import _json_safe
from spkadv.evaluation import metrics, verification

DEFAULT_ENCODERS = {"whitebox": "campplus", "blackbox": "ge2e"}
MODEL_RATE = 16_000  # what spkadv protect writes


class CheckError(ValueError):
    """The comparison cannot be made; the message says what is wrong and what to do."""


# --- pairing files -------------------------------------------------------------------------------


def _audio_files(folder: Path) -> dict[str, Path]:
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES:
            key = p.relative_to(folder).with_suffix("").as_posix()
            if key in files:
                raise CheckError(
                    f"{folder}: {files[key].name} and {p.name} have the same name; keep one of them"
                )
            files[key] = p
    return files


def pair_files(original: Path, protected: Path) -> list[tuple[str, Path, Path]]:
    """(name, original, protected) for two files, or two folders matched by name."""
    for path, what in ((original, "original"), (protected, "protected")):
        if not path.exists():
            raise CheckError(f"{what} {path} does not exist")
    if original.is_dir() != protected.is_dir():
        kinds = ("a folder" if p.is_dir() else "a file" for p in (original, protected))
        raise CheckError(
            f"original {original} is {next(kinds)} but protected {protected} is {next(kinds)}; "
            "give two files or two folders"
        )
    if not original.is_dir():
        return [(protected.name, original, protected)]
    orig, prot = _audio_files(original), _audio_files(protected)
    if not prot:
        raise CheckError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under {protected}")
    missing = sorted(set(prot) - set(orig))
    if missing:
        raise CheckError(
            f"{len(missing)} protected file(s) have no original of the same name under {original} "
            f"(e.g. {', '.join(missing[:3])}); files are matched by relative path without the "
            "extension: name them alike"
        )
    return [(name, orig[name], prot[name]) for name in sorted(prot)]


def load_pair(original: Path, protected: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Both waveforms at 16 kHz, refusing pairs that cannot be the same recording."""
    notes = []
    rates = {}
    for path in (original, protected):
        try:
            rates[path] = sf.info(str(path)).samplerate
        except (sf.LibsndfileError, RuntimeError) as err:
            raise CheckError(f"{path}: not a readable audio file ({err})") from err
    r_orig, r_prot = rates[original], rates[protected]
    if r_orig != r_prot:
        if r_prot != MODEL_RATE:
            raise CheckError(
                f"sample rates differ: original {original} is {r_orig} Hz, protected {protected} is "
                f"{r_prot} Hz (spkadv protect writes {MODEL_RATE} Hz); compare the file protect "
                "wrote with the file it read"
            )
        notes.append(f"original resampled from {r_orig} Hz to {MODEL_RATE} Hz (protect's rate)")
    x, y = load_audio(original), load_audio(protected)
    if len(x) != len(y):
        raise CheckError(
            f"lengths differ at {MODEL_RATE} Hz: original {original} has {len(x)} samples "
            f"({len(x) / MODEL_RATE:.2f} s), protected {protected} has {len(y)} "
            f"({len(y) / MODEL_RATE:.2f} s); protection keeps the length, so these are not the "
            "same recording, or one was cut: compare the file protect wrote with the file it read"
        )
    return x, y, notes


# --- the comparison -------------------------------------------------------------------------------


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def compare(
    pairs: Sequence[tuple[str, Path, Path]],
    encoders: Mapping[str, str],
    thresholds: Mapping[str, Mapping[str, Any]],
    model_fingerprint: str | None = None,
) -> list[dict[str, Any]]:
    """One record per pair: similarities, decisions, SNR and PESQ (a failed pair gets ``error``)."""
    # lazy: torch must not be imported when the spkadv command builds its parser (spkadv.cli.main)
    import torch

    from spkadv.encoders import speaker as E

    loaded = {role: E.load(name) for role, name in encoders.items()}
    records = []
    for name, orig, prot in pairs:
        rec: dict[str, Any] = {"name": name, "original": str(orig), "protected": str(prot)}
        try:
            x, y, notes = load_pair(orig, prot)
        except (CheckError, ValueError) as err:
            rec["error"] = str(err)
            records.append(rec)
            continue
        try:
            tag = sidecar.read_tag(prot)
        except sidecar.SidecarError as err:
            tag = None
            notes.append(str(err))
        if model_fingerprint and tag and tag != model_fingerprint:
            notes.append("protected by another model than --model (fingerprint sidecar differs)")
        with torch.no_grad():
            for role, encoder in loaded.items():
                emb = encoder.embed(torch.from_numpy(np.stack([x, y]))).cpu().numpy()
                cos = _cosine(emb[0], emb[1])
                rec[f"{role}_encoder"] = encoder.name
                rec[f"{role}_cosine"] = cos
                t = thresholds.get(role)
                if t is not None and t.get("encoder") == encoder.name:
                    rec[f"{role}_threshold"] = float(t["threshold"])
                    rec[f"{role}_decision"] = "accepted" if cos >= t["threshold"] else "rejected"
                else:
                    rec[f"{role}_threshold"] = None
                    rec[f"{role}_decision"] = None
        rec["snr_db"] = metrics.snr_db(x, y)
        try:
            rec["pesq"] = metrics.pesq_nb_raw(x, y)
        except ValueError as err:
            rec["pesq"] = math.nan
            notes.append(f"PESQ not computed: {err}")
        rec["notes"] = notes
        records.append(rec)
    return records


def summarize(records: Sequence[Mapping[str, Any]], roles: Sequence[str]) -> dict[str, Any]:
    """Counts and means over the pairs that were compared."""
    done = [r for r in records if "error" not in r]
    out: dict[str, Any] = {"files": len(records), "failed": len(records) - len(done)}
    for role in roles:
        cos = [r[f"{role}_cosine"] for r in done]
        out[f"{role}_mean_cosine"] = float(np.mean(cos)) if cos else math.nan
        decided = [r[f"{role}_decision"] for r in done if r[f"{role}_decision"]]
        out[f"{role}_rejected"] = sum(d == "rejected" for d in decided)
        out[f"{role}_decided"] = len(decided)
    snr = [min(r["snr_db"], 200.0) for r in done]
    pesq = [r["pesq"] for r in done if not math.isnan(r["pesq"])]
    out["mean_snr_db"] = float(np.mean(snr)) if snr else math.nan
    out["mean_pesq"] = float(np.mean(pesq)) if pesq else math.nan
    return out


# --- the command ----------------------------------------------------------------------------------


def add_parser(sub) -> argparse.ArgumentParser:
    """Add the ``check`` subcommand to the ``spkadv`` parser's subparsers."""
    p = sub.add_parser(
        "check",
        help="how well a protected file hides its speaker (similarity, verifier decision, SNR, PESQ)",
        description=__doc__.split("\n")[0],
    )
    p.add_argument("original", type=Path, help="original audio file or folder")
    p.add_argument("protected", type=Path, help="protected audio file or folder (same names)")
    p.add_argument(
        "--model",
        type=Path,
        help="model file that protected them; the EER thresholds of its run "
        "(runs/<profile>/40_table1_eer/verification.json) give the decisions",
    )
    p.add_argument(
        "--thresholds",
        type=Path,
        metavar="FILE",
        help="EER thresholds file (verification.json of notebook 40) to decide with, instead of "
        "the one found from --model",
    )
    p.add_argument("--whitebox", help="white-box encoder (default: the model's, else campplus)")
    p.add_argument("--blackbox", help="black-box encoder (default: the model's, else ge2e)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    return p


def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.{digits}f}"


def _describe_thresholds(thresholds: Mapping, encoders: Mapping[str, str]) -> list[str]:
    lines = []
    for role, name in encoders.items():
        t = thresholds.get(role)
        if t is None:
            continue
        if t.get("encoder") != name:
            lines.append(
                f"{role}: stored threshold is for {t.get('encoder')}, not {name}: no decision"
            )
            continue
        lines.append(
            f"{role} {name}: accept when cosine >= {t['threshold']:.3f} (EER {t['eer']:.2f} % on "
            f"{t['n_target']}+{t['n_nontarget']} {t['condition']} trials, profile {t.get('profile') or '?'})"
        )
    return lines


def render_text(
    records: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any],
    encoders: Mapping[str, str],
    header: Sequence[str],
) -> str:
    """The human-readable report: header, one row per file, and a one-line summary for folders."""
    roles = list(encoders)
    table = [["file"]]
    for role in roles:
        table[0] += [f"{role} cos ({encoders[role]})", "verifier"]
    table[0] += ["SNR dB", "PESQ"]
    extra: dict[int, list[str]] = {}  # row -> lines printed under it (failures, notes)
    for r in records:
        if "error" in r:
            table.append([r["name"], "FAILED"])
            extra[len(table) - 1] = [f"  {r['error']}"]
            continue
        cells = [r["name"]]
        for role in roles:
            cells += [_fmt(r[f"{role}_cosine"]), r[f"{role}_decision"] or "no threshold"]
        cells += [_fmt(r["snr_db"], 1), _fmt(r["pesq"], 2)]
        table.append(cells)
        extra[len(table) - 1] = [f"  note: {n}" for n in r.get("notes", [])]
    widths = [max(len(row[i]) for row in table if i < len(row)) for i in range(len(table[0]))]
    lines = list(header)
    for i, row in enumerate(table):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())
        lines += extra.get(i, [])
    if len(records) > 1:
        parts = []
        for role in roles:
            decided = summary[f"{role}_decided"]
            verdict = (
                f"rejects {summary[f'{role}_rejected']}/{decided}" if decided else "no decision"
            )
            parts.append(
                f"{role} {encoders[role]} {verdict} (mean cos {_fmt(summary[f'{role}_mean_cosine'])})"
            )
        lines.append(
            f"summary: {summary['files']} file(s), {summary['failed']} failed; "
            + "; ".join(parts)
            + f"; mean SNR {_fmt(summary['mean_snr_db'], 1)} dB, mean PESQ {_fmt(summary['mean_pesq'], 2)}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Carry out ``spkadv check``; returns the exit status (2: usage, 1: a file failed)."""
    # lazy: torch must not be imported when the spkadv command builds its parser (spkadv.cli.main)
    from spkadv.core import modelfile

    try:
        pairs = pair_files(args.original, args.protected)
        header, fingerprint, meta = [], None, None
        if args.model is not None:
            model = modelfile.load_model(args.model)
            fingerprint, meta = model.fingerprint, model.meta
            header.append(f"model {args.model} (fingerprint {fingerprint[:12]}…)")
        elif args.thresholds is None:
            header.append(
                "no --model: similarities and quality only; pass the model file that protected "
                "the audio for the verifier's decision at its EER threshold"
            )
        thresholds, notes = verification.find_thresholds(
            args.model, fingerprint, meta, args.thresholds
        )
        header += notes
        encoders = {
            role: getattr(args, role) or thresholds.get(role, {}).get("encoder") or default
            for role, default in DEFAULT_ENCODERS.items()
        }
        header += _describe_thresholds(thresholds, encoders)
    except (
        CheckError,
        modelfile.ModelFileError,
        sidecar.SidecarError,
        verification.VerificationFileError,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    records = compare(pairs, encoders, thresholds, fingerprint)
    summary = summarize(records, list(encoders))
    if args.json:
        print(
            json.dumps(
                _json_safe(
                    {
                        "model": str(args.model) if args.model else None,
                        "encoders": encoders,
                        "thresholds": thresholds,
                        "files": records,
                        "summary": summary,
                    }
                ),
                indent=1,
            )
        )
    else:
        print(render_text(records, summary, encoders, header))
    return 1 if summary["failed"] else 0
