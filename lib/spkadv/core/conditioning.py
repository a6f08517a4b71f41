"""Per-utterance conditioning of the generator: utterance embeddings and optimised codes.

Two options beyond the paper, both constant over an utterance, so chunked processing with the same
vectors equals whole-file processing:

- *utterance context* (``SSEDConfig.embed_dim``): F_P is conditioned (FiLM) on the white-box
  embedding of the whole clean utterance, F_R on that of the protected one it receives;
- *per-utterance code* (``SSEDConfig.code_film``): a vector of per-channel scales and shifts of the
  generator's bottleneck, optimised for a few steps per utterance against the white-box encoder
  (:func:`optimise_code`). The perturbation stays in the family the generator and F_R were trained
  on (random codes in training), and the code travels in the protected file's sidecar: it is
  useless without the model, and lets F_R and the fixed-point refinement undo exactly that member.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from spkadv import SAMPLE_RATE
from spkadv.core.models import NoiseMaskGenerator

EMBED_WINDOW_SECONDS = 30.0  # long files: mean of unit embeddings of windows of this length


def utterance_embedding(encoder: torch.nn.Module, x: np.ndarray) -> torch.Tensor:
    """Unit white-box embedding [1, D] of a whole waveform (30 s windows averaged when longer)."""
    device = next(encoder.parameters()).device
    window = int(EMBED_WINDOW_SECONDS * SAMPLE_RATE)
    pieces = [x[a : a + window] for a in range(0, max(1, len(x)), window)]
    if len(pieces) > 1 and len(pieces[-1]) < window // 4:  # a short tail joins the previous window
        pieces[-2] = np.concatenate([pieces[-2], pieces.pop()])
    total = None
    with torch.no_grad():  # not inference_mode: the encoder may cache tensors reused with grad
        for piece in pieces:
            xt = torch.from_numpy(np.ascontiguousarray(piece, dtype=np.float32)).to(device)
            z = F.normalize(encoder.embed(xt.unsqueeze(0)).float(), dim=-1) * len(piece)
            total = z if total is None else total + z
    return F.normalize(total, dim=-1).cpu()


Reader = Callable[[int, int], np.ndarray]  # (start, stop) -> float32 samples of a signal


def optimisation_windows(
    x: np.ndarray | Reader, window_seconds: float, max_windows: int, total: int | None = None
) -> np.ndarray:
    """Up to ``max_windows`` evenly spaced windows of ``window_seconds`` ([W, T]) from ``x``;
    the whole signal (zero padded to one window) when it is shorter. ``x`` is an array, or a
    reader ``(start, stop) -> samples`` of a signal of ``total`` samples (a file read in pieces)."""
    read, total = _reader(x, total)
    window = int(window_seconds * SAMPLE_RATE)
    if total <= window:
        return np.pad(read(0, total), (0, window - total))[None].astype(np.float32)
    count = min(max_windows, int(np.ceil(total / window)))
    starts = np.linspace(0, total - window, count).round().astype(int)
    return np.stack([read(s, s + window) for s in starts]).astype(np.float32)


def _reader(x: np.ndarray | Reader, total: int | None) -> tuple[Reader, int]:
    if isinstance(x, np.ndarray):
        return (lambda a, b: x[a:b]), len(x)
    if total is None:
        raise ValueError("a reader needs the signal's length (total)")
    return x, total


def _optimise(
    generator: NoiseMaskGenerator,
    encoder: torch.nn.Module,
    windows: torch.Tensor,
    code: torch.Tensor,
    eps: float,
    steps: int,
    lr: float,
    radius: float,
    snr_target_db: float | None,
    embedding: torch.Tensor | None,
    offset: int = 0,
    bf16: bool = False,
    shift: int = 0,
    delta_map: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, list[float]]:
    """Adam on ``code`` (a leaf, [W, D] or [1, S, D]) against cos(z(w), z(w + δ(w; code))).

    The generator's encoder does not see the code: it runs once, and each step only decodes.
    ``bf16``: forward passes under CPU bfloat16 autocast (the code and Adam stay float32).
    ``shift`` > 0: at each step the encoder sees w + δ from a random sample offset in
    [0, shift] (expectation over the encoder's frame alignment; the offsets are seeded, so the
    code is reproducible). ``delta_map``: a differentiable map applied to δ before it is added
    (a probe of where δ must sit; the protected signal is then x + delta_map(δ)).
    """
    emb = None if embedding is None else embedding.to(windows.device).expand(len(windows), -1)
    autocast = torch.autocast(
        "cpu", dtype=torch.bfloat16, enabled=bf16 and windows.device.type == "cpu"
    )
    with torch.no_grad(), autocast:
        z = encoder.embed(windows).float()
        encoded = generator.encode(windows)
    code.requires_grad_(True)
    optimiser = torch.optim.Adam([code], lr=lr)
    offsets = torch.Generator().manual_seed(0)
    best, best_loss, history = code.detach().clone(), float("inf"), []
    for step in range(steps + 1):
        batch_code = code.expand(len(windows), *code.shape[1:])
        with autocast:
            n, m = generator.decode(encoded, embedding=emb, code=batch_code, code_offset=offset)
            delta = eps * n.float() * m.float()
            if delta_map is not None:
                delta = delta_map(delta)
            start = int(torch.randint(0, shift + 1, (1,), generator=offsets)) if shift > 0 else 0
            adv = (windows + delta)[:, start:]
            cos = F.cosine_similarity(z, encoder.embed(adv).float(), dim=-1).mean()
        loss = cos
        if snr_target_db is not None:
            snr = 10 * torch.log10(windows.pow(2).sum() / delta.pow(2).sum().clamp_min(1e-20))
            loss = loss + 0.05 * torch.relu(snr_target_db - snr)
        if float(loss.detach()) < best_loss:
            best, best_loss = code.detach().clone(), float(loss.detach())
        if step:
            history.append(float(cos.detach()))
        if step == steps:
            break
        (code.grad,) = torch.autograd.grad(loss, code)  # no gradients for the model's weights
        optimiser.step()
        with torch.no_grad():  # each code vector stays in the ball training covered
            norms = code.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            code.mul_(torch.clamp(radius / norms, max=1.0))
    return best, history


def optimise_code(
    generator: NoiseMaskGenerator,
    encoder: torch.nn.Module,
    x: np.ndarray | Reader,
    eps: float,
    steps: int,
    lr: float = 0.5,
    radius: float = 3.0,
    snr_target_db: float | None = None,
    window_seconds: float = 3.0,
    max_windows: int = 2,
    embedding: torch.Tensor | None = None,
    piece_seconds: float = 20.0,
    bf16: bool = False,
    total: int | None = None,
    progress: bool = False,
    shift: int = 0,
    delta_map: Callable[[torch.Tensor], torch.Tensor] | None = None,
    init: np.ndarray | None = None,
) -> tuple[np.ndarray, list[float]]:
    """Optimise the generator's code for one utterance: minimise cos(z(x), z(x + δ(x; c))).

    Adam for ``steps`` steps, each code vector kept in the ball of ``radius`` (the region training
    covered), with relu(snr_target_db − SNR) in the loss when a target is given; the code with the
    lowest loss seen is kept (the zero code counts). A per-utterance code ([code_dim]) is fitted on
    up to ``max_windows`` windows of ``window_seconds`` (bounded cost whatever the length); a
    per-segment code ([segments, code_dim]) on the signal itself, in pieces of ``piece_seconds``
    (each piece against its own embedding). ``bf16``: forward passes under CPU bfloat16 autocast.
    ``x`` is a waveform or a reader ``(start, stop) -> samples`` of a signal of ``total`` samples:
    only the windows or the piece at hand are then in memory, and the code is the same.
    ``shift`` > 0: each step embeds the protected signal from a random offset of up to ``shift``
    samples (seeded; beyond the paper: meant to keep the code from fitting the white-box
    encoder's frame alignment, which another encoder does not share). ``delta_map``: see
    :func:`_optimise` (a probe: the signal protected this way is x + delta_map(δ)).
    ``init``: the code to start from (default the zero code), of the shape returned:
    [code_dim] for a per-utterance code, [segments, code_dim] for a per-segment one (a predicted
    code, :func:`spkadv.core.predictor.predict_codes`); it counts among the codes seen, and with
    ``steps`` 0 it is returned as it is, without calling the encoder.
    Returns the code and the cosine after each step (mean over pieces).
    """
    cfg = generator.config
    dim = cfg.code_dim
    if not dim:
        raise ValueError("this generator takes no code (SSEDConfig.code_film is false)")
    read, total = _reader(x, total)
    device = next(generator.parameters()).device
    shape = (cfg.code_segments(total), dim) if cfg.code_segment_samples else (dim,)
    if init is not None:
        init = np.asarray(init, dtype=np.float32)
        if init.shape != shape:
            raise ValueError(f"init code of shape {init.shape}; this signal's code is {shape}")
        if not np.isfinite(init).all():
            raise ValueError("init code holds NaN/Inf values")
        if steps <= 0:  # nothing to optimise: the starting code itself, no encoder call
            return init.copy(), []
    start = (
        torch.zeros(1, *shape, device=device)
        if init is None
        else torch.tensor(init, device=device).unsqueeze(0)
    )
    if not cfg.code_segment_samples:
        windows = optimisation_windows(read, window_seconds, max_windows, total)
        best, history = _optimise(
            generator, encoder, torch.from_numpy(windows).to(device),
            start, eps, steps, lr, radius, snr_target_db, embedding,
            bf16=bf16, shift=shift, delta_map=delta_map,
        )  # fmt: skip
        return best[0].cpu().numpy().astype(np.float32), history
    seg = cfg.code_segment_samples
    codes = start
    per_piece = max(1, round(piece_seconds * SAMPLE_RATE / seg))
    histories: list[list[float]] = []
    firsts = range(0, codes.shape[1], per_piece)
    for first in tqdm(firsts, desc="code", unit="piece", disable=not progress):
        last = min(codes.shape[1], first + per_piece)
        piece = np.ascontiguousarray(read(first * seg, min(total, last * seg)), dtype=np.float32)
        if len(piece) == 0:
            break
        wave = torch.from_numpy(piece).to(device).unsqueeze(0)
        best, hist = _optimise(
            generator, encoder, wave, codes[:, first:last].clone(), eps, steps, lr, radius,
            snr_target_db, embedding, offset=0, bf16=bf16, shift=shift, delta_map=delta_map,
        )  # fmt: skip
        codes[:, first:last] = best
        histories.append(hist)
    history = [float(np.mean(step)) for step in zip(*histories, strict=True)]  # mean over pieces
    return codes[0].cpu().numpy().astype(np.float32), history
