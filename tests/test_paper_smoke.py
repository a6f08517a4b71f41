"""The paper profile's training path, run small: params/paper.yaml's F_P / F_R architecture (width,
stages, dilated residual blocks, spectral norm, instance norm, min-max mask) and losses (eq. 3 with
l2 norms, the paper's alpha / beta / gamma / theta, L_rpt reaching F_P) for a few steps on a small
synthetic voiced corpus, against the ECAPA-TDNN architecture (the paper's white box; random
weights, since the VoxCeleb checkpoint is not offline). Only the steps, the batch and the crop
length are cut, so that the paper profile's code path cannot rot unnoticed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from spkadv.base import config as cfgmod
from spkadv.core import modelfile, protect
from spkadv.core.train import TrainConfig, config_from_params, load_checkpoint, train
from spkadv.encoders.ecapa import random_ecapa
from spkadv.encoders.random_conv import RandomConvEncoder
from spkadv.evaluation import attackers

from .test_train import _losses, _script_args

SR = 16000
ROOT = Path(__file__).resolve().parents[1]


def paper_config(joint: bool = True, **small) -> TrainConfig:
    """The paper profile's training configuration with only ``small``'s fields changed."""
    params = cfgmod.load_profile("paper")
    prefix = "JOINT" if joint else "SSED"
    config = config_from_params(params, f"{prefix}_STEPS", f"{prefix}_WARM_START_STEPS", joint)
    return dataclasses.replace(config, **small)


def voiced_corpus(speakers: int = 4, per_speaker: int = 2, seconds: float = 1.0) -> list:
    """Synthetic voiced utterances: per speaker a pitch and formant-like spectral tilt, a pitch
    contour and syllable-rate amplitude envelope per utterance, a little breath noise."""
    rng = np.random.default_rng(29)
    t = np.arange(int(seconds * SR)) / SR
    waves = []
    for s in range(speakers):
        f0, tilt = 100.0 + 45.0 * s, 0.55 + 0.1 * s
        for _ in range(per_speaker):
            contour = f0 * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * t))
            phase = 2 * np.pi * np.cumsum(contour) / SR
            voice = sum(tilt**k * np.sin(k * phase) for k in range(1, 30) if k * f0 < 7000)
            envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3.0, 5.0) * t) ** 2
            wave = envelope * voice + 0.01 * rng.standard_normal(t.size)
            waves.append((0.1 * wave / np.abs(wave).max()).astype(np.float32))
    return waves


@pytest.fixture(scope="module")
def ecapa():
    """ECAPA-TDNN (speechbrain, spkrec-ecapa-voxceleb's sizes) with seeded random weights."""
    return random_ecapa(0)


def test_paper_profile_keeps_the_paper_architecture_and_losses() -> None:
    config = paper_config()
    model, w = config.model, config.weights
    assert (model.width, model.stages, model.res_blocks) == (32, 4, 6)
    assert model.spectral_norm and model.norm == "instance" and model.mask_norm == "minmax"
    assert not model.level_scaled and not model.code_film and model.embed_dim == 0
    assert (config.eps, config.lr, config.batch_size, config.crop_seconds) == (0.05, 1e-4, 16, 3.0)
    assert (w.alpha, w.beta, w.gamma, w.theta) == (0.01, 0.007, 0.8, 0.06)
    assert (w.norm, w.quality, w.rpt, w.attack_margin) == ("l2", "eq3", "eq8", 1.0)
    assert config.joint and config.rpt_to_generator and config.removal_steps == 0
    assert config.attack_target == "utterance" and config.steps == 527000


@pytest.mark.parametrize(
    "notebook, prefix", [("10_ssed_baseline", "SSED"), ("20_joint_training", "JOINT")]
)
def test_script_and_notebook_build_the_same_paper_configuration(notebook: str, prefix: str) -> None:
    """The training script (torchrun) and the notebook read params/paper.yaml into the same
    configuration, so the notebook resumes a checkpoint the script wrote (docs/paper_scale.md)."""
    paper = cfgmod.load_profile("paper")
    notebook_params = cfgmod.notebook_parameters(ROOT / "notebooks" / f"{notebook}.ipynb")
    notebook_params.update({k: v for k, v in paper.items() if k in notebook_params})
    joint = prefix == "JOINT"
    steps, warm = f"{prefix}_STEPS", f"{prefix}_WARM_START_STEPS"
    assert config_from_params(notebook_params, steps, warm, joint) == config_from_params(
        paper, steps, warm, joint
    )


def test_paper_profile_trains_resumes_and_protects(tmp_path: Path, ecapa) -> None:
    config = paper_config(steps=4, batch_size=2, crop_seconds=0.5, checkpoint_every=2)
    waves = voiced_corpus()
    full = train(config, waves, ecapa, tmp_path / "full", progress=False)
    assert full.steps == 4 and len(full.history) == 4
    for record in full.history:
        for key in ("total", "angular", "quality", "rpt", "noise", "mask", "snr_db"):
            assert np.isfinite(record[key]), (key, record)
    assert full.steps_per_s > 0 and full.crops_per_s == pytest.approx(2 * full.steps_per_s)
    # the paper's layers are there: spectral norm on the convolutions, instance norm
    convs = [m for m in full.generator.modules() if isinstance(m, torch.nn.Conv1d)]
    assert convs and all(hasattr(m, "parametrizations") for m in convs)
    assert any(isinstance(m, torch.nn.InstanceNorm1d) for m in full.removal.modules())
    # interrupted after 2 steps and resumed: the uninterrupted run's losses and weights
    train(config, waves, ecapa, tmp_path / "part", progress=False, stop_after=2)
    resumed = train(config, waves, ecapa, tmp_path / "part", progress=False)
    assert resumed.resumed_from == 2
    assert _losses(resumed.history) == pytest.approx(_losses(full.history), rel=1e-4, abs=1e-5)
    for a, b in zip(
        full.generator.state_dict().values(), resumed.generator.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-5)
    # the model file protects and restores whole utterances (min-max mask: one piece)
    path = modelfile.save_model(tmp_path / "model.pt", full.generator, full.removal, config.eps)
    model = modelfile.load_model(path)
    x = waves[0]
    x_adv = protect.protect(model, x)
    with torch.no_grad():
        m = full.generator(torch.from_numpy(x)[None])[1]
    assert float(m.amin()) == pytest.approx(0.0, abs=1e-6)  # min-max: the mask spans [0, 1]
    assert float(m.amax()) == pytest.approx(1.0, abs=1e-6)
    assert x_adv.shape == x.shape and 0 < np.abs(x_adv - x).max() <= config.eps + 1e-6
    assert protect.restore(model, x_adv).shape == x.shape


def test_paper_profile_ssed_baseline_trains(tmp_path: Path, ecapa) -> None:
    config = paper_config(joint=False, steps=2, batch_size=2, crop_seconds=0.5)
    assert config.model == paper_config().model and not config.joint
    result = train(config, voiced_corpus(2, 1), ecapa, tmp_path, progress=False)
    assert result.removal is None and result.steps == 2
    assert all(np.isfinite(h["total"]) for h in result.history)


@pytest.mark.slow  # two interpreter starts under torchrun: about 20-40 s
def test_paper_profile_under_torchrun_two_processes_gloo(tmp_path: Path) -> None:
    """The training script on params/paper.yaml itself (steps, batch and crop cut; crops read
    from disk as the profile says) with DistributedDataParallel over two gloo processes: spectral
    norm's buffers and instance norm under DDP. Trained as stage 60's second model (``--seed``),
    which notebook 60 then finds finished (docs/paper_scale.md's 8-GPU recipe). The encoder is
    the random-conv stand-in (ECAPA's weights are not offline)."""
    rows = ["utt_id\tspeaker\tgender\tsubset\tset\tpath\tduration\ttranscript"]
    for i, wave in enumerate(voiced_corpus(2, 2)):
        sf.write(tmp_path / f"u{i}.wav", wave, SR)
        rows.append(f"u{i}\ts{i // 2}\tF\ttrain\tsynthetic\t{tmp_path / f'u{i}.wav'}\t1.0\tHELLO")
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("\n".join(rows) + "\n")
    params = cfgmod.load_profile("paper")
    params.update(
        JOINT_STEPS=3, BATCH_SIZE=2, CROP_SECONDS=0.5, CHECKPOINT_EVERY=1, TRAIN_THREADS=1
    )
    profile = tmp_path / "paper_small.yaml"
    profile.write_text(yaml.safe_dump(params))
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "spkadv.core.train_script"]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "SPKADV_DEVICE": "cpu",
        "SPKADV_RUNS": str(tmp_path / "runs"),
    }
    done = subprocess.run(
        cmd + _script_args(tmp_path, manifest, profile) + ["--seed", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    state = load_checkpoint(tmp_path / "out" / "checkpoints" / "last.pt")
    assert state["step"] == 3 and state["config"]["model"]["norm"] == "instance"
    assert "crops/s" in done.stdout and "model written" in done.stdout
    assert "step 3/3: " in done.stderr and "crops/s" in done.stderr  # the log line per checkpoint
    model = modelfile.load_model(tmp_path / "out" / "model.pt")
    assert model.generator.config == paper_config().model
    # notebook 60 (attackers.train_other_model, one process) resumes it at its last step
    base = config_from_params(params, "JOINT_STEPS", "JOINT_WARM_START_STEPS", joint=True)
    before = (tmp_path / "out" / "checkpoints" / "last.pt").read_bytes()
    path, _ = attackers.train_other_model(
        base, 1, 3, 0, voiced_corpus(2, 2), RandomConvEncoder(), tmp_path / "out", progress=False
    )
    assert (tmp_path / "out" / "checkpoints" / "last.pt").read_bytes() == before  # no new step
    assert modelfile.load_model(path).generator.config == paper_config().model


# ----------------------------------------------------------------------- the paper-scale estimate


def test_paper_estimate_arithmetic() -> None:
    from benchmarks import bench_paper_estimate as est

    seconds = est.step_seconds(tflop=1.0, ops=1000)
    flop_s = 1.0 / (est.H100_BF16_DENSE_TFLOPS * est.UTILISATION)
    assert seconds["flop_s"] == pytest.approx(flop_s)
    assert seconds["host_s"] == pytest.approx(1000 * est.HOST_US_PER_OP * 1e-6)
    assert seconds["step_s"] == max(seconds["flop_s"], seconds["host_s"])
    assert seconds["step_s_pessimistic"] > seconds["step_s"]
    stages = {"10_ssed_baseline": 800, "20_joint_training": 800}
    out = est.estimate(dict.fromkeys(stages, seconds), stages)
    assert out["paper_hours_1gpu"] == pytest.approx(1600 * seconds["step_s"] / 3600)
    assert out["paper_hours_8gpu"] == pytest.approx(
        200 * seconds["step_s"] / (3600 * est.DDP_EFFICIENCY)
    )
    assert out["paper_step_bound"] == "host (operations)"  # 8 ms of operations > 2.9 ms of FLOPs
    assert est.paper_steps() == {
        "10_ssed_baseline": 527000,
        "20_joint_training": 527000,
        "60_other_model": 527000,
    }


@pytest.mark.slow  # counts two training steps of the paper's model under bf16 autocast: ~20 s
def test_paper_estimate_counts_forward_and_backward(tmp_runs: Path) -> None:
    from spkadv.base.fileio import read_json

    from benchmarks import run_all

    assert run_all.main(["--quick", "--only", "paper_estimate"]) == 0
    item = read_json(tmp_runs / "bench" / "paper_estimate.json")
    summary = read_json(tmp_runs / "bench" / "results.json")
    assert item["status"] == "ok", item.get("traceback")
    g, r, e = (item["forward_tflop_per_step"][k] for k in ("generator", "removal", "ecapa"))
    # F_P and F_R: forward + backward (weights and input: 2x); the frozen encoder: the clean and
    # the protected forward, and input gradients only on the protected one
    assert item["step_tflop"]["20_joint_training"] == pytest.approx(3 * (g + r + e), rel=0.02)
    assert item["step_tflop"]["10_ssed_baseline"] == pytest.approx(3 * (g + e), rel=0.02)
    assert item["step_ops"]["20_joint_training"] > item["step_ops"]["10_ssed_baseline"] > 1000
    assert summary["paper_hours_1gpu_estimate"] == pytest.approx(item["paper_hours_1gpu"])
    assert 0 < summary["paper_hours_8gpu_estimate"] < summary["paper_hours_1gpu_estimate"] / 7
    assert item["epochs_per_stage"]["20_joint_training"] == pytest.approx(30, abs=0.1)


def test_gpu_check_refuses_without_cuda_and_runs_on_the_cpu(tmp_path: Path, capsys) -> None:
    from benchmarks import gpu_check

    if not torch.cuda.is_available():
        assert gpu_check.main(["--steps", "1"]) == 2
        assert "no CUDA device" in capsys.readouterr().err
    out = tmp_path / "gpu_check.json"
    args = ["--device", "cpu", "--steps", "2", "--warmup", "1", "--batch", "1", "--crop", "0.5"]
    assert gpu_check.main([*args, "--encoder", "random-conv", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["timed_steps"] == 2 and figures["step_s"] > 0
    assert figures["crops_per_s"] == pytest.approx(1 / figures["step_s"])
    assert figures["paper_training_steps"] == 3 * 527000
