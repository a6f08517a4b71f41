"""Published results: a snapshot of each profile's latest full run, and the pages made from it.

``make results`` (``python -m spkadv.report.results``) does two things:

1. **snapshot**: for each published profile with a finished full run under ``runs/<profile>/``
   (every paper stage 00-60 done), it writes ``docs/results/<profile>.json``: the run's commit,
   machine, thread counts, stage minutes, every stage's ``metrics.json`` and its Markdown tables.
   The snapshot is committed: it is what the published pages are made from.
2. **render**: from the snapshots alone, ``docs/results.md`` (every table of every profile) and the
   generated blocks of ``README.md`` (headline table, run minutes) and ``notebooks/README.md``
   (minutes per notebook), between ``<!-- results:NAME start ... -->`` and
   ``<!-- results:NAME end -->`` markers. Nothing else in those files is touched.

``--check`` renders without writing and fails when a committed page differs from what the
snapshots give (``tests/test_results.py`` does the same), so no figure on those pages is typed.
A pipeline run writes its own page, ``runs/<profile>/results.md``, the same way.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spkadv.base import config
from spkadv.base.fileio import json_text, read_json, write_text
from spkadv.report import runinfo
from spkadv.report.result_pages import (
    PAPER_STAGES,
    PUBLISHED,
    STAGE_TABLES,
    STUDY_TABLES,
    dev_choices,
    frontier_section,
    headline_table,
    minutes_lines,
    notebook_minutes,
    results_page,
)

MARKER = re.compile(
    r"(<!-- results:(?P<name>[\w-]+) start[^>]*-->\n)(?P<body>.*?)(<!-- results:(?P=name) end -->)",
    re.S,
)


class ResultsError(RuntimeError):
    """A run cannot be snapshotted or a page has no place for its generated block."""


def snapshot_dir() -> Path:
    return config.project_root() / "docs" / "results"


def _threads_of(stage_path: Path) -> int | None:
    """The torch thread count a stage ran with, from its log's thread-policy line."""
    log = stage_path / "log.txt"
    if log.exists():
        with log.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if m := re.match(r"torch threads (\d+)", line):
                    return int(m.group(1))
    return None


def _tables_of(stage_path: Path, stem: str) -> dict[str, str]:
    return {
        name: (stage_path / name).read_text(encoding="utf-8").strip()
        for name in STAGE_TABLES.get(stem, ())
        if (stage_path / name).exists()
    }


def collect(profile: str, runs: Path | None = None) -> dict[str, Any]:
    """The snapshot of ``runs/<profile>/``: environment, and per paper stage its minutes, threads,
    metrics and tables. Raises :class:`ResultsError` unless every paper stage finished."""
    root = (runs or config.runs_root()) / profile
    summary_path = root / "summary.json"
    if not summary_path.exists():
        raise ResultsError(f"{summary_path} is missing: run `make reproduce PROFILE={profile}`")
    summary = read_json(summary_path)
    stages: dict[str, Any] = {}
    for stem in PAPER_STAGES:
        entry = summary.get("stages", {}).get(stem, {})
        record_path = root / stem / ".stage.json"
        record = read_json(record_path) if record_path.exists() else {}
        if record.get("status") != "ok" or not (root / stem / "metrics.json").exists():
            raise ResultsError(
                f"{profile}: stage {stem} has not finished ({record.get('status', 'not run')}); "
                f"run `make reproduce PROFILE={profile}` to the end first"
            )
        stages[stem] = {
            "minutes": round((record.get("seconds") or entry.get("seconds") or 0) / 60, 2),
            "threads": _threads_of(root / stem),
            "code": record.get("code"),
            "metrics": read_json(root / stem / "metrics.json"),
            "tables": _tables_of(root / stem, stem),
        }
    codes = {s["code"] for s in stages.values()}
    if len(codes) != 1:
        raise ResultsError(
            f"{profile}: the stages ran with different library code ({sorted(map(str, codes))}); "
            "rerun the pipeline so that one code version made every stage"
        )
    env = dict(summary.get("environment", {}))
    return {
        "profile": profile,
        "environment": env,
        "total_minutes": round(sum(s["minutes"] for s in stages.values()), 1),
        "stages": stages,
        "studies": _studies_of(root),
    }


def _studies_of(root: Path) -> dict[str, Any]:
    """The finished studies of a run folder (each with the code digest that ran it)."""
    found = {}
    for stem, tables in STUDY_TABLES.items():
        record_path = root / stem / ".stage.json"
        record = read_json(record_path) if record_path.exists() else {}
        if record.get("status") == "ok" and (root / stem / "metrics.json").exists():
            found[stem] = {
                "minutes": round((record.get("seconds") or 0) / 60, 2),
                "threads": _threads_of(root / stem),
                "code": record.get("code"),
                "metrics": read_json(root / stem / "metrics.json"),
                "tables": {
                    n: (root / stem / n).read_text(encoding="utf-8").strip()
                    for n in tables
                    if (root / stem / n).exists()
                },
            }
    return found


def with_checkout(snap: dict[str, Any], checkout: Path) -> dict[str, Any]:
    """Fill a snapshot's commit from the clean checkout that ran it (for runs whose summary
    predates the recorded environment); its library must be the code every stage recorded."""
    info = runinfo.git_state(checkout)
    if info["dirty"]:
        raise ResultsError(f"{checkout} has local changes: its commit does not name the code")
    code = next(iter(snap["stages"].values()))["code"]
    if runinfo.package_digest(checkout / "lib" / "spkadv") != code:
        raise ResultsError(f"the library in {checkout} is not the code the run recorded ({code})")
    env = {**runinfo.machine(), **snap["environment"], "commit": info["commit"], "dirty": False}
    env["machine_read"] = "when the snapshot was taken, on the machine of the run"
    return {**snap, "environment": env}


def load_snapshots(directory: Path | None = None) -> dict[str, dict[str, Any]]:
    directory = directory or snapshot_dir()
    found = {p.stem: read_json(p) for p in sorted(directory.glob("*.json"))}
    return {p: found[p] for p in PUBLISHED if p in found}


def load_frontiers(directory: Path | None = None) -> dict[str, dict[str, Any]]:
    """The published speed / strength frontiers (``docs/results/frontier/<profile>.json``)."""
    directory = (directory or snapshot_dir()) / "frontier"
    found = {p.stem: read_json(p) for p in sorted(directory.glob("*.json"))}
    return {p: found[p] for p in PUBLISHED if p in found}


FRONTIER_KEYS = ("profile", "points", "targets", "environment", "utterances", "audio_seconds")


def _project_paths(data: Mapping[str, Any]) -> dict[str, str]:
    """The result's file paths as the project names them (``runs/<profile>/...``,
    ``figures/...``), not as they lay on the machine that measured."""
    out = {}
    profile = str(data["profile"])
    for key, anchor, prefix in (("model", f"/{profile}/", "runs"), ("predictor", f"/{profile}/", "runs"),
                                ("figure", "/figures/", "")):  # fmt: skip
        value = str(data.get(key) or "")
        if value.startswith("/") and anchor in value:
            rest = value[value.index(anchor) + 1 :]
            out[key] = f"{prefix}/{rest}" if prefix else rest
    return out


def publish_frontier(path: Path) -> str:
    """Copy a ``benchmarks.bench_frontier`` result into ``docs/results/frontier/<profile>.json``."""
    try:
        data = read_json(path)
    except (OSError, ValueError) as err:
        raise ResultsError(f"{path}: cannot read a frontier result ({err})") from err
    missing = [k for k in FRONTIER_KEYS if k not in data]
    if missing:
        raise ResultsError(
            f"{path} lacks {missing}: is it written by `python -m benchmarks.bench_frontier`?"
        )
    if data.get("quick"):
        raise ResultsError(f"{path} is a --quick run: publish a full one")
    data = {**data, **_project_paths(data)}
    write_text(snapshot_dir() / "frontier" / f"{data['profile']}.json", json_text(data))
    return str(data["profile"])


def fill_blocks(text: str, blocks: Mapping[str, str], where: str) -> str:
    """``text`` with each named generated block replaced; every block must have its markers."""
    missing = set(blocks) - {m.group("name") for m in MARKER.finditer(text)}
    if missing:
        raise ResultsError(f"{where} has no markers for {sorted(missing)}")
    return MARKER.sub(
        lambda m: (
            m.group(1) + blocks[m.group("name")].strip() + "\n" + m.group(4)
            if m.group("name") in blocks
            else m.group(0)
        ),
        text,
    )


def pages(root: Path, snaps: Mapping[str, Mapping[str, Any]], ci: Mapping[str, Any] | None):
    """{path: new text} of every generated page under ``root``."""
    readme, nb_readme = root / "README.md", root / "notebooks" / "README.md"
    performance = root / "docs" / "performance.md"
    return {
        root / "docs" / "results.md": results_page(snaps),
        readme: fill_blocks(
            readme.read_text(encoding="utf-8"),
            {
                "headline": headline_table(snaps),
                "minutes": minutes_lines(snaps, ci),
                "dev-choices": dev_choices(snaps),
            },
            "README.md",
        ),
        nb_readme: fill_blocks(
            nb_readme.read_text(encoding="utf-8"),
            {"notebook-minutes": notebook_minutes(snaps)},
            "notebooks/README.md",
        ),
        performance: fill_blocks(
            performance.read_text(encoding="utf-8"),
            {"frontier": frontier_section(load_frontiers(root / "docs" / "results"))},
            "docs/performance.md",
        ),
    }


def stale_pages(root: Path | None = None) -> list[Path]:
    """The committed pages that differ from what the committed snapshots give."""
    root = root or config.project_root()
    snaps = load_snapshots(root / "docs" / "results")
    ci = _ci(root / "docs" / "results")
    return [
        path
        for path, text in pages(root, snaps, ci).items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    ]


def _ci(directory: Path) -> dict[str, Any] | None:
    path = directory / "ci" / "timing.json"
    return read_json(path) if path.exists() else None


def publish(
    profiles: Sequence[str], runs: Path | None, checkout: Path | None, note: str = ""
) -> list[str]:
    """Snapshot the finished runs of ``profiles`` (those without a full run are left as they are)."""
    done = []
    for p in profiles:
        try:
            snap = collect(p, runs)
        except ResultsError as err:
            print(f"{p}: not published ({err})", flush=True)
            continue
        if "commit" not in snap["environment"]:
            if checkout is None:
                print(f"{p}: not published (the run recorded no commit; give --checkout)")
                continue
            snap = with_checkout(snap, checkout)
        if note:
            snap["environment"]["note"] = note
        write_text(snapshot_dir() / f"{p}.json", json_text(snap))
        done.append(p)
    return done


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spkadv.report.results", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--profile", action="append", help="snapshot only these (default: every published one)"
    )
    parser.add_argument("--runs", type=Path, help="runs folder (default: runs/ or SPKADV_RUNS)")
    parser.add_argument(
        "--checkout", type=Path, help="the clean checkout that made a run recording no commit"
    )
    parser.add_argument(
        "--ci-timing", type=Path, help="a timing.json written by .ci/run, to publish"
    )
    parser.add_argument(
        "--note", default="", help="a remark shown beside the run's figures (e.g. other load)"
    )
    parser.add_argument(
        "--render-only", action="store_true", help="do not snapshot; render the pages"
    )
    parser.add_argument(
        "--frontier",
        type=Path,
        action="append",
        help="a runs/bench/frontier-<profile>.json to publish (docs/performance.md)",
    )
    parser.add_argument("--check", action="store_true", help="fail when a committed page is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_pages()
        for path in stale:
            print(
                f"stale: {path} differs from what `make results` makes of docs/results/",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for path in args.frontier or []:  # a frontier alone: the run snapshots stay as they are
        try:
            print(f"published the {publish_frontier(path)} frontier", flush=True)
        except ResultsError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    if not args.render_only and not args.frontier:
        profiles = args.profile or [p for p in PUBLISHED if p != "smoke"]
        publish(profiles, args.runs, args.checkout, args.note)
    if args.ci_timing:
        (snapshot_dir() / "ci").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.ci_timing, snapshot_dir() / "ci" / "timing.json")
    root = config.project_root()
    snaps = load_snapshots()
    for path, text in pages(root, snaps, _ci(snapshot_dir())).items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            write_text(path, text)
            print(f"wrote {path.relative_to(root)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
