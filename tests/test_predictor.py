"""The amortised code (spkadv.core.predictor): exact chunking of the predicted code stream, no
encoder backward pass at k = 0, training on a tiny synthetic set, the ball, the file."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from spkadv.core import modelfile, predictor, protect
from spkadv.core.models import RemovalModule, SSEDConfig, SSEDGenerator
from spkadv.encoders.random_conv import RandomConvEncoder
from spkadv.studies import amortised

SEG = 4000  # 0.25 s segments


class CountingEncoder(torch.nn.Module):
    """The random stand-in encoder, counting its forward calls and the backward passes through
    its output (a tensor hook fires once per backward pass that reaches the embedding)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner, self.name = RandomConvEncoder(), "counting"
        self.forwards = self.backwards = 0

    def embed(self, waves: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        z = self.inner.embed(waves)
        if z.requires_grad:
            z.register_hook(self._count)
        return z

    def _count(self, grad: torch.Tensor) -> None:
        self.backwards += 1


def _model(seed: int = 0) -> modelfile.ProtectionModel:
    cfg = SSEDConfig(width=4, stages=2, res_blocks=1, code_film=True, code_segment_seconds=0.25)
    torch.manual_seed(seed)
    gen, rem = SSEDGenerator(cfg).eval(), RemovalModule(cfg).eval()
    meta = {"code_steps": 2, "code_radius": 1.5, "encoder": "test"}
    return modelfile.ProtectionModel(gen, rem, 0.1, f"model{seed}", cfg, meta, CountingEncoder())


def _speech(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise under a slow random envelope: level and spectrum change from segment to segment."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    envelope = np.repeat(rng.uniform(0.01, 0.3, size=n // 800 + 1), 800)[:n]
    tone = np.sin(2 * np.pi * rng.uniform(100, 400) * np.arange(n) / 16000)
    return (envelope * (rng.standard_normal(n) + 2 * tone)).astype(np.float32)


def _predictor(model, **sizes) -> predictor.CodePredictor:
    torch.manual_seed(1)
    config = predictor.PredictorConfig.for_model(model, hidden=8, batch_segments=4, **sizes)
    return predictor.CodePredictor(config).eval()


def test_the_code_stream_predicted_in_pieces_equals_the_whole_files():
    model = _model()
    net = _predictor(model)
    x = _speech(9.3)
    whole = predictor.predict_codes(net, x)
    assert whole.shape == (model.config.code_segments(len(x)), model.config.code_dim)
    reader = lambda a, b: x[a:b].copy()  # noqa: E731 - a file read in pieces
    pieced = predictor.predict_codes(net, reader, total=len(x), piece_seconds=1.0)
    assert np.array_equal(whole, pieced)
    cuts = [0, 5, 6, 13, len(whole)]  # ranges not aligned on the batches
    parts = [
        predictor.predict_segments(net, reader, a, b, len(x)) for a, b in itertools.pairwise(cuts)
    ]
    assert np.array_equal(whole, np.concatenate(parts))
    # a segment's code depends on its context only: a longer file leaves it unchanged
    longer = predictor.predict_codes(net, np.concatenate([x, _speech(3.0, seed=5)]))
    inside = len(x) // SEG - net.config.context_segments
    assert np.array_equal(whole[:inside], longer[:inside])
    assert not np.array_equal(whole[-1], longer[len(whole) - 1])


def test_protect_with_zero_refinement_steps_never_runs_the_encoder_backward():
    model = _model()
    net = _predictor(model)
    x = _speech(1.6)
    encoder = model.encoder()
    code = predictor.amortised_code(model, net, x, steps=0)
    adv = protect.protect(model, x, code=code)
    assert encoder.backwards == 0 and encoder.forwards == 0
    on_surface = predictor.amortised_code(model, net, x, steps=0, to_radius=True)
    norms = np.linalg.norm(on_surface, axis=1)
    assert np.allclose(norms, net.config.radius, rtol=1e-5) and encoder.forwards == 0
    assert np.isfinite(adv).all() and not np.array_equal(adv, x)
    restored = protect.restore(model, adv, code=code)  # the key holder: the code of the sidecar
    assert restored.shape == x.shape and encoder.backwards == 0
    predictor.amortised_code(model, net, x, steps=1)  # the counter works: one step, one backward
    assert encoder.backwards == 1


def test_refinement_from_the_zero_code_is_todays_protection_code():
    model = _model()
    x = _speech(1.3)
    zeros = np.zeros((model.config.code_segments(len(x)), model.config.code_dim), np.float32)
    refined = predictor.refine_code(model, x, zeros, steps=2)
    assert np.array_equal(refined, protect.protection_code(model, x, steps=2))
    assert np.array_equal(predictor.amortised_code(model, None, x, 2, start="zero"), refined)


def test_the_predictor_learns_a_tiny_synthetic_set_and_stays_in_the_ball():
    model = _model()
    net = _predictor(model)
    radius = net.config.radius
    rng = np.random.default_rng(2)
    direction = torch.from_numpy(rng.standard_normal(net.config.code_dim).astype(np.float32))
    feats, targets = [], []
    for i in range(6):
        x = _speech(1.5, seed=10 + i)
        f = predictor.training_features(net, x)
        level = torch.from_numpy(
            np.log([np.mean(x[s * SEG : (s + 1) * SEG] ** 2) for s in range(len(f))])
        )
        feats.append(f)
        scale = 1.5 * radius * torch.tanh(3 * (level[:, None].float() + 2.3))  # |scale| up to 1.5 r
        targets.append(scale * direction / direction.norm())
    features, codes = torch.cat(feats), torch.cat(targets)  # some targets outside the ball
    history = predictor.fit(net, features, codes, steps=150, lr=3e-3, batch_size=16, seed=0)
    assert np.mean(history[-10:]) < 0.5 * np.mean(history[:10])  # about 0.06 to 0.02
    predicted = predictor.predict_codes(net, _speech(2.0, seed=99))
    assert predictor.in_ball(predicted, radius)
    assert np.linalg.norm(predicted, axis=1).max() > 0.5 * radius  # not the zero code
    assert predictor.in_ball(net.mean_code.numpy()[None], radius)
    again = _predictor(model)
    assert (
        predictor.fit(again, features, codes, steps=150, lr=3e-3, batch_size=16, seed=0) == history
    )


def test_the_file_round_trips_and_refuses_another_model(tmp_path: Path):
    model = _model()
    net = _predictor(model)
    path = predictor.save_predictor(tmp_path / "p.pt", net, model, {"steps": 3})
    assert predictor.beside(tmp_path / "model.pt") == tmp_path / "model.code_predictor.pt"
    loaded = predictor.load_predictor(path, model)
    x = _speech(1.1)
    assert np.array_equal(predictor.predict_codes(net, x), predictor.predict_codes(loaded, x))
    assert loaded.meta == {"steps": 3} and loaded.model_fingerprint == model.fingerprint
    with pytest.raises(predictor.PredictorFileError, match="trained for model"):
        predictor.load_predictor(path, _model(seed=1))
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(predictor.PredictorFileError, match="cannot read"):
        predictor.load_predictor(tmp_path / "bad.pt")


def test_a_model_without_segment_codes_or_a_bad_start_is_refused():
    cfg = SSEDConfig(width=4, stages=2, res_blocks=1, code_film=True)
    one_code = modelfile.ProtectionModel(SSEDGenerator(cfg), None, 0.1, "m", cfg, {})
    with pytest.raises(ValueError, match="one code per utterance"):
        predictor.PredictorConfig.for_model(one_code)
    model = _model()
    with pytest.raises(ValueError, match="start="):
        predictor.amortised_code(model, None, _speech(0.5), start="best")
    with pytest.raises(ValueError, match="needs a code predictor"):
        predictor.amortised_code(model, None, _speech(0.5))


def test_the_study_takes_train_rows_round_robin_and_finds_its_two_variants():
    rows = pd.DataFrame({"utt_id": [f"{s}{k}" for s in "ab" for k in range(3)],
                         "speaker": [s for s in "ab" for _ in range(3)]})  # fmt: skip
    assert list(amortised.spread_rows(rows, 3)["utt_id"]) == ["a0", "b0", "a1"]
    assert list(amortised.spread_rows(rows, 2, skip=3)["utt_id"]) == ["b1", "a2"]
    variants = {"k0": {"start": "predicted", "steps": 0}, "today": {"start": "zero", "steps": 10}}
    assert amortised.named(variants, 10) == ("k0", "today")
    with pytest.raises(ValueError, match="today's protection"):
        amortised.named(variants, 5)
