"""Transfer: the figures of merit, the in-domain reference and the conclusion."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from spkadv.studies import transfer

SCORES = {
    "eer_recrec": 0.0, "eer_recadv": 1.25, "eer_recgn": 0.21, "eer_recrst": 0.0, "cos_x_adv": 0.84,
    "cos_x_gn": 0.937, "snr_adv_db": 31.7, "snr_rst_db": 57.1, "pesq_adv_nb_raw": 4.19, "adversarial_gain": 5.9,
}  # fmt: skip


def test_metrics_keep_the_scores_and_add_the_ratio_and_the_reference() -> None:
    m = transfer.transfer_metrics(SCORES, "default", "dev", None)
    assert (
        math.isnan(m["recadv_over_recrec"])
        and m["model_profile"] == "default"
        and m["subset"] == "dev"
    )
    assert not any(k.startswith("own_model.") for k in m)
    m = transfer.transfer_metrics(
        {**SCORES, "eer_recrec": 0.5}, "default", "dev", {"cos_x_adv": 0.7}
    )
    assert m["recadv_over_recrec"] == pytest.approx(2.5) and m["own_model.cos_x_adv"] == 0.7
    assert "own_model" not in SCORES  # the scores themselves are not changed


def test_conclusion_reads_a_perfectly_separated_subset_by_the_similarity_drop() -> None:
    text = transfer.conclusion(SCORES, "default", "speechocean762")
    assert "cos(x, x′) 0.840 where noise of the same power leaves 0.937" in text
    assert "2.54× as far as noise" in text  # (1 - 0.84) / (1 - 0.937)
    assert "unbounded" in text and "the honest measure" in text
    zero = transfer.conclusion({**SCORES, "eer_recadv": 0.0}, "default", "speechocean762")
    assert "rec-adv is 0 % as well" in zero and "unbounded" not in zero
    assert (
        "at or above notebook 20's 45 dB target" in text and "carries over to this speech" in text
    )


def test_conclusion_compares_with_the_in_domain_model() -> None:
    own = {**SCORES, "cos_x_adv": 0.76, "eer_recadv": 2.5}
    text = transfer.conclusion(
        {**SCORES, "eer_recrec": 0.5, "snr_rst_db": 40.0}, "default", "so", own
    )
    assert "2.50× rec-rec" in text and "below notebook 20's 45 dB target" in text
    assert "the transferred model hides these speakers less than the in-domain one" in text
    assert "no transfer here" in transfer.conclusion(SCORES, "smoke", "smoke")


def test_own_model_scores_only_for_another_profiles_model(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SPKADV_RUNS", str(tmp_path))
    args = (None, None, np.zeros((2, 4)))
    assert transfer.own_model_scores("smoke", "smoke", *args) is None  # the same model
    assert (
        transfer.own_model_scores("speechocean762", "default", *args) is None
    )  # no notebook 20 run
    assert not (tmp_path / "speechocean762").exists()  # asking created no folder


def test_figure_has_the_cosines_and_the_eers() -> None:
    fig = transfer.transfer_figure(
        SCORES, "default", "speechocean762", {**SCORES, "cos_x_adv": 0.76}
    )
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "EER (%)"
