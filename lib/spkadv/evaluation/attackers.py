"""Who else can undo the protection: attacks on protected speech, ordered by what the attacker knows.

* **Semi-informed** attacker: holds a protection *oracle* (the protect tool with someone's model,
  used as a black box: wave in, protected wave out) and speech of other people. It builds
  (x, x') pairs and trains a removal network of its own to predict x from x'.
* **Another model**: the removal module of a second model (another seed) applied to this model's
  protected speech: one user's model must be no key to another's.

The attacker's code path (:func:`make_pairs`, :func:`fit`) never sees a model file or weights:
the oracle (:class:`spkadv.evaluation.oracle.ProtectionOracle`) exposes only ``__call__``, and
training reads nothing but the pairs. The attackers' results are summed up by
:mod:`spkadv.evaluation.attacker_tables`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from spkadv import SAMPLE_RATE
from spkadv.base.fileio import atomic_path
from spkadv.core import modelfile
from spkadv.core.models import RemovalModule, SSEDConfig
from spkadv.core.train import TrainConfig, train
from spkadv.encoders.speaker import default_device
from spkadv.evaluation.oracle import ask

ATTACKER_KINDS = ("removal", "stft_mask")


class AttackerDataError(ValueError):
    """The attacker has no speech of its own, or it overlaps the evaluation set (then the attack
    would be measured on speech it trained on)."""


# --- the attacker's data --------------------------------------------------------------------


def check_disjoint(attacker_rows: pd.DataFrame, eval_rows: pd.DataFrame) -> None:
    """Raise :class:`AttackerDataError` when the attacker's speech shares speakers or utterances
    with the evaluation set."""
    speakers = sorted(set(attacker_rows["speaker"]) & set(eval_rows["speaker"]))
    utts = sorted(set(attacker_rows["utt_id"]) & set(eval_rows["utt_id"]))
    if speakers or utts:
        raise AttackerDataError(
            f"the attacker's speech overlaps the evaluation set: {len(speakers)} shared speaker(s) "
            f"{speakers[:5]}, {len(utts)} shared utterance(s) {utts[:5]}; the attacker must train "
            "on other people (the manifest's train subset, whose speakers are disjoint from eval)"
        )


def attacker_corpus(manifest: pd.DataFrame, limit: int = 0) -> pd.DataFrame:
    """The attacker's own speech: the first ``limit`` train rows of the manifest (0: all),
    checked disjoint from the eval rows (speakers and utterances)."""
    train_rows = manifest[manifest["subset"] == "train"]
    if train_rows.empty:
        raise AttackerDataError(
            "the manifest has no train rows: the attacker has no speech of its own"
        )
    rows = train_rows.head(limit) if limit > 0 else train_rows
    check_disjoint(rows, manifest[manifest["subset"] == "eval"])
    return rows.reset_index(drop=True)


@dataclasses.dataclass
class PairSet:
    """The attacker's (x, x') pairs: its own speech and what the oracle made of it."""

    utt_ids: list[str]
    clean: list[np.ndarray]
    protected: list[np.ndarray]

    @property
    def seconds(self) -> float:
        return float(sum(len(x) for x in self.clean) / SAMPLE_RATE)

    @property
    def hours(self) -> float:
        return self.seconds / 3600

    def head(self, count: int) -> PairSet:
        """The first ``count`` pairs (nested subsets for the data-size curve)."""
        return PairSet(self.utt_ids[:count], self.clean[:count], self.protected[:count])

    def digest(self) -> str:
        """Identifies the pair set (utterance ids, lengths and the protected audio's bytes)."""
        h = hashlib.sha256()
        for utt, xp in zip(self.utt_ids, self.protected, strict=True):
            h.update(f"{utt}:{len(xp)}".encode())
            h.update(np.ascontiguousarray(xp, dtype=np.float32).tobytes())
        return h.hexdigest()[:16]


def make_pairs(
    oracle: Callable[[np.ndarray], np.ndarray],
    waves: Sequence[np.ndarray],
    utt_ids: Sequence[str],
    progress: bool = True,
) -> PairSet:
    """Feed the attacker's own speech to the oracle: only ``oracle(x)`` is ever used."""
    if len(waves) != len(utt_ids):
        raise ValueError(f"{len(waves)} waves but {len(utt_ids)} utterance ids")
    clean = [np.asarray(x, dtype=np.float32) for x in waves]
    answers = ask(oracle, clean, progress, "oracle queries")
    protected = []
    for x, answer in zip(clean, answers, strict=True):
        xp = np.asarray(answer, dtype=np.float32)
        if xp.shape != x.shape or not np.isfinite(xp).all():
            raise ValueError(
                f"the oracle returned shape {xp.shape} (finite: {np.isfinite(xp).all()}) "
                f"for an input of shape {x.shape}; it must return a finite wave of the same length"
            )
        protected.append(xp)
    return PairSet(list(utt_ids), clean, protected)


# --- the attacker's networks ----------------------------------------------------------------


class RemovalAttacker(nn.Module):
    """F_R's architecture trained by the attacker: x̂ = x' + eps · n'(x') ⊙ m'(x') (eq. 5).

    The noise decoder's output convolution starts at zero, so training starts from x̂ = x'.
    """

    def __init__(self, config: SSEDConfig, eps: float) -> None:
        super().__init__()
        self.removal = RemovalModule(config)
        self.eps = float(eps)
        last = [m for m in self.removal.noise_decoder.modules() if isinstance(m, nn.Conv1d)][-1]
        weight = getattr(last, "parametrizations", None)
        with torch.no_grad():
            (weight.weight.original if weight is not None else last.weight).zero_()
            last.bias.zero_()

    def forward(self, x_adv: torch.Tensor) -> torch.Tensor:
        return self.removal.restore(x_adv, self.eps)


class STFTMaskEnhancer(nn.Module):
    """A small speech-enhancement network in the spirit of DCCRN (not DCCRN itself): a bounded
    complex ratio mask on the STFT of x', predicted by 1-D convolutions over time with the
    frequency bins as channels from the level-normalised log magnitude.

    ``Y = X' · (1 + a + i b)`` with ``a, b = tanh(·)``; the output layer starts at zero (Y = X').
    """

    def __init__(
        self, n_fft: int = 512, hidden: int = 64, layers: int = 3, kernel: int = 5
    ) -> None:
        super().__init__()
        if n_fft < 16 or n_fft % 4:
            raise ValueError(f"n_fft must be a multiple of 4 and >= 16, got {n_fft}")
        self.n_fft, self.hop = n_fft, n_fft // 4
        bins = n_fft // 2 + 1
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        blocks: list[nn.Module] = []
        width = bins
        for _ in range(layers - 1):
            blocks += [nn.Conv1d(width, hidden, kernel, padding=kernel // 2), nn.ReLU()]
            width = hidden
        out = nn.Conv1d(width, 2 * bins, kernel, padding=kernel // 2)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.net = nn.Sequential(*blocks, out)

    def forward(self, x_adv: torch.Tensor) -> torch.Tensor:
        length = x_adv.shape[-1]
        pad = max(0, self.n_fft - length)
        x = nn.functional.pad(x_adv, (0, pad))
        spec = torch.stft(x, self.n_fft, self.hop, window=self.window, return_complex=True)
        feat = torch.log(spec.abs() + 1e-5)
        feat = feat - feat.mean(dim=(1, 2), keepdim=True)  # level invariance
        a, b = torch.tanh(self.net(feat)).chunk(2, dim=1)
        y = spec * torch.complex(1 + a, b)
        return torch.istft(y, self.n_fft, self.hop, window=self.window, length=x.shape[-1])[
            ..., :length
        ]


@dataclasses.dataclass(frozen=True)
class AttackerSettings:
    """One attacker network and how it is trained (primitives only, stored with the weights)."""

    kind: str = "removal"  # removal (F_R's architecture) | stft_mask (enhancement network)
    model: dict[str, Any] = dataclasses.field(default_factory=dict)  # SSEDConfig fields (removal)
    eps: float = 0.05  # removal: eps of eq. 5 (the published one)
    hidden: int = 64  # stft_mask: channels
    n_fft: int = 512  # stft_mask: FFT size (hop n_fft / 4)
    steps: int = 100
    batch_size: int = 4
    crop_seconds: float = 1.0
    lr: float = 1.0e-3
    seed: int = 0
    eval_every: int = 0  # steps between learning-curve points (0: only at the end)

    def __post_init__(self) -> None:
        if self.kind not in ATTACKER_KINDS:
            raise ValueError(f"attacker kind {self.kind!r}; choose one of {ATTACKER_KINDS}")
        if self.steps < 1 or self.batch_size < 1 or self.crop_seconds <= 0:
            raise ValueError(f"steps, batch_size and crop_seconds must be positive: {self}")

    def build(self) -> nn.Module:
        torch.manual_seed(self.seed)
        if self.kind == "removal":
            return RemovalAttacker(SSEDConfig.from_dict(self.model), self.eps)
        return STFTMaskEnhancer(self.n_fft, self.hidden)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def residual_db(x_hat: torch.Tensor, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """Perturbation left after the attack, in dB of the perturbation before it (per item, [B]):
    ``10 log10(‖x̂ − x‖² / ‖x' − x‖²)``; 0 at x̂ = x', negative when the attack removes some."""
    left = (x_hat - x).pow(2).sum(-1)
    before = (x_adv - x).pow(2).sum(-1)
    return 10 * torch.log10((left + 1e-12) / (before + 1e-12))


def _batch(
    pairs: PairSet, step: int, settings: AttackerSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """Aligned random crops of (x, x') drawn from (seed, step): reproducible, order independent."""
    rng = np.random.default_rng([settings.seed, step])
    crop = int(round(settings.crop_seconds * SAMPLE_RATE))
    xs = np.zeros((settings.batch_size, crop), dtype=np.float32)
    xps = np.zeros_like(xs)
    for i in range(settings.batch_size):
        k = int(rng.integers(len(pairs.clean)))
        x, xp = pairs.clean[k], pairs.protected[k]
        start = int(rng.integers(max(1, len(x) - crop + 1)))
        piece = slice(start, start + crop)
        xs[i, : len(x[piece])] = x[piece]
        xps[i, : len(xp[piece])] = xp[piece]
    return torch.from_numpy(xs), torch.from_numpy(xps)


def apply(model: nn.Module, x_adv: np.ndarray) -> np.ndarray:
    """Run an attacker network on one whole utterance (no gradients, float32, same length)."""
    device = next(model.parameters()).device
    with torch.inference_mode():
        xt = torch.from_numpy(np.ascontiguousarray(x_adv, dtype=np.float32)).to(device)
        return model(xt.unsqueeze(0)).squeeze(0).cpu().numpy().astype(np.float32)


@dataclasses.dataclass
class AttackerRun:
    """A trained attacker network, its learning curve and what it cost."""

    model: nn.Module
    settings: AttackerSettings
    history: list[dict[str, float]]
    minutes: float  # training time, learning-curve evaluations excluded
    pairs: int
    pair_hours: float
    loaded: bool = False

    def __call__(self, x_adv: np.ndarray) -> np.ndarray:
        return apply(self.model, x_adv)


def fit(
    settings: AttackerSettings,
    pairs: PairSet,
    path: str | os.PathLike | None = None,
    evaluate: Callable[[Callable[[np.ndarray], np.ndarray]], dict[str, float]] | None = None,
    progress: bool = True,
    device: torch.device | str | None = None,
) -> AttackerRun:
    """Train an attacker network on the pairs to minimise :func:`residual_db` (Adam).

    Args:
        path: where the trained network is stored; a file written by the same settings and pairs
            is loaded instead of training again.
        evaluate: learning-curve probe, called with the current ``x' -> x̂`` function every
            ``settings.eval_every`` steps and at the end; returns numbers for the history.
        device: where to train (default :func:`spkadv.encoders.speaker.default_device`).
    """
    if not pairs.clean:
        raise AttackerDataError("no (x, x') pairs to train on")
    stamp = {"settings": settings.to_dict(), "pairs": pairs.digest()}
    device = torch.device(device) if device is not None else default_device()
    model = settings.build().to(device)
    if path is not None and Path(path).exists():
        state = torch.load(path, map_location=device, weights_only=True)
        if json.loads(state["stamp"]) == stamp:
            model.load_state_dict(state["weights"])
            model.eval()
            return AttackerRun(
                model, settings, json.loads(state["history"]), float(state["minutes"]),
                len(pairs.clean), pairs.hours, loaded=True,
            )  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    history: list[dict[str, float]] = []
    elapsed = 0.0

    def probe(step: int) -> None:
        record = {"step": float(step), "minutes": elapsed / 60}
        if evaluate is not None:
            model.eval()
            record.update(evaluate(lambda xp: apply(model, xp)))
            model.train()
        history.append(record)

    probe(0)
    model.train()
    for step in tqdm(
        range(1, settings.steps + 1), desc=f"attacker {settings.kind}", disable=not progress
    ):
        t0 = time.perf_counter()
        x, x_adv = (t.to(device) for t in _batch(pairs, step, settings))
        loss = residual_db(model(x_adv), x, x_adv).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        elapsed += time.perf_counter() - t0
        if step == settings.steps or (settings.eval_every and step % settings.eval_every == 0):
            probe(step)
            history[-1]["train_residual_db"] = float(loss.detach())
    model.eval()
    if path is not None:
        state = {
            "stamp": json.dumps(stamp),
            "weights": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "history": json.dumps(history),
            "minutes": elapsed / 60,
        }
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    return AttackerRun(model, settings, history, elapsed / 60, len(pairs.clean), pairs.hours)


# --- another user's model ------------------------------------------------------------------


def train_other_model(
    base: TrainConfig,
    seed: int,
    joint_steps: int,
    removal_steps: int,
    waves: Sequence[np.ndarray],
    encoder: nn.Module,
    out_dir: str | os.PathLike,
    device: torch.device | None = None,
    progress: bool = True,
    speakers: Sequence[str] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> tuple[Path, float]:
    """Train a second protection model with the recipe of ``base`` (the first model's training
    configuration) but another seed and possibly fewer steps; write ``out_dir/model.pt``.

    Args:
        speakers: speaker of each wave (for a centroid attack target, as in notebook 20).
        meta: the first model's meta (protection settings such as ``code_steps``), kept.

    Returns the model file and the training minutes. Resumes from ``out_dir/checkpoints`` like
    notebook 20.
    """
    if seed == base.seed:
        raise ValueError(f"the second model needs another seed than the first one's ({base.seed})")
    cfg = dataclasses.replace(
        base,
        seed=seed,
        steps=joint_steps,
        removal_steps=removal_steps,
        warm_start_steps=min(base.warm_start_steps, joint_steps),
        quality_ramp_steps=min(base.quality_ramp_steps, joint_steps),
    )
    out_dir = Path(out_dir)
    result = train(
        cfg, waves, encoder, out_dir / "checkpoints", progress=progress, device=device,
        speakers=speakers,
    )  # fmt: skip
    path = modelfile.save_model(
        out_dir / "model.pt", result.generator, result.removal, cfg.eps,
        meta={**(meta or {}), "seed": seed, "steps": result.steps, "role": "another user's model"},
    )  # fmt: skip
    return path, result.minutes
