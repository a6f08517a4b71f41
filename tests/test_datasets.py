"""Training data read from disk: the same crops, batches, centroids and trained weights as from
memory; one crop's frames read per item; handles per process; caches; clear errors."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from spkadv.audio.io import AudioError, AudioSource, load_audio
from spkadv.core import datasets
from spkadv.core.datasets import CropDataset, StepSampler
from spkadv.core.models import SSEDConfig
from spkadv.core.train import TrainConfig, train
from spkadv.data import utterances as utt_mod
from spkadv.data.crops import crop_start, random_crop
from spkadv.data.utterances import DiskUtterances, MemoryUtterances, utterance_lengths
from spkadv.encoders.random_conv import RandomConvEncoder
from torch.utils.data import DataLoader

CROP = 800  # 0.05 s
TINY = TrainConfig(
    model=SSEDConfig(width=4, stages=2, res_blocks=1),
    eps=0.05,
    lr=1.0e-2,
    steps=4,
    batch_size=2,
    crop_seconds=CROP / 16000,
    checkpoint_every=2,
    removal_steps=1,
)


def _write(folder: Path, native_only: bool = False) -> list[Path]:
    """Utterances in the formats a corpus holds: 16-bit WAV and FLAC, float WAV (with samples
    beyond [-1, 1], clipped when read), stereo, shorter than a crop, exactly one crop long, and
    (unless ``native_only``) a file at 22.05 kHz that is resampled."""
    rng = np.random.default_rng(5)
    folder.mkdir(parents=True, exist_ok=True)

    def noise(n: int, channels: int = 1, scale: float = 0.2) -> np.ndarray:
        x = scale * rng.standard_normal((n, channels) if channels > 1 else n)
        return x.astype(np.float32)

    files = [
        ("a.wav", noise(4800), 16000, "PCM_16"),
        ("b.flac", noise(4000), 16000, "PCM_16"),
        ("c.wav", noise(3300, scale=0.8), 16000, "FLOAT"),  # some samples beyond 1: clipped
        ("d.wav", noise(3500, channels=2), 16000, "PCM_16"),
        ("e.wav", noise(500), 16000, "PCM_16"),  # shorter than a crop: zero padded
        ("f.wav", noise(CROP), 16000, "PCM_16"),  # exactly one crop
    ]
    if not native_only:
        files.append(("g.wav", noise(3000), 22050, "PCM_16"))  # resampled to 16 kHz
    paths = []
    for name, x, sr, subtype in files:
        sf.write(folder / name, x, sr, subtype=subtype)
        paths.append(folder / name)
    return paths


@pytest.fixture(autouse=True)
def _quiet(recwarn):  # stereo and clipped files warn, as they should; not the subject here
    yield


@pytest.fixture
def corpus(tmp_path: Path) -> list[Path]:
    return _write(tmp_path / "audio")


def _memory(paths) -> list[np.ndarray]:
    return [load_audio(p) for p in paths]


def test_crop_rule_is_one_rule():
    wave = np.arange(2000, dtype=np.float32)
    for k in range(20):
        a, b = np.random.default_rng([3, k]), np.random.default_rng([3, k])
        start = crop_start(len(wave), CROP, b)
        assert np.array_equal(random_crop(wave, CROP, a), wave[start : start + CROP])
    short = np.ones(10, np.float32)
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    crop = random_crop(short, 16, rng)
    assert rng.bit_generator.state == before  # a short wave draws nothing
    assert crop.tolist() == [1.0] * 10 + [0.0] * 6


def test_disk_crops_equal_memory_crops_bit_for_bit(corpus, tmp_path):
    disk = DiskUtterances(corpus)
    waves = _memory(corpus)
    assert disk.lengths.tolist() == [len(w) for w in waves]
    for i, wave in enumerate(waves):
        assert np.array_equal(disk[i], wave)
        for start, stop in [(0, 100), (37, 837), (len(wave) - 5, len(wave) + 50), (-3, 4)]:
            assert np.array_equal(disk.read(i, start, stop), wave[max(0, start) : stop])
    mem_ds, disk_ds = CropDataset(waves, CROP, seed=11), CropDataset(disk, CROP, seed=11)
    for k in range(200):
        (a, ia), (b, ib) = mem_ds[k], disk_ds[k]
        assert ia == ib and a.dtype == b.dtype == torch.float32
        assert torch.equal(a, b), f"item {k} (utterance {ia})"


def test_loader_workers_give_the_same_batches(corpus):
    """Two forked workers, each with its own handles, give the batches of the in-memory path."""
    waves, disk = _memory(corpus), DiskUtterances(corpus)
    disk.crop(0, CROP, np.random.default_rng(0))  # a handle open in the parent before the fork

    def batches(source, workers):
        loader = DataLoader(
            CropDataset(source, CROP, seed=2),
            batch_size=4,
            sampler=StepSampler(3, 9, 4),
            num_workers=workers,
            multiprocessing_context="fork" if workers else None,
        )
        return list(loader)

    for (x, i), (y, j) in zip(batches(waves, 0), batches(disk, 2), strict=True):
        assert torch.equal(i, j) and torch.equal(x, y)


def _child_reads(disk: DiskUtterances, inherited_id: int, queue) -> None:
    crop = disk.crop(0, CROP, np.random.default_rng(1))
    queue.put((id(disk._open[0]) != inherited_id, disk._pid == os.getpid(), crop.tolist()))


def test_a_forked_process_opens_its_own_handles(corpus):
    disk = DiskUtterances(corpus)
    expected = disk.crop(0, CROP, np.random.default_rng(1))
    inherited = disk._open[0]
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_reads, args=(disk, id(inherited), queue))
    child.start()
    fresh, own_pid, crop = queue.get(timeout=60)
    child.join(60)
    assert fresh and own_pid and np.array_equal(np.float32(crop), expected)
    assert disk._open[0] is inherited  # the parent's handle is untouched and still works
    assert np.array_equal(disk.crop(0, CROP, np.random.default_rng(1)), expected)


def test_pickled_dataset_carries_no_handles(corpus):
    disk = DiskUtterances(corpus, open_files=2)
    for i in range(len(disk)):
        disk.crop(i, CROP, np.random.default_rng(i))
    assert len(disk._open) == 2  # least recently used handles closed
    copy = pickle.loads(pickle.dumps(disk))
    assert not copy._open and copy._pid is None
    assert np.array_equal(copy.read(3, 0, 900), disk.read(3, 0, 900))
    disk.close()
    assert not disk._open


def test_disk_dataset_reads_one_crops_frames_per_item(tmp_path, monkeypatch):
    """Spy on libsndfile reads: each item reads at most one crop's frames, never a whole file."""
    paths = _write(tmp_path / "audio", native_only=True)
    long = tmp_path / "audio" / "long.wav"
    sf.write(long, np.zeros(16000 * 20, np.float32), 16000, subtype="PCM_16")  # 20 s
    disk = DiskUtterances([*paths, long])
    reads: list[int] = []
    original = sf.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        out = original(self, frames, *args, **kwargs)
        reads.append(len(out))
        return out

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    monkeypatch.setattr(AudioSource, "read_all", lambda self: pytest.fail("whole file read"))
    monkeypatch.setattr(utt_mod, "load_audio", lambda *a, **k: pytest.fail("whole file read"))
    ds = CropDataset(disk, CROP, seed=4)
    for k in range(120):
        reads.clear()
        ds[k]
        assert sum(reads) <= CROP, f"item {k} read {reads} frames"
    seen = {ds[k][1] for k in range(120)}
    assert len(paths) in seen  # the 20 s file was cropped too


def test_training_from_disk_equals_training_from_memory(corpus, tmp_path):
    """The same crops reach the model, so the trained weights are the same bit for bit; also
    with the centroid target, whose centroids come from disk one utterance at a time."""
    waves, disk = _memory(corpus), DiskUtterances(corpus, cache_dir=tmp_path / "cache")
    speakers = ["s1", "s2", "s1", "s3", "s2", "s3", "s1"]
    enc = RandomConvEncoder()
    for target in ("utterance", "centroid"):
        cfg = dataclasses.replace(TINY, attack_target=target)
        a = train(cfg, waves, enc, tmp_path / f"{target}-mem", progress=False, speakers=speakers)
        b = train(cfg, disk, enc, tmp_path / f"{target}-disk", progress=False, speakers=speakers)
        assert a.steps == b.steps == cfg.total_steps
        assert datasets.state_digest(a.generator) == datasets.state_digest(b.generator)
        assert datasets.state_digest(a.removal) == datasets.state_digest(b.removal)
        timing = {"step_s", "steps_per_s", "crops_per_s"}  # wall clock: differs run to run
        losses = [[(k, v) for k, v in h.items() if k not in timing] for h in a.history]
        assert losses == [[(k, v) for k, v in h.items() if k not in timing] for h in b.history]


def test_centroids_from_disk_equal_memory_and_are_cached_on_disk(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_CENTROID_CACHE", {})
    calls = []

    class Counting(RandomConvEncoder):
        def embed(self, waves: torch.Tensor) -> torch.Tensor:
            calls.append(len(waves))
            return super().embed(waves)

    enc, cpu = Counting(), torch.device("cpu")
    speakers = ["a", "b", "a", "b", "c", "c", "a"]
    waves, disk = _memory(corpus), DiskUtterances(corpus, cache_dir=tmp_path / "cache")
    key = datasets.centroid_key(enc, waves, speakers, 0.1)
    assert datasets.centroid_key(enc, disk, speakers, 0.1) == key
    mem, mem_rows = datasets.speaker_centroids(enc, waves, speakers, cpu, max_seconds=0.1)
    monkeypatch.setattr(datasets, "_CENTROID_CACHE", {})
    got, rows = datasets.speaker_centroids(enc, disk, speakers, cpu, max_seconds=0.1)
    assert torch.equal(got, mem) and torch.equal(rows, mem_rows)
    assert (tmp_path / "cache" / "centroids" / f"{key}.pt").is_file()
    monkeypatch.setattr(datasets, "_CENTROID_CACHE", {})  # a later run: the file answers
    calls.clear()
    again, _ = datasets.speaker_centroids(enc, disk, speakers, cpu, max_seconds=0.1)
    assert torch.equal(again, mem) and not calls
    (tmp_path / "cache" / "centroids" / f"{key}.pt").write_bytes(b"damaged")
    monkeypatch.setattr(datasets, "_CENTROID_CACHE", {})
    fixed, _ = datasets.speaker_centroids(enc, disk, speakers, cpu, max_seconds=0.1)
    assert torch.equal(fixed, mem) and len(calls) == len(corpus)


def test_lengths_come_from_headers_and_are_cached(corpus, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = utterance_lengths(corpus, cache)
    assert first.tolist() == [len(load_audio(p)) for p in corpus]
    opened = []
    monkeypatch.setattr(
        utt_mod, "AudioSource", lambda p, *a: opened.append(p) or AudioSource(p, *a)
    )
    assert utterance_lengths(corpus, cache).tolist() == first.tolist() and not opened
    sf.write(corpus[0], np.zeros(1234, np.float32), 16000, subtype="PCM_16")  # changed file
    os.utime(corpus[0], ns=(1, 1))  # another modification time
    assert utterance_lengths(corpus, cache)[0] == 1234 and len(opened) == len(corpus)


def test_a_file_changed_after_listing_is_refused(corpus):
    disk = DiskUtterances(corpus)
    sf.write(corpus[1], np.zeros(1000, np.float32), 16000, subtype="PCM_16")
    with pytest.raises(AudioError, match="changed"):
        disk.read(1, 0, 10)


def test_train_audio_modes_and_bad_input(corpus, tmp_path):
    mem = datasets.train_audio(corpus, limit=3, mode="memory", progress=False)
    disk = datasets.train_audio(corpus, 3, "disk", progress=False, cache_dir=tmp_path)
    assert isinstance(mem, list) and isinstance(disk, DiskUtterances)
    assert len(mem) == len(disk) == 3 and disk.cache_dir == tmp_path
    assert isinstance(utt_mod.as_utterances(mem), MemoryUtterances)
    with pytest.raises(ValueError, match="TRAIN_DATA"):
        datasets.train_audio(corpus, mode="mmap")
    with pytest.raises(ValueError, match="TRAIN_UTTERANCES"):
        datasets.train_audio(corpus, limit=-1)
    with pytest.raises(ValueError, match="empty"):
        DiskUtterances([])
    with pytest.raises(ValueError, match="lengths"):
        DiskUtterances(corpus, lengths=[1, 2])
    with pytest.raises(AudioError, match="no such file"):
        DiskUtterances([tmp_path / "missing.wav"])
    with pytest.raises(AudioError, match="no such file"):
        utterance_lengths([tmp_path / "missing.wav"], tmp_path)
    with pytest.raises(ValueError, match="empty"):
        CropDataset([], CROP, 0)


@pytest.mark.slow  # builds a tiny synthetic corpus (flite): about 5 s idle
def test_smoke_training_on_the_synthetic_corpus_reads_the_same_from_disk(tmp_path):
    """The smoke profile's training settings on the synthetic corpus: the same crops and, after a
    few steps, the same weights from memory and from disk."""
    from spkadv.base.config import load_profile
    from spkadv.core.train import config_from_params
    from spkadv.data import synth, voices

    if not set(voices.FLITE_VOICES) <= set(voices.available_flite_voices()):
        pytest.skip("Debian flite with its voices is not installed")
    config = synth.SynthConfig(
        eval_speakers_per_gender=1,
        train_speakers_per_gender=1,
        utterances_per_speaker=2,
        candidates_per_gender=2,
        base_voices=("slt", "awb"),
        workers=1,
    )
    manifest, _ = synth.build_corpus(config, tmp_path / "corpus", progress=False)
    rows = manifest[manifest["subset"] == "train"]
    params = load_profile("smoke")
    assert params["TRAIN_DATA"] == "memory"
    cfg = config_from_params(params, "JOINT_STEPS", "JOINT_WARM_START_STEPS", True)
    cfg = dataclasses.replace(cfg, steps=3, warm_start_steps=1, removal_steps=1)
    waves = datasets.train_audio(rows["path"], params["TRAIN_UTTERANCES"], "memory", False)
    disk = datasets.train_audio(rows["path"], params["TRAIN_UTTERANCES"], "disk", False)
    mem_ds = CropDataset(waves, cfg.crop_samples, cfg.seed)
    disk_ds = CropDataset(disk, cfg.crop_samples, cfg.seed)
    for k in StepSampler(0, cfg.total_steps, cfg.batch_size):
        (a, i), (b, j) = mem_ds[k], disk_ds[k]
        assert i == j and torch.equal(a, b)
    enc = RandomConvEncoder()
    a = train(cfg, waves, enc, tmp_path / "mem", progress=False)
    b = train(cfg, disk, enc, tmp_path / "disk", progress=False)
    assert datasets.state_digest(a.generator) == datasets.state_digest(b.generator)
    assert datasets.state_digest(a.removal) == datasets.state_digest(b.removal)


def test_state_digest_takes_zero_dim_tensors_and_keeps_the_bytes_digest():
    """A module with BatchNorm (a 0-dim long num_batches_tracked) hashes; the digest follows the
    bytes of every tensor, the 0-dim ones included."""
    import hashlib

    bn = torch.nn.BatchNorm1d(3)
    first = datasets.state_digest(bn)
    bn.num_batches_tracked += 1
    assert datasets.state_digest(bn) != first
    lin = torch.nn.Linear(2, 2)  # no 0-dim tensor: the digest is the one of the byte views
    expect = hashlib.sha256(type(lin).__qualname__.encode())
    for key, tensor in sorted(lin.state_dict().items()):
        expect.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        expect.update(tensor.detach().contiguous().view(torch.uint8).numpy().tobytes())
    assert datasets.state_digest(lin) == expect.hexdigest()
