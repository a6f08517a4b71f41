"""Protect / restore waveforms of any length with a trained model, and the model file format.

Model file (``model.pt``): a plain dict of tensors and primitives, loaded with
``torch.load(weights_only=True)`` so that opening it never executes code::

    {"format": "spkadv-protection-model", "version": 1, "config": {...SSEDConfig...}, "eps": 0.05,
     "generator": {state dict of F_P}, "removal": {state dict of F_R, or empty}, "meta": {...},
     "fingerprint": sha256 hex over config, eps and both state dicts}

The fingerprint identifies the model: ``spkadv protect`` writes it beside each protected file and
``spkadv restore`` refuses a file protected by another model.

Chunked processing: the signal is cut into blocks of ``chunk_seconds``; each block is processed
with ``overlap`` samples of context on both sides (the receptive field rounded up to the model's
2**stages alignment) and only its centre is kept. For a local model (the default configuration)
the result equals whole-signal processing up to float rounding, with memory bounded by the block
size. Models with per-utterance statistics (``mask_norm="minmax"``, ``norm="instance"``) are not
local: chunking changes their output, so they are run on the whole signal at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spkadv import SAMPLE_RATE
from spkadv.audio import sidecar
from spkadv.base.fileio import atomic_path
from spkadv.core.models import NoiseMaskGenerator, RemovalModule, SSEDConfig, SSEDGenerator

FORMAT = "spkadv-protection-model"
VERSION = 1
DEFAULT_CHUNK_SECONDS = 5.0  # measured: 30 s blocks cost ~20x more page faults and system time (benchmarks/bench_protect.py)


class ModelFileError(ValueError):
    """A model file is missing, damaged, or not a spkadv protection model."""


@dataclasses.dataclass
class ProtectionModel:
    """A loaded protection model: F_P (``generator``), F_R (``removal``, may be None), eps."""

    generator: SSEDGenerator
    removal: RemovalModule | None
    eps: float
    fingerprint: str
    config: SSEDConfig
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    _encoder: Any = dataclasses.field(default=None, repr=False, compare=False)
    _code_encoders: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def receptive_field(self) -> int:
        return self.generator.receptive_field

    @property
    def alignment(self) -> int:
        return self.generator.alignment

    @property
    def conditioned(self) -> bool:
        """True when the modules take the white-box embedding of their input utterance."""
        return self.config.embed_dim > 0

    def encoder(self) -> torch.nn.Module:
        """The white-box encoder the model was trained against (loaded once, for conditioning)."""
        if self._encoder is None:
            from spkadv.core.train import load_encoder

            name = self.meta.get("encoder")
            if not name:
                raise ModelFileError("this model does not name its white-box encoder (meta)")
            device = next(self.generator.parameters()).device
            self._encoder = load_encoder(name, device)
        return self._encoder

    def code_encoder(self) -> torch.nn.Module:
        """What the per-utterance code is optimised against: the white-box encoder, joined by the
        surrogates listed in ``meta["code_surrogates"]`` (``[{"path", "weight"}]``, weights relative
        to the white box's 1; beyond the paper, see :mod:`spkadv.encoders.surrogate`) when there are any."""
        extra = self.meta.get("code_surrogates") or []
        if not extra:
            return self.encoder()
        key = json.dumps(extra, sort_keys=True)
        if key not in self._code_encoders:
            from spkadv.encoders.surrogate import EnsembleEncoder, load_surrogate

            device = next(self.generator.parameters()).device
            try:
                members = [load_surrogate(item["path"], device) for item in extra]
                weights = [1.0] + [float(item["weight"]) for item in extra]
            except (KeyError, TypeError) as err:
                raise ModelFileError(
                    f'meta["code_surrogates"] must be a list of {{"path": ..., "weight": ...}}, got {extra!r}'
                ) from err
            self._code_encoders[key] = EnsembleEncoder([self.encoder(), *members], weights)
        return self._code_encoders[key]

    def embedding(self, x: np.ndarray) -> torch.Tensor | None:
        """Utterance embedding that conditions the modules on ``x``, or None if unconditioned."""
        if not self.conditioned:
            return None
        from spkadv.core.conditioning import utterance_embedding

        return utterance_embedding(self.encoder(), x)

    @property
    def overlap(self) -> int:
        """Context kept on each side of a chunk: the receptive field rounded up to the alignment."""
        return math.ceil((self.receptive_field + 1) / self.alignment) * self.alignment


def _state(module: torch.nn.Module | None) -> dict[str, torch.Tensor]:
    if module is None:
        return {}
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def compute_fingerprint(config: dict[str, Any], eps: float, generator: dict, removal: dict) -> str:
    """sha256 over the configuration, eps and every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"config": config, "eps": eps}, sort_keys=True).encode())
    for part, state in (("generator", generator), ("removal", removal)):
        for key in sorted(state):
            tensor = state[key].detach().cpu().contiguous()
            digest.update(f"{part}.{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_model(
    path: str | os.PathLike,
    generator: SSEDGenerator,
    removal: RemovalModule | None,
    eps: float,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write the model file atomically and return its path."""
    config = generator.config.to_dict()
    gen_state, rem_state = _state(generator), _state(removal)
    state = {
        "format": FORMAT,
        "version": VERSION,
        "config": config,
        "eps": float(eps),
        "generator": gen_state,
        "removal": rem_state,
        "meta": dict(meta or {}),
        "fingerprint": compute_fingerprint(config, float(eps), gen_state, rem_state),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> ProtectionModel:
    """Load and verify a model file (no code execution; fingerprint re-computed and checked)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(
            f"{path}: model file not found; train one with notebook 20_joint_training"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, garbage bytes, pickled code: all refused here
        raise ModelFileError(
            f"{path}: cannot read the model file ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a spkadv protection model (no format tag {FORMAT!r})")
    if state.get("version") != VERSION:
        raise ModelFileError(
            f"{path}: model format version {state.get('version')}, this spkadv reads {VERSION}"
        )
    fingerprint = compute_fingerprint(
        state["config"], state["eps"], state["generator"], state["removal"]
    )
    if fingerprint != state["fingerprint"]:
        raise ModelFileError(f"{path}: fingerprint mismatch: the file was modified or damaged")
    config = SSEDConfig.from_dict(state["config"])
    generator = SSEDGenerator(config)
    generator.load_state_dict(state["generator"])
    removal = None
    if state["removal"]:
        removal = RemovalModule(config)
        removal.load_state_dict(state["removal"])
        removal.to(device).eval()
    generator.to(device).eval()
    return ProtectionModel(
        generator, removal, float(state["eps"]), fingerprint, config, dict(state["meta"])
    )


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

    Block starts are multiples of ``alignment`` (so strided layers see the same sample grid as in
    one pass) and ``overlap`` must be a multiple of it too.
    """
    if overlap % alignment:
        raise ValueError(f"overlap {overlap} must be a multiple of the alignment {alignment}")
    chunk = max(alignment, chunk // alignment * alignment)
    total = len(x)
    if total <= chunk + 2 * overlap:
        return fn(x, 0).astype(np.float32)
    from tqdm.auto import tqdm

    out = np.empty(total, dtype=np.float32)
    for a in tqdm(range(0, total, chunk), desc=desc, disable=not progress, unit="chunk"):
        b = min(total, a + chunk)
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
    from tqdm.auto import tqdm

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
) -> np.ndarray | None:
    """The per-utterance code of ``x`` for a ``code_film`` model (None for other models).

    ``steps`` optimisation steps (default: the model's ``meta["code_steps"]``) against the model's
    white-box encoder (with the surrogates of ``meta["code_surrogates"]``, :meth:`ProtectionModel.code_encoder`), under CPU bf16 autocast when ``meta["code_bf16"]``; see
    :func:`spkadv.core.conditioning.optimise_code`. ``x`` is a waveform or a signal read in pieces (an
    object with ``read(start, stop)`` and ``len()``, such as :class:`spkadv.audio.streaming.AudioSource`):
    the code is the same, and only the piece being optimised is in memory. ``delta_map``: see
    :func:`spkadv.core.conditioning.optimise_code` (a probe; the protected signal is then
    x + delta_map(δ)).
    """
    if not model.config.code_film:
        return None
    from spkadv.core.conditioning import optimise_code

    steps = int(model.meta.get("code_steps", 0) if steps is None else steps)
    if steps <= 0:  # the zero code (one vector serves every segment)
        return np.zeros(model.config.code_dim, dtype=np.float32)
    if isinstance(x, np.ndarray) or model.conditioned:
        x = _validate(x if isinstance(x, np.ndarray) else x.read(0, len(x)))
        signal, total = x, None
    else:
        signal, total = (lambda a, b: _validate(x.read(a, b))), len(x)
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
    )
    return code


# --- evaluation-set processing (notebooks 10 and 20) ------------------------------------------


def quantize_pcm16(x: np.ndarray) -> np.ndarray:
    """What storing ``x`` as 16-bit PCM does to it (soundfile's float -> int16 scaling)."""
    return (np.round(np.clip(x, -1.0, 1.0 - 1.0 / 32768) * 32768) / 32768).astype(np.float32)


def write_conditions(
    model: ProtectionModel,
    rows,
    folders: dict[str, os.PathLike],
    refine_iterations: int = 10,
    int16_utterances: int = 0,
    progress: bool = True,
    noise_seed: int = 0,
    workers: int = 1,
):
    """Protect (and restore) every eval utterance; write ``<folder>/<utt_id>.wav`` as float WAV.

    A model with a per-utterance code gets it optimised for each utterance (the model's
    ``meta["code_steps"]``); the code goes into the protected file's sidecar, as with the CLI.

    Args:
        rows: manifest rows (``utt_id``, ``path``).
        folders: condition -> folder, among ``adv`` (or ``adv_ssed``), ``rst``, ``rst_refined``,
            and ``gn``: Gaussian noise of the same power as this utterance's δ (same SNR as x').
        int16_utterances: for the first N utterances, also measure restoration from x' stored as
            16-bit PCM (one-shot, refined, and the quantisation floor SNR(x, x + q)).
        workers: processes sharing the utterances, one torch thread each (1: in this process;
            0: one per torch thread of this process, or 1 when the model is on a GPU). The code
            optimisation runs small convolutions that a second thread barely speeds up, so two
            one-thread processes on two cores get through the eval set faster than one process
            with two threads (1.34x on 40 default utterances, ``benchmarks/bench_workers.py``).

    Returns:
        DataFrame with one row per utterance (``rows``' order) and the SNRs (dB) of each
        condition against x.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    items = [
        (i, utt, str(path))
        for i, (utt, path) in enumerate(zip(rows["utt_id"], rows["path"], strict=True))
    ]
    options = {
        "folders": {k: str(v) for k, v in folders.items()},
        "refine_iterations": refine_iterations,
        "int16_utterances": int16_utterances,
        "noise_seed": noise_seed,
    }
    workers = resolve_workers(model, workers, len(items))
    bar = tqdm(total=len(items), desc="eval set", disable=not progress)
    records: list[dict[str, Any]] = []
    if workers == 1:
        for item in items:
            records.append(_condition_record(model, *item, **options))
            bar.update()
    else:
        from spkadv.base.threads import process_map

        portable = portable_copy(model)
        calls = [(item, options) for item in items]
        for _, record in process_map(_worker_record, calls, workers, _worker_start, (portable,)):
            records.append(record)
            bar.update()
    bar.close()
    records.sort(key=lambda r: r.pop("_index"))
    return pd.DataFrame(records)


def portable_copy(model: ProtectionModel) -> ProtectionModel:
    """What worker processes get: CPU copies of the modules, no loaded encoder."""
    import copy

    return dataclasses.replace(
        model,
        generator=copy.deepcopy(model.generator).cpu(),
        removal=None if model.removal is None else copy.deepcopy(model.removal).cpu(),
        _encoder=None,
        _code_encoders={},
    )


def resolve_workers(model: ProtectionModel, workers: int, items: int) -> int:
    """The process count :func:`write_conditions` uses for ``workers`` (see there)."""
    from spkadv.base.threads import worker_count

    on_cpu = next(model.generator.parameters()).device.type == "cpu"
    return worker_count(workers, items, parallel=on_cpu)


_WORKER_MODEL: ProtectionModel | None = None


def _worker_start(model: ProtectionModel) -> None:
    """Worker initialiser of :func:`write_conditions`: the model kept for the tasks."""
    global _WORKER_MODEL
    _WORKER_MODEL = model


def _worker_record(*args, **kwargs) -> dict[str, Any]:
    assert _WORKER_MODEL is not None, "worker started without a model"
    return _condition_record(_WORKER_MODEL, *args, **kwargs)


def _condition_record(
    model: ProtectionModel,
    index: int,
    utt: str,
    path: str,
    folders: dict[str, str],
    refine_iterations: int,
    int16_utterances: int,
    noise_seed: int,
) -> dict[str, Any]:
    """One utterance of :func:`write_conditions`: its files written, its SNRs returned."""
    from spkadv.audio.io import load_audio, save_audio
    from spkadv.evaluation.metrics import snr_db

    adv_key = next(k for k in folders if k.startswith("adv"))
    x = load_audio(path)
    out: dict[str, Any] = {"_index": index, "utt_id": utt}
    code = protection_code(model, x)
    adv = protect(model, x, code=code)
    adv_path = Path(folders[adv_key]) / f"{utt}.wav"
    save_audio(adv_path, adv)
    if code is not None:
        sidecar.write_tag(adv_path, model.fingerprint, code)
    out["snr_adv_db"] = snr_db(x, adv)
    if "gn" in folders:
        gn = matched_noise(x, adv - x, noise_seed, utt)
        save_audio(Path(folders["gn"]) / f"{utt}.wav", gn)
        out["snr_gn_db"] = snr_db(x, gn)
    if "rst" in folders:
        rst = restore(model, adv, code=code)
        save_audio(Path(folders["rst"]) / f"{utt}.wav", rst)
        out["snr_rst_db"] = snr_db(x, rst)
    if "rst_refined" in folders:
        ref = restore_refined(model, adv, refine_iterations, code=code)
        save_audio(Path(folders["rst_refined"]) / f"{utt}.wav", ref)
        out["snr_rst_refined_db"] = snr_db(x, ref)
    if index < int16_utterances and model.removal is not None:
        adv16 = quantize_pcm16(adv)
        out["snr_int16_floor_db"] = snr_db(x, x + (adv16 - adv))
        out["snr_rst_int16_db"] = snr_db(x, restore(model, adv16, code=code))
        out["snr_rst_refined_int16_db"] = snr_db(
            x, restore_refined(model, adv16, refine_iterations, code=code)
        )
    return out


def matched_noise(x: np.ndarray, delta: np.ndarray, seed: int, utt_id: str) -> np.ndarray:
    """Condition ``gn``: x plus white Gaussian noise of δ's power, seeded by (seed, utt_id).

    Same SNR against x as the protected x' = x + δ; what the perturbation does beyond that is its
    adversarial part.
    """
    import zlib

    rng = np.random.default_rng([seed, zlib.crc32(utt_id.encode())])
    power = float(np.mean(np.asarray(delta, dtype=np.float64) ** 2))
    noise = rng.standard_normal(len(x)) * np.sqrt(power)
    return (x + noise).astype(np.float32)


def mean_db(values) -> float:
    """Mean of per-utterance dB values, with inf (exact restoration) capped at 200 dB."""
    arr = np.asarray(values, dtype=np.float64)
    return float(np.mean(np.minimum(arr, 200.0)))


def condition_eers(
    trials, embeddings: dict[str, dict[str, np.ndarray]], pairs: list[str]
) -> dict[str, float]:
    """Pooled EER (percent, ROC-interpolated) of trial conditions ``"enrol-test"`` like ``rec-adv``.

    Args:
        embeddings: audio condition -> {utt_id: embedding}.
    """
    from spkadv.evaluation import metrics

    out = {}
    for pair in pairs:
        enrol, test = pair.split("-")
        scores = metrics.score_trials(trials, embeddings[test], embeddings[enrol])
        target = trials["target"].to_numpy().astype(bool)
        out[pair] = metrics.eer(scores[target], scores[~target])
    return out
