"""Targets recorded in metrics.json: value, target and met, read back, shown and enforced."""

from __future__ import annotations

import json

import pytest
from spkadv.evaluation import targets as T


def _two():
    return [
        T.record("rec-adv EER >= 4x rec-rec", 3.2, ">= 4x rec-rec (4.47 %)", False),
        T.record("SNR(adv) >= 30 dB", 31.5, ">= 30 dB", True),
    ]


def test_targets_round_trip_through_flat_metrics_json():
    flat = T.as_metrics(_two())
    assert all(not isinstance(v, dict | list) for v in flat.values())
    assert flat["target.snr_adv_30_db.met"] is True
    back = T.from_metrics(json.loads(json.dumps({"eer": 1.0, **flat})))
    assert back == _two()


def test_infinite_values_survive_json():
    flat = T.as_metrics([T.record("SNR(rst)", float("inf"), ">= 45 dB", True)])
    (back,) = T.from_metrics(json.loads(json.dumps(flat)))
    assert back.value == float("inf") and back.met


def test_enforce_names_each_missed_target_only_when_asked():
    T.enforce(_two(), assert_targets=False)
    with pytest.raises(AssertionError, match=r"rec-adv EER >= 4x rec-rec \(measured 3.2"):
        T.enforce(_two(), assert_targets=True)
    T.enforce(_two()[1:], assert_targets=True)


def test_markdown_and_summary_say_met_and_not_met():
    md = T.markdown(_two())
    assert "| rec-adv EER >= 4x rec-rec | 3.2 | >= 4x rec-rec (4.47 %) | NOT met |" in md
    lines = T.summary_lines({"20_joint_training": T.as_metrics(_two()), "30_x": {"eer": 1}})
    assert len(lines) == 2 and "NOT met" in lines[0] and "met" in lines[1]


def test_colliding_names_are_refused():
    with pytest.raises(ValueError, match="share the key"):
        T.as_metrics([T.record("a b", 1, "", True), T.record("a-b", 2, "", True)])
    with pytest.raises(ValueError, match="name"):
        T.record(" ", 1, "", True)
