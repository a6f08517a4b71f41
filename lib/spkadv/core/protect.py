"""Protect / restore waveforms of any length with a trained model (:mod:`spkadv.core.modelfile`).


Chunked processing: the signal is cut into blocks of ``chunk_seconds``; each block is processed
with ``overlap`` samples of context on both sides (the receptive field rounded up to the model's
2**stages alignment) and only its centre is kept. For a local model (the default configuration)
the result equals whole-signal processing up to float rounding, with memory bounded by the block
size. Models with per-utterance statistics (``mask_norm="minmax"``, ``norm="instance"``) are not
local: chunking changes their output, so they are run on the whole signal at once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from spkadv import SAMPLE_RATE
from spkadv.audio.streaming import block_bounds
from spkadv.core.conditioning import optimise_code
from spkadv.core.modelfile import ModelFileError, ProtectionModel
from spkadv.core.models import NoiseMaskGenerator
from spkadv.core.predictor import CodePredictor, check_compatible, predict_codes

DEFAULT_CHUNK_SECONDS = 5.0  # measured: 30 s blocks cost ~20x more page faults and system time (benchmarks/bench_protect.py)


def _run(
    module: NoiseMaskGenerator,
    x: np.ndarray,
    sign: float,
    eps: float,
    embedding: torch.Tensor | None = None,
    code: np.ndarray | None = None,
    start: int = 0,
) -> np.ndarray:
    """``sign * eps * n(x) ⊙ m(x)`` for one block starting at sample ``start`` of the signal."""
    device = next(module.parameters()).device
    with torch.inference_mode():
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device).unsqueeze(0)
        emb = None if embedding is None else embedding.to(device)
        ct = None if code is None else torch.as_tensor(code, dtype=torch.float32, device=device)
        if ct is not None:
            ct = ct.unsqueeze(0)  # [1, code_dim] or [1, segments, code_dim]
        n, m = module(xt, embedding=emb, code=ct, code_offset=start)
        return (sign * eps * n * m).squeeze(0).cpu().numpy()


def chunked(
    fn: Callable[[np.ndarray, int], np.ndarray],
    x: np.ndarray,
    chunk: int,
    overlap: int,
    alignment: int,
    progress: bool = False,
    desc: str = "",
) -> np.ndarray:
    """Apply a local, length-preserving ``fn(block, start)`` block by block with ``overlap`` samples
    of context (``start``: the block's first sample in ``x``).

    The blocks are those of :func:`spkadv.audio.streaming.block_bounds` (starts are multiples of
    ``alignment``, and ``overlap`` must be a multiple of it too).
    """
    total = len(x)
    bounds = block_bounds(total, chunk, overlap, alignment)
    if len(bounds) == 1:
        return fn(x, 0).astype(np.float32)
    out = np.empty(total, dtype=np.float32)
    for a, b in tqdm(bounds, desc=desc, disable=not progress, unit="chunk"):
        s, e = max(0, a - overlap), min(total, b + overlap)
        out[a:b] = fn(x[s:e], s)[a - s : b - s]
    return out


def _validate(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected a mono waveform (1-D array), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("waveform holds NaN/Inf samples")
    return x


def _delta(
    model: ProtectionModel,
    module: NoiseMaskGenerator,
    x: np.ndarray,
    sign: float,
    chunk_seconds: float,
    progress: bool,
    desc: str,
    code: np.ndarray | None = None,
    code_offset: int = 0,
) -> np.ndarray:
    chunk = int(chunk_seconds * SAMPLE_RATE)
    if not model.config.is_local:
        chunk = max(chunk, len(x))  # per-utterance statistics: one pass over the whole signal
    embedding = model.embedding(x)  # whole-signal context, the same for every block
    return chunked(
        lambda b, start: _run(module, b, sign, model.eps, embedding, code, code_offset + start),
        x,
        chunk,
        model.overlap,
        model.alignment,
        progress,
        desc,
    )


def protect(
    model: ProtectionModel,
    x: np.ndarray,
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    progress: bool = False,
    code: np.ndarray | None = None,
    code_offset: int = 0,
) -> np.ndarray:
    """x' = x + eps · n(x) ⊙ m(x) (eq. 1), same length as ``x``; ``code`` conditions the
    generator (models with ``code_film``; see :func:`optimise_code`). ``code_offset``: where ``x``
    starts in the signal the (per-segment) code belongs to, for a block of a longer file."""
    x = _validate(x)
    out = _delta(
        model, model.generator, x, 1.0, chunk_seconds, progress, "protect", code, code_offset
    )
    out += x  # in place: one whole-length array fewer
    return out


def restore(
    model: ProtectionModel,
    x_adv: np.ndarray,
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    progress: bool = False,
    code: np.ndarray | None = None,
    code_offset: int = 0,
) -> np.ndarray:
    """One-shot removal x̂ = x' + eps · n'(x') ⊙ m'(x') (eq. 5) with F_R (given the protection's
    ``code`` when the model takes one: it is in the protected file's sidecar; ``code_offset`` as
    in :func:`protect`)."""
    x_adv = _validate(x_adv)
    if model.removal is None:
        raise ModelFileError(
            "this model has no removal module F_R (an SSED baseline model); use restore_refined"
        )
    out = _delta(
        model, model.removal, x_adv, 1.0, chunk_seconds, progress, "restore", code, code_offset
    )
    out += x_adv  # in place: one whole-length array fewer
    return out


def restore_refined(
    model: ProtectionModel,
    x_adv: np.ndarray,
    iterations: int = 10,
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    progress: bool = False,
    start: str = "removal",
    code: np.ndarray | None = None,
    code_offset: int = 0,
) -> np.ndarray:
    """Fixed-point refinement with the generator: x̂ ← x' − eps · n(x̂) ⊙ m(x̂).

    Starts from F_R's estimate (``start="removal"``) or from x' itself (``start="adv"``). It
    converges when x ↦ delta(x) is a contraction; it implies that whoever holds the generator can
    remove the perturbation.
    """
    x_adv = _validate(x_adv)
    if start == "removal" and model.removal is not None:
        x_hat = restore(model, x_adv, chunk_seconds, code=code, code_offset=code_offset)
    elif start in ("removal", "adv"):
        x_hat = x_adv.copy()
    else:
        raise ValueError(f"start={start!r}; use 'removal' or 'adv'")
    for _ in tqdm(range(iterations), desc="refine", disable=not progress):
        x_hat = x_adv - _delta(
            model, model.generator, x_hat, 1.0, chunk_seconds, False, "", code, code_offset
        )
    return x_hat


def protection_code(
    model: ProtectionModel,
    x,
    steps: int | None = None,
    progress: bool = False,
    delta_map=None,
    predictor: CodePredictor | None = None,
) -> np.ndarray | None:
    """The per-utterance code of ``x`` for a ``code_film`` model (None for other models).

    ``steps`` optimisation steps (default: the model's ``meta["code_steps"]``) against the model's
    white-box encoder (with the surrogates of ``meta["code_surrogates"]``, :meth:`ProtectionModel.code_encoder`), under CPU bf16 autocast when ``meta["code_bf16"]``; see
    :func:`spkadv.core.conditioning.optimise_code`. ``x`` is a waveform or a signal read in pieces (an
    object with ``read(start, stop)`` and ``len()``, such as :class:`spkadv.audio.io.AudioSource`):
    the code is the same, and only the piece being optimised is in memory. ``delta_map``: see
    :func:`spkadv.core.conditioning.optimise_code` (a probe; the protected signal is then
    x + delta_map(δ)).

    ``predictor`` (beyond the paper, :mod:`spkadv.core.predictor`, for a model with per-segment
    codes): the code starts from the predictor's code stream instead of the zero code, and
    ``steps`` (default 0, not the model's ``code_steps``) refinement steps follow from it; with
    0 steps the white-box encoder is never called. The predicted stream is the same whether ``x``
    is read whole or in pieces. :class:`spkadv.core.predictor.PredictorFileError` when the
    predictor was trained for another model.
    """
    if not model.config.code_film:
        return None
    if predictor is not None:
        check_compatible(predictor, model)
        steps = 0 if steps is None else int(steps)
        if steps < 0:
            raise ValueError(f"{steps} refinement steps: expected 0 or more")
    else:
        steps = int(model.meta.get("code_steps", 0) if steps is None else steps)
        if steps <= 0:  # the zero code (one vector serves every segment)
            return np.zeros(model.config.code_dim, dtype=np.float32)
    if isinstance(x, np.ndarray) or model.conditioned:
        x = _validate(x if isinstance(x, np.ndarray) else x.read(0, len(x)))
        signal, total = x, None
    else:
        signal, total = (lambda a, b: _validate(x.read(a, b))), len(x)
    init = None
    if predictor is not None:
        init = predict_codes(predictor, signal, total, progress=progress)
        if steps == 0:  # one forward pass of the predictor: no encoder at all
            return init
    code, _ = optimise_code(
        model.generator,
        model.code_encoder(),
        signal,
        model.eps,
        steps,
        lr=float(model.meta.get("code_lr", 0.5)),
        radius=float(model.meta.get("code_radius", 3.0)),
        snr_target_db=model.meta.get("snr_target_db"),
        embedding=model.embedding(signal) if model.conditioned else None,
        bf16=bool(model.meta.get("code_bf16", False)),
        total=total,
        progress=progress,
        shift=int(model.meta.get("code_shift", 0)),
        delta_map=delta_map,
        init=init,
    )
    return code
