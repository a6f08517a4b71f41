"""Utterance context and per-utterance codes: exact chunking, sidecar codes, optimisation, gn noise."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from spkadv.audio import sidecar
from spkadv.core import conditioning, modelfile, protect
from spkadv.core.losses import LossWeights, delta_removal_loss
from spkadv.core.models import RemovalModule, SSEDConfig, SSEDGenerator
from spkadv.core.train import TrainConfig, train
from spkadv.encoders.random_conv import RandomConvEncoder
from spkadv.evaluation import conditions
from spkadv.evaluation.metrics import snr_db

CONDITIONED = SSEDConfig(width=4, stages=2, res_blocks=1, embed_dim=16, code_film=True)


def _model(cfg: SSEDConfig = CONDITIONED, seed: int = 0) -> modelfile.ProtectionModel:
    torch.manual_seed(seed)
    gen, rem = SSEDGenerator(cfg).eval(), RemovalModule(cfg).eval()
    with torch.no_grad():  # non-zero FiLM weights, so that the embedding really matters
        for module in (gen, rem):
            if module.film is not None:
                module.film.weight.normal_(0, 0.5)
    return modelfile.ProtectionModel(gen, rem, 0.1, "test", cfg, {}, RandomConvEncoder())


def _speech(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (0.2 * env * np.sin(2 * np.pi * 180 * t) + 0.01 * rng.standard_normal(len(t))).astype(
        np.float32
    )


def test_code_dim_is_scale_and_shift_per_bottleneck_channel() -> None:
    assert CONDITIONED.code_dim == 2 * 4 * 4  # width 4, two stages: 16 bottleneck channels
    assert SSEDConfig().code_dim == 0


def test_zero_code_and_zero_film_equal_the_unconditioned_generator() -> None:
    torch.manual_seed(1)
    plain = SSEDGenerator(SSEDConfig(width=4, stages=2, res_blocks=1))
    torch.manual_seed(1)
    cond = SSEDGenerator(dataclasses.replace(plain.config, code_film=True))
    x = torch.from_numpy(_speech(0.3))[None]
    code = torch.zeros(1, cond.config.code_dim)
    n0, m0 = plain(x)
    n1, m1 = cond(x, code=code)
    assert torch.allclose(n0, n1) and torch.allclose(m0, m1)
    n2, _ = cond(x, code=torch.full_like(code, 0.5))
    assert not torch.allclose(n0, n2)


def test_conditioned_chunked_equals_whole_file_and_the_code_changes_the_output() -> None:
    model = _model()
    x = _speech(2.3)
    code = np.random.default_rng(0).normal(0, 0.3, CONDITIONED.code_dim).astype(np.float32)
    whole = protect.protect(model, x, chunk_seconds=10.0, code=code)
    chunked = protect.protect(model, x, chunk_seconds=0.25, code=code)
    assert np.max(np.abs(whole - chunked)) < 1e-5
    other = protect.protect(model, x, chunk_seconds=10.0)
    assert np.max(np.abs(whole - other)) > 1e-4


def test_the_utterance_embedding_conditions_every_chunk_the_same_way() -> None:
    model = _model()
    x = _speech(2.0)
    emb = model.embedding(x)
    assert emb.shape == (1, 16) and float(emb.norm()) == pytest.approx(1.0, abs=1e-5)
    # the context is the whole file's: a chunk processed alone gets another embedding
    alone = protect.protect(model, x[:8000], chunk_seconds=10.0)
    inside = protect.protect(model, x, chunk_seconds=10.0)[:8000]
    assert np.max(np.abs(alone[:4000] - inside[:4000])) > 1e-6


def test_long_file_embedding_averages_windows() -> None:
    enc = RandomConvEncoder()
    x = np.tile(_speech(1.0), 70)  # 70 s: three 30 s windows (the 10 s tail is kept)
    emb = conditioning.utterance_embedding(enc, x)
    assert emb.shape == (1, 16) and torch.isfinite(emb).all()


def test_optimised_code_lowers_the_similarity_and_stays_in_the_ball() -> None:
    model = _model(dataclasses.replace(CONDITIONED, embed_dim=0))
    x = _speech(1.0)
    code, history = conditioning.optimise_code(
        model.generator, model.encoder(), x, 0.3, steps=8, lr=0.5, radius=2.0, window_seconds=0.5
    )
    assert code.shape == (CONDITIONED.code_dim,) and np.linalg.norm(code) <= 2.0 + 1e-4
    assert len(history) == 8 and min(history) < history[0]


def test_code_travels_in_the_sidecar(tmp_path: Path) -> None:
    code = np.linspace(-0.3, 0.3, CONDITIONED.code_dim).astype(np.float32)
    target = tmp_path / "a.wav"
    sidecar.write_tag(target, "abc", code)
    assert sidecar.read_tag(target) == "abc"
    np.testing.assert_array_equal(sidecar.read_code(target), code)
    sidecar.write_tag(tmp_path / "b.wav", "abc")
    assert sidecar.read_code(tmp_path / "b.wav") is None


def test_gn_has_the_snr_of_adv_per_utterance() -> None:
    x = _speech(1.5)
    delta = 0.01 * np.random.default_rng(3).standard_normal(len(x)).astype(np.float32)
    gn = conditions.matched_noise(x, delta, 0, "utt1")
    assert snr_db(x, gn) == pytest.approx(snr_db(x, x + delta), abs=0.2)
    assert np.array_equal(gn, conditions.matched_noise(x, delta, 0, "utt1"))
    assert not np.array_equal(gn, conditions.matched_noise(x, delta, 0, "utt2"))


def test_delta_removal_loss_is_relative_and_zero_for_exact_removal() -> None:
    n = torch.rand(2, 100) * 2 - 1
    m = torch.rand(2, 100) * 0.01  # a tiny mask: eq. 8's mask term would hardly see it
    assert float(delta_removal_loss(n, m, -n, m)) == pytest.approx(0.0, abs=1e-6)
    assert float(delta_removal_loss(n, m, -n, torch.zeros_like(m))) == pytest.approx(1.0)


def test_tiny_joint_run_with_delta_removal_does_not_collapse(tmp_path: Path) -> None:
    """A level-scaled generator has a tiny mask; with eq. 8 F_R may learn m' = 0 (a no-op
    removal). With the δ form, F_R must remove most of δ after a short run."""
    rng = np.random.default_rng(0)
    waves = [_speech(1.0, seed=i) * rng.uniform(0.3, 1.0) for i in range(4)]
    model_cfg = SSEDConfig(width=4, stages=2, res_blocks=1, level_scaled=True, code_film=True)
    cfg = TrainConfig(
        model=model_cfg,
        weights=LossWeights(norm="rms", quality="snr_hinge", snr_target_db=25.0, rpt="delta"),
        eps=0.15,
        lr=3e-3,
        steps=20,
        batch_size=2,
        crop_seconds=0.25,
        removal_steps=60,
        removal_init_from_generator=True,
        code_sigma=0.3,
        checkpoint_every=1000,
    )
    result = train(cfg, waves, RandomConvEncoder(), tmp_path, progress=False)
    model = modelfile.ProtectionModel(
        result.generator, result.removal, cfg.eps, "t", model_cfg, {}, RandomConvEncoder()
    )
    x = waves[0]
    code = np.full(model_cfg.code_dim, 0.2, np.float32)
    adv = protect.protect(model, x, code=code)
    rst = protect.restore(model, adv, code=code)
    assert snr_db(x, rst) > snr_db(x, adv) + 10  # F_R removes over 90 % of δ's amplitude
    m_rev = result.removal(torch.from_numpy(adv)[None], code=torch.from_numpy(code)[None])[1]
    assert float(m_rev.detach().mean()) > 1e-4


def test_training_stops_at_the_cpu_budget_and_resumes(tmp_path: Path) -> None:
    waves = [_speech(0.5, seed=i) for i in range(2)]
    cfg = TrainConfig(
        model=SSEDConfig(width=4, stages=1, res_blocks=0),
        weights=LossWeights(norm="rms"),
        joint=False,
        steps=10**6,
        batch_size=1,
        crop_seconds=0.1,
        checkpoint_every=10**6,
    )
    first = train(cfg, waves, RandomConvEncoder(), tmp_path, progress=False, max_cpu_seconds=0.5)
    assert 0 < first.steps < 10**6
    second = train(cfg, waves, RandomConvEncoder(), tmp_path, progress=False, max_cpu_seconds=1.0)
    assert second.resumed_from == first.steps and second.steps > first.steps


SEGMENTED = SSEDConfig(width=4, stages=2, res_blocks=1, code_film=True, code_segment_seconds=0.05)


def test_segment_codes_chunk_exactly_and_act_locally() -> None:
    model = _model(SEGMENTED)
    x = _speech(1.3)
    segments = SEGMENTED.code_segments(len(x))
    assert segments == 26 and SEGMENTED.code_segment_samples == 800
    code = np.zeros((segments, SEGMENTED.code_dim), np.float32)
    code[10] = 0.8  # one segment only: samples 8000-8800
    whole = protect.protect(model, x, chunk_seconds=10.0, code=code)
    chunked = protect.protect(model, x, chunk_seconds=0.1, code=code)
    assert np.max(np.abs(whole - chunked)) < 1e-5
    plain = protect.protect(model, x, chunk_seconds=10.0, code=np.zeros_like(code))
    changed = np.abs(whole - plain) > 1e-7
    reach = model.receptive_field
    assert changed[8000:8800].any() and not changed[: 8000 - reach].any()
    assert not changed[8800 + reach :].any()


def test_segment_code_optimisation_covers_the_whole_signal_in_pieces() -> None:
    model = _model(SEGMENTED)
    x = _speech(1.0)
    code, history = conditioning.optimise_code(
        model.generator, model.encoder(), x, 0.3, steps=3, radius=1.0, piece_seconds=0.4
    )
    assert code.shape == (SEGMENTED.code_segments(len(x)), SEGMENTED.code_dim)
    assert np.all(np.linalg.norm(code, axis=-1) <= 1.0 + 1e-4) and len(history) == 3
    assert np.abs(code).sum() > 0


def test_segment_code_roundtrips_bit_exactly_through_the_sidecar(tmp_path: Path) -> None:
    code = np.random.default_rng(1).normal(0, 0.5, (7, 32)).astype(np.float32)
    sidecar.write_tag(tmp_path / "a.wav", "fp", code)
    back = sidecar.read_code(tmp_path / "a.wav")
    assert back.shape == (7, 32) and np.array_equal(back, code)
    assert (tmp_path / "a.wav.spkadv.json").stat().st_size < 7 * 32 * 4 * 1.5 + 200
    (tmp_path / "b.wav.spkadv.json").write_text(
        '{"spkadv_model_fingerprint": "fp", "code": {"shape": [2]}}'
    )
    with pytest.raises(sidecar.SidecarError, match="unreadable code"):
        sidecar.read_code(tmp_path / "b.wav")


def test_encode_then_decode_is_the_forward_pass() -> None:
    model = _model(SEGMENTED)
    x = torch.from_numpy(_speech(0.7)).unsqueeze(0)
    code = torch.randn(1, SEGMENTED.code_segments(x.shape[-1]), SEGMENTED.code_dim)
    with torch.no_grad():
        n, m = model.generator(x, code=code, code_offset=1600)
        n2, m2 = model.generator.decode(model.generator.encode(x), code=code, code_offset=1600)
    assert torch.equal(n, n2) and torch.equal(m, m2)


def test_bf16_code_optimisation_also_lowers_the_similarity_and_is_used_when_the_model_says_so() -> (
    None
):
    model = _model(dataclasses.replace(CONDITIONED, embed_dim=0))
    x = _speech(1.0)
    kwargs = dict(steps=8, lr=0.5, radius=2.0, window_seconds=0.5)
    code32, hist32 = conditioning.optimise_code(model.generator, model.encoder(), x, 0.3, **kwargs)
    code16, hist16 = conditioning.optimise_code(
        model.generator, model.encoder(), x, 0.3, bf16=True, **kwargs
    )
    assert code16.dtype == np.float32 and np.linalg.norm(code16) <= 2.0 + 1e-4
    assert min(hist16) < hist16[0]
    assert not np.array_equal(code16, code32)  # the autocast path really ran
    model.meta.update(code_steps=8, code_radius=2.0)
    assert np.array_equal(protect.protection_code(model, x), protect.protection_code(model, x))
    default = protect.protection_code(model, x)
    model.meta["code_bf16"] = True
    assert not np.array_equal(protect.protection_code(model, x), default)


def test_code_shift_is_reproducible_and_zero_shift_is_the_plain_optimisation() -> None:
    model = _model(dataclasses.replace(CONDITIONED, embed_dim=0, code_segment_seconds=0.25))
    x = _speech(1.2)
    kwargs = dict(steps=4, lr=0.5, radius=2.0)
    plain, _ = conditioning.optimise_code(model.generator, model.encoder(), x, 0.3, **kwargs)
    zero, _ = conditioning.optimise_code(
        model.generator, model.encoder(), x, 0.3, shift=0, **kwargs
    )
    np.testing.assert_array_equal(plain, zero)
    first, hist = conditioning.optimise_code(
        model.generator, model.encoder(), x, 0.3, shift=160, **kwargs
    )
    again, _ = conditioning.optimise_code(
        model.generator, model.encoder(), x, 0.3, shift=160, **kwargs
    )
    np.testing.assert_array_equal(first, again)  # seeded offsets: the same code every time
    assert not np.array_equal(first, plain) and len(hist) == 4


def test_protection_code_honours_the_models_code_shift() -> None:
    model = _model(dataclasses.replace(CONDITIONED, embed_dim=0))
    model.meta.update(code_steps=3, code_radius=2.0)
    x = _speech(1.0)
    plain = protect.protection_code(model, x)
    model.meta["code_shift"] = 120
    shifted = protect.protection_code(model, x)
    assert plain.shape == shifted.shape and not np.array_equal(plain, shifted)
