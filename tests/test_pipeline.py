"""The papermill orchestrator on tiny stand-in notebooks: order, resume, failure, lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from spkadv.base import config
from spkadv.base.fileio import read_json
from spkadv.run import pipeline

from .conftest import write_notebook

STAGE_CODE = """
from spkadv.base.config import stage_dir, write_metrics
import os, time
out = stage_dir(PROFILE, "{stem}")
(out / "ran.txt").open("a").write("x")
time.sleep(float(os.environ.get("SLOW_STAGE_{stem}", "0")))
if FAIL:
    raise ValueError("boom in {stem}")
write_metrics(PROFILE, "{stem}", {{"value": VALUE}})
"""


def make_notebook(path: Path, stem: str) -> None:
    params = (
        'PROFILE = "smoke"  # profile\nVALUE = 1  # a number\nFAIL = False  # fail on purpose\n'
    )
    write_notebook(path, params, STAGE_CODE.format(stem=stem))


LIBRARY = "library-under-test"  # the package digest the tests pin (see project)
PINNED_RUN = (
    "import sys; from spkadv.run import pipeline; "
    f"pipeline.package_digest = lambda root=None: {LIBRARY!r}; "
    "sys.exit(pipeline.main(sys.argv[1:]))"
)


@pytest.fixture
def project(tmp_path: Path, tmp_runs: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    # a fixed library digest: editing lib/spkadv while these tests run must not rerun stages
    monkeypatch.setattr(pipeline, "package_digest", lambda root=None: LIBRARY)
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for stem in ("00_first", "10_second"):
        make_notebook(notebooks / f"{stem}.ipynb", stem)
    profile = tmp_path / "tiny.yaml"
    profile.write_text("VALUE: 7  # a number\n")
    return {"notebooks": notebooks, "profile": profile, "runs": tmp_runs / "tiny"}


def runs_of(project: dict, stem: str) -> int:
    return len((project["runs"] / stem / "ran.txt").read_text())


def test_runs_in_order_and_writes_summary(project):
    summary = pipeline.run(str(project["profile"]), notebooks=project["notebooks"], progress=False)
    assert list(summary["stages"]) == ["00_first", "10_second"]
    assert all(s["status"] == "ok" for s in summary["stages"].values())
    assert summary["stages"]["10_second"]["metrics"] == {"value": 7}
    on_disk = read_json(project["runs"] / "summary.json")
    assert on_disk["stages"]["00_first"]["seconds"] > 0
    assert (project["runs"] / "00_first" / "00_first.ipynb").exists()


def test_complete_stages_are_skipped_until_forced(project):
    pipeline.run(str(project["profile"]), notebooks=project["notebooks"], progress=False)
    summary = pipeline.run(str(project["profile"]), notebooks=project["notebooks"], progress=False)
    assert {s["status"] for s in summary["stages"].values()} == {"skipped"}
    assert runs_of(project, "00_first") == 1
    pipeline.run(
        str(project["profile"]),
        only=["10"],
        force=True,
        notebooks=project["notebooks"],
        progress=False,
    )
    assert runs_of(project, "00_first") == 1 and runs_of(project, "10_second") == 1  # fresh folder
    assert len(list((project["runs"] / ".previous").iterdir())) == 1


def test_changed_parameters_rerun_the_stage_and_those_after(project):
    pipeline.run(str(project["profile"]), notebooks=project["notebooks"], progress=False)
    project["profile"].write_text("VALUE: 8  # changed\n")
    summary = pipeline.run(str(project["profile"]), notebooks=project["notebooks"], progress=False)
    assert summary["stages"]["10_second"]["metrics"] == {"value": 8}
    # the stage starts clean (no stale checkpoints), and the old outputs are kept aside
    assert runs_of(project, "00_first") == 1
    previous = sorted((project["runs"] / ".previous").iterdir())
    assert [p.name.split("-")[0] for p in previous] == ["00_first", "10_second"]
    assert (previous[0] / "ran.txt").read_text() == "x"
    assert read_json(previous[1] / "metrics.json") == {"value": 7}


def test_failure_names_stage_and_cell_and_keeps_earlier_outputs(project):
    project["profile"].write_text("VALUE: 7  # a number\n# --- 10_second ---\n")
    nb = project["notebooks"] / "10_second.ipynb"
    data = json.loads(nb.read_text())
    data["cells"][0]["source"] = data["cells"][0]["source"].replace("FAIL = False", "FAIL = True")
    nb.write_text(json.dumps(data))
    with pytest.raises(
        pipeline.PipelineError, match=r"10_second failed in cell 2 .*boom in 10_second"
    ):
        pipeline.run(str(project["profile"]), notebooks=project["notebooks"], progress=False)
    summary = read_json(project["runs"] / "summary.json")
    assert summary["stages"]["10_second"]["status"] == "failed"
    assert summary["stages"]["00_first"]["status"] == "ok"
    assert (project["runs"] / "00_first" / "metrics.json").exists()
    assert (project["runs"] / "10_second" / "10_second.failed.ipynb").exists()


def test_undeclared_profile_key_stops_before_running(project):
    project["profile"].write_text("VALUE: 7  # ok\nVALEU: 3  # typo\n")
    with pytest.raises(pipeline.PipelineError, match="VALEU"):
        pipeline.run(str(project["profile"]), notebooks=project["notebooks"], progress=False)


def test_unknown_notebook_name_is_refused(project):
    with pytest.raises(pipeline.PipelineError, match="unknown notebook"):
        pipeline.run(
            str(project["profile"]), only=["99"], notebooks=project["notebooks"], progress=False
        )


def test_second_pipeline_on_same_profile_is_refused(project):
    lock = project["runs"] / ".pipeline.lock"
    with pipeline.ProfileLock(lock):
        with pytest.raises(pipeline.PipelineError, match="another pipeline is running"):
            pipeline.run(str(project["profile"]), notebooks=project["notebooks"], progress=False)
    pipeline.run(str(project["profile"]), notebooks=project["notebooks"], progress=False)


def test_killed_run_resumes_without_redoing_finished_stages(project):
    env = dict(os.environ, TQDM_DISABLE="1", SLOW_STAGE_10_second="120")
    cmd = [
        sys.executable,
        "-c",
        PINNED_RUN,
        "--profile",
        str(project["profile"]),
        "--notebooks",
        str(project["notebooks"]),
    ]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    marker = project["runs"] / "10_second" / "ran.txt"
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), "the second stage never started"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (project["runs"] / "10_second" / "metrics.json").exists()
    summary = pipeline.run(str(project["profile"]), notebooks=project["notebooks"], progress=False)
    assert summary["stages"]["00_first"]["status"] == "skipped"
    assert summary["stages"]["10_second"]["status"] == "ok"
    # resumed in place: what the killed run wrote (its checkpoints, in a real stage) is still there
    assert runs_of(project, "00_first") == 1 and runs_of(project, "10_second") == 2
    assert not (project["runs"] / ".previous").exists()


def test_study_reading_the_whole_profile_reruns_when_an_undeclared_key_changes(
    project, tmp_path, monkeypatch
):
    """A study notebook that loads the profile itself depends on keys it does not declare."""
    (tmp_path / "params").mkdir()
    project["profile"] = project["profile"].rename(tmp_path / "params" / "tiny.yaml")
    monkeypatch.setenv("SPKADV_ROOT", str(tmp_path))  # where config.load_profile("tiny") looks
    code = (
        "from spkadv.base import config\n"
        "PARAMS = config.load_profile(PROFILE)\n"
        'out = config.stage_dir(PROFILE, "90_study")\n'
        '(out / "ran.txt").open("a").write("x")\n'
        'config.write_metrics(PROFILE, "90_study", {"value": PARAMS["VALUE"]})\n'
    )
    (project["notebooks"] / "studies").mkdir()
    study = project["notebooks"] / "studies" / "90_study.ipynb"
    write_notebook(study, 'PROFILE = "smoke"  # profile\n', code)
    run = lambda: pipeline.run(  # noqa: E731
        str(project["profile"]), only=["90"], notebooks=project["notebooks"], progress=False
    )
    run()
    assert run()["stages"]["90_study"]["status"] == "skipped"
    project["profile"].write_text("VALUE: 9  # read by the study, declared by 00/10 only\n")
    assert run()["stages"]["90_study"]["metrics"] == {"value": 9}
    assert runs_of(project, "90_study") == 1  # a fresh folder; the old one moved aside


def test_studies_live_in_their_folder_and_run_only_when_named(project):
    studies = project["notebooks"] / "studies"
    studies.mkdir()
    make_notebook(studies / "90_study.ipynb", "90_study")
    summary = pipeline.run(str(project["profile"]), notebooks=project["notebooks"], progress=False)
    assert list(summary["stages"]) == ["00_first", "10_second"]
    summary = pipeline.run(
        str(project["profile"]), start="10", notebooks=project["notebooks"], progress=False
    )
    assert "90_study" not in summary["stages"]
    paper_environment = dict(summary["environment"])
    assert "finished" in paper_environment
    summary = pipeline.run(
        str(project["profile"]), only=["90"], notebooks=project["notebooks"], progress=False
    )
    assert summary["stages"]["90_study"]["metrics"] == {"value": 7}
    # a study records its own environment; the run's (what made the paper's stages) stays
    assert summary["environment"] == paper_environment
    assert summary["stages"]["90_study"]["environment"]["started"] >= paper_environment["started"]
    assert (
        runs_of(project, "90_study") == 1
    )  # the run folder keeps the stem: runs/<profile>/90_study/
    assert [p.stem for p in pipeline.discover(project["notebooks"])] == [
        "00_first",
        "10_second",
        "90_study",
    ]
    make_notebook(studies / "10_second.ipynb", "10_second")
    with pytest.raises(pipeline.PipelineError, match="named twice"):
        pipeline.run(str(project["profile"]), notebooks=project["notebooks"], progress=False)


def test_the_repository_studies_are_found_apart_from_the_stages():
    paths = pipeline.discover(config.notebooks_dir())
    stages = [p.stem for p in paths if not pipeline.is_study(p)]
    studies = [p.stem for p in paths if pipeline.is_study(p)]
    assert stages == list(config.NOTEBOOK_STAGES) and studies == list(config.STUDY_STAGES)
    assert all(
        p.parent == config.notebooks_dir() / config.STUDIES_DIR
        for p in paths
        if pipeline.is_study(p)
    )
    planned = pipeline.plan("smoke", config.notebooks_dir())
    assert [s.stem for s in planned] == list(config.NOTEBOOK_STAGES)


def test_kernel_starts_without_the_plain_tcp_warning(project, capfd):
    """The stage kernels get CurveZMQ keys: no "running over TCP without encryption" per stage."""
    pipeline.run(str(project["profile"]), notebooks=project["notebooks"], progress=False)
    err = capfd.readouterr().err
    assert "without encryption" not in err
    assert pipeline.kernel_config().KernelManager.transport_encryption in ("auto", "disabled")


def test_library_change_makes_finished_stages_stale(project, monkeypatch):
    calls = []

    def digest(root=pipeline.PACKAGE_DIR):
        calls.append(root)
        return LIBRARY

    monkeypatch.setattr(pipeline, "package_digest", digest)
    pipeline.run(str(project["profile"]), notebooks=project["notebooks"], progress=False)
    assert len(calls) == 1  # once per run, not once per stage
    monkeypatch.setattr(pipeline, "package_digest", lambda root=None: "library-v2")
    summary = pipeline.run(str(project["profile"]), notebooks=project["notebooks"], progress=False)
    assert {s["status"] for s in summary["stages"].values()} == {"ok"}
    assert runs_of(project, "00_first") == 1 and runs_of(project, "10_second") == 1  # fresh
    assert len(list((project["runs"] / ".previous").iterdir())) == 2


def test_package_digest_follows_sources_and_package_data(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub" / "templates").mkdir(parents=True)
    (package / "__pycache__").mkdir()
    (package / "mod.py").write_text("X = 1\n")
    (package / "sub" / "templates" / "page.html.j2").write_text("<p>{{ x }}</p>\n")
    (package / "sub" / "assets.json").write_text("{}\n")
    first = pipeline.package_digest(package)
    (package / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"compiled")
    (package / "notes.md").write_text("not package data\n")
    assert pipeline.package_digest(package) == first
    (package / "mod.py").write_text("X = 2\n")
    second = pipeline.package_digest(package)
    assert second != first
    (package / "sub" / "assets.json").write_text('{"a": 1}\n')
    assert pipeline.package_digest(package) not in (first, second)
    (package / "sub" / "assets.json").write_text("{}\n")
    assert pipeline.package_digest(package) == second
    (package / "mod.py").rename(package / "other.py")  # same content, another module
    assert pipeline.package_digest(package) != second


def test_the_library_digest_covers_the_installed_package():
    digest = pipeline.package_digest()
    assert len(digest) == 16 and int(digest, 16) >= 0
    assert (pipeline.PACKAGE_DIR / "run" / "pipeline.py").is_file()


# Notebook 20 protects the first EVAL_UTTS_PER_SPEAKER utterances of each speaker, 30/40/50/60 score
# the first EVAL_TEST_UTTS_PER_SPEAKER of them: fewer than the smoke corpus' utterances per speaker.
SUBSET = {"EVAL_UTTS_PER_SPEAKER": 3, "EVAL_TEST_UTTS_PER_SPEAKER": 2}


@pytest.mark.slow
def test_stage_chain_on_an_eval_subset_smaller_than_the_eval_set(
    tmp_path: Path, tmp_runs: Path, monkeypatch: pytest.MonkeyPatch
):
    """Every stage asks only for what the stages before it wrote when 20 protects a subset.

    The smoke profile protects and scores every eval utterance, so a stage that asks for the whole
    eval set passes there and fails only on a profile that protects a subset (as speechocean762
    does). This runs the paper's stages 00-60 on the smoke settings with a smaller subset.
    """
    import yaml
    from spkadv.data import manifest as data

    values = config.load_profile("smoke")
    assert max(SUBSET.values()) < values["SYNTH_UTTERANCES_PER_SPEAKER"]
    values.update(SUBSET)
    profile = tmp_path / "subset.yaml"
    profile.write_text(yaml.safe_dump(values, sort_keys=False))
    notebooks = config.notebooks_dir()
    monkeypatch.setenv("SPKADV_ROOT", str(tmp_path))  # its figures stay out of the repository's
    summary = pipeline.run(str(profile), notebooks=notebooks, progress=False)
    assert list(summary["stages"]) == list(config.NOTEBOOK_STAGES)
    assert {s["status"] for s in summary["stages"].values()} == {"ok"}
    manifest = data.read_manifest(data.manifest_path("subset"))
    n_eval = int((manifest["subset"] == "eval").sum())
    n_speakers = manifest.loc[manifest["subset"] == "eval", "speaker"].nunique()
    protected = summary["stages"]["20_joint_training"]["metrics"]["eval_utterances"]
    assert protected == SUBSET["EVAL_UTTS_PER_SPEAKER"] * n_speakers < n_eval
    attackers = summary["stages"]["60_attackers"]["metrics"]
    assert attackers["n_test_utterances"] == SUBSET["EVAL_TEST_UTTS_PER_SPEAKER"] * n_speakers
    assert attackers["adaptive_trials"] <= attackers["n_trials"]
