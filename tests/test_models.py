"""SSED generator F_P and removal module F_R: shapes, bounds, locality, receptive field."""

from __future__ import annotations

import pytest
import torch
from spkadv.core import modelfile
from spkadv.core.models import RemovalModule, SSEDConfig, SSEDGenerator
from spkadv.encoders.random_conv import RandomConvEncoder

TINY = SSEDConfig(width=4, stages=2, res_blocks=1)


@pytest.mark.parametrize("length", [1, 7, 100, 1001])
@pytest.mark.parametrize("mask_norm", ["sigmoid", "tanh01", "minmax"])
def test_shapes_and_bounds(length: int, mask_norm: str) -> None:
    torch.manual_seed(0)
    gen = SSEDGenerator(SSEDConfig(width=4, stages=3, res_blocks=1, mask_norm=mask_norm))
    x = torch.randn(3, length) * 0.5
    n, m = gen(x)
    assert n.shape == m.shape == x.shape
    assert n.abs().max() <= 1.0 and m.min() >= 0.0 and m.max() <= 1.0
    delta = gen.perturbation(x, eps=0.05)
    assert delta.shape == x.shape and delta.abs().max() <= 0.05 + 1e-7


def test_level_scaled_perturbation_follows_the_input_level() -> None:
    torch.manual_seed(0)
    gen = SSEDGenerator(
        SSEDConfig(width=4, stages=2, res_blocks=1, level_scaled=True, level_window=101)
    )
    x = torch.zeros(1, 4000)
    x[0, 2000:] = torch.randn(2000) * 0.3
    delta = gen.perturbation(x, eps=0.05)
    assert delta.abs().max() <= 0.05
    quiet, loud = delta[0, :1800].abs().max(), delta[0, 2200:].abs().max()
    assert quiet <= 0.05 * 1.01e-3 and loud > 10 * quiet


def test_warm_start_mode_has_no_mask() -> None:
    n, m = SSEDGenerator(TINY)(torch.randn(2, 64), use_mask=False)
    assert torch.equal(m, torch.ones_like(m))


def test_removal_module_restores_with_eq5() -> None:
    rem = RemovalModule(TINY)
    x_adv = torch.randn(2, 300) * 0.1
    n, m = rem(x_adv)
    assert torch.allclose(rem.restore(x_adv, 0.05), x_adv + 0.05 * n * m)


@pytest.mark.parametrize(
    "config",
    [
        TINY,
        SSEDConfig(width=4, stages=3, res_blocks=2),
        SSEDConfig(width=4, stages=2, res_blocks=1, level_scaled=True, level_window=301),
    ],
)
def test_receptive_field_bounds_the_dependence(config: SSEDConfig) -> None:
    torch.manual_seed(1)
    gen = SSEDGenerator(config).eval()
    for centre in (2048, 2049, 2051):  # several phases of the stride-2 grid
        x = torch.randn(1, 4096, requires_grad=True)
        n, m = gen(x)
        (n[0, centre] + m[0, centre]).backward()
        # beyond the receptive field only float64 cumulative-sum rounding (local_level) may remain
        grad = x.grad[0].abs()
        touched = torch.nonzero(grad > 1e-9 * grad.max()).squeeze(1)
        assert (touched - centre).abs().max() <= gen.receptive_field


def test_locality_flags() -> None:
    assert SSEDConfig().is_local
    assert not SSEDConfig(mask_norm="minmax").is_local
    assert not SSEDConfig(norm="instance").is_local


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="mask_norm"):
        SSEDConfig(mask_norm="softmax")
    with pytest.raises(ValueError, match="odd"):
        SSEDConfig(level_window=400)
    with pytest.raises(ValueError, match="batch, samples"):
        SSEDGenerator(TINY)(torch.zeros(10))


def test_config_round_trip() -> None:
    cfg = SSEDConfig(width=8, spectral_norm=True)
    assert SSEDConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        SSEDConfig.from_dict({"widht": 3})


def test_spectral_norm_option_runs() -> None:
    gen = SSEDGenerator(SSEDConfig(width=4, stages=2, res_blocks=1, spectral_norm=True))
    n, m = gen(torch.randn(2, 128))
    assert n.shape == (2, 128)


def test_random_encoder_is_frozen_and_differentiable() -> None:
    enc = RandomConvEncoder(dim=8)
    x = torch.randn(2, 3200, requires_grad=True)
    z = enc.embed(x)
    assert z.shape == (2, 8)
    z.sum().backward()
    assert x.grad is not None and all(not p.requires_grad for p in enc.parameters())


def test_model_file_loads_its_encoder_by_name(tmp_path) -> None:
    cfg = SSEDConfig(width=4, stages=2, res_blocks=1)
    path = modelfile.save_model(
        tmp_path / "m.pt", SSEDGenerator(cfg), None, 0.05, meta={"encoder": "random-conv"}
    )
    model = modelfile.load_model(path)
    encoder = model.encoder()
    assert isinstance(encoder, RandomConvEncoder) and model.encoder() is encoder  # loaded once
    assert torch.equal(encoder.projection, RandomConvEncoder().projection)
    with pytest.raises(modelfile.ModelFileError, match="white-box encoder"):
        modelfile.load_model(
            modelfile.save_model(tmp_path / "n.pt", SSEDGenerator(cfg), None, 0.05)
        ).encoder()


def test_local_level_is_the_moving_rms() -> None:
    from spkadv.core.models import local_level

    x = torch.zeros(1, 9)
    x[0, 4] = 0.3  # one impulse: the window sees it at positions 3..5 (window 3)
    level = local_level(x, 3, 0.0)
    expected = torch.zeros(9)
    expected[3:6] = (0.3**2 / 3) ** 0.5
    assert torch.allclose(level[0], expected, atol=1e-7)
    with pytest.raises(ValueError, match="odd"):
        local_level(x, 4, 0.0)


@pytest.mark.parametrize("mask_norm", ["sigmoid", "tanh01"])
def test_mask_init_starts_every_seed_at_the_same_mask(mask_norm: str) -> None:
    x = torch.randn(2, 3000) * 0.1
    for seed in range(4):
        torch.manual_seed(seed)
        gen = SSEDGenerator(
            SSEDConfig(width=4, stages=2, res_blocks=1, mask_norm=mask_norm, mask_init=0.3)
        )
        n, m = gen(x)
        assert torch.allclose(m, torch.full_like(m, 0.3), atol=1e-6)
        assert n.abs().max() > 0  # the noise decoder keeps its random init
        # the head learns: its weights get a gradient at once (zero weights, non-zero inputs)
        m.sum().backward()
        assert gen.mask_decoder.net[-1].weight.grad.abs().sum() > 0


def test_default_init_mask_depends_on_the_seed() -> None:
    """What mask_init fixes: without it the starting mask level follows the seed."""
    x = torch.randn(2, 3000) * 0.1
    means = []
    for seed in range(6):
        torch.manual_seed(seed)
        means.append(SSEDGenerator(SSEDConfig(width=4, stages=2, res_blocks=1))(x)[1].mean().item())
    assert max(means) / min(means) > 2.0


@pytest.mark.parametrize(
    "fields",
    [{"mask_init": 1.0}, {"mask_init": -0.1}, {"mask_init": 0.5, "spectral_norm": True},
     {"mask_init": 0.5, "mask_norm": "minmax"}],
)  # fmt: skip
def test_bad_mask_init_is_refused(fields: dict) -> None:
    with pytest.raises(ValueError, match="mask_init"):
        SSEDConfig(**fields)
