"""Fast checks of the benchmark code (tiny sizes, no timed assertions) and of the PGD attack."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from spkadv.encoders.random_conv import RandomConvEncoder
from spkadv.evaluation import attacks

from benchmarks import (
    bench_eval,
    bench_flops,
    bench_protect,
    bench_train,
    common,
    compare_runs,
    run_all,
)


# -- FLOP counting --------------------------------------------------------------------------------
def test_count_flops_conv1d_matches_hand_count():
    conv = torch.nn.Conv1d(2, 3, kernel_size=5, padding=0)
    length = 100
    # every output sample of every output channel: in_channels * kernel multiply-accumulates
    macs = 3 * (length - 4) * 2 * 5
    assert bench_flops.count_flops(conv, torch.zeros(1, 2, length)) == 2 * macs


def test_count_flops_strided_conv_and_linear_match_hand_count():
    conv = torch.nn.Conv1d(4, 8, kernel_size=3, stride=2, padding=1)
    out_len = (64 + 2 - 3) // 2 + 1
    assert bench_flops.count_flops(conv, torch.zeros(2, 4, 64)) == 2 * (2 * 8 * out_len * 4 * 3)
    linear = torch.nn.Linear(6, 5)
    assert bench_flops.count_flops(linear, torch.zeros(7, 6)) == 2 * 7 * 6 * 5


def test_count_flops_of_a_sequential_adds_up():
    net = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.ReLU(), torch.nn.Linear(20, 3))
    assert bench_flops.count_flops(net, torch.zeros(4, 10)) == 2 * 4 * (10 * 20 + 20 * 3)


def test_matmul_gflops_is_positive():
    assert bench_flops.matmul_gflops(32, repeat=1) > 0


# -- PGD ------------------------------------------------------------------------------------------
@pytest.fixture
def encoder() -> RandomConvEncoder:
    return RandomConvEncoder(dim=16, seed=1)


@pytest.fixture
def wave() -> np.ndarray:
    rng = np.random.default_rng(3)
    return (0.1 * rng.standard_normal(4000)).astype(np.float32)


def _cos(encoder, a, b) -> float:
    with torch.no_grad():
        za, zb = encoder.embed(torch.from_numpy(np.stack([a, b])))
    return float(torch.nn.functional.cosine_similarity(za, zb, dim=0))


def test_pgd_linf_lowers_similarity_within_budget(encoder, wave):
    result = attacks.pgd(encoder, wave, linf=0.02, steps=10)
    assert np.max(np.abs(result.x_adv - wave)) <= 0.02 + 1e-6
    assert result.steps == 10
    assert len(result.history) == 11 and result.history[-1] == result.cos
    assert result.cos == pytest.approx(_cos(encoder, wave, result.x_adv), abs=1e-5)
    assert result.cos < 0.9


def test_pgd_snr_budget_holds(encoder, wave):
    result = attacks.pgd(encoder, wave, snr_db=20.0, steps=8)
    assert result.snr_db >= 20.0 - 1e-3
    assert result.cos < _cos(encoder, wave, wave + 0.0) - 0.05


def test_pgd_stops_at_target_similarity(encoder, wave):
    full = attacks.pgd(encoder, wave, linf=0.02, steps=20)
    target = (1.0 + full.cos) / 2  # halfway: reached well before the last step
    early = attacks.pgd(encoder, wave, linf=0.02, steps=20, target_cos=target)
    assert early.cos <= target
    assert early.steps < full.steps


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "exactly one budget"),
        ({"linf": 0.01, "snr_db": 30.0}, "exactly one budget"),
        ({"linf": -1.0}, "linf must be > 0"),
        ({"linf": 0.01, "steps": 0}, "steps must be >= 1"),
    ],
)
def test_pgd_rejects_bad_arguments(encoder, wave, kwargs, message):
    with pytest.raises(ValueError, match=message):
        attacks.pgd(encoder, wave, **kwargs)


def test_pgd_rejects_bad_waveforms(encoder, wave):
    with pytest.raises(ValueError, match="1-D"):
        attacks.pgd(encoder, np.stack([wave, wave]), linf=0.01)
    with pytest.raises(ValueError, match="silent"):
        attacks.pgd(encoder, np.zeros(4000, np.float32), snr_db=30.0)


# -- helpers --------------------------------------------------------------------------------------
def test_measure_peak_sees_a_large_allocation():
    def allocate():
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        return float(block.sum())

    value, seconds, peak = common.measure_peak(allocate)
    assert value == 64 * 2**20 // 8
    assert seconds > 0
    assert peak == pytest.approx(64, abs=16)


def test_best_time_returns_the_minimum():
    calls = []
    assert common.best_time(lambda: calls.append(1), repeat=3, warmup=2) >= 0
    assert len(calls) == 5


def test_run_worker_runs_in_a_fresh_process():
    assert common.run_worker("benchmarks.bench_flops:matmul_gflops", {"n": 32, "repeat": 1}, 1) > 0


@pytest.mark.slow
def test_run_worker_reports_a_failing_worker():
    with pytest.raises(RuntimeError, match="failed"):
        common.run_worker("benchmarks.bench_flops:no_such_function", {}, 1)


def test_default_model_without_a_trained_file_is_fresh(tmp_runs):
    model, description = common.default_model()
    assert "freshly initialised" in description
    x = np.zeros(1600, np.float32)
    from spkadv.core import protect

    assert protect.protect(model, x).shape == x.shape


# -- items at tiny sizes --------------------------------------------------------------------------
def test_protect_worker_and_chunk_check_in_process(tmp_runs):
    row = bench_protect.measure_length(seconds=1.0, chunk_seconds=0.25, repeats=1)
    assert row["rtf_protect"] > 0 and row["rtf_restore"] > 0
    assert row["peak_mem_mb"] >= 0
    check = bench_protect.chunk_equivalence(seconds=1.0, chunk_seconds=[0.25])
    assert check["local_model"] is True
    assert check["max_abs_diff"] <= 1e-5


def test_train_split_of_data_and_compute(tmp_runs):
    result = bench_train.run(quick=True, device="cpu", encoder_name="random-conv")
    assert result["timed_steps"] == bench_train.QUICK_STEPS - 1
    assert 0.0 <= result["train_data_fraction"] <= 1.0
    assert result["compute_s"] > 0
    assert result["samples_per_s"] == pytest.approx(result["batch_size"] / result["step_s"])


def test_eer_timing_reports_each_scorer():
    out = bench_eval.eer_timing(2000)
    assert out["trials"] == 2000
    for name in ("eer", "eer_kaldi", "min_dcf"):
        assert out[f"{name}_seconds"] > 0


# -- run_all --------------------------------------------------------------------------------------
def test_headline_gives_reasons_for_missing_figures():
    results = {
        "flops": {"status": "ok", "gflops_ratio_vs_matmul": 0.2},
        "eval": {"status": "ok", "table_rerun_speedup": None, "table_rerun_reason": "no smoke run"},
        "pgd": {"status": "unavailable", "reason": "no encoder"},
    }
    summary = run_all.headline(results)
    assert summary["gflops_ratio_vs_matmul"] == 0.2
    assert summary["table_rerun_speedup"] is None
    assert summary["table_rerun_speedup_reason"] == "no smoke run"
    assert "no encoder" in summary["pgd_speed_ratio_reason"]
    assert "not run" in summary["train_data_fraction_reason"]
    table = run_all.format_table(summary | {"eer_40k_trials_seconds": 0.5})
    assert "eer_40k_trials_seconds" in table and "NO" in table


def test_run_all_quick_writes_results(tmp_runs, capsys):
    assert run_all.main(["--quick", "--only", "flops"]) == 0
    summary = json.loads((tmp_runs / "bench" / "results.json").read_text())
    assert summary["quick"] is True
    assert summary["gflops_ratio_vs_matmul"] > 0
    assert "pgd_speed_ratio_reason" in summary
    flops = json.loads((tmp_runs / "bench" / "flops.json").read_text())
    assert flops["status"] == "ok" and flops["generator_gflop_per_audio_second"] > 0
    assert "gflops_ratio_vs_matmul" in capsys.readouterr().out


def test_run_all_rejects_unknown_items():
    with pytest.raises(SystemExit):
        run_all.main(["--only", "nonsense"])


def test_stage_minutes_reads_the_pipeline_summary(tmp_runs):
    from spkadv.base.config import NOTEBOOK_STAGES
    from spkadv.base.fileio import write_json

    from benchmarks import bench_pipeline

    assert bench_pipeline.stage_minutes("smoke")["summary"] is None
    stages = {
        s: {"status": "ok", "seconds": 60.0 * (i + 1)} for i, s in enumerate(NOTEBOOK_STAGES[:3])
    }
    write_json(tmp_runs / "smoke" / "summary.json", {"profile": "smoke", "stages": stages})
    partial = bench_pipeline.stage_minutes("smoke")
    assert partial["complete"] is False
    assert partial["total_minutes"] == pytest.approx(6.0)
    assert partial["slowest_stage"] == NOTEBOOK_STAGES[2]
    stages.update({s: {"status": "skipped", "seconds": 30.0} for s in NOTEBOOK_STAGES[3:]})
    write_json(tmp_runs / "smoke" / "summary.json", {"profile": "smoke", "stages": stages})
    full = bench_pipeline.stage_minutes("smoke")
    assert full["complete"] is True
    assert full["total_minutes"] == pytest.approx(6.0 + 0.5 * len(NOTEBOOK_STAGES[3:]))


# -- stream, rerun --------------------------------------------------------------------------------
def test_long_test_file_is_written_in_blocks_to_the_exact_length(tmp_path):

    from benchmarks import bench_stream

    path = tmp_path / "long.wav"
    bench_stream.write_long_file(path, 2.5, block_seconds=1.0)
    info = sf.info(str(path))
    assert info.frames == 40_000 and info.samplerate == 16_000 and info.subtype == "PCM_16"


def test_stream_row_of_repeats_is_the_median_run_with_every_peak_kept():
    from benchmarks import bench_stream

    def run(protect_mb, restore_mb, seconds):
        return {
            "commands": ["protect", "restore"],
            "peak_mem_protect_mb": protect_mb,
            "peak_mem_restore_mb": restore_mb,
            "peak_mem_mb": max(protect_mb, restore_mb),
            "protect_s": seconds,
        }

    row = bench_stream.median_row([run(80, 60, 1.0), run(66, 70, 2.0), run(75, 90, 3.0)])
    assert row["peak_mem_mb"] == 80 and row["protect_s"] == 1.0  # the run with the median peak
    assert row["peak_mem_mb_runs"] == [80, 70, 90]
    assert row["peak_mem_protect_mb_runs"] == [80, 66, 75]
    assert row["peak_mem_restore_mb_runs"] == [60, 70, 90]
    assert row["repeats"] == 3
    single = run(50, 40, 1.0)
    assert bench_stream.median_row([single]) is single


def test_rerun_mirror_links_files_and_atomic_writes_leave_the_source_alone(tmp_path):
    from spkadv.base.fileio import write_json

    from benchmarks import bench_rerun

    src = tmp_path / "default"
    (src / "20_joint_training").mkdir(parents=True)
    (src / "cache").mkdir()
    (src / "40_table1_eer").mkdir()
    (src / "20_joint_training" / "metrics.json").write_text('{"a": 1}')
    (src / "cache" / "emb.npy").write_text("x")
    assert bench_rerun.mirror(src, tmp_path / "copy" / "default") == 1
    copy = tmp_path / "copy" / "default"
    assert (copy / "20_joint_training").is_dir() and not (copy / "20_joint_training").is_symlink()
    assert not (copy / "cache").exists() and not (copy / "40_table1_eer").exists()
    write_json(copy / "20_joint_training" / "metrics.json", {"a": 2})  # atomic: replaces the link
    assert (src / "20_joint_training" / "metrics.json").read_text() == '{"a": 1}'


def test_rerun_of_the_default_profile_says_why_it_is_not_measured(tmp_runs):
    from benchmarks import bench_rerun

    out = bench_rerun.run(quick=False)
    assert out["table_rerun_speedup_default"] is None
    assert "have not run" in out["table_rerun_speedup_default_reason"]
    summary = run_all.headline({"rerun": out | {"status": "ok"}})
    assert "have not run" in summary["table_rerun_speedup_default_reason"]


def test_stream_length_rows_use_the_zero_code_unless_asked():
    from benchmarks import bench_stream

    assert bench_stream.length_code_steps({})[0] == 0
    assert bench_stream.length_code_steps({"SPKADV_BENCH_CODE_STEPS": " "})[0] == 0
    assert bench_stream.length_code_steps({"SPKADV_BENCH_CODE_STEPS": "10"}) == (
        10,
        "SPKADV_BENCH_CODE_STEPS",
    )
    for bad in ("ten", "-1", "2.5"):
        with pytest.raises(ValueError, match="SPKADV_BENCH_CODE_STEPS"):
            bench_stream.length_code_steps({"SPKADV_BENCH_CODE_STEPS": bad})


def test_compare_runs_finds_a_changed_figure_of_merit_and_sample(tmp_path, capsys):

    for name, snr, sample in (("a", 31.5, 0.25), ("b", 31.5, 0.25), ("c", 31.6, 0.5)):
        stage = tmp_path / name / "20_joint_training"
        (stage / "audio" / "adv").mkdir(parents=True)
        (stage / "metrics.json").write_text(json.dumps({"snr_adv_db": snr, "train_s": len(name)}))
        sf.write(stage / "audio" / "adv" / "u1.wav", np.full(160, sample, "float32"), 16000)
    assert compare_runs.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "IDENTICAL" in capsys.readouterr().out
    assert compare_runs.main([str(tmp_path / "a"), str(tmp_path / "c")]) == 1
    out = capsys.readouterr().out
    assert "snr_adv_db: 31.5 != 31.6" in out and "u1.wav: differs" in out


# -- scale of training data read from disk --------------------------------------------------------
def test_scale_quick_measures_the_disk_loader_on_real_files(tmp_runs):
    from benchmarks import bench_scale

    folder = tmp_runs / "cache" / "bench_scale" / "test"
    out = bench_scale.run(
        quick=True, sizes=(50, 500), batches=3, estimate=False, folder=folder, fresh_process=False
    )
    assert out["batch"] == 16 and out["crop_seconds"] == 3.0  # params/paper.yaml
    assert set(out["per_n"]) == {"50", "500"}
    for n, row in out["per_n"].items():
        assert row["rows"] == int(n) and row["timed_batches"] == 2
        assert row["crops_per_s"] > 0 and row["peak_mb"] >= row["baseline_mb"] > 0
        assert row["processes"] >= 3  # this process and its two loader workers
    assert out["loader_peak_mem_ratio"] > 0 and out["loader_crops_per_s_rows"] == 500
    assert out["loader_peak_mem_ratio_100k_vs_1k"] is None  # not the full sizes
    assert "quick or custom" in out["loader_peak_mem_ratio_100k_vs_1k_reason"]
    target = out["targets"]["loader_peak_mem_ratio"]
    assert target["met"] == (target["value"] <= 1.2)
    files = sorted((folder / "audio").rglob("*.flac"))
    assert len(files) == 500
    info = sf.info(str(files[7]))
    assert info.format == "FLAC" and info.samplerate == 16000
    assert bench_scale.MIN_SECONDS <= info.duration <= bench_scale.MAX_SECONDS
    mtime = files[0].stat().st_mtime_ns
    bench_scale.build_corpus(500, folder)  # written once, then reused
    assert files[0].stat().st_mtime_ns == mtime
    summary = run_all.headline({"scale": {"status": "ok", **out}})
    assert set(summary["loader_scale"]) == {"50", "500"}
    assert "quick or custom" in summary["loader_peak_mem_ratio_100k_vs_1k_reason"]
    assert summary["loader_crops_per_s"] == out["loader_crops_per_s"]
    assert "loader_crops_per_s" in bench_scale.report(out)
    with pytest.raises(ValueError, match="two or more sizes"):
        bench_scale.run(sizes=(50,), folder=folder)


@pytest.mark.slow  # imports speechbrain and runs the paper model once: about 10 s
def test_scale_gpu_step_estimate_adds_up():
    from benchmarks import bench_scale

    gpu = bench_scale.gpu_step_estimate(batch=2, crop_samples=1600)
    per_crop = 3 * gpu["generator_gflop_per_crop"] + 3 * gpu["removal_gflop_per_crop"]
    per_crop += 3 * gpu["encoder_gflop_per_crop"]
    assert gpu["step_tflop"] == pytest.approx(2 * per_crop / 1e3)
    sustained = bench_scale.GPU_PEAK_TFLOPS * 1e12 * bench_scale.GPU_UTILISATION
    assert gpu["gpu_step_s"] == pytest.approx(gpu["step_tflop"] * 1e12 / sustained)
    assert gpu["crops_per_s_needed"] == pytest.approx(2 / gpu["gpu_step_s"])
    assert "ECAPA" in gpu["encoder"]
    assert f"{bench_scale.GPU_UTILISATION:.0%}" in gpu["assumed_gpu"]
