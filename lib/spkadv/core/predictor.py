"""The amortised code: a small network that predicts the generator's per-segment code from x.

A model with one code per segment (``SSEDConfig.code_segment_seconds``) protects a file with codes
optimised by a few Adam steps against the white-box encoder
(:func:`spkadv.core.conditioning.optimise_code`): nearly all of protect's time. A
:class:`CodePredictor` maps each segment's log-mel frames (the segment and ``context_segments``
segments on each side) to its code instead, trained on codes optimised for train-speaker
utterances (:func:`fit`). Protection is then its forward pass and the generator's, optionally
followed by ``steps`` refinement steps from the predicted code (:func:`amortised_code` for the
study's variants; :func:`spkadv.core.protect.protection_code` with ``predictor=`` and
``spkadv protect --code-predictor PATH [--refine-steps K]`` for protection): no backward pass
through the encoder at all with 0 steps. The code still travels in the sidecar, so
restoration is unchanged, and every predicted code vector lies in the model's ball (``radius``).

Chunking: segment ``s`` is predicted from the samples ``[(s - c)·seg, (s + 1 + c)·seg)`` of the
signal (zeros outside it), in batches of ``batch_segments`` segments aligned on absolute segment
indices. Every batch has the same shape and content whatever piece of the file asks for it, so
the code stream predicted in pieces equals the whole file's bit for bit (:func:`predict_codes`).

Beyond the paper (an assumption to measure, notebook ``studies/95_code_predictor``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import nn
from tqdm.auto import tqdm

from spkadv import SAMPLE_RATE
from spkadv.base.fileio import atomic_path
from spkadv.core.conditioning import Reader, _reader, optimise_code
from spkadv.core.modelfile import ProtectionModel

FORMAT = "spkadv-code-predictor"
VERSION = 1
N_FFT, HOP = 400, 160  # 25 ms frames every 10 ms
STARTS = ("predicted", "zero", "mean")  # where amortised_code's refinement starts


class PredictorFileError(ValueError):
    """A code-predictor file is missing, damaged, or made for another protection model."""


@dataclasses.dataclass(frozen=True)
class PredictorConfig:
    """Shape of a :class:`CodePredictor`; ``segment_samples``, ``code_dim`` and ``radius`` come
    from the protection model (:meth:`for_model`). All fields are primitives."""

    segment_samples: int
    code_dim: int
    radius: float
    context_segments: int = 1  # segments of context on each side of the predicted one
    n_mels: int = 40
    hidden: int = 64
    batch_segments: int = 16  # segments per forward pass (aligned on absolute segment indices)

    def __post_init__(self) -> None:
        if self.segment_samples < 1 or self.code_dim < 1 or not self.radius > 0:
            raise ValueError(f"invalid predictor shape {self}")
        if self.context_segments < 0 or self.hidden < 1 or self.batch_segments < 1:
            raise ValueError(f"invalid predictor sizes {self}")
        if self.window_samples < N_FFT:
            raise ValueError(f"a window of {self.window_samples} samples is under one frame")

    @classmethod
    def for_model(cls, model: ProtectionModel, **sizes: Any) -> PredictorConfig:
        """The configuration for ``model``'s code: its segment, code size and ball."""
        cfg = model.config
        if not cfg.code_film or not cfg.code_segment_samples:
            raise ValueError(
                "the code predictor predicts one code per segment: this model takes "
                + ("one code per utterance" if cfg.code_film else "no code (MODEL_CODE_FILM false)")
            )
        radius = float(model.meta.get("code_radius", 3.0))  # protection_code's default
        return cls(cfg.code_segment_samples, cfg.code_dim, radius, **sizes)

    @property
    def window_samples(self) -> int:
        return (1 + 2 * self.context_segments) * self.segment_samples

    @property
    def frames(self) -> int:
        return (self.window_samples - N_FFT) // HOP + 1

    def centre_frames(self) -> tuple[int, int]:
        """Frames lying inside the predicted (centre) segment, at least one."""
        start = self.context_segments * self.segment_samples
        first = -(-start // HOP)
        last = (start + self.segment_samples - N_FFT) // HOP + 1
        return first, max(last, first + 1)


class CodePredictor(nn.Module):
    """Windows [B, window_samples] → codes [B, code_dim] in the ball of ``radius``: log-mel frames
    (normalised by training-set statistics), two convolutions over time, the mean over the centre
    segment's frames with the mean and maximum over the window, then two linear layers."""

    def __init__(self, config: PredictorConfig) -> None:
        super().__init__()
        self.config = config
        mel = AF.melscale_fbanks(N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, config.n_mels, SAMPLE_RATE)
        self.register_buffer("mel", mel.T.contiguous())  # [n_mels, freqs]
        self.register_buffer("window", torch.hann_window(N_FFT))
        self.register_buffer("feature_mean", torch.zeros(config.n_mels))
        self.register_buffer("feature_std", torch.ones(config.n_mels))
        self.register_buffer("mean_code", torch.zeros(config.code_dim))  # of the training targets
        h = config.hidden
        self.convs = nn.Sequential(
            nn.Conv1d(config.n_mels, h, 5, padding=2), nn.ReLU(),
            nn.Conv1d(h, h, 5, padding=4, dilation=2), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Linear(3 * h, h), nn.ReLU(), nn.Linear(h, config.code_dim))
        self.model_fingerprint = ""  # the protection model it was trained for (set by the file)
        self.meta: dict[str, Any] = {}

    def features(self, windows: torch.Tensor) -> torch.Tensor:
        """Log-mel frames [B, n_mels, frames] of windows [B, window_samples]."""
        spec = torch.stft(
            windows, N_FFT, HOP, window=self.window, center=False, return_complex=True
        )
        return torch.log(self.mel @ spec.abs().pow(2) + 1e-8)

    def from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Codes [B, code_dim] from :meth:`features` (what training sees)."""
        norm = (feats - self.feature_mean[:, None]) / self.feature_std[:, None]
        h = self.convs(norm)
        first, last = self.config.centre_frames()
        pooled = torch.cat([h[..., first:last].mean(-1), h.mean(-1), h.amax(-1)], dim=1)
        return self.project(self.head(pooled))

    def project(self, code: torch.Tensor) -> torch.Tensor:
        """Each code vector scaled into the ball of ``radius`` (as optimise_code keeps its codes)."""
        norms = code.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return code * torch.clamp(self.config.radius / norms, max=1.0)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.from_features(self.features(windows))


def segment_windows(
    x: np.ndarray | Reader, first: int, last: int, config: PredictorConfig, total: int | None = None
) -> np.ndarray:
    """The windows [last - first, window_samples] of segments ``first`` to ``last`` (exclusive):
    each segment with ``context_segments`` of context on each side, zeros outside the signal."""
    read, total = _reader(x, total)
    seg, ctx = config.segment_samples, config.context_segments
    start, stop = (first - ctx) * seg, (last + ctx) * seg
    buffer = np.zeros(stop - start, dtype=np.float32)
    a, b = max(0, start), min(total, stop)
    if b > a:
        buffer[a - start : b - start] = read(a, b)
    return np.stack(
        [buffer[i * seg : i * seg + config.window_samples] for i in range(last - first)]
    )


def predict_segments(
    predictor: CodePredictor,
    x: np.ndarray | Reader,
    first: int,
    last: int,
    total: int | None = None,
) -> np.ndarray:
    """Codes [last - first, code_dim] of segments ``first`` to ``last`` (exclusive) of ``x`` (an
    array, or a reader ``(start, stop) -> samples`` of ``total`` samples), computed in the aligned
    batches of the module docstring: the same values whichever range asks for them."""
    cfg = predictor.config
    size = cfg.batch_segments
    start = first // size * size
    device = next(predictor.parameters()).device
    out = []
    with torch.inference_mode():
        for b in range(start, last, size):
            windows = segment_windows(x, b, b + size, cfg, total)
            batch = torch.tensor(windows, device=device)  # a fresh, aligned allocation each time
            out.append(predictor(batch).float().cpu().numpy())
    if not out:
        return np.zeros((0, cfg.code_dim), dtype=np.float32)
    return np.concatenate(out)[first - start : last - start].astype(np.float32)


def predict_codes(
    predictor: CodePredictor,
    x: np.ndarray | Reader,
    total: int | None = None,
    piece_seconds: float = 20.0,
    progress: bool = False,
) -> np.ndarray:
    """The predicted code stream [segments, code_dim] of a whole signal (``x``, ``total`` as in
    :func:`predict_segments`), read in pieces of about ``piece_seconds`` (bounded memory)."""
    read, total = _reader(x, total)
    cfg = predictor.config
    segments = max(1, -(-total // cfg.segment_samples))
    piece = cfg.segment_samples * cfg.batch_segments
    per_piece = max(1, round(piece_seconds * SAMPLE_RATE / piece)) * cfg.batch_segments
    firsts = range(0, segments, per_piece)
    parts = [
        predict_segments(predictor, read, f, min(segments, f + per_piece), total)
        for f in tqdm(firsts, desc="predict code", unit="piece", disable=not progress)
    ]
    return np.concatenate(parts)


def _code_settings(model: ProtectionModel) -> dict[str, Any]:
    """How ``model`` optimises its code (as :func:`spkadv.core.protect.protection_code` reads it)."""
    meta = model.meta
    return {
        "lr": float(meta.get("code_lr", 0.5)),
        "radius": float(meta.get("code_radius", 3.0)),
        "snr_target_db": meta.get("snr_target_db"),
        "bf16": bool(meta.get("code_bf16", False)),
        "shift": int(meta.get("code_shift", 0)),
    }


def refine_code(
    model: ProtectionModel, x: np.ndarray, init: np.ndarray, steps: int, piece_seconds: float = 20.0
) -> np.ndarray:
    """``steps`` Adam steps on the per-segment code ``init`` [segments, code_dim] against the
    model's code encoder, with the model's learning rate, ball and SNR target:
    :func:`spkadv.core.conditioning.optimise_code` started from ``init`` (from zeros, this is
    today's protection code; :func:`spkadv.core.protect.protection_code` with a ``predictor``
    is the same from the predicted code). The lowest-loss code seen is kept, ``init`` included."""
    cfg = model.config
    segments = cfg.code_segments(len(x))
    if not cfg.code_segment_samples or init.shape != (segments, cfg.code_dim):
        raise ValueError(
            f"init code of shape {init.shape}, this signal takes {(segments, cfg.code_dim)}"
        )
    settings = _code_settings(model)
    code, _ = optimise_code(
        model.generator, model.code_encoder(), x, model.eps, steps, lr=settings["lr"],
        radius=settings["radius"], snr_target_db=settings["snr_target_db"],
        embedding=model.embedding(x) if model.conditioned else None, piece_seconds=piece_seconds,
        bf16=settings["bf16"], shift=settings["shift"], init=init,
    )  # fmt: skip
    return code


def amortised_code(
    model: ProtectionModel,
    predictor: CodePredictor | None,
    x: np.ndarray,
    steps: int = 0,
    start: str = "predicted",
    to_radius: bool = False,
) -> np.ndarray:
    """The per-segment code [segments, code_dim] protecting ``x``: the predictor's (``start``
    "predicted"), the zero code or the mean training code, then ``steps`` refinement steps
    (:func:`refine_code`). With ``steps`` 0 the white-box encoder is never called. ``start``
    "zero" with steps > 0 is today's protection (:func:`spkadv.core.protect.protection_code`;
    with a ``predictor`` it gives this function's "predicted" code).
    ``to_radius``: the predicted or mean code scaled onto the ball's surface before any step
    (optimised codes end there; regression to them shrinks towards their mean)."""
    if start not in STARTS:
        raise ValueError(f"start={start!r}; choose one of {STARTS}")
    if steps < 0:
        raise ValueError(f"steps={steps}: expected >= 0")
    cfg = model.config
    segments, dim = cfg.code_segments(len(x)), cfg.code_dim
    if start == "zero":
        zeros = np.zeros((segments, dim), dtype=np.float32)
        return refine_code(model, x, zeros, steps) if steps else zeros
    if predictor is None:
        raise ValueError(f"start={start!r} needs a code predictor")
    check_compatible(predictor, model)
    if start == "mean":
        init = np.tile(predictor.mean_code.cpu().numpy().astype(np.float32), (segments, 1))
    else:
        init = predict_codes(predictor, x)
    if to_radius:
        norms = np.linalg.norm(init, axis=-1, keepdims=True).clip(min=1e-12)
        init = (init * (predictor.config.radius / norms)).astype(np.float32)
    return refine_code(model, x, init, steps) if steps else init


def check_compatible(predictor: CodePredictor, model: ProtectionModel) -> None:
    """Raise :class:`PredictorFileError` when ``predictor`` was trained for another model or shape."""
    cfg, want = predictor.config, PredictorConfig.for_model(model)
    shape = (cfg.segment_samples, cfg.code_dim, cfg.radius)
    if shape != (want.segment_samples, want.code_dim, want.radius):
        raise PredictorFileError(
            f"code predictor for segments of {cfg.segment_samples} samples, codes of {cfg.code_dim} "
            f"values in a ball of {cfg.radius:g}; the model takes {want.segment_samples}, "
            f"{want.code_dim}, {want.radius:g}: train one for this model (notebook 95)"
        )
    fingerprint = predictor.model_fingerprint
    if fingerprint and fingerprint != model.fingerprint:
        raise PredictorFileError(
            f"code predictor trained for model {fingerprint[:12]}, not for this one "
            f"({model.fingerprint[:12]}): train one for this model (notebook 95)"
        )


# ------------------------------------------------------------------------------------ training


def training_features(predictor: CodePredictor, x: np.ndarray) -> torch.Tensor:
    """Log-mel features [segments, n_mels, frames] of every segment of ``x`` (training input)."""
    cfg = predictor.config
    segments = max(1, -(-len(x) // cfg.segment_samples))
    with torch.no_grad():
        return predictor.features(torch.from_numpy(segment_windows(x, 0, segments, cfg)))


def initialise(
    predictor: CodePredictor, features: torch.Tensor, mean_code: torch.Tensor, seed: int
) -> None:
    """Fresh weights drawn with ``seed``, the feature normalisation fitted on ``features``
    [N, n_mels, frames], ``mean_code`` (projected into the ball) as the mean training code and
    as the last layer's bias (what the untrained network gives). Every training starts here."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer in [*predictor.convs, *predictor.head]:
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
    with torch.no_grad():
        predictor.feature_mean.copy_(features.mean(dim=(0, 2)))
        predictor.feature_std.copy_(features.std(dim=(0, 2)).clamp_min(1e-3))
        predictor.mean_code.copy_(predictor.project(mean_code.float()))
        predictor.head[-1].bias.copy_(predictor.mean_code)


def fit(
    predictor: CodePredictor,
    features: torch.Tensor,
    targets: torch.Tensor,
    steps: int,
    lr: float = 1.0e-3,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """Train ``predictor`` in place on pairs (segment features [N, n_mels, frames], optimised code
    [N, code_dim]): mean squared error, Adam, batches drawn with ``seed`` (initialisation too).

    The feature normalisation is fitted on ``features`` and the last layer's bias starts at the
    mean target (the constant code a network that learned nothing would give). Returns the loss
    of each step.
    """
    if len(features) != len(targets) or len(features) == 0:
        raise ValueError(f"{len(features)} feature rows for {len(targets)} target codes")
    targets = targets.float()
    initialise(predictor, features, targets.mean(0), seed)
    optimiser = torch.optim.Adam(predictor.parameters(), lr=lr)
    draw = torch.Generator().manual_seed(seed)
    predictor.train()
    history = []
    for _ in tqdm(range(steps), desc="predictor", disable=not progress):
        index = torch.randint(0, len(features), (min(batch_size, len(features)),), generator=draw)
        loss = F.mse_loss(predictor.from_features(features[index]), targets[index])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        history.append(float(loss.detach()))
    predictor.eval()
    return history


def mse(predictor: CodePredictor, features: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean squared error of ``predictor`` on (features, codes); the mean code's: ``mean_code``."""
    with torch.no_grad():
        return float(F.mse_loss(predictor.from_features(features), targets.float()))


# ------------------------------------------------------------------------------------ the file


def beside(model_path: str | os.PathLike) -> Path:
    """Where a model's code predictor would live: ``<model stem>.code_predictor.pt`` beside it."""
    path = Path(model_path)
    return path.with_name(f"{path.stem}.code_predictor.pt")


def save_predictor(
    path: str | os.PathLike,
    predictor: CodePredictor,
    model: ProtectionModel,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write the predictor (tensors and primitives only), tied to ``model``'s fingerprint."""
    state = {
        "format": FORMAT,
        "version": VERSION,
        "config": dataclasses.asdict(predictor.config),
        "state": {k: v.detach().cpu().contiguous() for k, v in predictor.state_dict().items()},
        "model_fingerprint": model.fingerprint,
        "meta": dict(meta or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_predictor(
    path: str | os.PathLike, model: ProtectionModel | None = None, device: str = "cpu"
) -> CodePredictor:
    """Load a predictor file (no code execution), checked against ``model`` when given."""
    path = Path(path)
    if not path.is_file():
        raise PredictorFileError(f"{path}: code predictor not found; train one with notebook 95")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, garbage bytes, pickled code: all refused here
        raise PredictorFileError(f"{path}: cannot read ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise PredictorFileError(f"{path}: not a spkadv code predictor (no format tag {FORMAT!r})")
    if state.get("version") != VERSION:
        raise PredictorFileError(
            f"{path}: version {state.get('version')}, this spkadv reads {VERSION}"
        )
    predictor = CodePredictor(PredictorConfig(**state["config"]))
    predictor.load_state_dict(state["state"])
    predictor.model_fingerprint = str(state["model_fingerprint"])
    predictor.meta = dict(state["meta"])
    predictor.to(device).eval()
    if model is not None:
        check_compatible(predictor, model)
    return predictor


def in_ball(codes: np.ndarray, radius: float, tolerance: float = 1e-5) -> bool:
    """True when every code vector's norm is at most ``radius`` (up to float rounding)."""
    norms = np.linalg.norm(np.asarray(codes, dtype=np.float64).reshape(-1, codes.shape[-1]), axis=1)
    return bool(np.all(norms <= radius * (1 + tolerance)))
