"""Published results: snapshots of full runs and the pages generated from them."""

from __future__ import annotations

import subprocess

import pytest
from spkadv.base.fileio import read_json, write_json
from spkadv.evaluation import targets
from spkadv.report import result_pages, results, runinfo


def fake_run(runs, profile="default", code="c0de", stop=None, threads=2):
    """A finished run of every paper stage (or up to ``stop``, which is left unfinished)."""
    root = runs / profile
    for i, stem in enumerate(results.PAPER_STAGES):
        stage = root / stem
        stage.mkdir(parents=True)
        status = "running" if stem == stop else "ok"
        write_json(
            stage / ".stage.json", {"status": status, "code": code, "seconds": 60.0 * (i + 1)}
        )
        metrics = {"eer_recadv": 10.0 + i}
        if stem == "40_table1_eer":
            metrics |= {"eer_whitebox_rec_adv": 14.44, "paper_eer_whitebox_rec_adv": 18.62}
            (stage / "table1.md").write_text("| set | rec-adv |\n|---|---|\n| eval | 14.44 |\n")
        if stem == "20_joint_training":
            metrics |= targets.as_metrics(
                [targets.record("rec-adv >= 4x rec-rec", 3.2, ">= 4", False)]
            )
        write_json(stage / "metrics.json", metrics)
        (stage / "log.txt").write_text(f"parameters: {{}}\ntorch threads {threads} (auto)\n")
        if stem == stop:
            break
    env = {"commit": "abc1234", "dirty": False, "cpu": "Test CPU (AVX2)", "cores": 2}
    write_json(root / "summary.json", {"profile": profile, "environment": env, "stages": {}})
    return root


def test_committed_pages_equal_what_make_results_makes_of_the_snapshots():
    stale = results.stale_pages()
    assert not stale, f"run `make results` (stale: {[str(p) for p in stale]})"


def test_a_snapshot_holds_minutes_threads_metrics_tables_and_environment(tmp_path):
    fake_run(tmp_path)
    snap = results.collect("default", tmp_path)
    assert snap["environment"]["commit"] == "abc1234"
    assert snap["stages"]["10_ssed_baseline"]["minutes"] == 2.0
    assert snap["stages"]["60_attackers"]["threads"] == 2
    assert snap["total_minutes"] == pytest.approx(sum(range(1, 8)))
    assert "14.44" in snap["stages"]["40_table1_eer"]["tables"]["table1.md"]


def test_an_unfinished_run_is_not_snapshotted(tmp_path):
    fake_run(tmp_path, stop="40_table1_eer")
    with pytest.raises(results.ResultsError, match="40_table1_eer has not finished"):
        results.collect("default", tmp_path)
    with pytest.raises(results.ResultsError, match="summary.json is missing"):
        results.collect("speechocean762", tmp_path)


def test_stages_made_by_different_code_are_not_one_run(tmp_path):
    root = fake_run(tmp_path)
    write_json(root / "50_table2_quality" / ".stage.json", {"status": "ok", "code": "other"})
    with pytest.raises(results.ResultsError, match="different library code"):
        results.collect("default", tmp_path)


def test_the_page_shows_the_paper_beside_the_run_and_every_target(tmp_path):
    fake_run(tmp_path)
    page = results.results_page({"default": results.collect("default", tmp_path)})
    row = next(line for line in page.splitlines() if line.startswith("| EER rec-adv, whitebox"))
    assert "| 18.62 | 14.44 |" in row
    assert "| 20_joint_training | rec-adv >= 4x rec-rec | 3.2 | >= 4 | NOT met |" in page
    assert "commit abc1234; Test CPU (AVX2), 2 cores, 2 torch thread(s)" in page
    assert "| set | rec-adv |" in page  # the stage's own table
    assert "| targets met (docs/results.md) | | 0 of 1 |" in page


def test_generated_blocks_replace_only_what_is_between_their_markers():
    text = (
        "intro 1.0\n<!-- results:headline start (generated) -->\nold 2.0\n"
        "<!-- results:headline end -->\nafter 3.0\n<!-- results:other start -->\nkeep\n"
        "<!-- results:other end -->\n"
    )
    out = results.fill_blocks(text, {"headline": "| new |"}, "README.md")
    assert out == text.replace("old 2.0", "| new |")
    assert results.fill_blocks(out, {"headline": "| new |"}, "README.md") == out  # stable
    with pytest.raises(results.ResultsError, match="no markers for \\['minutes'\\]"):
        results.fill_blocks(text, {"minutes": "x"}, "README.md")


def test_publishing_writes_a_snapshot_only_for_finished_runs(tmp_path, monkeypatch, capsys):
    fake_run(tmp_path, "default")
    fake_run(tmp_path, "speechocean762", stop="60_attackers")
    monkeypatch.setattr(results, "snapshot_dir", lambda: tmp_path / "published")
    assert results.publish(["default", "speechocean762", "paper"], tmp_path, None) == ["default"]
    assert read_json(tmp_path / "published" / "default.json")["profile"] == "default"
    assert "speechocean762: not published" in capsys.readouterr().out


def test_a_run_without_a_recorded_commit_needs_the_clean_checkout_that_made_it(tmp_path):
    checkout = tmp_path / "checkout"
    package = checkout / "lib" / "spkadv"
    package.mkdir(parents=True)
    (package / "mod.py").write_text("x = 1\n")
    git = ["git", "-C", str(checkout), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    runs = tmp_path / "runs"
    fake_run(runs, code=runinfo.package_digest(package))
    snap = results.collect("default", runs)
    snap["environment"] = {}
    filled = results.with_checkout(snap, checkout)
    assert filled["environment"]["commit"] == runinfo.git_state(checkout)["commit"] != "unknown"
    (package / "mod.py").write_text("x = 2\n")  # no longer the code that ran
    with pytest.raises(results.ResultsError, match="local changes"):
        results.with_checkout(snap, checkout)
    subprocess.run([*git, "commit", "-qam", "y"], check=True)
    with pytest.raises(results.ResultsError, match="not the code the run recorded"):
        results.with_checkout(snap, checkout)


def test_stage_headline_for_the_console():
    assert result_pages.stage_headline("40_table1_eer", {"eer_whitebox_rec_adv": 14.436}) == (
        "Table 1 white-box rec-adv EER 14.4 %"
    )
    assert result_pages.stage_headline("40_table1_eer", {}) == ""
    assert result_pages.stage_headline("99_other", {"x": 1}) == ""


def test_finished_studies_go_into_the_snapshot_and_the_dev_choices(tmp_path):
    root = fake_run(tmp_path)
    study = root / "94_protect_settings"
    study.mkdir()
    write_json(study / ".stage.json", {"status": "ok", "code": "newer", "seconds": 120.0})
    metrics = {"current": "10 steps", "chosen": "10 steps", "dev_confirms_current": True}
    write_json(study / "metrics.json", metrics | {"conclusion": "dev confirms 10 steps."})
    (study / "settings.md").write_text("| variant | eer_recadv |\n|---|---|\n| 10 steps | 9.9 |\n")
    unfinished = root / "93_blackbox"
    unfinished.mkdir()
    write_json(unfinished / ".stage.json", {"status": "failed", "code": "newer"})
    snap = results.collect("default", tmp_path)
    assert list(snap["studies"]) == ["94_protect_settings"]
    page = results.results_page({"default": snap})
    assert "### Study 94_protect_settings (dev speakers, 2.0 min)" in page
    assert "| 10 steps | 9.9 |" in page
    choices = result_pages.dev_choices({"default": snap})
    assert choices.startswith(
        "- **default**:\n  - protect-time code settings (study 94): dev confirms the setting chosen earlier on eval"
    )
    assert result_pages.dev_choices({}).startswith("_No dev-choice study")


def test_dev_choices_say_what_studies_96_and_90_concluded():
    m96 = {
        "conclusion": "**Dev does not confirm the profile's training settings: it would choose 'beta 0.1'**\nRule: every run within.\n- 'current' ...",
        "dev_confirms_current": False,
    }
    m90 = {
        "variants": "base,code,segcode,segcode+opt5",
        "best_variant": "code",
        "code.eer_recadv": 9.0,
        "code.snr_adv_db": 31.0,
        "segcode+opt5.eer_recgn": 3.0,
        "segcode+opt5.eer_recadv": 8.0,
        "segcode+opt5.snr_adv_db": 31.5,
        "eer_recrec": 2.0,
    }
    snap = {
        "studies": {"96_training_settings": {"metrics": m96}, "90_attack_study": {"metrics": m90}}
    }
    text = result_pages.dev_choices({"default": snap})
    lines = text.splitlines()
    assert lines[0] == "- **default**:" and len(lines) == 3
    assert "training settings (study 96): **Dev does not confirm" in lines[1] and lines[1].endswith(
        "Rule: every run within."
    )
    assert (
        "dev does not confirm the profile's 'segcode+opt5' (rec-adv 8.00 % at 31.5 dB; noise of the same power 3.00 %"
        in lines[2]
    )
    assert lines[2].endswith("the best on dev is 'code' (rec-adv 9.00 % at 31.0 dB)")
    for best in ("segcode+opt5", "segcode"):
        same = result_pages.dev_choices(
            {"p": {"studies": {"90_attack_study": {"metrics": {**m90, "best_variant": best}}}}}
        )
        assert "dev confirms the profile's 'segcode+opt5'" in same
    plain = {"variants": "base,segcode", "best_variant": "base"}
    assert "the profile's 'segcode' (rec-adv" in result_pages.dev_choices(
        {"p": {"studies": {"90_attack_study": {"metrics": plain}}}}
    )
    absent = {"variants": "base,code", "best_variant": "base"}
    assert "'segcode' was not run" in result_pages.dev_choices(
        {"p": {"studies": {"90_attack_study": {"metrics": absent}}}}
    )


def _frontier(profile: str = "default") -> dict:
    point = {"protect_cost": 0.03, "eer_recadv": 8.0, "ge2e_eer_recadv": 3.0, "eer_recrst": 2.0,
             "snr_adv_db": 31.4, "snr_rst_db": 59.0}  # fmt: skip
    pgd = point | {"start": "pgd", "eer_recrst": None, "snr_rst_db": None}
    return {
        "profile": profile, "quick": False, "environment": {"commit": "abc1234", "cpu": "CPU X"},
        "model": f"/tmp/somewhere/{profile}/20_joint_training/model.pt",
        "figure": f"/home/me/project/figures/{profile}/frontier.png",
        "utterances": 80, "speakers": 40, "audio_seconds": 270.0, "trials": 2000, "target_trials": 80,
        "blackbox": "ge2e", "eer_recrec": {"white": 2.5, "ge2e": 2.0}, "pgd_snr_db": 31.4,
        "points": {"today: zero code, 10 steps": point | {"protect_cost": 1.2, "eer_recadv": 12.5},
                   "predicted, 0 steps": point, "PGD, 1 steps": pgd},
        "targets": {"fast_point": "predicted, 0 steps",
                    "protect_rtf_fast": {"value": 0.03, "target": "<= 0.15", "met": True},
                    "eer_rise_fraction_fast": {"value": 0.55, "target": ">= 0.9", "met": False}},
    }  # fmt: skip


def test_a_published_frontier_is_rendered_into_the_performance_page(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "snapshot_dir", lambda: tmp_path / "published")
    write_json(tmp_path / "f.json", _frontier("speechocean762"))
    assert results.publish_frontier(tmp_path / "f.json") == "speechocean762"
    fronts = results.load_frontiers(tmp_path / "published")
    snap = fronts["speechocean762"]
    assert snap["model"] == "runs/speechocean762/20_joint_training/model.pt"
    assert snap["figure"] == "figures/speechocean762/frontier.png"
    text = result_pages.frontier_section(fronts)
    assert "### speechocean762" in text and "commit abc1234" in text
    assert "| predicted, 0 steps | 0.030 | 8.00 | 3.00 | 2.00 | 31.4 | 59.0 |" in text
    assert "| PGD, 1 steps | 0.030 | 8.00 | 3.00 | n/a | 31.4 | n/a |" in text
    assert "| eer_rise_fraction_fast | 0.550 | >= 0.9 | NOT met |" in text
    assert "../figures/frontier_speechocean762.png" in text
    assert "No frontier published" in result_pages.frontier_section({})
    write_json(tmp_path / "q.json", _frontier() | {"quick": True})
    with pytest.raises(results.ResultsError, match="--quick"):
        results.publish_frontier(tmp_path / "q.json")
    write_json(tmp_path / "bad.json", {"profile": "default"})
    with pytest.raises(results.ResultsError, match="bench_frontier"):
        results.publish_frontier(tmp_path / "bad.json")
