"""The surrogate d-vector trained here and the ensemble the per-utterance code is optimised against."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from spkadv.core import modelfile, protect
from spkadv.core.models import RemovalModule, SSEDConfig, SSEDGenerator
from spkadv.encoders import surrogate
from spkadv.encoders.random_conv import RandomConvEncoder

TINY = surrogate.SurrogateConfig(hidden=16, layers=1, dim=16, steps=60, batch=8, lr=1e-2)


def _voice(f0: float, seconds: float, seed: int) -> np.ndarray:
    """A buzz at f0 with its harmonics, a syllable rate envelope and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6))
    wave = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 8))
    return (0.1 * env * wave + 0.005 * rng.standard_normal(len(t))).astype(np.float32)


def _corpus(per_speaker: int = 4) -> tuple[list[np.ndarray], list[str]]:
    waves, speakers = [], []
    for spk, f0 in (("low", 110.0), ("high", 260.0)):
        for i in range(per_speaker):
            waves.append(_voice(f0 * (1 + 0.02 * i), 2.0, seed=i + int(f0)))
            speakers.append(spk)
    return waves, speakers


def test_surrogate_learns_to_tell_two_voices_apart_and_is_seeded() -> None:
    torch.set_num_threads(1)
    waves, speakers = _corpus()
    model, history = surrogate.train_surrogate(waves, speakers, TINY)
    assert history[0]["step"] == 50 and history[-1]["step"] == TINY.steps
    assert history[-1]["accuracy"] == 1.0
    assert not any(p.requires_grad for p in model.parameters())  # frozen once trained
    held_out = [_voice(112.0, 2.0, 99), _voice(265.0, 2.0, 98)]
    z = F.normalize(model.embed(torch.from_numpy(np.stack(held_out))), dim=-1)
    ref = F.normalize(model.embed(torch.from_numpy(np.stack([waves[0], waves[-1]]))), dim=-1)
    same, cross = (z * ref).sum(-1), (z * ref.flip(0)).sum(-1)
    assert bool((same > cross).all()), f"same-speaker cos {same} not above cross-speaker {cross}"
    again, _ = surrogate.train_surrogate(waves, speakers, TINY)
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("log_mel", [True, False])
def test_save_and_load_give_the_same_embeddings(tmp_path: Path, log_mel: bool) -> None:
    waves, speakers = _corpus(2)
    cfg = dataclasses.replace(TINY, steps=5, log_mel=log_mel)
    model, _ = surrogate.train_surrogate(waves, speakers, cfg)
    digest = surrogate.save_surrogate(model, cfg, tmp_path / "s.pt")
    loaded = surrogate.load_surrogate(tmp_path / "s.pt")
    x = torch.from_numpy(waves[0])[None]
    assert torch.equal(model.embed(x), loaded.embed(x))
    assert loaded.fingerprint == digest and loaded.dim == TINY.dim
    frames = loaded.mel(x)  # log-compressed or GE2E's linear mel power
    assert bool((frames < 0).any()) is log_mel
    with pytest.raises(FileNotFoundError, match="train it first"):
        surrogate.load_surrogate(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot read the surrogate file"):
        surrogate.load_surrogate(tmp_path / "garbage.pt")
    mismatched = {"config": dataclasses.asdict(dataclasses.replace(cfg, log_mel=not log_mel))}
    torch.save({**mismatched, "state": model.state_dict()}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="do not match"):
        surrogate.load_surrogate(tmp_path / "other.pt")
    torch.save({"weights": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a surrogate"):
        surrogate.load_surrogate(tmp_path / "bad.pt")


def _first_crops(waves, idx, crop: int, rng: np.random.Generator) -> np.ndarray:
    """How the surrogate's crops were first cut, written out: a start drawn only for a wave longer
    than the crop, a shorter one zero padded."""
    out = np.zeros((len(idx), crop), dtype=np.float32)
    for row, i in enumerate(idx):
        wave = waves[i]
        if len(wave) > crop:
            start = int(rng.integers(0, len(wave) - crop + 1))
            out[row] = wave[start : start + crop]
        else:
            out[row, : len(wave)] = wave
    return out


def test_crops_are_cut_as_before() -> None:
    rng = np.random.default_rng(3)
    waves = [rng.standard_normal(n).astype(np.float32) for n in (500, 1000, 1001, 4000)]
    waves.append(rng.standard_normal(3000))  # float64 audio is cast like before
    idx = rng.integers(0, len(waves), size=64)
    new, old = np.random.default_rng(9), np.random.default_rng(9)
    for _ in range(3):  # the generator ends in the same state: the next batches agree too
        got = surrogate._crops(waves, idx, 1000, new)
        assert got.dtype == torch.float32
        assert np.array_equal(got.numpy(), _first_crops(waves, idx, 1000, old))


def test_bad_training_input_is_refused() -> None:
    waves, speakers = _corpus(2)
    with pytest.raises(ValueError, match="at least 2 training speakers"):
        surrogate.train_surrogate(waves[:2], ["a", "a"], TINY)
    with pytest.raises(ValueError, match="speaker labels"):
        surrogate.train_surrogate(waves, speakers[:-1], TINY)
    with pytest.raises(ValueError, match="crop_seconds"):
        surrogate.SurrogateConfig(crop_seconds=0.5)
    with pytest.raises(ValueError, match="steps"):
        surrogate.SurrogateConfig(steps=0)


def test_ensemble_cosine_is_the_weighted_mean_of_the_members_cosines() -> None:
    torch.manual_seed(0)
    a, b = RandomConvEncoder(), surrogate.DVectorEncoder(8, 1, 8)
    ens = surrogate.EnsembleEncoder([a, b], [1.0, 3.0])
    x, y = torch.randn(2, 32000) * 0.1, torch.randn(2, 32000) * 0.1
    cos = F.cosine_similarity(ens.embed(x), ens.embed(y), dim=-1)
    parts = [F.cosine_similarity(e.embed(x), e.embed(y), dim=-1) for e in (a, b)]
    torch.testing.assert_close(cos, (1.0 * parts[0] + 3.0 * parts[1]) / 4.0)
    torch.testing.assert_close(ens.embed(x).norm(dim=-1), torch.ones(2))
    with pytest.raises(ValueError, match="finite and > 0"):
        surrogate.EnsembleEncoder([a, b], [1.0, 0.0])


def _code_model() -> tuple[modelfile.ProtectionModel, np.ndarray, np.ndarray]:
    """A tiny per-utterance-code model with the random white box, a voice, and its plain code."""
    cfg = SSEDConfig(width=4, stages=2, res_blocks=1, code_film=True)
    torch.manual_seed(0)
    model = modelfile.ProtectionModel(
        SSEDGenerator(cfg).eval(), RemovalModule(cfg).eval(), 0.1, "t", cfg, {}, RandomConvEncoder()
    )
    model.meta.update(code_steps=3, code_radius=2.0)
    x = _voice(150.0, 1.5, 7)
    return model, x, protect.protection_code(model, x)


def test_protection_code_optimises_against_the_surrogates_in_the_meta(tmp_path: Path) -> None:
    waves, speakers = _corpus(2)
    model_s, _ = surrogate.train_surrogate(waves, speakers, dataclasses.replace(TINY, steps=5))
    path = tmp_path / "s.pt"
    surrogate.save_surrogate(model_s, TINY, path)
    model, x, plain = _code_model()
    assert model.code_encoder() is model.encoder()
    model.meta["code_surrogates"] = [{"path": str(path), "weight": 1.0}]
    ens = model.code_encoder()
    assert isinstance(ens, surrogate.EnsembleEncoder) and model.code_encoder() is ens  # loaded once
    joint = protect.protection_code(model, x)
    assert joint.shape == plain.shape and not np.array_equal(joint, plain)
    assert modelfile.portable_copy(model)._code_encoders == {}  # workers load their own
    model.meta["code_surrogates"] = [{"file": str(path)}]
    with pytest.raises(modelfile.ModelFileError, match="code_surrogates"):
        model.code_encoder()
    model.meta["code_surrogates"] = [{"path": str(path), "encoder": "random-conv", "weight": 1.0}]
    with pytest.raises(modelfile.ModelFileError, match="code_surrogates"):
        model.code_encoder()  # one of the two, not both


def test_a_named_encoder_joins_the_white_box_in_the_codes_loss() -> None:
    model, x, plain = _code_model()
    model.meta["code_surrogates"] = [{"encoder": "random-conv", "weight": 2.0}]
    ens = model.code_encoder()
    assert isinstance(ens, surrogate.EnsembleEncoder) and len(ens.encoders) == 2
    assert ens.scales == pytest.approx([(1 / 3) ** 0.5, (2 / 3) ** 0.5])
    joint = protect.protection_code(model, x)
    assert joint.shape == plain.shape and not np.array_equal(joint, plain)
    model.meta["code_surrogates"] = [{"encoder": "no-such-encoder", "weight": 1.0}]
    with pytest.raises(Exception, match="no-such-encoder"):
        model.code_encoder()
