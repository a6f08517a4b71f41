"""Assembling the paper's Table 1 (EER) and Table 2 (quality) from condition audio.

A *condition* is a folder of ``<utt_id>.wav`` per eval utterance (``rec`` is the corpus itself, see
:func:`spkadv.base.config.condition_dir`); a *trial condition* ``"a-b"`` enrols on condition ``a`` and
tests on condition ``b`` (``rec-adv``: enrol the original, test the protected audio).
The paper's own numbers (docs/protocol.md §6) sit beside ours in every table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from spkadv.audio.io import load_audio
from spkadv.base import config
from spkadv.base.fileio import atomic_path, sha256_file, write_text
from spkadv.encoders.embed import embed_files
from spkadv.evaluation import metrics

# --- the paper's numbers (test-clean and dev-clean, LibriSpeech; Tables 1 and 2) -------------

PAPER_TABLE1_CONDITIONS = ("rec-rec", "rec-adv", "adv-adv", "rec-rst", "rec-an")
_PAPER_TABLE1_ROWS = {
    ("test-clean", "M", "whitebox"): (1.21, 18.62, 13.69, 1.21, 4.82),
    ("test-clean", "F", "whitebox"): (1.64, 9.27, 18.92, 1.64, 4.80),
    ("dev-clean", "M", "whitebox"): (0.50, 15.01, 13.12, 0.50, 1.29),
    ("dev-clean", "F", "whitebox"): (2.48, 23.16, 17.09, 2.42, 7.90),
    ("test-clean", "M", "blackbox"): (1.21, 12.17, 9.56, 1.15, 3.78),
    ("test-clean", "F", "blackbox"): (2.23, 11.78, 14.55, 2.29, 5.57),
    ("dev-clean", "M", "blackbox"): (0.60, 7.62, 9.34, 0.60, 1.29),
    ("dev-clean", "F", "blackbox"): (2.59, 15.23, 13.36, 2.77, 6.60),
}
PAPER_TABLE1 = {
    (s, g, e, c): v
    for (s, g, e), values in _PAPER_TABLE1_ROWS.items()
    for c, v in zip(PAPER_TABLE1_CONDITIONS, values, strict=True)
}
PAPER_ENCODERS = {"whitebox": "ECAPA-TDNN", "blackbox": "ENSKD"}

_TABLE2_CONDITIONS = ("rec", "adv", "rst", "an", "qt", "ms")
PAPER_TABLE2 = {
    (metric, cond): v
    for metric, values in {
        "PESQ": (4.50, 3.67, 4.47, 3.15, 3.26, 3.31),
        "SNR": (math.inf, 32.44, 50.29, 24.15, 26.96, 15.68),
        "WER": (4.08, 6.94, 4.08, 5.01, 5.17, 5.61),
        "P-Mean": (1.00, 0.99, 1.00, 0.95, 0.98, 0.95),
        "P-Std": (0.00, 0.03, 0.01, 0.11, 0.43, 0.08),
    }.items()
    for cond, v in zip(_TABLE2_CONDITIONS, values, strict=True)
}


def paper_eer(set_name: str, gender: str, role: str, condition: str) -> tuple[float, str]:
    """The paper's EER for a Table 1 cell and the paper row it comes from.

    Sets the paper did not evaluate (synthetic, speechocean762) are compared with its test-clean
    row, and the second value says so; conditions the paper lacks give NaN.
    """
    paper_set = set_name if set_name in ("test-clean", "dev-clean") else "test-clean"
    value = PAPER_TABLE1.get((paper_set, gender, role, condition), math.nan)
    note = paper_set if paper_set == set_name else f"{paper_set} (set not in the paper)"
    return value, (note if not math.isnan(value) else "")


# --- conditions -----------------------------------------------------------------------------


def condition_sides(trial_condition: str) -> tuple[str, str]:
    """``"rec-adv"`` -> ``("rec", "adv")`` (enrolment side, test side)."""
    enrol, sep, test = trial_condition.partition("-")
    if not sep or not enrol or not test:
        raise ValueError(
            f"trial condition {trial_condition!r} must look like 'rec-adv' (enrol-test)"
        )
    return enrol, test


def condition_paths(profile: str, eval_rows: pd.DataFrame, condition: str) -> dict[str, Path]:
    """``utt_id -> audio path`` of a condition for the given eval rows.

    Raises:
        FileNotFoundError: some utterances lack audio (names the folder and the notebook to run).
    """
    if condition == "rec":
        return {u: Path(p) for u, p in zip(eval_rows["utt_id"], eval_rows["path"], strict=True)}
    folder = config.condition_dir(profile, condition)
    paths = {u: folder / f"{u}.wav" for u in eval_rows["utt_id"]}
    missing = [u for u, p in paths.items() if not p.exists()]
    if missing:
        stage = config.CONDITION_STAGE.get(condition, "30_purification")
        raise FileNotFoundError(
            f"condition {condition!r}: {len(missing)} of {len(paths)} eval utterances have no audio in "
            f"{folder} (e.g. {missing[0]}.wav); run notebook {stage} for profile {profile!r}"
        )
    return paths


def existing_paths(profile: str, eval_rows: pd.DataFrame, condition: str) -> dict[str, Path]:
    """``utt_id -> audio path`` for the rows whose audio exists in a condition (all rows for rec)."""
    if condition == "rec":
        return condition_paths(profile, eval_rows, "rec")
    folder = config.condition_dir(profile, condition)
    return {u: folder / f"{u}.wav" for u in eval_rows["utt_id"] if (folder / f"{u}.wav").exists()}


def split_available(
    profile: str, eval_rows: pd.DataFrame, conditions: Iterable[str]
) -> tuple[list[str], dict[str, str]]:
    """Split audio conditions into those whose audio is complete and the others (with the reason)."""
    ok, skipped = [], {}
    for cond in conditions:
        try:
            condition_paths(profile, eval_rows, cond)
            ok.append(cond)
        except FileNotFoundError as err:
            skipped[cond] = str(err)
    return ok, skipped


# --- Table 1 --------------------------------------------------------------------------------


def verification_rows(
    trials: pd.DataFrame,
    embeddings: Mapping[tuple[str, str], Mapping[str, np.ndarray]],
    trial_conditions: Sequence[str],
    roles: Mapping[str, str],
    n_boot: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
    p_target: float = 0.01,
) -> tuple[pd.DataFrame, dict]:
    """EERs per (set, gender, encoder role, trial condition), with the paper's numbers beside them.

    Args:
        trials: :func:`spkadv.data.manifest.read_trials` frame (set, gender, enrol, test, target).
        embeddings: ``(role, audio condition) -> {utt_id: embedding}``.
        roles: ``role -> encoder name``, e.g. ``{"whitebox": "campplus", "blackbox": "ge2e"}``.

    Returns:
        The table (one row per cell) and the raw scores ``{(set, gender, role, cond): (tar, non)}``
        for DET curves.
    """
    rows, scores = [], {}
    for role, encoder_name in roles.items():
        for cond in trial_conditions:
            enrol_c, test_c = condition_sides(cond)
            s_all = metrics.score_trials(
                trials, embeddings[(role, test_c)], embeddings[(role, enrol_c)]
            )
            for (set_name, gender), idx in trials.groupby(
                ["set", "gender"], sort=True
            ).groups.items():
                sel = trials.index.get_indexer(idx)
                target = trials["target"].to_numpy()[sel] == 1
                tar, non = s_all[sel][target], s_all[sel][~target]
                low, high = metrics.eer_bootstrap_ci(
                    tar, non, n_boot=n_boot, confidence=confidence, seed=seed
                )
                paper, paper_set = paper_eer(set_name, gender, role, cond)
                value = metrics.eer(tar, non)
                rows.append(
                    {
                        "set": set_name,
                        "gender": gender,
                        "encoder": role,
                        "encoder_name": encoder_name,
                        "condition": cond,
                        "eer": value,
                        "eer_kaldi": metrics.eer_kaldi(tar, non),
                        "ci_low": low,
                        "ci_high": high,
                        "min_dcf": metrics.min_dcf(tar, non, p_target=p_target),
                        "n_target": int(tar.size),
                        "n_nontarget": int(non.size),
                        "paper_eer": paper,
                        "diff_eer": value - paper,
                        "paper_set": paper_set,
                    }
                )
                scores[(set_name, gender, role, cond)] = (tar, non)
    return pd.DataFrame(rows), scores


def _fmt(v: float, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return f"{v:.{digits}f}"


def _condition_cells(grp: pd.DataFrame, conds: list[str], cell) -> list[str]:
    """One Markdown cell per condition: ``cell(row)`` for the condition's first row, else a dash."""
    cells = []
    for cond in conds:
        rows = grp[grp["condition"] == cond]
        cells.append("–" if rows.empty else cell(rows.iloc[0]))
    return cells


def _table1_cell(r) -> str:
    cell = f"{_fmt(r.eer)} [{_fmt(r.ci_low, 1)}, {_fmt(r.ci_high, 1)}]"
    if not math.isnan(r.paper_eer):
        cell += f" (paper {_fmt(r.paper_eer)}, Δ {r.diff_eer:+.2f})"
    return cell


def _table2_cell(r) -> str:
    cell = _fmt(r.value)
    if not (isinstance(r.paper_value, float) and math.isnan(r.paper_value)):
        cell += f" ({_fmt(r.paper_value)})"
    return cell


def table1_markdown(table: pd.DataFrame) -> str:
    """The paper's layout: a row per (set, gender, encoder), a column per condition, 'ours (paper)'."""
    conds = list(dict.fromkeys(table["condition"]))
    head = "| set | gender | encoder | " + " | ".join(conds) + " |"
    lines = [head, "|" + "---|" * (3 + len(conds))]
    for (set_name, gender, role, enc), grp in table.groupby(
        ["set", "gender", "encoder", "encoder_name"], sort=False
    ):
        cells = _condition_cells(grp, conds, _table1_cell)
        lines.append(f"| {set_name} | {gender} | {role} ({enc}) | " + " | ".join(cells) + " |")
    notes = sorted({p for p in table["paper_set"] if p and "not in the paper" in p})
    text = (
        "\n".join(lines) + "\n\nEER % (ROC-interpolated) [bootstrap CI]; (paper value, difference)."
    )
    if notes:
        text += (
            " Paper numbers come from its test-clean rows: this evaluation set is not in the paper."
        )
    text += f" Paper encoders: white box {PAPER_ENCODERS['whitebox']}, black box {PAPER_ENCODERS['blackbox']}.\n"
    return text


# --- Table 2 --------------------------------------------------------------------------------

QUALITY_COLUMNS = ("pesq_nb_raw", "pesq_wb", "snr_db")


def quality_scores(
    ref_paths: Mapping[str, Path],
    test_paths: Mapping[str, Mapping[str, Path]],
    cache_path: str | Path,
    pitch_extractors: Sequence[str] = ("praat",),
    progress: bool = True,
) -> pd.DataFrame:
    """Per-utterance PESQ (raw NB, WB), SNR and pitch correlation of each condition against ``ref``.

    Args:
        ref_paths: ``utt_id -> original audio``.
        test_paths: ``condition -> {utt_id -> audio}``.
        cache_path: CSV cache keyed by (condition, utt_id, sha256 of both files): a re-run
            recomputes only utterances whose audio changed.

    A PESQ failure (e.g. no speech found) is recorded as NaN, for the caller to count. The
    reference's F0 track is extracted once per utterance and reused across conditions.
    """
    cache_path = Path(cache_path)
    cols = [*QUALITY_COLUMNS, *(f"pitch_{e}" for e in pitch_extractors)]
    known = {}
    if cache_path.exists():
        for rec in pd.read_csv(cache_path, dtype={"utt_id": str}).to_dict("records"):
            known[(rec["condition"], rec["utt_id"], rec["ref_sha256"], rec["test_sha256"])] = rec

    def save() -> None:
        with atomic_path(cache_path) as tmp:
            pd.DataFrame(list(known.values())).to_csv(tmp, index=False)

    rows, new = [], 0
    utts = sorted(set().union(*(set(p) for p in test_paths.values())))
    for utt in tqdm(utts, desc="quality", disable=not progress):
        ref_sha = sha256_file(ref_paths[utt])
        ref, ref_f0 = None, {}
        for cond, paths in test_paths.items():
            if utt not in paths:
                continue
            key = (cond, utt, ref_sha, sha256_file(paths[utt]))
            rec = known.get(key)
            if rec is None or any(
                c not in rec or (c.startswith("pitch") and pd.isna(rec[c])) for c in cols
            ):
                ref = load_audio(ref_paths[utt]) if ref is None else ref
                test = load_audio(paths[utt])
                rec = dict(
                    zip(("condition", "utt_id", "ref_sha256", "test_sha256"), key, strict=True)
                )
                for name, fn in (
                    ("pesq_nb_raw", metrics.pesq_nb_raw),
                    ("pesq_wb", metrics.pesq_wb),
                ):
                    try:
                        rec[name] = fn(ref, test)
                    except ValueError:
                        rec[name] = math.nan
                rec["snr_db"] = metrics.snr_db(ref, test)
                for e in pitch_extractors:
                    if e not in ref_f0:
                        ref_f0[e] = metrics.f0_track(ref, extractor=e)
                    rec[f"pitch_{e}"] = metrics.pitch_track_correlation(
                        ref_f0[e], metrics.f0_track(test, extractor=e)
                    )
                known[key] = rec
                new += 1
                if new % 25 == 0:  # an interrupted run keeps what it computed
                    save()
            rows.append(rec)
    if new:
        save()
    return pd.DataFrame(rows)[["condition", "utt_id", *cols]]


def table2_rows(
    quality: pd.DataFrame, wer: Mapping[str, float], pitch_extractors: Sequence[str]
) -> pd.DataFrame:
    """Long Table 2: ``metric, condition, value, paper_value, diff, n`` (means over utterances)."""
    rows = []

    def add(metric: str, cond: str, value: float, n: int) -> None:
        paper = PAPER_TABLE2.get((metric, cond), math.nan)
        diff = value - paper if math.isfinite(value) and math.isfinite(paper) else math.nan
        rows.append(
            {
                "metric": metric,
                "condition": cond,
                "value": value,
                "paper_value": paper,
                "diff": diff,
                "n": n,
            }
        )

    for cond, grp in quality.groupby("condition", sort=False):
        add("PESQ", cond, float(grp["pesq_nb_raw"].mean()), int(grp["pesq_nb_raw"].notna().sum()))
        add("PESQ-WB", cond, float(grp["pesq_wb"].mean()), int(grp["pesq_wb"].notna().sum()))
        snr = grp["snr_db"].astype(float)
        add(
            "SNR",
            cond,
            math.inf if np.isinf(snr).all() else float(snr[np.isfinite(snr)].mean()),
            len(snr),
        )
        if cond in wer:
            add("WER", cond, float(wer[cond]), -1)
        for i, e in enumerate(pitch_extractors):
            suffix = "" if i == 0 else f" ({e})"
            p = grp[f"pitch_{e}"].astype(float)
            add(f"P-Mean{suffix}", cond, float(p.mean()), len(p))
            add(f"P-Std{suffix}", cond, float(p.std(ddof=0)), len(p))
    order = {m: i for i, m in enumerate(dict.fromkeys(r["metric"] for r in rows))}
    table = pd.DataFrame(rows)
    return table.sort_values("metric", key=lambda s: s.map(order), kind="stable").reset_index(
        drop=True
    )


def table2_markdown(table: pd.DataFrame) -> str:
    """Metrics as rows and conditions as columns, each cell 'ours (paper)'."""
    conds = list(dict.fromkeys(table["condition"]))
    lines = ["| metric | " + " | ".join(conds) + " |", "|" + "---|" * (1 + len(conds))]
    for metric, grp in table.groupby("metric", sort=False):
        cells = _condition_cells(grp, conds, _table2_cell)
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return (
        "\n".join(lines)
        + "\n\nOurs (paper). PESQ: narrow-band raw P.862 (the paper's variant); PESQ-WB: P.862.2 MOS-LQO; "
        "SNR dB against the original; WER %; P-Mean / P-Std: pitch correlation mean and population std.\n"
    )


def write_table(
    table: pd.DataFrame, markdown: str, profile: str, stage: str, stem: str
) -> tuple[Path, Path]:
    """Write ``<stem>.csv`` and ``<stem>.md`` atomically under ``runs/<profile>/<stage>/``."""
    out = config.stage_dir(profile, stage)
    csv_path = write_text(out / f"{stem}.csv", table.to_csv(index=False))
    md_path = write_text(out / f"{stem}.md", markdown)
    return csv_path, md_path


def select_test_utterances(eval_rows: pd.DataFrame, per_speaker: int = 0) -> pd.DataFrame:
    """The first ``per_speaker`` utterances of each eval speaker in manifest order (0 = all).

    Used to fit the CPU budget: trials are then restricted to test utterances in the subset (the
    enrolment side keeps its own utterances), see :func:`restrict_trials`. Manifest order matches
    the quick-look subset of notebooks 10/20 (``EVAL_UTTS_PER_SPEAKER``), so a smaller subset here
    only needs audio those notebooks wrote.
    """
    if per_speaker < 0:
        raise ValueError(f"per_speaker must be >= 0 (0 = all), got {per_speaker}")
    rows = (
        eval_rows
        if per_speaker == 0
        else eval_rows.groupby("speaker", sort=False).head(per_speaker)
    )
    return rows.sort_values("utt_id").reset_index(drop=True)


def restrict_trials(trials: pd.DataFrame, test_utts: Iterable[str]) -> pd.DataFrame:
    """The trials whose test utterance is in ``test_utts``."""
    keep = trials["test"].isin(set(test_utts))
    return trials[keep].reset_index(drop=True)


def embed_conditions(
    encoder,
    paths: Mapping[str, Mapping[str, Path]],
    batch_size: int = 8,
    progress: bool = True,
    cache_dir: str | Path | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """``{condition: {utt_id: path}}`` -> ``{condition: {utt_id: embedding}}`` with one encoder.

    Goes through :func:`spkadv.encoders.embed.embed_files`, whose cache is keyed by file content: audio
    that did not change since the last run is not embedded again.
    """
    out = {}
    for cond, by_utt in paths.items():
        utts = sorted(by_utt)
        emb = embed_files(
            encoder,
            [by_utt[u] for u in utts],
            cache_dir=cache_dir,
            batch_size=batch_size,
            progress=progress,
        )
        out[cond] = dict(zip(utts, emb, strict=True))
    return out


def frame_markdown(frame: pd.DataFrame, digits: int = 2) -> str:
    """A plain Markdown table of a DataFrame (floats to ``digits`` places, inf as ∞)."""
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    lines = [head, "|" + "---|" * len(frame.columns)]
    for row in frame.itertuples(index=False):
        cells = [_fmt(v, digits) if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
