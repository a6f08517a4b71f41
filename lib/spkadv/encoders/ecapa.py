"""speechbrain's ECAPA-TDNN trained on VoxCeleb 1+2 (192-dim), the paper's white box; weights from
the Hugging Face hub (``speechbrain/spkrec-ecapa-voxceleb``) or a local folder (``ecapa:<dir>`` or
``$SPKADV_ECAPA_DIR``) holding ``embedding_model.ckpt``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from spkadv.encoders.frozen import EncoderError, SpeakerEncoder, load_strict

ECAPA_HUB_REPO = "speechbrain/spkrec-ecapa-voxceleb"
ECAPA_FILES = ("hyperparams.yaml", "embedding_model.ckpt")


# spkrec-ecapa-voxceleb's hyper-parameters (its hyperparams.yaml)
ECAPA_SIZES = {
    "input_size": 80,
    "channels": [1024, 1024, 1024, 1024, 3072],
    "kernel_sizes": [5, 3, 3, 3, 1],
    "dilations": [1, 2, 3, 4, 1],
    "attention_channels": 128,
    "lin_neurons": 192,
}


class ECAPAEncoder(SpeakerEncoder):
    """speechbrain's ECAPA-TDNN (spkrec-ecapa-voxceleb): 80-dim fbank, sentence mean normalisation,
    192-dim embedding. Built from speechbrain's classes with that recipe's hyper-parameters; only
    ``embedding_model.ckpt`` is read (weights only), hyperparams.yaml is not executed."""

    parallel = False  # not checked in worker processes (it is not offline here)

    def __init__(self, state_dict: dict[str, torch.Tensor], fingerprint: str, name: str = "ecapa"):
        super().__init__()
        # speechbrain is imported only when an ECAPA encoder is built: it takes about a second
        from speechbrain.lobes.features import Fbank
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

        self.features = Fbank(n_mels=80)
        self.model = ECAPA_TDNN(**ECAPA_SIZES)
        load_strict(self.model, state_dict, name)
        self.name, self.dim, self.fingerprint = name, 192, fingerprint
        self._freeze()

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        feats = self.features(waves)
        feats = feats - feats.mean(dim=1, keepdim=True)
        return self.model(feats).squeeze(1)


def random_ecapa(seed: int = 0) -> ECAPAEncoder:
    """spkrec-ecapa-voxceleb's architecture with seeded random weights: the paper profile's white
    box where its weights are not at hand (FLOP counts and step times do not depend on them; the
    paper smoke test)."""
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN  # see ECAPAEncoder.__init__

    torch.manual_seed(seed)
    weights = ECAPA_TDNN(**ECAPA_SIZES).state_dict()
    return ECAPAEncoder(weights, "random weights", name="ecapa-random")


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
        # imported here: huggingface_hub reads HF_HUB_OFFLINE and HF_HOME when it is first imported
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
