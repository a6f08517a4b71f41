"""The black-box study's helpers: per-band SNR, feature changes, cached protected sets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from spkadv.audio.io import save_audio
from spkadv.core import modelfile
from spkadv.core.models import RemovalModule, SSEDConfig, SSEDGenerator
from spkadv.encoders.random_conv import RandomConvEncoder
from spkadv.studies import blackbox


def _speech(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    tone = 0.2 * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) * np.sin(2 * np.pi * 180 * t)
    return (tone + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def test_band_snr_of_a_scaled_copy_is_the_same_in_every_band() -> None:
    x = _speech(1.0)
    snr = blackbox.band_snr(x, x * 1.1)  # δ = 0.1 x: 20 dB wherever x has power
    assert snr.shape == (blackbox.MEL_BANDS,)
    np.testing.assert_allclose(snr, 20.0, atol=0.01)


def test_feature_change_is_zero_for_the_same_signal_and_grows_with_noise() -> None:
    x = _speech(1.0)
    assert blackbox.feature_change(x, x) == {"logmel": 0.0, "linmel": 0.0}
    rng = np.random.default_rng(1)
    small = blackbox.feature_change(x, x + 0.001 * rng.standard_normal(len(x)).astype(np.float32))
    large = blackbox.feature_change(x, x + 0.01 * rng.standard_normal(len(x)).astype(np.float32))
    assert 0 < small["logmel"] < large["logmel"] and 0 < small["linmel"] < large["linmel"]


def _model() -> modelfile.ProtectionModel:
    cfg = SSEDConfig(width=4, stages=2, res_blocks=1, code_film=True)
    torch.manual_seed(0)
    gen, rem = SSEDGenerator(cfg).eval(), RemovalModule(cfg).eval()
    model = modelfile.ProtectionModel(gen, rem, 0.1, "test", cfg, {}, RandomConvEncoder())
    model.meta.update(code_steps=2, code_radius=1.0)
    return model


def test_protect_set_writes_adv_and_gn_keeps_the_models_settings_and_continues(
    tmp_path: Path,
) -> None:
    model = _model()
    rows = []
    for i in range(2):
        path = tmp_path / f"u{i}.wav"
        save_audio(path, _speech(0.8, seed=i))
        rows.append({"utt_id": f"u{i}", "path": str(path)})
    rows = pd.DataFrame(rows)
    folder = tmp_path / "set"
    paths = blackbox.protect_set(model, rows, folder, {"code_steps": 0}, workers=1, progress=False)
    assert [p.name for p in paths] == ["u0.wav", "u1.wav"]
    assert all((folder / "gn" / p.name).exists() for p in paths)
    assert model.meta["code_steps"] == 2  # the model's own settings come back
    first = paths[0].stat().st_mtime_ns
    paths[1].unlink()
    blackbox.protect_set(model, rows, folder, {"code_steps": 0}, workers=1, progress=False)
    assert paths[0].stat().st_mtime_ns == first and paths[1].exists()  # only the missing one redone
    (folder / "gn" / "u0.wav").unlink()  # interrupted between its two files: redone
    blackbox.protect_set(model, rows, folder, {"code_steps": 0}, workers=1, progress=False)
    assert (folder / "gn" / "u0.wav").exists()
    with pytest.raises(ValueError, match="unknown protect-time settings"):
        blackbox.protect_set(model, rows, folder, {"steps": 3}, workers=1, progress=False)


def test_variant_key_follows_model_subset_and_setting() -> None:
    model = _model()
    key = blackbox.variant_key(model, ["a", "b"], {"code_steps": 5})
    assert key == blackbox.variant_key(model, ["a", "b"], {"code_steps": 5})
    assert key != blackbox.variant_key(model, ["a", "b"], {"code_steps": 10})
    assert key != blackbox.variant_key(model, ["a"], {"code_steps": 5})
    other = dataclasses.replace(model, fingerprint="other")
    assert key != blackbox.variant_key(other, ["a", "b"], {"code_steps": 5})


def test_lowpass_map_keeps_the_power_and_removes_what_is_above_the_cutoff() -> None:
    rng = np.random.default_rng(2)
    delta = torch.from_numpy(rng.standard_normal((2, 8000)).astype(np.float32)) * 0.01
    low = blackbox.lowpass_map(1000.0)(delta)
    np.testing.assert_allclose(low.pow(2).sum(-1), delta.pow(2).sum(-1), rtol=1e-4)
    spectrum = torch.fft.rfft(low[0]).abs().pow(2)
    cut = int(2000 / 8000 * len(spectrum))  # bins above 2 kHz
    assert float(spectrum[cut:].sum() / spectrum.sum()) < 1e-3
    with pytest.raises(ValueError, match="lowpass_hz"):
        blackbox.lowpass_map(9000.0)


def test_lowpass_probe_writes_a_protected_set_at_the_perturbations_power(tmp_path: Path) -> None:
    from spkadv.audio.io import load_audio
    from spkadv.evaluation.metrics import snr_db

    model = _model()
    path = tmp_path / "u0.wav"
    x = _speech(0.8)
    save_audio(path, x)
    rows = pd.DataFrame([{"utt_id": "u0", "path": str(path)}])
    plain = blackbox.protect_set(model, rows, tmp_path / "a", {"code_steps": 0}, 1, False)
    probe = blackbox.protect_set(
        model, rows, tmp_path / "b", {"code_steps": 0, "lowpass_hz": 1000}, 1, False
    )
    a, b = load_audio(plain[0]), load_audio(probe[0])
    assert snr_db(x, b) == pytest.approx(snr_db(x, a), abs=0.05) and not np.allclose(a, b)


def test_shaped_noise_is_at_the_snr_in_its_band_and_follows_the_level_when_asked() -> None:
    from spkadv.evaluation.metrics import snr_db

    x = _speech(2.0)
    x[16000:] *= 0.01  # a quiet second half: level-shaped noise must be quieter there
    for shape in blackbox.NOISE_SHAPES:
        y = blackbox.shaped_noise(x, shape, 25.0, seed=3)
        assert y.shape == x.shape and y.dtype == np.float32
        assert abs(snr_db(x, y) - 25.0) < 0.01, shape
    spectrum = lambda d: torch.fft.rfft(torch.from_numpy(d.astype(np.float32))).abs().pow(2)  # noqa: E731
    cut = int(2000 / 8000 * (len(x) // 2 + 1))  # the bin at 2 kHz
    high = spectrum(blackbox.shaped_noise(x, "high", 25.0) - x)
    low = spectrum(blackbox.shaped_noise(x, "low", 25.0) - x)
    assert float(high[: cut // 2].sum() / high.sum()) < 0.01  # little below 1 kHz
    assert float(low[2 * cut :].sum() / low.sum()) < 0.01  # little above 4 kHz
    flat, level = (blackbox.shaped_noise(x, s, 25.0) - x for s in ("flat", "level"))
    ratio = lambda d: np.mean(d[:16000] ** 2) / np.mean(d[16000:] ** 2)  # noqa: E731
    assert 0.8 < ratio(flat) < 1.25 and ratio(level) > 100
    np.testing.assert_array_equal(
        blackbox.shaped_noise(x, "flat", 25.0, seed=3),
        blackbox.shaped_noise(x, "flat", 25.0, seed=3),
    )
    with pytest.raises(ValueError, match="unknown noise shape"):
        blackbox.shaped_noise(x, "pink", 25.0)
    with pytest.raises(ValueError, match="non-silent"):
        blackbox.shaped_noise(np.zeros(16000, np.float32), "flat", 25.0)
    with pytest.raises(ValueError, match="finite"):
        blackbox.shaped_noise(np.full(16000, np.nan, np.float32), "flat", 25.0)
    with pytest.raises(ValueError, match="1-D"):
        blackbox.shaped_noise(np.stack([x, x]), "flat", 25.0)


def test_pgd_set_stays_in_the_snr_ball_moves_the_embedding_and_continues(tmp_path: Path) -> None:
    from spkadv.audio.io import load_audio
    from spkadv.evaluation import metrics

    torch.manual_seed(0)
    encoder = RandomConvEncoder()
    clean = [_speech(0.8, seed=i) for i in range(2)]
    ids = ["u0", "u1"]
    paths = blackbox.pgd_set(encoder, clean, ids, tmp_path / "pgd", 20.0, steps=3, progress=False)
    assert [p.name for p in paths] == ["u0.wav", "u1.wav"]
    for x, path in zip(clean, paths, strict=True):
        adv, gn = load_audio(path), load_audio(tmp_path / "pgd" / "gn" / path.name)
        assert metrics.snr_db(x, adv) >= 20.0 - 0.01  # inside the L2 ball
        assert abs(metrics.snr_db(x, gn) - metrics.snr_db(x, adv)) < 0.5  # noise of δ's power
        with torch.no_grad():
            z, z_adv, z_gn = (encoder.embed(torch.from_numpy(w)[None]) for w in (x, adv, gn))
        cos_adv = float(torch.nn.functional.cosine_similarity(z, z_adv).squeeze())
        cos_gn = float(torch.nn.functional.cosine_similarity(z, z_gn).squeeze())
        assert cos_adv < cos_gn  # the attack does more than noise of its power
    first = paths[0].stat().st_mtime_ns
    paths[1].unlink()
    blackbox.pgd_set(encoder, clean, ids, tmp_path / "pgd", 20.0, steps=3, progress=False)
    assert paths[0].stat().st_mtime_ns == first and paths[1].exists()  # only the missing one redone
    with pytest.raises(ValueError, match="2 waveforms but 1"):
        blackbox.pgd_set(encoder, clean, ids[:1], tmp_path / "x", 20.0, steps=1, progress=False)


def test_pgd_key_follows_the_attacked_encoders_subset_and_settings() -> None:
    from spkadv.encoders.surrogate import EnsembleEncoder

    torch.manual_seed(0)
    a, b = RandomConvEncoder(seed=0), RandomConvEncoder(seed=1)
    a.fingerprint, b.fingerprint = "a", "b"
    key = blackbox.pgd_key(a, ["u0"], {"steps": 3})
    assert key == blackbox.pgd_key(a, ["u0"], {"steps": 3})
    assert key != blackbox.pgd_key(b, ["u0"], {"steps": 3})
    assert key != blackbox.pgd_key(a, ["u1"], {"steps": 3})
    assert key != blackbox.pgd_key(a, ["u0"], {"steps": 4})
    both = EnsembleEncoder([a, b], [1.0, 1.0])
    other = blackbox.pgd_key(b, ["u0"], {"steps": 3})
    assert blackbox.pgd_key(both, ["u0"], {"steps": 3}) not in (key, other)


def test_surrogate_is_trained_once_and_turns_its_weight_into_protect_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spkadv.encoders import surrogate

    rows = pd.DataFrame(
        {
            "utt_id": [f"{s}{i}" for s in "ab" for i in range(2)],
            "speaker": [s for s in "ab" for _ in range(2)],
            "path": [str(save_audio(tmp_path / f"{s}{i}.wav", _speech(2.0, seed=3 * i + (s == "b"))))
                     for s in "ab" for i in range(2)],
        }
    )  # fmt: skip
    cfg = surrogate.SurrogateConfig(hidden=8, layers=1, dim=8, steps=2, batch=4)
    sur = blackbox.train_surrogate(rows, cfg, tmp_path / "cache", progress=False)
    assert sur.path.exists() and sur.path.with_suffix(".json").exists()
    assert sur.minutes > 0 and len(sur.history) >= 1 and "accuracy" in sur.history[-1]
    assert sur.path.name == f"surrogate-{surrogate.surrogate_key(cfg, list(rows['utt_id']))}.pt"

    def no_training(*args, **kwargs):
        raise AssertionError("the cached surrogate was trained again")

    monkeypatch.setattr(surrogate, "train_surrogate", no_training)
    again = blackbox.train_surrogate(rows, cfg, tmp_path / "cache", progress=False)
    assert again.encoder.fingerprint == sur.encoder.fingerprint and again.history == sur.history

    plain = {"code_steps": 2}
    assert blackbox.protect_settings(plain) == (plain, plain)
    run, key = blackbox.protect_settings({"code_steps": 2, "surrogate_weight": 1}, sur)
    assert run == {"code_steps": 2, "code_surrogates": [{"path": str(sur.path), "weight": 1.0}]}
    assert key == {
        "code_steps": 2,
        "surrogate_weight": 1.0,
        "surrogate_sha256": sur.encoder.fingerprint,
    }
    with pytest.raises(ValueError, match="needs a surrogate"):
        blackbox.protect_settings({"surrogate_weight": 1.0})


def test_the_lines_name_every_further_scoring_encoder():
    from spkadv.studies import blackbox_scoring

    row = {"variant": "10 steps", "attack": "PGD vfl", "attacked": "vfl", "steps": 10, "oracle": False,
           "snr_adv_db": 31.5}  # fmt: skip
    for side, base in (("white", 1.0), ("black", 2.0), ("vfl", 3.0)):
        row |= {f"{side}_recrec": base, f"{side}_recadv": base + 1, f"{side}_recgn": base + 0.5,
                f"{side}_cos_adv": 0.5, f"{side}_cos_gn": 0.9}  # fmt: skip
    for line in (blackbox_scoring.setting_line(row), blackbox_scoring.pgd_line(row, 1.0)):
        assert "vfl rec-adv 4.00 % (gn 3.50, rec 3.00)" in line
        assert line.count("rec-adv") == 3
