"""The paper's loss functions, eqs. 2-9.

Choices where the paper is silent (*assumptions*, recorded in the notebooks):

- ‖·‖₂ is the plain Euclidean norm (not squared) of each utterance's vector, as written;
  ``norm="rms"`` divides it by sqrt(samples), which makes the terms independent of crop length.
- Every term is computed per utterance and averaged over the batch.
- Gradients of every term reach both modules in joint training (L_rpt also shapes F_P).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

NORMS = ("l2", "rms")
QUALITY_FORMS = ("eq3", "snr_hinge")
RPT_FORMS = ("eq8", "delta")


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Weights of eqs. 3, 4, 8, 9 (defaults: the paper's Sec. 5.1)."""

    alpha: float = 0.01  # eq. 3: mask-norm weight inside L_quality
    beta: float = 0.007  # eq. 4: L_quality weight inside L_SSED
    gamma: float = 0.8  # eq. 8: L_noise weight inside L_rpt
    theta: float = 0.06  # eq. 9: L_rpt weight inside L
    norm: str = "l2"  # l2 (paper) | rms (l2 / sqrt(samples))
    quality: str = "eq3"  # eq3 (paper) | snr_hinge: relu(snr_target_db - SNR(x, x')) in dB
    snr_target_db: float = 30.0  # snr_hinge only: SNR below which the perturbation is penalised
    attack_margin: float = (
        1.0  # eq. 2 as a hinge relu(cos - margin); 1.0 = the plain cosine (paper)
    )
    rpt: str = (
        "eq8"  # eq8 (paper) | delta: ||delta + delta'|| / ||delta|| per utterance (scale free)
    )

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma", "theta"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"loss weight {name}={value} must lie in [0, 1]")
        if self.norm not in NORMS:
            raise ValueError(f"norm={self.norm!r}; choose one of {NORMS}")
        if self.quality not in QUALITY_FORMS:
            raise ValueError(f"quality={self.quality!r}; choose one of {QUALITY_FORMS}")
        if self.rpt not in RPT_FORMS:
            raise ValueError(f"rpt={self.rpt!r}; choose one of {RPT_FORMS}")
        if not -1.0 <= self.attack_margin <= 1.0:
            raise ValueError(f"attack_margin={self.attack_margin} must lie in [-1, 1]")
        if not math.isfinite(self.snr_target_db):
            raise ValueError(f"snr_target_db={self.snr_target_db} must be a finite number of dB")


def vector_norm(v: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """Per-utterance ‖v‖₂ over the last axis ([B, T] -> [B]); ``rms`` divides by sqrt(T)."""
    out = torch.linalg.vector_norm(v, dim=-1)
    return out / math.sqrt(v.shape[-1]) if norm == "rms" else out


def angular_loss(z: torch.Tensor, z_adv: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Eq. 2: cosine similarity of clean and adversarial embeddings (minimised), batch mean.

    ``z`` may be the clean utterance's embedding (paper) or its speaker's centroid (an option).
    ``margin < 1`` makes it a hinge relu(cos - margin): utterances already pushed below the
    margin stop pulling (an option, not the paper's).
    """
    cos = F.cosine_similarity(z, z_adv, dim=-1)
    return (torch.relu(cos - margin) if margin < 1.0 else cos).mean()


def quality_loss(
    x: torch.Tensor, x_adv: torch.Tensor, m: torch.Tensor, w: LossWeights
) -> torch.Tensor:
    """Eq. 3: (1-α)‖x'-x‖₂ + α‖m‖₂, batch mean.

    ``w.quality == "snr_hinge"`` (an option, not the paper's): the distortion term becomes
    relu(snr_target_db - SNR(x, x')) per utterance, in dB. It is zero above the target SNR and scale
    free, so the perturbation settles near the target instead of being pushed to full power by a
    distortion term that is negligible beside L_angular at speech levels.
    """
    if w.quality == "snr_hinge":
        power_x = x.pow(2).sum(-1)
        power_d = (x_adv - x).pow(2).sum(-1)
        snr = 10 * torch.log10((power_x + 1e-12) / (power_d + 1e-12))
        hinge = torch.relu(w.snr_target_db - snr)
        return ((1 - w.alpha) * hinge + w.alpha * vector_norm(m, w.norm)).mean()
    return (
        (1 - w.alpha) * vector_norm(x_adv - x, w.norm) + w.alpha * vector_norm(m, w.norm)
    ).mean()


def ssed_loss(l_angular: torch.Tensor, l_quality: torch.Tensor, w: LossWeights) -> torch.Tensor:
    """Eq. 4: (1-β)L_angular + βL_quality."""
    return (1 - w.beta) * l_angular + w.beta * l_quality


def noise_loss(n: torch.Tensor, n_rev: torch.Tensor, w: LossWeights) -> torch.Tensor:
    """Eq. 6: ‖n + n'‖₂, batch mean."""
    return vector_norm(n + n_rev, w.norm).mean()


def mask_loss(m: torch.Tensor, m_rev: torch.Tensor, w: LossWeights) -> torch.Tensor:
    """Eq. 7: ‖m - m'‖₂, batch mean."""
    return vector_norm(m - m_rev, w.norm).mean()


def delta_removal_loss(
    n: torch.Tensor, m: torch.Tensor, n_rev: torch.Tensor, m_rev: torch.Tensor
) -> torch.Tensor:
    """‖n⊙m + n'⊙m'‖₂ / ‖n⊙m‖₂ per utterance, batch mean: the part of δ left after removal.

    An option beside eq. 8: it is what SNR(x̂) − SNR(x') measures (−20·log10 of it), and it does
    not vanish when the mask is small, which lets eq. 8's mask term be satisfied by m' → 0.
    """
    delta = n * m
    residual = delta + n_rev * m_rev
    return (
        torch.linalg.vector_norm(residual, dim=-1)
        / torch.linalg.vector_norm(delta, dim=-1).clamp_min(1e-8)
    ).mean()


def rpt_loss(l_mask: torch.Tensor, l_noise: torch.Tensor, w: LossWeights) -> torch.Tensor:
    """Eq. 8: (1-γ)L_mask + γL_noise."""
    return (1 - w.gamma) * l_mask + w.gamma * l_noise


def joint_loss(l_ssed: torch.Tensor, l_rpt: torch.Tensor, w: LossWeights) -> torch.Tensor:
    """Eq. 9: (1-θ)L_SSED + θL_rpt."""
    return (1 - w.theta) * l_ssed + w.theta * l_rpt


def compute_losses(
    z: torch.Tensor,
    z_adv: torch.Tensor,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    n: torch.Tensor,
    m: torch.Tensor,
    w: LossWeights,
    n_rev: torch.Tensor | None = None,
    m_rev: torch.Tensor | None = None,
    detach_targets: bool = False,
) -> dict[str, torch.Tensor]:
    """All terms; ``total`` is L_SSED (eq. 4) or, given n' and m', L (eq. 9).

    ``detach_targets`` stops L_rpt's gradients at n and m (so they train F_R only).
    """
    terms = {
        "angular": angular_loss(z, z_adv, w.attack_margin),
        "quality": quality_loss(x, x_adv, m, w),
    }
    terms["ssed"] = ssed_loss(terms["angular"], terms["quality"], w)
    terms["total"] = terms["ssed"]
    if n_rev is not None and m_rev is not None:
        n_t, m_t = (n.detach(), m.detach()) if detach_targets else (n, m)
        terms["noise"] = noise_loss(n_t, n_rev, w)
        terms["mask"] = mask_loss(m_t, m_rev, w)
        if w.rpt == "delta":
            terms["rpt"] = delta_removal_loss(n_t, m_t, n_rev, m_rev)
        else:
            terms["rpt"] = rpt_loss(terms["mask"], terms["noise"], w)
        terms["total"] = joint_loss(terms["ssed"], terms["rpt"], w)
    return terms
