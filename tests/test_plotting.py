"""Figures build from small inputs and land in figures/<profile>/."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from spkadv.evaluation import plotting


@pytest.fixture
def figure_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SPKADV_ROOT", str(tmp_path))
    return tmp_path


def test_figures_are_built_and_saved(figure_root):
    import matplotlib

    plotting.setup()
    assert matplotlib.get_backend().lower() == "agg"
    rng = np.random.default_rng(0)
    x = rng.normal(size=8000) * 0.1
    figs = {
        "det": plotting.det_curves({"rec-rec": (rng.normal(2, 1, 200), rng.normal(0, 1, 2000))}),
        "wave": plotting.waveforms_and_spectrograms({"x": x, "delta": 0.01 * x}),
        "spec": plotting.delta_spectrum({"x": x}),
        "pq": plotting.privacy_quality(
            pd.DataFrame(
                {"condition": ["rec", "adv"], "snr_db": [np.inf, 30.0], "eer": [1.0, 20.0]}
            )
        ),
        "robust": plotting.robustness_bars(
            pd.DataFrame(
                {
                    "distortion": ["none", "mp3_64"],
                    "snr_rst_db": [40.0, 20.0],
                    "eer_recrst": [1.0, 3.0],
                }
            )
        ),
    }
    for name, fig in figs.items():
        (path,) = plotting.save_figure(fig, name, "smoke")
        assert (
            path == figure_root / "figures" / "smoke" / f"{name}.png" and path.stat().st_size > 1000
        )
    with pytest.raises(ValueError, match="plain file stem"):
        plotting.save_figure(figs["det"], "../escape", "smoke")


def test_band_energy_fractions_of_a_tone():
    t = np.arange(16000) / 16000
    bands = plotting.band_energy_fractions(np.sin(2 * np.pi * 2000 * t))
    assert bands["1-4 kHz"] > 0.99 and sum(bands.values()) == pytest.approx(1.0, abs=1e-6)
