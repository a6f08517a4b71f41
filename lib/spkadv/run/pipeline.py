"""Run the numbered notebooks in order with papermill: ``python -m spkadv.run.pipeline --profile NAME``.

The stages are ``notebooks/NN_name.ipynb``; the studies, in ``notebooks/studies/``, run only when
named with ``--only``. The terminal gets one line per stage (and the kernel's progress bars and
warnings); a stage's parameters, thread policy and stderr go to its ``log.txt``.

Each stage writes under ``runs/<profile>/<stem>/``; a stage whose last run succeeded with the same
parameters, notebook and library code (every source and package-data file of ``spkadv``) is
skipped unless ``--force``. A stage interrupted or failed with the same ones resumes in place (its
notebook picks up its checkpoints); a stage rerun after any of them changed, or with ``--force``,
first has its earlier outputs moved to ``runs/<profile>/.previous/`` (never deleted).
Once a stage runs, the stages after it run too, since they read its outputs. ``runs/<profile>/summary.json`` records
per stage the status, the seconds it took and the metrics its notebook wrote. A lock file refuses
a second pipeline on the same profile while one runs.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import papermill
import zmq
from papermill.exceptions import PapermillExecutionError
from traitlets.config import Config

from spkadv.base import config, threads
from spkadv.base.fileio import read_json, write_json, write_text
from spkadv.evaluation import targets
from spkadv.report import result_pages, results, runinfo
from spkadv.run import batchlog

STAGE_RECORD = ".stage.json"
KERNEL = "python3"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # lib/spkadv


def kernel_config() -> Config:
    """The stage kernels' manager settings: CurveZMQ keys for the kernel's local TCP sockets.

    jupyter_client provisions them when the kernelspec declares ``supported_encryption: curve``
    (ipykernel's does); the kernel then encrypts its sockets instead of warning at every start
    that they are plain text. Without libzmq's Curve support the sockets stay plain.
    """
    policy = "auto" if zmq.has("curve") else "disabled"
    return Config({"KernelManager": {"transport_encryption": policy}})


class PipelineError(RuntimeError):
    """The pipeline cannot start or a stage failed."""


@dataclass
class Stage:
    stem: str
    notebook: Path
    declared: dict[str, Any]
    parameters: dict[str, Any] = field(default_factory=dict)
    # The whole profile, for notebooks that read it themselves (config.load_profile(PROFILE)):
    # their results depend on keys they do not declare (the studies train with the 10/20 blocks).
    profile_values: dict[str, Any] = field(default_factory=dict)

    def key(self, code_digest: str) -> str:
        """The stage's freshness key: its parameters, its notebook and the library's code.

        ``code_digest`` is :func:`package_digest`, computed once per pipeline run.
        """
        blob = json.dumps(self.parameters, sort_keys=True, default=str).encode()
        if self.profile_values:
            blob += json.dumps(self.profile_values, sort_keys=True, default=str).encode()
        digest = hashlib.sha256(blob)
        digest.update(self.notebook.read_bytes())
        digest.update(code_digest.encode())
        return digest.hexdigest()[:16]


def package_digest(root: Path = PACKAGE_DIR) -> str:
    """A hash of the library (:func:`spkadv.report.runinfo.package_digest`)."""
    return runinfo.package_digest(root)


def discover(notebooks: Path) -> list[Path]:
    """The pipeline's notebooks ``NN_name.ipynb``: the stages in ``notebooks/`` by number, then the
    studies in ``notebooks/studies/`` (:func:`spkadv.base.config.notebook_paths`)."""
    found = config.notebook_paths(notebooks)
    if not found:
        raise PipelineError(f"no notebooks named NN_name.ipynb in {notebooks}")
    stems = [p.stem for p in found]
    if twice := sorted({s for s in stems if stems.count(s) > 1}):
        raise PipelineError(f"notebooks named twice in {notebooks} and its studies/: {twice}")
    return found


def is_study(notebook: Path) -> bool:
    """Notebooks in ``notebooks/studies/`` (numbered 90-99) are studies: run with ``--only``,
    never by a whole-pipeline run (nor by ``--from``)."""
    return notebook.parent.name == config.STUDIES_DIR


def select(stems: list[str], only: Sequence[str] | None, start: str | None) -> list[str]:
    """Stages to consider, from ``--only`` (repeatable) or ``--from`` (a stem or its number)."""

    def resolve(name: str) -> str:
        name = Path(name).stem
        matches = [s for s in stems if s == name or s.split("_", 1)[0] == name]
        if not matches:
            raise PipelineError(f"unknown notebook {name!r}; known: {', '.join(stems)}")
        return matches[0]

    if only:
        wanted = {resolve(n) for n in only}
        return [s for s in stems if s in wanted]
    if start:
        first = stems.index(resolve(start))
        return stems[first:]
    return list(stems)


def plan(profile: str, notebooks: Path, only=None, start=None) -> list[Stage]:
    """Build the stages with the profile keys each notebook declares (plus ``PROFILE``)."""
    values = config.load_profile(profile)
    profile_name = Path(profile).stem
    paths = discover(notebooks)
    stems = [p.stem for p in paths]
    chosen = set(select(stems, only, start))
    if not only:  # studies run only when named: they cost far more than the pipeline
        chosen -= {p.stem for p in paths if is_study(p)}
    stages, declared_anywhere = [], set()
    for path in paths:
        declared = config.notebook_parameters(path)
        declared_anywhere |= set(declared)
        if path.stem not in chosen:
            continue
        params = {k: v for k, v in values.items() if k in declared}
        params["PROFILE"] = profile_name
        reads_profile = b"config.load_profile(PROFILE)" in path.read_bytes()
        stages.append(Stage(path.stem, path, declared, params, values if reads_profile else {}))
    undeclared = sorted(set(values) - declared_anywhere)
    if undeclared and not (only or start):
        raise PipelineError(
            f"profile {profile_name!r} holds keys no notebook declares: {', '.join(undeclared)}"
        )
    return stages


def stage_record(stage_path: Path) -> dict[str, Any]:
    """The pipeline's record of a stage's last run (status and freshness key), or {}."""
    try:
        return read_json(stage_path / STAGE_RECORD)
    except (OSError, ValueError):
        return {}


def is_complete(stage_path: Path, key: str) -> bool:
    """Whether the stage's last run succeeded with this freshness key (see :meth:`Stage.key`)."""
    record = stage_record(stage_path)
    return (
        record.get("status") == "ok"
        and record.get("key") == key
        and (stage_path / "metrics.json").exists()
    )


def set_aside(stage_path: Path) -> Path | None:
    """Move a stage's earlier outputs to ``runs/<profile>/.previous/<stem>-<time>/`` (nothing is deleted).

    Used when a stage reruns with other parameters or code, or with ``--force``: its notebook must
    not resume from checkpoints or reuse outputs made with the old ones.
    """
    if not stage_path.exists() or not any(stage_path.iterdir()):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = stage_path.parent / ".previous" / f"{stage_path.name}-{stamp}"
    suffix = 1
    while target.exists():
        target = target.with_name(f"{stage_path.name}-{stamp}-{suffix}")
        suffix += 1
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(stage_path, target)
    return target


class ProfileLock:
    """An exclusive, non-blocking lock on ``runs/<profile>/.pipeline.lock``."""

    def __init__(self, path: Path):
        self.path = path
        self.handle = None

    def __enter__(self) -> ProfileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "unknown"
            self.handle.close()
            raise PipelineError(
                f"another pipeline is running on this profile (lock {self.path}, held by pid {holder}); "
                "wait for it to finish or stop it first"
            ) from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(str(os.getpid()))
        self.handle.flush()
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def _run_stage(stage: Stage, out_dir: Path, progress: bool, note: str = "") -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / f"{stage.stem}.ipynb"
    partial = out_dir / f"{stage.stem}.running.ipynb"
    log_path = out_dir / "log.txt"
    # the parameters and the thread policy head the log; the terminal gets one line per stage
    log_path.write_text(f"parameters: {stage.parameters}\n{note}\n", encoding="utf-8")
    # append mode: the kernel appends its progress bars and warnings to the same file (batchlog)
    with open(log_path, "a", encoding="utf-8") as log:
        try:
            papermill.execute_notebook(
                str(stage.notebook),
                str(partial),
                parameters=stage.parameters,
                kernel_name=KERNEL,
                cwd=str(stage.notebook.parent),
                progress_bar=False,  # the kernel's own bars reach the terminal instead
                log_output=True,
                stdout_file=log,
                stderr_file=log,
                extra_arguments=batchlog.kernel_arguments(log_path, terminal=progress),
                config=kernel_config(),
            )
        except PapermillExecutionError as err:
            failed = out_dir / f"{stage.stem}.failed.ipynb"
            os.replace(partial, failed)
            raise PipelineError(
                f"stage {stage.stem} failed in cell {err.cell_index} of the executed notebook "
                f"(execution count {err.exec_count}): {err.ename}: {err.evalue}\n"
                f"  cell starts: {err.source.strip().splitlines()[0] if err.source.strip() else ''}\n"
                f"  executed notebook: {failed}\n  log: {out_dir / 'log.txt'}"
            ) from None
    os.replace(partial, executed)


def run(
    profile: str,
    only: Sequence[str] | None = None,
    start: str | None = None,
    force: bool = False,
    notebooks: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the pipeline and return the summary (also written to ``runs/<profile>/summary.json``)."""
    notebooks = notebooks or config.notebooks_dir()
    stages = plan(profile, notebooks, only, start)
    profile_name = Path(profile).stem
    root = config.runs_root() / profile_name
    summary_path = root / "summary.json"
    with ProfileLock(root / ".pipeline.lock"):
        code = package_digest()  # once per run: the library does not change under a run
        summary = read_json(summary_path) if summary_path.exists() else {}
        summary.update(profile=profile_name, stages=summary.get("stages", {}))
        rerun_rest = force
        ran_stage = False  # a paper stage (not a study) ran: the run's environment is this one
        for number, stage in enumerate(stages, 1):
            out_dir = config.stage_dir(profile_name, stage.stem)
            key = stage.key(code)
            head = f"[{number}/{len(stages)}] {stage.stem}"
            entry = summary["stages"].get(stage.stem, {})
            if not rerun_rest and is_complete(out_dir, key):
                print(f"{head}: complete, skipped (use --force to rerun)", flush=True)
                entry["status"] = "skipped"
            else:
                rerun_rest = True  # later stages read this one's outputs
                record = stage_record(out_dir)
                if record.get("key") == key and record.get("status") != "ok" and not force:
                    print(f"{head}: resuming an interrupted or failed run in {out_dir}", flush=True)
                elif (moved := set_aside(out_dir)) is not None:
                    print(
                        f"{head}: earlier outputs (other parameters, notebook or library code, "
                        f"or --force) moved to {moved}",
                        flush=True,
                    )
                out_dir = config.stage_dir(profile_name, stage.stem)
                # what made the stages that run now: the commit and the machine (results.md);
                # a study keeps its own, and leaves the environment of the paper's stages alone
                environment = {
                    **runinfo.git_state(config.project_root()),
                    **runinfo.machine(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
                if is_study(stage.notebook):
                    entry["environment"] = environment
                else:
                    summary["environment"] = environment
                    ran_stage = True
                write_json(out_dir / STAGE_RECORD, {"status": "running", "key": key, "code": code})
                began = time.monotonic()
                try:
                    with threads.kernel_environment() as chosen:  # the kernel inherits the policy
                        print(
                            f"{head}: running on {chosen.threads} torch thread(s), "
                            f"log {out_dir / 'log.txt'}",
                            flush=True,
                        )
                        _run_stage(stage, out_dir, progress, chosen.describe())
                except (PipelineError, KeyboardInterrupt) as err:
                    write_json(
                        out_dir / STAGE_RECORD, {"status": "failed", "key": key, "code": code}
                    )
                    entry.update(status="failed", seconds=round(time.monotonic() - began, 1))
                    entry["error"] = str(err) if isinstance(err, PipelineError) else "interrupted"
                    summary["stages"][stage.stem] = entry
                    write_json(summary_path, summary)
                    raise
                seconds = round(time.monotonic() - began, 1)
                write_json(
                    out_dir / STAGE_RECORD,
                    {"status": "ok", "key": key, "code": code, "seconds": seconds},
                )
                entry = {"status": "ok", "seconds": seconds, "threads": chosen.threads}
                if is_study(stage.notebook):
                    entry["environment"] = environment
                figure = result_pages.stage_headline(
                    stage.stem, config.read_metrics(profile_name, stage.stem)
                )
                print(
                    f"{head}: done in {seconds / 60:.1f} min" + (f"; {figure}" if figure else ""),
                    flush=True,
                )
            entry["metrics"] = config.read_metrics(profile_name, stage.stem)
            entry.setdefault("seconds", read_json(out_dir / STAGE_RECORD).get("seconds"))
            entry.pop("error", None)
            summary["stages"][stage.stem] = entry
            write_json(summary_path, summary)
        if ran_stage and "environment" in summary:
            summary["environment"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        summary["total_minutes"] = round(
            sum(s.get("seconds") or 0 for s in summary["stages"].values()) / 60, 2
        )
        write_json(summary_path, summary)
    ran = {s.stem: summary["stages"][s.stem].get("metrics", {}) for s in stages}
    lines = targets.summary_lines(ran)
    if lines:
        met = sum(t.met for m in ran.values() for t in targets.from_metrics(m))
        print(f"targets ({met} of {len(lines)} met):", flush=True)
        print("\n".join(lines), flush=True)
    print(f"summary: {summary_path}", flush=True)
    try:  # a run of every paper stage gets its results page (make results publishes it)
        snap = results.collect(profile_name)
    except results.ResultsError:
        return summary
    page = write_text(root / "results.md", results.results_page({profile_name: snap}))
    print(f"results: {page} (publish with `make results`)", flush=True)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spkadv.run.pipeline", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--profile", default="default", help="params/<NAME>.yaml or a YAML path")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NB",
        help="run only this notebook (stem or number); repeatable",
    )
    parser.add_argument(
        "--from", dest="start", metavar="NB", help="start at this notebook (stem or number)"
    )
    parser.add_argument("--force", action="store_true", help="rerun stages even when complete")
    parser.add_argument(
        "--report",
        action="store_true",
        help="then write runs/<profile>/report/index.html (as `make report`)",
    )
    parser.add_argument(
        "--notebooks", type=Path, help="notebook folder (default: the repository's notebooks/)"
    )
    args = parser.parse_args(argv)
    if args.only and args.start:
        parser.error("use either --only or --from, not both")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("papermill").setLevel(logging.WARNING)
    try:
        run(
            args.profile,
            args.only,
            args.start,
            args.force,
            args.notebooks,
            progress=not os.environ.get("TQDM_DISABLE"),
        )
        if args.report:
            # imported only when asked for: the report pulls in nbconvert and its templates, a
            # few seconds of start-up that a pipeline run without --report does not need
            from spkadv.report import build as report

            try:
                print(f"report: {report.build(Path(args.profile).stem)}", flush=True)
            except report.ReportError as err:
                print(f"error: {err}", file=sys.stderr)
                return 1
    except (PipelineError, config.ProfileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "interrupted: finished stages are kept; run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
