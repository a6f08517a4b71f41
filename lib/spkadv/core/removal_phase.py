"""The removal fine-tuning phase of joint training (``TrainConfig.removal_steps``): F_P frozen,
F_R alone on L_rpt (eq. 8, or the δ form), optionally started from F_P's weights."""

from __future__ import annotations

import torch

from spkadv.core.losses import delta_removal_loss, mask_loss, noise_loss, rpt_loss
from spkadv.core.models import RemovalModule, SSEDGenerator
from spkadv.data.centroids import unit


def init_removal_from_generator(removal: RemovalModule, generator: SSEDGenerator) -> None:
    """Copy F_P's weights into F_R with the noise decoder's output negated (tanh is odd), so that
    F_R(x') = (-n(x'), m(x')) ≈ (-n(x), m(x)) from the start, x' being close to x."""
    with torch.no_grad():
        removal.load_state_dict(generator.state_dict())
        last = [mod for mod in removal.noise_decoder.modules() if isinstance(mod, torch.nn.Conv1d)][
            -1
        ]
        weight = getattr(last, "parametrizations", None)
        (weight.weight.original if weight is not None else last.weight).neg_()
        last.bias.neg_()


def removal_step(
    config, generator, removal, x, optimizer, params, encoder=None, code=None
) -> dict[str, float]:
    """One step of L_rpt (eq. 8, or the δ form) for F_R alone (the encoder only conditions)."""
    conditioned = config.model.embed_dim > 0
    with torch.no_grad():
        emb = unit(encoder.embed(x)) if conditioned else None
        n, m = generator(x, embedding=emb, code=code)
        x_adv = x + config.eps * n * m
        emb_rev = unit(encoder.embed(x_adv)) if conditioned else None
    n_rev, m_rev = removal(x_adv, embedding=emb_rev, code=code)
    w = config.weights
    terms = {"noise": noise_loss(n, n_rev, w), "mask": mask_loss(m, m_rev, w)}
    if w.rpt == "delta":
        terms["rpt"] = delta_removal_loss(n, m, n_rev, m_rev)
    else:
        terms["rpt"] = rpt_loss(terms["mask"], terms["noise"], w)
    optimizer.zero_grad(set_to_none=True)
    terms["rpt"].backward()
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
    optimizer.step()
    with torch.no_grad():
        restored = x_adv + config.eps * n_rev * m_rev
        snr = 10 * torch.log10(x.pow(2).sum() / (restored - x).pow(2).sum().clamp_min(1e-20))
    record = {k: float(v.detach()) for k, v in terms.items()}
    record.update(snr_rst_db=float(snr), phase_removal=1.0)
    return record
