"""Eqs. 2-9 against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from spkadv.core import losses as L


def _example() -> dict[str, torch.Tensor]:
    return {
        "z": torch.tensor([[1.0, 0.0]]),
        "z_adv": torch.tensor([[1.0, 1.0]]),
        "x": torch.tensor([[0.0, 0.0]]),
        "x_adv": torch.tensor([[3.0, 4.0]]),
        "n": torch.tensor([[0.5, 0.5]]),
        "m": torch.tensor([[0.6, 0.8]]),
        "n_rev": torch.tensor([[-0.5, 0.5]]),
        "m_rev": torch.tensor([[0.6, 0.0]]),
    }


def test_terms_against_hand_computed_values() -> None:
    w = L.LossWeights()  # paper: alpha 0.01, beta 0.007, gamma 0.8, theta 0.06
    t = L.compute_losses(**_example(), w=w)
    angular = 1 / math.sqrt(2)  # eq. 2
    quality = 0.99 * 5.0 + 0.01 * 1.0  # eq. 3: ||x'-x|| = 5, ||m|| = 1
    ssed = 0.993 * angular + 0.007 * quality  # eq. 4
    noise, mask = 1.0, 0.8  # eqs. 6, 7
    rpt = 0.2 * mask + 0.8 * noise  # eq. 8
    total = 0.94 * ssed + 0.06 * rpt  # eq. 9
    expected = {
        "angular": angular,
        "quality": quality,
        "ssed": ssed,
        "noise": noise,
        "mask": mask,
        "rpt": rpt,
        "total": total,
    }
    for key, value in expected.items():
        assert float(t[key]) == pytest.approx(value, rel=1e-6), key
    assert total == pytest.approx(0.75026442, rel=1e-7)


def test_ssed_only_without_removal_outputs() -> None:
    ex = _example()
    t = L.compute_losses(
        ex["z"], ex["z_adv"], ex["x"], ex["x_adv"], ex["n"], ex["m"], L.LossWeights()
    )
    assert "rpt" not in t and float(t["total"]) == float(t["ssed"])


def test_norms_are_plain_not_squared_and_rms_divides_by_sqrt_length() -> None:
    v = torch.tensor([[3.0, 4.0]])
    assert float(L.vector_norm(v)) == pytest.approx(5.0)
    assert float(L.vector_norm(v, "rms")) == pytest.approx(5.0 / math.sqrt(2))


def test_batch_reduction_is_the_mean_of_per_utterance_norms() -> None:
    w = L.LossWeights()
    n = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    assert float(L.noise_loss(n, torch.zeros_like(n), w)) == pytest.approx((1.0 + 5.0) / 2)
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    z_adv = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert float(L.angular_loss(z, z_adv)) == pytest.approx(0.5)


def test_invalid_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="beta"):
        L.LossWeights(beta=1.5)
    with pytest.raises(ValueError, match="norm"):
        L.LossWeights(norm="l1")


def test_detached_targets_keep_rpt_gradients_out_of_the_generator() -> None:
    ex = _example()
    n = ex["n"].clone().requires_grad_(True)
    m = ex["m"].clone().requires_grad_(True)
    args = (
        ex["z"],
        ex["z_adv"],
        ex["x"],
        ex["x_adv"],
        n,
        m,
        L.LossWeights(),
        ex["n_rev"],
        ex["m_rev"],
    )
    rpt = L.compute_losses(*args, detach_targets=True)["rpt"]
    assert not rpt.requires_grad  # nothing of L_rpt flows back into n, m
    L.compute_losses(*args)["rpt"].backward()
    assert n.grad is not None and float(n.grad.abs().sum()) > 0


def test_snr_hinge_quality_is_zero_above_the_target_and_grows_in_db_below() -> None:
    w = L.LossWeights(alpha=0.0, quality="snr_hinge", snr_target_db=30.0)
    x = torch.ones(1, 100)
    m = torch.zeros(1, 100)
    above = L.quality_loss(x, x + 0.01, m, w)  # SNR 40 dB
    below = L.quality_loss(x, x + 0.1, m, w)  # SNR 20 dB
    assert float(above) == 0.0
    assert math.isclose(float(below), 10.0, rel_tol=1e-4)
    scaled = L.quality_loss(10 * x, 10 * x + 1.0, m, w)  # scale free: same SNR, same loss
    assert math.isclose(float(scaled), float(below), rel_tol=1e-4)
    assert float(L.quality_loss(x, x + 0.1, m, L.LossWeights(alpha=0.0))) != float(below)
    with pytest.raises(ValueError, match="quality"):
        L.LossWeights(quality="snr")
    with pytest.raises(ValueError, match="snr_target_db"):
        L.LossWeights(quality="snr_hinge", snr_target_db=float("nan"))
