"""Iterative white-box attack on a speaker encoder: projected gradient descent (PGD).

The alternative a user would pick instead of a trained generator (as in SpeakerGuard's attack
collection): optimise a perturbation for each utterance separately,

    minimise  cos(z, z')   with z = f(x), z' = f(x + delta)   (the angular loss, eq. 2)

under either an L-inf budget ``|delta| <= linf`` (signed-gradient steps, clipping) or an SNR budget
``10 log10(‖x‖² / ‖delta‖²) >= snr_db`` (normalised-gradient steps, projection onto the L2 ball of
radius ``‖x‖ · 10^(-snr_db / 20)``). With ``target_cos`` the attack stops at the first iterate whose
similarity is at or below it, which is how a given similarity drop is reached at the least cost.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F


@dataclasses.dataclass
class PGDResult:
    """Outcome of :func:`pgd` on one utterance."""

    x_adv: np.ndarray  # x + delta, float32, same length as x
    cos: float  # cos(z, z') of the returned x_adv
    snr_db: float  # SNR of x_adv against x
    steps: int  # gradient steps taken (forward + backward passes through the encoder)
    history: list[float] = dataclasses.field(default_factory=list)  # cos(z, z') of each iterate


def _snr_db(x: torch.Tensor, delta: torch.Tensor) -> float:
    noise = float(delta.pow(2).sum())
    return float("inf") if noise == 0 else 10 * np.log10(float(x.pow(2).sum()) / noise)


def pgd(
    encoder: torch.nn.Module,
    x: np.ndarray,
    linf: float | None = None,
    snr_db: float | None = None,
    steps: int = 30,
    step_size: float | None = None,
    target_cos: float | None = None,
    seed: int = 0,
) -> PGDResult:
    """Attack one utterance ``x`` (16 kHz float, 1-D) on ``encoder.embed``.

    Args:
        linf: L-inf budget of delta (give exactly one of ``linf`` and ``snr_db``).
        snr_db: least SNR of ``x + delta`` against ``x`` in dB.
        steps: most gradient steps.
        step_size: per-step size (default: 2.5 × budget / steps, the usual PGD choice; for the SNR
            budget it is the L2 length of a step).
        target_cos: stop as soon as cos(z, z') <= this value.
        seed: seed of the random start inside the budget (a tenth of it).
    """
    if (linf is None) == (snr_db is None):
        raise ValueError(f"give exactly one budget: linf={linf}, snr_db={snr_db}")
    if linf is not None and not linf > 0:
        raise ValueError(f"linf must be > 0, got {linf}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    x_np = np.asarray(x, dtype=np.float32)
    if x_np.ndim != 1 or not np.isfinite(x_np).all():
        raise ValueError(f"expected a finite mono waveform (1-D), got shape {x_np.shape}")
    device = next(encoder.parameters()).device
    xt = torch.from_numpy(x_np).to(device).unsqueeze(0)
    if linf is not None:
        radius = float(linf)
    else:
        radius = float(xt.norm()) * 10 ** (-float(snr_db) / 20)
        if radius == 0:
            raise ValueError("x is silent: an SNR budget allows no perturbation")
    size = step_size if step_size is not None else 2.5 * radius / steps

    def project(delta: torch.Tensor) -> torch.Tensor:
        if linf is not None:
            return delta.clamp(-radius, radius)
        norm = delta.norm()
        return delta * (radius / norm) if norm > radius else delta

    with torch.no_grad():
        z = encoder.embed(xt)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(xt.shape, generator=generator).to(device)
    if linf is not None:
        delta = 0.1 * radius * noise.sign()
    else:
        delta = 0.1 * radius * noise / noise.norm()
    delta = project(delta).requires_grad_(True)
    taken, cos, history = 0, 1.0, []
    for taken in range(steps + 1):
        cos_t = F.cosine_similarity(z, encoder.embed(xt + delta), dim=-1).sum()
        cos = float(cos_t.detach())
        history.append(cos)
        if taken == steps or (target_cos is not None and cos <= target_cos):
            break
        (grad,) = torch.autograd.grad(cos_t, delta)
        with torch.no_grad():
            if linf is not None:
                step = grad.sign()
            else:
                step = grad / grad.norm().clamp_min(1e-20)
            delta = project(delta - size * step).requires_grad_(True)
    delta = delta.detach()
    x_adv = (xt + delta).squeeze(0).cpu().numpy().astype(np.float32)
    return PGDResult(x_adv, cos, _snr_db(xt, delta), taken, history)
