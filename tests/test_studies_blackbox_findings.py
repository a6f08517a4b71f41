"""The black-box study's conclusion, written from its tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
from spkadv.studies import blackbox_findings as findings

SETTINGS = {
    "zero code": {"code_steps": 0},
    "10 steps": {"code_steps": 10},
    "10 steps, offsets": {"code_steps": 10, "code_shift": 160},
    "10 steps, low-pass 2 kHz": {"code_steps": 10, "lowpass_hz": 2000.0},
    "10 steps + surrogate": {"code_steps": 10, "surrogate_weight": 1.0},
}


def _table() -> pd.DataFrame:
    rows = {
        # name: white cos, black cos, black rec-adv, surrogate cos, linmel
        "zero code": (0.90, 0.9910, 2.92, 0.889, 0.002),
        "10 steps": (0.79, 0.9912, 2.92, 0.870, 0.002),
        "10 steps, offsets": (0.80, 0.9911, 2.92, 0.871, 0.002),
        "10 steps, low-pass 2 kHz": (0.96, 0.9990, 2.92, 0.95, 0.009),
        "10 steps + surrogate": (0.82, 0.9929, 2.92, 0.823, 0.002),
    }
    return pd.DataFrame([
        {"variant": n, "snr_adv_db": 31.5, "white_recrec": 0.0, "white_recadv": 1.5, "white_recgn": 0.2,
         "white_cos_adv": w, "white_cos_gn": 0.936, "black_recrec": 3.15, "black_recadv": b_eer, "black_recgn": 3.2,
         "black_cos_adv": b, "black_cos_gn": 0.988, "surrogate_recrec": 10.0, "surrogate_recadv": 15.0,
         "surrogate_recgn": 11.0, "surrogate_cos_adv": s, "surrogate_cos_gn": 0.97, "linmel_adv": lin, "linmel_gn": 0.003}
        for n, (w, b, b_eer, s, lin) in rows.items()
    ])  # fmt: skip


def _noise() -> pd.DataFrame:
    rows = []
    for snr, flat, level in (
        (31.5, (2.92, 0.989), (2.92, 0.9965)),
        (20.0, (5.95, 0.878), (5.76, 0.934)),
    ):
        rows += [{"snr_db": snr, "shape": "flat", "side": "black", "eer_rec": flat[0], "eer_recrec": 3.15, "cos": flat[1]},
                 {"snr_db": snr, "shape": "level", "side": "black", "eer_rec": level[0], "eer_recrec": 3.15, "cos": level[1]}]  # fmt: skip
    rows += [
        {
            "snr_db": 31.5,
            "shape": "flat",
            "side": "white",
            "eer_rec": 0.2,
            "eer_recrec": 0.0,
            "cos": 0.935,
        }
    ]
    return pd.DataFrame(rows)


def _pgd() -> pd.DataFrame:
    return pd.DataFrame([
        {"attack": "PGD CAM++", "attacked": "white", "steps": 10, "oracle": False, "snr_adv_db": 32.9,
         "white_recrec": 4.5, "white_recadv": 62.9, "white_cos_adv": -0.165, "white_cos_gn": 0.93, "black_recrec": 3.15,
         "black_recadv": 3.27, "black_cos_adv": 0.988, "black_cos_gn": 0.994},
        {"attack": "PGD GE2E (oracle)", "attacked": "black", "steps": 10, "oracle": True, "snr_adv_db": 31.5,
         "white_recrec": 4.5, "white_recadv": 0.63, "white_cos_adv": 0.883, "white_cos_gn": 0.94, "black_recrec": 3.15,
         "black_recadv": 20.83, "black_cos_adv": 0.714, "black_cos_gn": 0.989},
    ])  # fmt: skip


def _bands(share: np.ndarray) -> dict:
    low = findings.band_centres_hz(len(share)) < 2000
    delta = np.where(low, 50.0, 15.0)
    noise = np.where(low, 35.0, 17.0)
    return {(n, c): (delta if c == "adv" else noise) for n in SETTINGS for c in ("adv", "gn")}


def test_noticed_needs_the_ratio_and_more_than_rec_rec() -> None:
    assert findings.noticed(4.8, 3.15) and not findings.noticed(4.0, 3.15)
    assert not findings.noticed(0.0, 0.0) and findings.noticed(0.1, 0.0)


def test_band_centres_rise_to_the_top_and_split_at_two_kilohertz_near_band_21() -> None:
    centres = findings.band_centres_hz(40)
    assert np.all(np.diff(centres) > 0) and 0 < centres[0] < 100 and 7000 < centres[-1] < 8000
    assert int((centres < 2000).sum()) in (21, 22)


def test_conclusion_reads_every_hypothesis_as_lost_and_the_limit_as_transfer() -> None:
    share = np.linspace(1.0, 0.0, 40) ** 4
    share /= share.sum()
    text = findings.conclusion(
        _table(), SETTINGS, _noise(), _pgd(), _bands(share), share, "CAM++", "GE2E"
    )
    assert "the protection moves the black box no more than noise of the same power does" in text
    assert "More code steps (0 → 10)" in text and "the black box nothing" in text
    assert "*Frame alignment*" in text and "(hypothesis lost)" in text
    assert "*Where δ sits*" in text and "4.50× as much" in text
    assert "*A second white box*" in text and "the code attacks the surrogate" in text
    assert "a small encoder trained on few speakers is fragile" in text
    assert "δ keeps out of the strong low bands" in text
    assert "no shape reaches 1.5× rec-rec" in text and "flat from 20 dB down" in text
    assert (
        "flat noise moves it 3.14× as far, so GE2E reacts mostly to noise in the pauses" in text
    )  # 0.011 / 0.0035
    assert "PGD on CAM++ (PGD CAM++" in text and "(1.04× rec-rec; cos 0.9880" in text
    assert "the limit is transfer" in text and "transfer fails in that direction too" in text
    assert text.count("(hypothesis lost)") == 3


def test_conclusion_without_probes_or_pgd_is_still_written() -> None:
    table = _table().iloc[:2]
    share = np.full(40, 1 / 40)
    text = findings.conclusion(
        table,
        dict(list(SETTINGS.items())[:2]),
        pd.DataFrame(),
        pd.DataFrame(),
        {},
        share,
        "CAM++",
        "GE2E",
    )
    assert "More code steps" in text and "PGD" not in text and "hypothesis" not in text


def test_a_named_encoder_in_the_codes_loss_is_read_against_its_plain_setting() -> None:
    settings = {
        "10 steps": {"code_steps": 10},
        "10 steps + vfl": {
            "code_steps": 10,
            "code_surrogates": [{"encoder": "vfl", "weight": 2.0}],
        },
    }
    table = _table().iloc[:2].assign(variant=list(settings))
    table = table.assign(vfl_recrec=2.0, vfl_recadv=[5.7, 12.0], vfl_recgn=3.8,
                         vfl_cos_adv=[0.79, 0.60], vfl_cos_gn=0.87)  # fmt: skip
    table.loc[1, ["black_cos_adv", "black_recadv"]] = [0.95, 6.5]
    share = np.full(40, 1 / 40)
    text = findings.conclusion(table, settings, pd.DataFrame(), pd.DataFrame(), {}, share, "CAM++", "GE2E")  # fmt: skip
    assert "*A second white box by name* (`10 steps + vfl` against `10 steps`)" in text
    assert "vfl (w 2) in the code's loss moved its own cos(x, x′) by −0.190" in text or (
        "vfl (w 2) in the code's loss moved its own cos(x, x′) by -0.190" in text
    )
    assert "(rec-adv 5.70 → 12.00 %)" in text and "the black box gains 3.58 points" in text
    table.loc[1, ["black_cos_adv", "black_recadv"]] = [0.9850, 3.5]  # +0.58 points
    text = findings.conclusion(table, settings, pd.DataFrame(), pd.DataFrame(), {}, share, "CAM++", "GE2E")  # fmt: skip
    assert "a gain under 1 point on the black box (hypothesis lost)" in text


def test_the_transfer_verdict_names_the_attacks_that_carried_over() -> None:
    share = np.full(40, 1 / 40)
    pgd = _pgd()
    vfl = pgd.iloc[0].to_dict() | {"attack": "PGD vfl", "attacked": "vfl", "black_recadv": 4.8}
    table = pd.concat([pgd, pd.DataFrame([vfl])], ignore_index=True)
    text = findings.conclusion(_table().iloc[:2], dict(list(SETTINGS.items())[:2]), pd.DataFrame(), table, {}, share, "CAM++", "GE2E")  # fmt: skip
    assert "**PGD vfl carries over to GE2E at this power (at most 1.52× rec-rec)" in text
    assert "none that attacks the white box alone does" in text and "stronger generator" not in text
    table.loc[0, "black_recadv"] = 5.0  # now PGD on CAM++ too
    text = findings.conclusion(_table().iloc[:2], dict(list(SETTINGS.items())[:2]), pd.DataFrame(), table, {}, share, "CAM++", "GE2E")  # fmt: skip
    assert (
        "PGD CAM++ and PGD vfl carry over" in text and "a stronger generator could reach it" in text
    )
