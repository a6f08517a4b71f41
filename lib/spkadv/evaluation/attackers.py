"""Who else can undo the protection: attacks on protected speech, ordered by what the attacker knows.

* **Semi-informed** attacker: holds a protection *oracle* (the protect tool with someone's model,
  used as a black box: wave in, protected wave out) and speech of other people. It builds
  (x, x') pairs and trains a removal network of its own to predict x from x'.
* **Another model**: the removal module of a second model (another seed) applied to this model's
  protected speech: one user's model must be no key to another's.

The attacker's code path (:func:`make_pairs`, :func:`fit`) never sees a model file or weights:
:class:`ProtectionOracle` exposes only ``__call__``, and training reads nothing but the pairs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from spkadv import SAMPLE_RATE
from spkadv.core import modelfile
from spkadv.core.models import RemovalModule, SSEDConfig
from spkadv.core.train import TrainConfig

ATTACKER_KINDS = ("removal", "stft_mask")


class AttackerDataError(ValueError):
    """The attacker has no speech of its own, or it overlaps the evaluation set (then the attack
    would be measured on speech it trained on)."""


# Enrolment clips held in memory at once by query_enrolments (one worker pool each).
ENROL_BLOCK = 256

# --- the oracle -----------------------------------------------------------------------------


class ProtectionOracle:
    """A protection service as a black box: ``oracle(x) -> x'`` (16 kHz float mono, same length).

    Built from a model file the way ``spkadv protect --model`` uses it. The loaded model lives only
    in a closure: the object has no attribute holding a module, a tensor or the model, refuses
    pickling, and counts its calls and the seconds of audio it protected (what a service would
    bill). As ``spkadv protect``, a model that takes a per-utterance code gets it optimised per call
    (:func:`spkadv.core.protect.protection_code`); extra keyword arguments go to
    :func:`spkadv.core.protect.protect`.

    :meth:`map` answers many queries at once; with ``workers`` > 1 (0: one per torch thread) it
    spreads them over that many processes of one torch thread each, each loading the model file
    itself, as a service with several servers would.
    """

    __slots__ = ("_protect", "_model_path", "_protect_kwargs", "_workers", "calls", "audio_seconds")

    def __init__(
        self,
        model_path: str | os.PathLike,
        device: str | None = None,
        workers: int = 1,
        **protect_kwargs,
    ):
        from spkadv.core import modelfile
        from spkadv.core.train import pick_device
        from spkadv.evaluation import conditions

        model = modelfile.load_model(model_path, device or pick_device())
        self._protect = _oracle_function(model, protect_kwargs)
        self._model_path = str(model_path)
        self._protect_kwargs = tuple(protect_kwargs.items())  # for the workers (no dict: no stash)
        self._workers = conditions.resolve_workers(model, workers, items=1 << 30)
        self.calls = 0
        self.audio_seconds = 0.0

    def __call__(self, x: np.ndarray, **kwargs) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        out = self._protect(x, **kwargs)
        self._count(x)
        return out

    def map(
        self, waves: Sequence[np.ndarray], progress: bool = False, desc: str = "oracle queries"
    ) -> list[np.ndarray]:
        """``[oracle(x) for x in waves]``, in the waves' order, in worker processes if so built."""
        from tqdm.auto import tqdm

        waves = [np.asarray(x, dtype=np.float32) for x in waves]
        bar = tqdm(total=len(waves), desc=desc, disable=not progress)
        answers: list[np.ndarray | None] = [None] * len(waves)
        workers = min(self._workers, len(waves))
        if workers <= 1:
            for i, x in enumerate(waves):
                answers[i] = self(x)
                bar.update()
        else:
            from spkadv.base.threads import process_map

            calls = [((x,), {}) for x in waves]
            initargs = (self._model_path, dict(self._protect_kwargs))
            for i, answer in process_map(
                _oracle_worker_call, calls, workers, _oracle_worker_start, initargs
            ):
                answers[i] = answer
                self._count(waves[i])
                bar.update()
        bar.close()
        return answers  # type: ignore[return-value]

    def _count(self, x: np.ndarray) -> None:
        self.calls += 1
        self.audio_seconds += len(x) / SAMPLE_RATE

    def __reduce__(self):
        raise TypeError("a ProtectionOracle is a black box and cannot be pickled or copied")

    def __repr__(self) -> str:
        return f"ProtectionOracle(calls={self.calls}, audio_seconds={self.audio_seconds:.1f})"


def _oracle_function(model, protect_kwargs: dict[str, Any]) -> Callable[..., np.ndarray]:
    from spkadv.core import protect as P

    def run(x: np.ndarray, **kwargs) -> np.ndarray:
        options = {**protect_kwargs, **kwargs}
        if "code" not in options:  # as the CLI: a per-utterance code where the model takes one
            options["code"] = P.protection_code(model, x)
        return P.protect(model, x, **options)

    return run


_ORACLE_WORKER: Callable[..., np.ndarray] | None = None


def _oracle_worker_start(model_path: str, protect_kwargs: dict[str, Any]) -> None:
    """Worker initialiser of :meth:`ProtectionOracle.map`: the model loaded from its file."""

    global _ORACLE_WORKER
    _ORACLE_WORKER = _oracle_function(modelfile.load_model(model_path, "cpu"), protect_kwargs)


def _ask(oracle, waves: list[np.ndarray], progress: bool, desc: str) -> list[np.ndarray]:
    """The oracle's answers to ``waves``: :meth:`ProtectionOracle.map` when it has one, else one
    ``oracle(x)`` call each (any callable)."""
    from tqdm.auto import tqdm

    if issubclass(type(oracle), ProtectionOracle):  # type(): no attribute of oracle read
        return oracle.map(waves, progress=progress, desc=desc)
    return [oracle(x) for x in tqdm(waves, desc=desc, disable=not progress)]


def _oracle_worker_call(x: np.ndarray) -> np.ndarray:
    assert _ORACLE_WORKER is not None, "oracle worker started without a model"
    return _ORACLE_WORKER(x)


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
    answers = _ask(oracle, clean, progress, "oracle queries")
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


def query_enrolments(
    oracle: Callable[[np.ndarray], np.ndarray],
    clean: Mapping[str, str | os.PathLike],
    published: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    check: int = 0,
    tolerance: float = 1.0e-6,
    progress: bool = True,
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Pass the victim's clean enrolment audio through the oracle; write ``out_dir/<utt>.wav``.

    With ``check > 0`` only the first ``check`` utterances (sorted) are queried; when every answer
    equals the protected audio already published for it (``published``, within ``tolerance``:
    a deterministic oracle), the others are taken from ``published``, which is what the oracle
    would return. Otherwise, and with ``check = 0``, every utterance is queried.

    Returns ``utt -> path`` and ``{"queried": n, "deterministic": bool}``.
    """

    from spkadv.audio.io import load_audio, save_audio

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    utts = sorted(clean)
    paths: dict[str, Path] = {}
    state = {"deterministic": True}

    def ask(batch: list[str], desc: str) -> None:
        # bounded memory: a block of clips at a time
        for start in range(0, len(batch), ENROL_BLOCK):
            block = batch[start : start + ENROL_BLOCK]
            waves = [load_audio(clean[u]) for u in block]
            answers = _ask(oracle, waves, progress, desc)
            for utt, answer in zip(block, answers, strict=True):
                answer = np.asarray(answer, dtype=np.float32)
                if utt in published:
                    reference = load_audio(published[utt])
                    state["deterministic"] &= reference.shape == answer.shape and bool(
                        np.max(np.abs(reference - answer), initial=0.0) <= tolerance
                    )
                else:
                    state["deterministic"] = False
                save_audio(out_dir / f"{utt}.wav", answer)
                paths[utt] = out_dir / f"{utt}.wav"

    first = utts[:check] if check > 0 else utts
    ask(first, "oracle enrolment")
    rest = utts[len(first) :]
    if rest and state["deterministic"]:  # the oracle returns what was published: reuse it
        paths.update({u: Path(published[u]) for u in rest})
    elif rest:
        ask(rest, "oracle enrolment (rest)")
    deterministic = state["deterministic"]
    queried = sum(1 for p in paths.values() if Path(p).parent == out_dir)
    return paths, {"queried": queried, "deterministic": deterministic}


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
        device: where to train (default :func:`spkadv.core.train.pick_device`).
    """
    from tqdm.auto import tqdm

    from spkadv.core.train import pick_device

    if not pairs.clean:
        raise AttackerDataError("no (x, x') pairs to train on")
    stamp = {"settings": settings.to_dict(), "pairs": pairs.digest()}
    device = torch.device(device) if device is not None else pick_device()
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
        from spkadv.base.fileio import atomic_path

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
    from spkadv.core import train

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
    result = train.train(
        cfg, waves, encoder, out_dir / "checkpoints", progress=progress, device=device,
        speakers=speakers,
    )  # fmt: skip
    path = modelfile.save_model(
        out_dir / "model.pt", result.generator, result.removal, cfg.eps,
        meta={**(meta or {}), "seed": seed, "steps": result.steps, "role": "another user's model"},
    )  # fmt: skip
    return path, result.minutes


# --- evaluation helpers ---------------------------------------------------------------------


def mean_snr_db(ref_paths: Mapping[str, Path], test_paths: Mapping[str, Path]) -> float:
    """Mean SNR (dB) of each ``utt -> test`` file against ``utt -> ref`` (inf capped at 200 dB)."""
    from spkadv.audio.io import load_audio
    from spkadv.core.protect import mean_db
    from spkadv.evaluation.metrics import snr_db

    if not test_paths:
        return math.nan
    return mean_db([snr_db(load_audio(ref_paths[u]), load_audio(p)) for u, p in test_paths.items()])


def mean_eers(table: pd.DataFrame) -> dict[tuple[str, str], float]:
    """``(role, condition) -> EER`` averaged over the (set, gender) rows of a
    :func:`spkadv.evaluation.tables.verification_rows` table, as notebook 40 reports them."""
    return {
        (role, cond): float(grp["eer"].mean())
        for (role, cond), grp in table.groupby(["encoder", "condition"], sort=False)
    }


def undone_percent(eer: float, eer_protected: float, eer_clean: float) -> float:
    """Share of the protection undone: 100 · (EER(rec-adv) − EER) / (EER(rec-adv) − EER(rec-rec))."""
    gap = eer_protected - eer_clean
    return math.nan if not gap > 0 else 100.0 * (eer_protected - eer) / gap


def paper_mean_eer(condition: str, role: str) -> float:
    """The paper's Table 1 EER for a condition, averaged over its four (set, gender) rows."""
    from spkadv.evaluation.tables import PAPER_TABLE1

    values = [v for (s, g, r, c), v in PAPER_TABLE1.items() if r == role and c == condition]
    return float(np.mean(values)) if values else math.nan


def knowledge_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The attackers table: one row per attacker, EERs (white, black box), SNR, share of the
    protection undone, and the paper's / journal's findings."""

    def num(v, digits: int = 2) -> str:
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return "–"
        return f"{v:.{digits}f}"

    head = (
        "| knows | attacker | trial | EER white % | EER black % | SNR dB | undone % (white) "
        "| paper (white / black EER, SNR) | journal (arXiv 2510.09504) |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        paper = r.get("paper")
        lines.append(
            f"| {r['knows']} | {r['attacker']} | {r['trial']} | {num(r['eer_white'])} | "
            f"{num(r['eer_black'])} | {num(r.get('snr_db'), 1)} | {num(r.get('undone_white'), 0)} | "
            f"{paper or '–'} | {r.get('journal') or '–'} |"
        )
    return "\n".join(lines) + "\n"


def plot_learning_curves(
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    data_curve: Sequence[Mapping[str, float]] = (),
    snr_adv_db: float | None = None,
):
    """What the attacker gains: SNR of x̂ and white-box cosine to x vs training minutes (one line
    per network), and SNR vs hours of pairs (``data_curve``, one network at equal steps)."""
    from spkadv.evaluation.plotting import setup

    setup()
    import matplotlib.pyplot as plt

    panels = 3 if data_curve else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4), squeeze=False)
    for ax, key, label in (
        (axes[0][0], "snr_db", "SNR of x̂ against x (dB)"),
        (axes[0][1], "cos_white", "white-box cos(f(x), f(x̂))"),
    ):
        for name, hist in histories.items():
            if all(key in h for h in hist):
                ax.plot(
                    [h["minutes"] for h in hist],
                    [h[key] for h in hist],
                    marker="o",
                    ms=3,
                    label=name,
                )
        ax.set_xlabel("training minutes")
        ax.set_ylabel(label)
    if snr_adv_db is not None:
        axes[0][0].axhline(snr_adv_db, color="grey", ls="--", lw=0.8, label="protected x'")
    axes[0][0].legend(fontsize=8)
    if data_curve:
        ax = axes[0][2]
        ax.plot(
            [d["pair_hours"] for d in data_curve], [d["snr_db"] for d in data_curve], marker="o"
        )
        if snr_adv_db is not None:
            ax.axhline(snr_adv_db, color="grey", ls="--", lw=0.8)
        ax.set_xlabel("hours of (x, x') pairs")
        ax.set_ylabel("SNR of x̂ against x (dB)")
        ax.set_title(f"{data_curve[-1].get('kind', '')}, same steps", fontsize=9)
    fig.tight_layout()
    return fig
