"""Training the code predictor (:class:`spkadv.core.predictor.CodePredictor`): two objectives.

- ``"regression"`` (:func:`spkadv.core.predictor.fit`): the mean squared error between the
  predicted code and the code optimised for each training segment (``c*``, protection's own
  optimisation). Study 95 measured that it does not generalise: on held-out utterances it is no
  better than the mean training code.
- ``"attack"`` (:func:`fit_attack`, amortised optimisation): the loss the per-file optimisation
  minimises (:func:`spkadv.core.conditioning.optimise_code`), averaged over random crops of the
  training utterances: cos(z(x), z(x + δ(x; g(x)))) plus the same relu(snr_target_db − SNR) term,
  with the predicted codes in the model's ball (the predictor projects its output there). The
  gradient flows through the frozen generator and the frozen white-box encoder (the model's code
  encoder) into the predictor's weights only. Optionally plus ``regression_weight`` times the
  regression loss onto ``c*``.

A crop starts on a segment boundary and its codes come from the same segment windows as
protection's (:func:`spkadv.core.predictor.predict_codes`: each segment with its context in the
whole utterance), so training sees exactly the codes protection would predict for those segments.
Beyond the paper (study ``95_code_predictor``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from spkadv.core import protect
from spkadv.core.modelfile import ProtectionModel
from spkadv.core.predictor import (
    CodePredictor,
    _code_settings,
    check_compatible,
    fit,
    initialise,
    training_features,
)

OBJECTIVES = ("regression", "attack")
SNR_WEIGHT = 0.05  # optimise_code's weight of relu(snr_target_db - SNR)


def check_objective(objective: str) -> str:
    """``objective`` when it is one of :data:`OBJECTIVES`, else a ValueError naming them."""
    if objective not in OBJECTIVES:
        raise ValueError(
            f"unknown code-predictor objective {objective!r}; choose one of {', '.join(OBJECTIVES)}"
        )
    return objective


def train_predictor(
    predictor: CodePredictor,
    model: ProtectionModel,
    waves: Sequence[np.ndarray],
    codes: Sequence[np.ndarray | None] | None = None,
    objective: str = "regression",
    steps: int = 1500,
    lr: float = 1.0e-3,
    batch_size: int = 64,
    seed: int = 0,
    crop_segments: int = 8,
    regression_weight: float = 0.0,
    progress: bool = False,
) -> list[float]:
    """Train ``predictor`` in place for ``model`` on the utterances ``waves`` and return the loss
    of each step. ``objective`` "regression": :func:`spkadv.core.predictor.fit` onto ``codes``
    (each utterance's optimised code stream [segments, code_dim]), ``batch_size`` segments per
    step; "attack": :func:`fit_attack`, ``batch_size`` crops of ``crop_segments`` segments per
    step (``codes`` optional, None for an utterance without one: the mean training code, and the
    regression term when ``regression_weight`` > 0). Deterministic given ``seed``
    (initialisation and draws)."""
    check_objective(objective)
    if objective == "attack":
        return fit_attack(
            predictor, model, waves, codes, steps, lr, batch_size, crop_segments,
            regression_weight, seed, progress,
        )  # fmt: skip
    if codes is None:
        raise ValueError("the regression objective needs the optimised codes of the utterances")
    features, targets = _features(predictor, waves, codes)
    if any(t is None for t in targets):
        raise ValueError("the regression objective needs every utterance's optimised code")
    return fit(
        predictor, torch.cat(features), torch.cat(targets), steps, lr, batch_size, seed, progress
    )


def _features(
    predictor: CodePredictor,
    waves: Sequence[np.ndarray],
    codes: Sequence[np.ndarray | None] | None,
) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """Each utterance's segment features and its code stream (None where not given), checked
    to match."""
    features = [training_features(predictor, x) for x in waves]
    if codes is None:
        return features, [None] * len(waves)
    if len(codes) != len(waves):
        raise ValueError(f"{len(codes)} code streams for {len(waves)} utterances")
    targets = [None if c is None else torch.as_tensor(np.asarray(c, np.float32)) for c in codes]
    for f, c in zip(features, targets, strict=True):
        if c is not None and c.shape != (len(f), predictor.config.code_dim):
            raise ValueError(f"a code of shape {tuple(c.shape)} for {len(f)} segments of audio")
    return features, targets


def fit_attack(
    predictor: CodePredictor,
    model: ProtectionModel,
    waves: Sequence[np.ndarray],
    codes: Sequence[np.ndarray | None] | None = None,
    steps: int = 300,
    lr: float = 1.0e-3,
    crops: int = 4,
    crop_segments: int = 8,
    regression_weight: float = 0.0,
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """Train ``predictor`` in place on the attack objective (module docstring): Adam on its
    weights only, ``crops`` crops of ``crop_segments`` segments per step, each from a random
    utterance at a random segment boundary (zeros past the utterance's end; drawn with ``seed``).
    The start is that of :func:`spkadv.core.predictor.fit` (``seed``; the feature normalisation
    from ``waves``; the last layer's bias at the mean of the given ``codes``, else the zero
    code). ``regression_weight`` > 0 adds the mean squared error to the optimised code on the
    crops whose utterance has one (``codes`` entries may be None). The embeddings z(x) of the
    clean crops are computed once per crop. Returns each step's loss."""
    check_compatible(predictor, model)
    if not waves or steps < 0 or crops < 1 or crop_segments < 1:
        raise ValueError(
            f"{len(waves)} utterances, {steps} steps, {crops} crops of {crop_segments} segments"
        )
    features, targets = _features(predictor, waves, codes)
    known = [t for t in targets if t is not None]
    if regression_weight < 0 or (regression_weight > 0 and not known):
        raise ValueError(f"regression_weight={regression_weight}: >= 0, and > 0 needs codes")
    cfg, settings = predictor.config, _code_settings(model)
    mean = torch.cat(known).mean(0) if known else torch.zeros(cfg.code_dim)
    initialise(predictor, torch.cat(features), mean, seed)
    generator, encoder = model.generator, model.code_encoder()
    context = [model.embedding(x) if model.conditioned else None for x in waves]
    seg, length = cfg.segment_samples, crop_segments * cfg.segment_samples
    params = [p for p in predictor.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=lr)
    draw = torch.Generator().manual_seed(seed)
    clean: dict[tuple[int, int], torch.Tensor] = {}  # z(x) of each crop seen
    target_db, shift = settings["snr_target_db"], settings["shift"]
    predictor.train()
    history = []
    bar = tqdm(range(steps), desc="predictor (attack)", disable=not progress)
    for _ in bar:
        picks = []
        for u in torch.randint(0, len(waves), (crops,), generator=draw).tolist():
            starts = max(1, len(features[u]) - crop_segments + 1)
            picks.append((u, int(torch.randint(0, starts, (1,), generator=draw))))
        batch = torch.from_numpy(np.stack([_crop(waves[u], s * seg, length) for u, s in picks]))
        index = [
            torch.arange(s, s + crop_segments).clamp(max=len(features[u]) - 1) for u, s in picks
        ]
        feats = torch.cat([features[u][i] for (u, _), i in zip(picks, index, strict=True)])
        with torch.no_grad():
            missing = [k for k, p in enumerate(picks) if p not in clean]
            if missing:
                z = encoder.embed(batch[missing]).float()
                clean.update({picks[k]: z[j] for j, k in enumerate(missing)})
            encoded = generator.encode(batch)
        z = torch.stack([clean[p] for p in picks])
        emb = None if context[0] is None else torch.cat([context[u] for u, _ in picks])
        code = predictor.from_features(feats).view(crops, crop_segments, cfg.code_dim)
        n, m = generator.decode(encoded, embedding=emb, code=code, code_offset=0)
        delta = model.eps * n.float() * m.float()
        start = int(torch.randint(0, shift + 1, (1,), generator=draw)) if shift > 0 else 0
        cos = F.cosine_similarity(z, encoder.embed((batch + delta)[:, start:]).float(), dim=-1)
        loss = cos.mean()
        if target_db is not None:
            energy = batch.pow(2).sum(-1)
            snr = 10 * torch.log10(energy.clamp_min(1e-20) / delta.pow(2).sum(-1).clamp_min(1e-20))
            loss = loss + SNR_WEIGHT * (torch.relu(target_db - snr) * (energy > 0)).mean()
        have = [k for k, (u, _) in enumerate(picks) if targets[u] is not None]
        if regression_weight > 0 and have:  # the crops whose utterance has its optimised code
            want = torch.stack([targets[picks[k][0]][index[k]] for k in have])
            loss = loss + regression_weight * F.mse_loss(code[have], want)
        grads = torch.autograd.grad(loss, params)  # the generator's and encoder's weights: none
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        optimiser.step()
        history.append(float(loss.detach()))
        bar.set_postfix(
            loss=f"{history[-1]:.4f}", cos=f"{float(cos.detach().mean()):.3f}", refresh=False
        )
    predictor.eval()
    return history


def _crop(x: np.ndarray, start: int, length: int) -> np.ndarray:
    """``length`` samples of ``x`` from ``start``, zeros past its end."""
    out = np.zeros(length, dtype=np.float32)
    piece = x[start : start + length]
    out[: len(piece)] = piece
    return out


def attack_cosine(
    model: ProtectionModel, waves: Sequence[np.ndarray], codes: Sequence[np.ndarray]
) -> float:
    """Mean cos(z(x), z(x')) over ``waves`` protected with ``codes`` (one code stream each, or
    one vector for every segment), the model's code encoder (the attack objective's): the held-out
    check of a predictor, forward passes only."""
    encoder = model.code_encoder()
    values = []
    with torch.no_grad():
        for x, code in zip(waves, codes, strict=True):
            adv = protect.protect(model, x, code=code)
            both = torch.from_numpy(np.stack([x, adv]).astype(np.float32))
            z = encoder.embed(both).float()
            values.append(float(F.cosine_similarity(z[:1], z[1:], dim=-1)))
    return float(np.mean(values))
