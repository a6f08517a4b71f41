"""Purifiers against hand-computed results on short arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
from spkadv.audio import purify
from spkadv.audio.io import load_audio, save_audio
from spkadv.evaluation import metrics

SR = 16_000


def tone(seconds: float = 1.0, freq: float = 440.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# --- median smoothing -----------------------------------------------------------------------


def test_median_smooth_zero_pads_the_edges():
    x = np.array([0.5, 0.4, 0.3, 0.9, -0.2], dtype=np.float32)
    # windows: [0, .5, .4] [.5, .4, .3] [.4, .3, .9] [.3, .9, -.2] [.9, -.2, 0]
    expected = np.array([0.4, 0.4, 0.4, 0.3, 0.0], dtype=np.float32)
    np.testing.assert_array_equal(purify.median_smooth(x, 3), expected)


def test_median_smooth_kernel_5_and_identity_kernel_1():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    # windows: [0 0 1 2 3] [0 1 2 3 4] [1..5] [2..6] [3 4 5 6 0] [4 5 6 0 0]
    np.testing.assert_array_equal(purify.median_smooth(x, 5), [1.0, 2.0, 3.0, 4.0, 4.0, 4.0])
    np.testing.assert_array_equal(purify.median_smooth(x, 1), x)


@pytest.mark.parametrize("kernel", [0, 2, -3])
def test_median_smooth_rejects_even_or_non_positive_kernels(kernel):
    with pytest.raises(ValueError, match="odd"):
        purify.median_smooth(np.zeros(4, np.float32), kernel)


# --- quantization ---------------------------------------------------------------------------


def test_quantize_exact_grid():
    step = 256 / 32768  # 2^-7
    x = np.array([0.0, 0.4 * step, 0.6 * step, -1.4 * step, 3 * step, 0.999], dtype=np.float64)
    expected = np.array([0.0, 0.0, step, -step, 3 * step, round(0.999 / step) * step])
    np.testing.assert_allclose(purify.quantize(x, 256), expected, rtol=0, atol=1e-15)
    y = purify.quantize(tone(), 256)
    grid = y.astype(np.float64) * 32768 / 256
    np.testing.assert_allclose(grid, np.round(grid), atol=1e-4)  # every sample on the grid
    assert purify.quantize(y, 256) == pytest.approx(y)  # idempotent


def test_quantize_factor_1_is_the_int16_grid_and_bad_factor_fails():
    x = np.array([1.2 / 32768, -2.7 / 32768])
    np.testing.assert_allclose(purify.quantize(x, 1), np.array([1.0, -3.0]) / 32768)
    with pytest.raises(ValueError, match="factor"):
        purify.quantize(x, 0)


# --- additive noise -------------------------------------------------------------------------


@pytest.mark.parametrize("snr", [10.0, 25.0, 40.0])
def test_add_noise_reaches_the_requested_snr(snr):
    x = tone(2.0)
    x[: SR // 2] = 0.0  # silence counts in the utterance power
    y = purify.add_noise(x, snr, seed=7)
    assert metrics.snr_db(x, y) == pytest.approx(snr, abs=0.1)
    assert y.dtype == x.dtype and y.shape == x.shape


def test_add_noise_is_deterministic_with_a_seed():
    x = tone(0.2)
    np.testing.assert_array_equal(purify.add_noise(x, 25, seed=3), purify.add_noise(x, 25, seed=3))
    assert not np.array_equal(purify.add_noise(x, 25, seed=3), purify.add_noise(x, 25, seed=4))
    with pytest.raises(ValueError, match="finite"):
        purify.add_noise(x, math.inf)


# --- extras ---------------------------------------------------------------------------------


def test_low_pass_and_down_up_sample_remove_high_frequencies_only():
    low, high = tone(1.0, 300.0), tone(1.0, 6000.0)
    for fn in (lambda s: purify.low_pass(s, 4000.0), lambda s: purify.down_up_sample(s, 8000)):
        assert metrics.snr_db(low[800:-800], fn(low)[800:-800]) > 30  # pass band kept
        assert np.sqrt(np.mean(fn(high)[800:-800] ** 2)) < 0.01 * 0.3  # stop band gone
        assert fn(low).shape == low.shape


def test_int16_storage_lands_on_the_int16_grid():
    y = purify.to_int16(tone(0.1))
    np.testing.assert_allclose(y * 32768, np.round(y * 32768), atol=1e-3)
    assert metrics.snr_db(tone(0.1), y) > 80


@pytest.mark.parametrize("codec", ["mp3", "opus"])
def test_codec_round_trip_keeps_length_and_alignment(codec):
    ok, why = purify.codec_available(codec)
    if not ok:
        pytest.skip(why)
    x = tone(1.0, 300.0)
    y = purify.codec_round_trip(x, codec, 64)
    assert y.shape == x.shape
    assert metrics.snr_db(x[1600:-1600], y[1600:-1600]) > 10  # no delay left over


def test_codec_unavailable_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(purify.shutil, "which", lambda name: None)
    ok, why = purify.codec_available("mp3")
    assert not ok and "ffmpeg" in why
    with pytest.raises(purify.CodecUnavailable, match="ffmpeg is not installed"):
        purify.codec_round_trip(tone(0.1), "mp3")


def test_specs():
    assert purify.parse_spec("mp3_128") == ("mp3", 128.0)
    assert purify.parse_spec("median") == ("median", 3)
    x = tone(0.1)
    np.testing.assert_array_equal(purify.apply("quantize_256", x), purify.quantize(x, 256))
    np.testing.assert_array_equal(purify.apply("noise_25", x, seed=1), purify.add_noise(x, 25, 1))
    np.testing.assert_array_equal(purify.apply("none", x), x)
    for bad, msg in (
        ("chorus_3", "unknown"),
        ("int16_3", "no parameter"),
        ("mp3_fast", "not a number"),
    ):
        with pytest.raises(ValueError, match=msg):
            purify.parse_spec(bad)


def test_bad_waveforms_are_rejected():
    with pytest.raises(ValueError, match="1-D"):
        purify.quantize(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="float"):
        purify.median_smooth(np.zeros(4, dtype=np.int16))


def test_process_files_resumes_and_redoes_changed_inputs(tmp_path):
    src = {
        u: save_audio(tmp_path / "in" / f"{u}.wav", tone(0.1, f))
        for u, f in (("u1", 300.0), ("u2", 500.0))
    }
    calls = []

    def transform(x, seed):
        calls.append(seed)
        return purify.quantize(x, 256)

    out = purify.process_files(transform, src, tmp_path / "out", key="quantize_256", progress=False)
    assert len(calls) == 2 and set(out) == {"u1", "u2"}
    np.testing.assert_array_equal(
        load_audio(out["u1"]), purify.quantize(load_audio(src["u1"]), 256)
    )
    purify.process_files(transform, src, tmp_path / "out", key="quantize_256", progress=False)
    assert len(calls) == 2  # nothing changed: nothing redone
    save_audio(src["u2"], tone(0.1, 700.0))
    purify.process_files(transform, src, tmp_path / "out", key="quantize_256", progress=False)
    assert len(calls) == 3  # only the changed source
    purify.process_files(transform, src, tmp_path / "out", key="quantize_128", progress=False)
    assert len(calls) == 5  # new parameters: everything
    assert calls[0] == purify.utterance_seed(0, "u1") != purify.utterance_seed(0, "u2")
