"""The synthetic corpus: sentences, voice transforms, speaker selection, deterministic generation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from spkadv.base.fileio import sha256_file
from spkadv.data import manifest as data
from spkadv.data import synth, voices

needs_flite = pytest.mark.skipif(
    not set(voices.FLITE_VOICES) <= set(voices.available_flite_voices()),
    reason="Debian flite with voices awb, rms, slt, kal16 is not installed (sudo apt-get install flite)",
)


def test_sentence_pool_is_deterministic_distinct_and_upper_case():
    a, b = voices.sentence_pool(200, seed=5), voices.sentence_pool(200, seed=5)
    assert a == b and len(set(a)) == 200 and a != voices.sentence_pool(200, seed=6)
    assert all(s == s.upper() and 5 <= len(s.split()) <= 20 for s in a)


def test_specs_follow_gender_ranges():
    config = synth.SynthConfig(candidates_per_gender=12)
    specs = voices.make_specs(config)
    assert len(specs) == 24 and len({s.speaker for s in specs}) == 24
    for s in specs:
        lo, hi = voices.F0_RANGE_HZ[s.gender]
        assert lo <= s.f0_median_hz <= hi
        wlo, whi = voices.WARP_RANGE[(voices.FLITE_VOICES[s.base], s.gender)]
        assert wlo <= s.warp <= whi
    assert specs == voices.make_specs(config)
    assert specs != voices.make_specs(dataclasses.replace(config, seed=1))


def test_transform_moves_formants_pitch_and_rate():
    n, bins = 200, synth.FFT_SIZE // 2 + 1
    f0 = np.full(n, 120.0)
    f0[:20] = 0.0
    sp = np.full((n, bins), 1e-6)
    sp[:, 32] = 1.0  # a spectral peak at 500 Hz
    ap = np.full((n, bins), 0.1)
    spec = voices.VoiceSpec("x", "F", "slt", 200.0, 1.0, 1.2, 1.25, 0.0, 0.0, 1000.0, 0.0)
    f0n, spn, apn = synth.transform(f0, sp, ap, spec, base_median=120.0)
    assert len(f0n) == 160  # 25 % faster
    assert np.median(f0n[f0n > 0]) == pytest.approx(200.0)
    assert (f0n == 0).sum() == 16  # unvoiced frames stay unvoiced
    assert np.argmax(spn[50]) in (38, 39)  # 500 Hz * 1.2 = 600 Hz = bin 38.4
    assert np.allclose(apn, 0.1)


def test_select_speakers_drops_near_duplicates():
    rng = np.random.default_rng(0)
    rows, embs = [], []
    centers = rng.normal(size=(10, 32))
    centers[1] = centers[0] + 0.01 * rng.normal(size=32)  # speaker 1 duplicates speaker 0
    for i in range(10):
        for k in range(3):
            rows.append(
                {"speaker": f"s{i}", "gender": "M" if i < 5 else "F", "utt_id": f"s{i}_{k}"}
            )
            embs.append(centers[i] + 0.05 * rng.normal(size=32))
    table = pd.DataFrame(rows)
    config = synth.SynthConfig(
        eval_speakers_per_gender=2, train_speakers_per_gender=2, duplicate_cosine=0.8
    )
    roles, info = synth.select_speakers(table, np.array(embs), config)
    assert info["near_duplicates"] == 1 and info["near_duplicate_pairs_kept"] == 0
    assert ("s0" in roles) != ("s1" in roles) and len(roles) == 8
    assert sum(r == "eval" for r in roles.values()) == 4
    # with no spare candidate the duplicate stays, and is counted
    roles, info = synth.select_speakers(
        table, np.array(embs), dataclasses.replace(config, train_speakers_per_gender=3)
    )
    assert (
        info["near_duplicates"] == 0 and info["near_duplicate_pairs_kept"] == 1 and len(roles) == 10
    )
    with pytest.raises(voices.SynthError, match="5 M candidate voices, need 6"):
        synth.select_speakers(
            table, np.array(embs), dataclasses.replace(config, train_speakers_per_gender=4)
        )


@needs_flite
@pytest.mark.slow  # two tiny builds: about 4 s idle, 11 s on a busy 2-core machine
def test_tiny_corpus_is_deterministic(tmp_path):
    config = synth.SynthConfig(
        eval_speakers_per_gender=1,
        train_speakers_per_gender=1,
        utterances_per_speaker=2,
        candidates_per_gender=2,
        base_voices=("slt", "awb"),
        workers=1,
    )
    m1, info = synth.build_corpus(config, tmp_path / "a", progress=False)
    m2, _ = synth.build_corpus(
        dataclasses.replace(config, workers=2), tmp_path / "b", progress=False
    )
    assert (
        len(m1) == 4 * 2
        and set(m1["subset"]) == {"eval", "train"}
        and set(m1["gender"]) == {"M", "F"}
    )
    assert m1["duration"].between(config.min_seconds, config.max_seconds).all()
    assert [sha256_file(p) for p in m1["path"]] == [sha256_file(p) for p in m2["path"]]
    assert (m1["transcript"] == m2["transcript"]).all() and m1["transcript"].str.isupper().all()
    assert not (tmp_path / "a" / ".work").exists()
    assert info["base_voice_of_speaker"][m1["speaker"].iloc[0]] in ("slt", "awb")
    data.write_manifest(m1, tmp_path / "m.tsv")
    assert len(data.read_manifest(tmp_path / "m.tsv")) == 8


def test_missing_flite_is_reported(monkeypatch):
    monkeypatch.setattr(voices.shutil, "which", lambda name: None)
    with pytest.raises(voices.SynthError, match="apt-get install flite"):
        voices.check_synthesizer(("slt",))
