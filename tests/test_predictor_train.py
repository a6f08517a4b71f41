"""Training the code predictor on the attack objective (spkadv.core.predictor_train): the loss
falls on a tiny model, only the predictor learns, its codes stay in the ball and the code stream
predicted in pieces still equals the whole file's; objectives are checked by name."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from spkadv.core import modelfile, predictor, protect
from spkadv.core import predictor_train as training
from spkadv.core.models import RemovalModule, SSEDConfig, SSEDGenerator
from spkadv.encoders.random_conv import RandomConvEncoder
from spkadv.evaluation import metrics

from .test_predictor import _speech

SEG = 4000  # 0.25 s segments


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class GradEncoder(RandomConvEncoder):
    """The random stand-in encoder with trainable-looking weights (requires_grad on), so a
    gradient reaching them would show in ``.grad``."""

    def __init__(self) -> None:
        super().__init__()
        self.name = "grad"
        for p in self.parameters():
            p.requires_grad_(True)


def _model(snr_target_db: float | None = None) -> modelfile.ProtectionModel:
    cfg = SSEDConfig(width=4, stages=2, res_blocks=1, code_film=True, code_segment_seconds=0.25)
    torch.manual_seed(0)
    gen, rem = SSEDGenerator(cfg).eval(), RemovalModule(cfg).eval()
    meta = {"code_steps": 2, "code_radius": 3.0, "encoder": "test"}
    if snr_target_db is not None:
        meta["snr_target_db"] = snr_target_db
    return modelfile.ProtectionModel(
        gen, rem, 0.5, "model", cfg, meta, GradEncoder()
    )  # eps: attackable


def _net(model) -> predictor.CodePredictor:
    config = predictor.PredictorConfig.for_model(model, hidden=8, batch_segments=4)
    return predictor.CodePredictor(config).eval()


WAVES = [_speech(1.2 + 0.3 * i, seed=20 + i) for i in range(5)]
ATTACK = {"objective": "attack", "lr": 1e-2, "batch_size": 3, "crop_segments": 4, "seed": 0}


def test_the_attack_objective_lowers_the_loss_and_trains_only_the_predictor():
    model = _model()
    frozen = copy.deepcopy(
        {"generator": model.generator.state_dict(), "removal": model.removal.state_dict(),
         "encoder": model.encoder().state_dict()}
    )  # fmt: skip
    net = _net(model)
    zero_code = training.attack_cosine(model, WAVES, [np.zeros(model.config.code_dim)] * 5)
    history = training.train_predictor(net, model, WAVES, steps=80, **ATTACK)
    assert len(history) == 80 and np.isfinite(history).all()
    assert np.mean(history[-10:]) < np.mean(history[:10]) - 0.1  # about 0.86 to 0.68
    predicted = [predictor.predict_codes(net, x) for x in WAVES]
    assert training.attack_cosine(model, WAVES, predicted) < zero_code  # what protection sees
    # gradients reached the predictor only: the model's weights are untouched and hold no grad
    for name, module in [("generator", model.generator), ("removal", model.removal),
                         ("encoder", model.encoder())]:  # fmt: skip
        for key, value in module.state_dict().items():
            assert torch.equal(value, frozen[name][key]), f"{name}.{key} changed"
        assert all(p.grad is None for p in module.parameters()), f"{name} got a gradient"
    # the same seed trains the same predictor
    again = _net(model)
    assert training.train_predictor(again, model, WAVES, steps=80, **ATTACK) == history


def test_the_snr_target_is_part_of_the_attack_loss():
    model = _model(snr_target_db=20.0)
    net = _net(model)
    training.train_predictor(net, model, WAVES, steps=80, **ATTACK)

    def snr(code_of) -> float:
        return np.mean(
            [metrics.snr_db(x, protect.protect(model, x, code=code_of(x))) for x in WAVES]
        )

    zero = snr(lambda x: np.zeros(model.config.code_dim, np.float32))
    assert zero < 10 and snr(lambda x: predictor.predict_codes(net, x)) > 18  # about 8 and 26 dB


def test_the_attack_trained_predictor_stays_in_the_ball_and_predicts_exactly_in_pieces(
    tmp_path: Path,
):
    model = _model()
    net = _net(model)
    codes = [np.zeros((model.config.code_segments(len(x)), model.config.code_dim), np.float32)
             for x in WAVES]  # fmt: skip
    training.train_predictor(
        net, model, WAVES, codes, steps=20, regression_weight=0.1, **{**ATTACK, "lr": 0.1}
    )  # a large learning rate pushes the raw output far out of the ball
    x = _speech(7.3, seed=99)
    whole = predictor.predict_codes(net, x)
    assert predictor.in_ball(whole, net.config.radius)
    assert np.linalg.norm(whole, axis=1).max() > 0.5 * net.config.radius  # not the zero code
    reader = lambda a, b: x[a:b].copy()  # noqa: E731 - a file read in pieces
    assert np.array_equal(
        whole, predictor.predict_codes(net, reader, total=len(x), piece_seconds=1.0)
    )
    # the file protection loads: same format, how it was trained in its metadata
    path = predictor.save_predictor(tmp_path / "p.pt", net, model, {"objective": "attack"})
    loaded = predictor.load_predictor(path, model)
    assert loaded.meta["objective"] == "attack"
    assert np.array_equal(protect.protection_code(model, x, predictor=loaded), whole)


def test_regression_through_train_predictor_is_fit():
    model = _model()
    codes = [np.random.default_rng(i).standard_normal(
        (model.config.code_segments(len(x)), model.config.code_dim)).astype(np.float32)
        for i, x in enumerate(WAVES)]  # fmt: skip
    a, b = _net(model), _net(model)
    history = training.train_predictor(a, model, WAVES, codes, steps=5, batch_size=8)
    features = torch.cat([predictor.training_features(b, x) for x in WAVES])
    expected = predictor.fit(b, features, torch.from_numpy(np.concatenate(codes)), 5, batch_size=8)
    assert history == expected


def test_objectives_and_settings_are_checked():
    model = _model()
    with pytest.raises(
        ValueError, match="unknown code-predictor objective 'pgd'.*regression, attack"
    ):
        training.train_predictor(_net(model), model, WAVES, objective="pgd")
    with pytest.raises(ValueError, match="needs the optimised codes"):
        training.train_predictor(_net(model), model, WAVES, objective="regression")
    with pytest.raises(ValueError, match="regression_weight"):
        training.fit_attack(_net(model), model, WAVES, steps=1, regression_weight=0.5)
    assert training.check_objective("attack") == "attack"
