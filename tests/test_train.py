"""Training loop: learning, checkpoint / resume, damaged checkpoints, the script and DDP."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from spkadv.core import datasets, train_runtime
from spkadv.core.datasets import CropDataset, StepSampler
from spkadv.core.losses import LossWeights
from spkadv.core.models import SSEDConfig
from spkadv.core.train import CheckpointError, TrainConfig, load_checkpoint, train
from spkadv.data import centroids as centroid_math
from spkadv.encoders import speaker as encoders
from spkadv.encoders.random_conv import RandomConvEncoder
from spkadv.evaluation.plotting import plot_history

TINY = TrainConfig(
    model=SSEDConfig(width=4, stages=2, res_blocks=1),
    eps=0.05,
    lr=1.0e-2,
    steps=6,
    batch_size=2,
    crop_seconds=0.05,
    checkpoint_every=2,
)


def _waves(count: int = 3, seconds: float = 0.2) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32) for _ in range(count)
    ]


def test_crops_are_deterministic_and_padded() -> None:
    ds = CropDataset([np.ones(100, np.float32)], crop_samples=150, seed=3)
    (crop, index), (again, _) = ds[5], ds[5]
    assert torch.equal(crop, again) and crop.shape == (150,) and float(crop[-1]) == 0.0
    assert index == 0
    ds2 = CropDataset(_waves(), 400, seed=3)
    assert not torch.equal(ds2[0][0], ds2[1][0])
    assert list(StepSampler(2, 4, batch=2, rank=1, world=2)) == [10, 11, 14, 15]


def _first_crop(wave: np.ndarray, crop: int, rng: np.random.Generator) -> np.ndarray:
    """How items were first cut, written out: the start drawn over the wave's length, zero padded."""
    start = int(rng.integers(max(1, len(wave) - crop + 1)))
    out = np.zeros(crop, dtype=np.float32)
    piece = wave[start : start + crop]
    out[: len(piece)] = piece
    return out


def test_crops_are_cut_as_before() -> None:
    waves = _waves(3, 0.05) + [np.ones(600, np.float32), np.ones(800, np.float32)]  # 800 = crop
    ds = CropDataset(waves, 800, seed=11)
    for k in range(40):
        rng = np.random.default_rng([11, k])
        index = int(rng.integers(len(waves)))
        crop, got_index = ds[k]
        assert got_index == index
        assert np.array_equal(crop.numpy(), _first_crop(waves[index], 800, rng))


def _reference_centroids(encoder, waves, speakers, max_seconds: float = 4.0):
    """Training's first centroid arithmetic, written out: sums of unit embeddings in order."""
    names = sorted(set(speakers))
    row = {name: i for i, name in enumerate(names)}
    sums = torch.zeros(len(names), 0)
    with torch.no_grad():
        for wave, speaker in zip(waves, speakers, strict=True):
            piece = torch.from_numpy(wave[: int(max_seconds * 16000)]).unsqueeze(0)
            z = torch.nn.functional.normalize(encoder.embed(piece).float(), dim=-1)
            if sums.shape[1] == 0:
                sums = torch.zeros(len(names), z.shape[-1])
            sums[row[speaker]] += z[0]
    return torch.nn.functional.normalize(sums, dim=-1), torch.tensor([row[s] for s in speakers])


def test_speaker_centroids_keep_their_arithmetic() -> None:
    enc, waves, speakers = RandomConvEncoder(), _waves(5), ["b", "a", "b", "c", "a"]
    centroids, rows = datasets.speaker_centroids(enc, waves, speakers, torch.device("cpu"))
    expected, expected_rows = _reference_centroids(enc, waves, speakers)
    assert torch.equal(centroids, expected) and torch.equal(rows, expected_rows)
    units = torch.stack(
        [centroid_math.unit(enc.embed(torch.from_numpy(w)[None]))[0] for w in waves]
    )
    names, shared, shared_rows = centroid_math.speaker_centroids(units.detach(), speakers)
    assert names == ["a", "b", "c"] and torch.equal(shared, expected)
    assert torch.equal(shared_rows, expected_rows)


def test_centroid_cache_is_keyed_by_content(monkeypatch: pytest.MonkeyPatch) -> None:
    """An id()-keyed cache answers a list changed in place (or a new list that reuses a freed
    list's id) with the centroids of other audio; the cache key is the content."""
    monkeypatch.setattr(datasets, "_CENTROID_CACHE", {})
    embeds = []

    class Counting(RandomConvEncoder):
        def embed(self, waves: torch.Tensor) -> torch.Tensor:
            embeds.append(len(waves))
            return super().embed(waves)

    enc, cpu = Counting(), torch.device("cpu")
    waves, speakers = _waves(4), ["a", "b", "a", "b"]
    first, _ = datasets.speaker_centroids(enc, waves, speakers, cpu)
    again, _ = datasets.speaker_centroids(enc, [w.copy() for w in waves], list(speakers), cpu)
    assert torch.equal(again, first) and len(embeds) == 4  # the same content: a cache hit
    waves[0] = waves[0][::-1].copy()  # the same list object, other audio
    changed, _ = datasets.speaker_centroids(enc, waves, speakers, cpu)
    assert not torch.equal(changed, first)
    assert torch.equal(changed, _reference_centroids(enc, waves, speakers)[0])
    speakers[1] = "a"  # the same list object, other speakers
    relabelled, rows = datasets.speaker_centroids(enc, waves, speakers, cpu)
    assert relabelled.shape[0] == 2 and rows.tolist() == [0, 0, 0, 1]
    with torch.no_grad():
        enc.projection.mul_(-1.0)  # the same encoder object, other weights
    flipped, _ = datasets.speaker_centroids(enc, waves, speakers, cpu)
    assert torch.equal(flipped, -relabelled)
    shorter, _ = datasets.speaker_centroids(enc, waves, speakers, cpu, max_seconds=0.1)
    assert not torch.equal(shorter, flipped)


def test_random_conv_loads_by_name() -> None:
    enc = encoders.load("random-conv", "cpu")
    assert isinstance(enc, RandomConvEncoder)
    for a, b in zip(
        enc.state_dict().values(), RandomConvEncoder().state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_tiny_model_overfits_one_batch(tmp_path: Path) -> None:
    wave = _waves(1, 0.05)  # one crop-sized utterance: every batch is the same
    config = dataclasses.replace(
        TINY, eps=0.3, steps=60, weights=LossWeights(beta=0.0), checkpoint_every=100
    )
    result = train(config, wave, RandomConvEncoder(), tmp_path, progress=False)
    first, last = result.history[0], result.history[-1]
    assert first["angular"] > 0.5 and last["angular"] < 0.0, (first, last)  # cos(z, z') driven down
    assert last["noise"] < 0.01 * first["noise"]  # F_R learns n' = -n
    assert result.steps == 60


def test_resume_continues_from_the_saved_step(tmp_path: Path) -> None:
    enc = RandomConvEncoder()
    full = train(TINY, _waves(), enc, tmp_path / "full", progress=False)
    part = train(TINY, _waves(), enc, tmp_path / "part", progress=False, stop_after=3)
    assert part.steps == 3 and load_checkpoint(tmp_path / "part" / "last.pt")["step"] == 3
    resumed = train(TINY, _waves(), enc, tmp_path / "part", progress=False)
    assert resumed.resumed_from == 3 and resumed.steps == TINY.steps == len(resumed.history)
    for a, b in zip(
        full.generator.state_dict().values(), resumed.generator.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6)
    assert [h["step"] for h in resumed.history] == list(range(1, TINY.steps + 1))
    assert plot_history(resumed.history) is not None
    assert _losses(resumed.history) == pytest.approx(_losses(full.history), abs=1e-6)


def _losses(history: list[dict[str, float]]) -> list[float]:
    """The loss terms of every step, in order (wall-clock entries left out)."""
    return [h[k] for h in history for k in sorted(h) if k not in SPEED_KEYS]


SPEED_KEYS = {"step_s", "steps_per_s", "crops_per_s"}


def test_resume_continues_the_stream_of_training_codes(tmp_path: Path) -> None:
    """With per-segment codes (the default profile's F_P / F_R), step s draws the s-th code of
    one seeded stream: a run resumed at step 3 draws what an uninterrupted run draws there."""
    config = dataclasses.replace(
        TINY,
        model=SSEDConfig(
            width=4, stages=2, res_blocks=1, code_film=True, code_segment_seconds=0.02
        ),
        code_sigma=0.5,
        removal_steps=2,
    )
    enc = RandomConvEncoder()
    full = train(config, _waves(), enc, tmp_path / "full", progress=False)
    train(config, _waves(), enc, tmp_path / "part", progress=False, stop_after=3)
    resumed = train(config, _waves(), enc, tmp_path / "part", progress=False)
    assert resumed.resumed_from == 3 and resumed.steps == config.total_steps
    assert _losses(resumed.history) == pytest.approx(_losses(full.history), abs=1e-6)
    for module in ("generator", "removal"):
        for a, b in zip(
            getattr(full, module).state_dict().values(),
            getattr(resumed, module).state_dict().values(),
            strict=True,
        ):
            assert torch.allclose(a, b, atol=1e-6), module
    shape = (
        config.batch_size,
        config.model.code_segments(config.crop_samples),
        config.model.code_dim,
    )
    stream = train_runtime.code_stream(0.5, shape, config.seed, 0)
    first = [next(stream) for _ in range(4)]
    assert torch.equal(next(train_runtime.training_codes(config, 3)), first[3])
    assert list(train_runtime.training_codes(TINY, 0)) == []  # no code: nothing drawn
    with pytest.raises(ValueError, match="first_step"):
        next(train_runtime.code_stream(0.5, shape, 0, -1))


def test_history_and_result_carry_steps_and_crops_per_second(tmp_path: Path) -> None:
    config = dataclasses.replace(TINY, removal_steps=2)
    result = train(config, _waves(), RandomConvEncoder(), tmp_path, progress=False)
    assert all(SPEED_KEYS <= set(h) for h in result.history)
    for h in result.history[1:]:
        assert h["steps_per_s"] > 0 and h["step_s"] > 0
        assert h["crops_per_s"] == pytest.approx(h["steps_per_s"] * config.batch_size)
    assert result.steps_per_s > 0
    assert result.crops_per_s == pytest.approx(result.steps_per_s * config.batch_size)


def test_checkpoint_holds_the_history_packed_and_gives_it_back(tmp_path: Path) -> None:
    config = dataclasses.replace(TINY, steps=3, removal_steps=2, checkpoint_every=100)
    result = train(config, _waves(), RandomConvEncoder(), tmp_path, progress=False)
    packed = load_checkpoint(tmp_path / "last.pt")["history"]
    assert [len(rows) for rows in packed["rows"]] == [3, 2]  # the joint, then the removal records
    assert train_runtime.unpack_history(packed) == result.history
    assert all(type(h["step"]) is int for h in train_runtime.unpack_history(packed))
    records = [{"a": 1, "b": float("nan")}, {"b": 2.5, "a": 2}, {"a": 3.5}, {"a": 4}]
    back = train_runtime.unpack_history(train_runtime.pack_history(records))
    assert [list(r) for r in back] == [["a", "b"], ["a", "b"], ["a"], ["a"]]
    assert back[0]["a"] == 1 and type(back[0]["a"]) is int and np.isnan(back[0]["b"])
    assert back[1] == {"a": 2, "b": 2.5} and back[2] == {"a": 3.5} and back[3] == {"a": 4}
    assert type(back[2]["a"]) is float  # a float where the first record of its run holds one
    assert train_runtime.unpack_history(records) == records  # a checkpoint's plain list (older)
    assert train_runtime.unpack_history(train_runtime.pack_history([])) == []


def test_checkpoint_with_a_plain_history_list_resumes(tmp_path: Path) -> None:
    """Checkpoints written before the history was packed hold a list of records."""
    full = train(TINY, _waves(), RandomConvEncoder(), tmp_path / "full", progress=False)
    train(TINY, _waves(), RandomConvEncoder(), tmp_path / "part", progress=False, stop_after=3)
    state = load_checkpoint(tmp_path / "part" / "last.pt")
    state["history"] = train_runtime.unpack_history(state["history"])
    torch.save(state, tmp_path / "part" / "last.pt")
    resumed = train(TINY, _waves(), RandomConvEncoder(), tmp_path / "part", progress=False)
    assert resumed.resumed_from == 3
    assert _losses(resumed.history) == pytest.approx(_losses(full.history), abs=1e-6)


def test_speed_meter_leaves_the_first_step_out(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 10.0, 10.5, 11.5])  # start-up, a 10 s first step, then 0.5 s and 1 s
    monkeypatch.setattr(train_runtime.time, "perf_counter", lambda: next(clock))
    meter = train_runtime.SpeedMeter(crops_per_step=4, window=1)
    assert meter.tick() == {"step_s": 10.0, "steps_per_s": 0.0, "crops_per_s": 0.0}
    assert meter.tick()["steps_per_s"] == pytest.approx(2.0)
    assert meter.tick() == {"step_s": 1.0, "steps_per_s": 1.0, "crops_per_s": 4.0}  # window 1
    assert meter.steps_per_s == pytest.approx(2 / 1.5) and meter.crops_per_s == pytest.approx(
        8 / 1.5
    )
    with pytest.raises(ValueError, match="crops_per_step"):
        train_runtime.SpeedMeter(0)


def test_compiled_training_gives_the_eager_results(tmp_path: Path) -> None:
    """torch.compile through dynamo and AOT autograd (the aot_eager backend: no C++ build) traces
    F_P, F_R and the encoder and reaches the eager run's losses and weights."""
    eager = train(TINY, _waves(), RandomConvEncoder(), tmp_path / "eager", progress=False)
    compiled = train(
        TINY, _waves(), RandomConvEncoder(), tmp_path / "c", progress=False,
        compile_backend="aot_eager",
    )  # fmt: skip
    assert _losses(compiled.history) == pytest.approx(_losses(eager.history), abs=1e-5)
    for a, b in zip(
        eager.generator.state_dict().values(), compiled.generator.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-5)
    # a run may resume with or without compilation (not part of the configuration)
    train(TINY, _waves(), RandomConvEncoder(), tmp_path / "mix", progress=False, stop_after=3)
    mixed = train(
        TINY, _waves(), RandomConvEncoder(), tmp_path / "mix", progress=False,
        compile_backend="aot_eager",
    )  # fmt: skip
    assert mixed.resumed_from == 3 and mixed.steps == TINY.steps


@pytest.mark.slow  # inductor builds C++ kernels: about 30 s on one thread
def test_inductor_compiled_training_runs_on_cpu(tmp_path: Path) -> None:
    config = dataclasses.replace(TINY, steps=2)
    eager = train(config, _waves(), RandomConvEncoder(), tmp_path / "eager", progress=False)
    compiled = train(
        config, _waves(), RandomConvEncoder(), tmp_path / "c", progress=False,
        compile_backend="inductor",
    )  # fmt: skip
    assert _losses(compiled.history) == pytest.approx(_losses(eager.history), abs=1e-4)


def test_unknown_compile_backend_is_refused(tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match="unknown torch.compile backend 'nonesuch'.*inductor"):
        train(
            TINY,
            _waves(),
            RandomConvEncoder(),
            tmp_path,
            progress=False,
            compile_backend="nonesuch",
        )
    assert not (tmp_path / "last.pt").exists()
    check = train_runtime.check_compile_backend
    assert check("inductor:reduce-overhead") == ("inductor", "reduce-overhead")
    assert check("aot_eager") == ("aot_eager", None)
    for spec in ("inductor:fastest", "aot_eager:reduce-overhead"):
        with pytest.raises(ValueError, match="a mode is given as inductor:<mode>"):
            check(spec)
    from spkadv.core import train_script

    with pytest.raises(SystemExit) as exit_info:  # refused before any audio is read
        train_script.main(["--manifest", str(tmp_path / "absent.tsv"), "--compile", "nonesuch"])
    assert exit_info.value.code == 2
    assert "unknown torch.compile backend 'nonesuch'" in capsys.readouterr().err


def test_changed_configuration_is_refused_on_resume(tmp_path: Path) -> None:
    train(TINY, _waves(), RandomConvEncoder(), tmp_path, progress=False, stop_after=2)
    with pytest.raises(CheckpointError, match="different training configuration"):
        train(
            dataclasses.replace(TINY, lr=0.5),
            _waves(),
            RandomConvEncoder(),
            tmp_path,
            progress=False,
        )


def test_checkpoint_from_before_a_new_model_field_resumes(tmp_path: Path) -> None:
    """A field added to the configuration later (at its default) does not orphan older checkpoints."""
    train(TINY, _waves(), RandomConvEncoder(), tmp_path, progress=False, stop_after=2)
    state = load_checkpoint(tmp_path / "last.pt")
    del state["config"]["model"]["mask_init"]  # as written before the field existed
    torch.save(state, tmp_path / "last.pt")
    resumed = train(TINY, _waves(), RandomConvEncoder(), tmp_path, progress=False)
    assert resumed.resumed_from == 2
    state["config"]["model"]["mask_init"] = (
        0.5  # but a changed value still is another configuration
    )
    torch.save(state, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="different training configuration"):
        train(TINY, _waves(), RandomConvEncoder(), tmp_path, progress=False)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_checkpoint_names_the_file(tmp_path: Path, damage: str) -> None:
    train(TINY, _waves(), RandomConvEncoder(), tmp_path, progress=False, stop_after=2)
    path = tmp_path / "last.pt"
    data = path.read_bytes()
    path.write_bytes(
        {"truncate": data[: len(data) // 2], "garbage": b"not a checkpoint" * 10, "empty": b""}[
            damage
        ]
    )
    with pytest.raises(CheckpointError, match=r"last\.pt.*corrupted or truncated"):
        train(TINY, _waves(), RandomConvEncoder(), tmp_path, progress=False)


def _script_setup(tmp_path: Path, steps: int) -> tuple[Path, Path]:
    """A manifest of tiny WAV files and a profile holding every key the script reads."""
    import soundfile as sf

    rows = ["utt_id\tspeaker\tgender\tsubset\tset\tpath\tduration\ttranscript"]
    for i, wave in enumerate(_waves(4, 0.3)):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, wave, 16000)
        rows.append(f"u{i}\ts{i % 2}\tF\ttrain\tsynthetic\t{path}\t0.3\tHELLO")
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("\n".join(rows) + "\n")
    profile = tmp_path / "tiny.yaml"
    profile.write_text(
        "\n".join(
            f"{k}: {v}"
            for k, v in {
                "MODEL_WIDTH": 4,
                "MODEL_STAGES": 2,
                "MODEL_RES_BLOCKS": 1,
                "MODEL_DILATION_BASE": 3,
                "MODEL_SPECTRAL_NORM": "false",
                "MODEL_MASK_NORM": "sigmoid",
                "MODEL_NORM": "none",
                "MODEL_LEVEL_SCALED": "false",
                "MODEL_INPUT_NORM": "true",
                "MODEL_LEVEL_WINDOW": 801,
                "MODEL_LEVEL_FLOOR": "1.0e-3",
                "LOSS_ALPHA": 0.01,
                "LOSS_BETA": 0.007,
                "LOSS_GAMMA": 0.8,
                "LOSS_THETA": 0.06,
                "LOSS_NORM": "l2",
                "EPS": 0.05,
                "LEARNING_RATE": "1.0e-3",
                "BATCH_SIZE": 2,
                "CROP_SECONDS": 0.1,
                "QUALITY_RAMP_STEPS": 0,
                "GRAD_CLIP": 0.0,
                "CHECKPOINT_EVERY": 1,
                "SEED": 0,
                "JOINT_STEPS": steps,
                "JOINT_WARM_START_STEPS": 1,
                "TRAIN_THREADS": 1,
                "TRAIN_UTTERANCES": 0,
            }.items()
        )  # fmt: skip
        + "\n"
    )
    return manifest, profile


def _script_args(tmp_path: Path, manifest: Path, profile: Path) -> list[str]:
    return [
        "--profile",
        str(profile),
        "--manifest",
        str(manifest),
        "--encoder",
        "random-conv",
        "--out",
        str(tmp_path / "out"),
        "--no-progress",
    ]


@pytest.mark.slow  # two interpreter starts: about 10-20 s
def test_killed_script_resumes_to_the_same_final_step(tmp_path: Path) -> None:
    STEPS = 200  # many short steps, so a random kill lands mid-run on a fast or a slow machine
    manifest, profile = _script_setup(tmp_path, steps=STEPS)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "spkadv.core.train_script",
        *_script_args(tmp_path, manifest, profile),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = tmp_path / "out" / "checkpoints" / "last.pt"
    deadline = time.time() + 60
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(float(np.random.default_rng().uniform(0.0, 0.5)))  # a random moment
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(ckpt)["step"]
    assert 0 < killed_at < STEPS, "the run finished before the kill: raise STEPS"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(ckpt)["step"] == STEPS
    assert (tmp_path / "out" / "model.pt").exists()


@pytest.mark.slow
def test_torchrun_ddp_two_processes_gloo(tmp_path: Path) -> None:
    manifest, profile = _script_setup(tmp_path, steps=4)
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "spkadv.core.train_script",
        *_script_args(tmp_path, manifest, profile),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SPKADV_DEVICE": "cpu"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    state = load_checkpoint(tmp_path / "out" / "checkpoints" / "last.pt")
    assert state["step"] == 4
    assert "model written" in done.stdout


def test_removal_phase_freezes_the_generator_and_improves_restoration(tmp_path: Path) -> None:
    config = dataclasses.replace(TINY, steps=2, removal_steps=8, checkpoint_every=100, lr=3.0e-3)
    joint_only = train(
        dataclasses.replace(config, removal_steps=0),
        _waves(),
        RandomConvEncoder(),
        tmp_path / "a",
        progress=False,
    )
    result = train(config, _waves(), RandomConvEncoder(), tmp_path / "b", progress=False)
    assert result.steps == 10 and len(result.history) == 10
    for a, b in zip(
        joint_only.generator.state_dict().values(),
        result.generator.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)  # F_P untouched by the removal phase
    removal = [h for h in result.history if h.get("phase_removal")]
    assert len(removal) == 8 and "angular" not in removal[0]
    assert removal[-1]["rpt"] < removal[0]["rpt"], (removal[0], removal[-1])
    assert plot_history(result.history) is not None


def test_removal_init_from_generator_restores_almost_exactly(tmp_path: Path) -> None:
    config = dataclasses.replace(
        TINY,
        model=SSEDConfig(width=4, stages=2, res_blocks=1, level_scaled=True),
        steps=2,
        removal_steps=1,
        removal_init_from_generator=True,
        lr=1.0e-6,
    )
    result = train(config, _waves(), RandomConvEncoder(), tmp_path, progress=False)
    x = torch.from_numpy(_waves(1)[0])[None]
    with torch.no_grad():
        n, m = result.generator(x)
        n_rev, m_rev = result.removal(x + config.eps * n * m)
    assert torch.allclose(n_rev, -n, atol=0.1) and torch.allclose(m_rev, m, atol=0.01)
    assert result.history[-1]["snr_rst_db"] > result.history[1]["snr_db"] + 10


def test_removal_steps_need_joint_training() -> None:
    with pytest.raises(ValueError, match="removal_steps"):
        dataclasses.replace(TINY, joint=False, removal_steps=3)
    with pytest.raises(ValueError, match="removal_steps"):
        dataclasses.replace(TINY, removal_steps=-1)


def test_removal_phase_learning_rate_schedule_and_fresh_optimizer(tmp_path: Path) -> None:
    config = dataclasses.replace(
        TINY,
        steps=2,
        removal_steps=6,
        removal_fresh_optimizer=True,
        removal_lr_schedule="cosine",
        lr=3.0e-3,
        checkpoint_every=100,
    )
    full = train(config, _waves(), RandomConvEncoder(), tmp_path / "full", progress=False)
    lrs = [h["lr"] for h in full.history if h.get("phase_removal")]
    assert lrs[0] == pytest.approx(config.lr) and all(
        b < a for a, b in zip(lrs, lrs[1:], strict=False)
    )
    assert lrs[-1] < 0.1 * config.lr
    constant = train(
        dataclasses.replace(config, removal_lr_schedule="constant"),
        _waves(),
        RandomConvEncoder(),
        tmp_path / "constant",
        progress=False,
    )
    assert {h["lr"] for h in constant.history if h.get("phase_removal")} == {config.lr}
    # interrupted inside the removal phase (after the fresh start) and resumed: the same F_R
    part_dir = tmp_path / "part"
    train(config, _waves(), RandomConvEncoder(), part_dir, progress=False, stop_after=4)
    resumed = train(config, _waves(), RandomConvEncoder(), part_dir, progress=False)
    assert resumed.resumed_from == 4
    for a, b in zip(
        full.removal.state_dict().values(), resumed.removal.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6)
    # the fresh optimiser changes the result (the joint phase's moments are dropped)
    kept = train(
        dataclasses.replace(config, removal_fresh_optimizer=False),
        _waves(),
        RandomConvEncoder(),
        tmp_path / "kept",
        progress=False,
    )
    assert any(
        not torch.allclose(a, b)
        for a, b in zip(
            full.removal.state_dict().values(), kept.removal.state_dict().values(), strict=True
        )
    )


def test_unknown_removal_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match="removal_lr_schedule='step'"):
        dataclasses.replace(TINY, removal_lr_schedule="step")
