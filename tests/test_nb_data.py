"""The data helpers behind notebooks 00, 10, 20 and 50: eval subsets, seeded subsets, and the corpus
built from notebook 00's parameters."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from spkadv.base import config
from spkadv.data import corpus
from spkadv.data import manifest as data


def _manifest() -> pd.DataFrame:
    rows = [("t1", "T", "train")] + [(f"{s}{i}", s, "eval") for s in "ab" for i in range(3)]
    return pd.DataFrame(rows, columns=["utt_id", "speaker", "subset"])


def _trials() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "enrol": ["a1", "a0", "b2", "b0"],
            "test": ["a0", "b1", "a0", "b1"],
            "target": [1, 0, 0, 1],
        }
    )


def test_eval_subset_keeps_the_first_utterances_and_the_trials_among_them():
    rows, trials = data.eval_subset(_manifest(), _trials(), per_speaker=2)
    assert list(rows["utt_id"]) == ["a0", "a1", "b0", "b1"] and list(rows.index) == [0, 1, 2, 3]
    assert list(zip(trials["enrol"], trials["test"], strict=True)) == [
        ("a1", "a0"),
        ("a0", "b1"),
        ("b0", "b1"),
    ]
    rows, trials = data.eval_subset(_manifest(), _trials(), per_speaker=0)
    assert len(rows) == 6 and "t1" not in set(rows["utt_id"]) and len(trials) == 4


def test_seeded_subset_is_every_row_or_a_sorted_seeded_sample():
    rows = _manifest()
    assert data.seeded_subset(rows, 0) is rows and data.seeded_subset(rows, 7) is rows
    five = data.seeded_subset(rows, 5, seed=3)
    assert len(five) == 5 and list(five["utt_id"]) == sorted(five["utt_id"])
    pd.testing.assert_frame_equal(five, data.seeded_subset(rows, 5, seed=3))
    assert five.equals(rows.sample(5, random_state=3).sort_values("utt_id"))


NOTEBOOK_00 = {
    "CORPUS_SOURCE": "synthetic",
    "CORPUS_ROOT": "",
    "CORPUS_SET_NAME": "",
    "LIBRISPEECH_DOWNLOAD": False,
    "SPEECHOCEAN762_ARCHIVE": "data/so.tar.gz",
    "SPEECHOCEAN762_DOWNLOAD": False,
    "LIBRISPEECH_TRAIN_SUBSETS": "train-clean-100, train-clean-360,",
    "LIBRISPEECH_EVAL_SUBSETS": "test-clean",
    "LIBRISPEECH_DEV_SUBSET": "dev-other",
    "LIBRISPEECH_DEV_SPEAKERS_PER_GENDER": 15,
    "EVAL_SPEAKERS_PER_GENDER": 2,
    "SYNTH_TRAIN_SPEAKERS_PER_GENDER": 3,
    "SYNTH_DEV_SPEAKERS_PER_GENDER": 1,
    "SYNTH_UTTERANCES_PER_SPEAKER": 4,
    "SYNTH_CANDIDATES_PER_GENDER": 6,
    "SYNTH_BASE_VOICES": "awb, slt",
    "SYNTH_BASE_REUSE": 6,
    "SYNTH_SCREEN_UTTERANCES": 4,
    "SYNTH_DUPLICATE_COSINE": 0.94,
    "SYNTH_WORKERS": 2,
    "SEED": 5,
    "WHITEBOX_ENCODER": "campplus",
    "FORCE_REBUILD": True,
}


def test_repo_path_resolves_from_the_repository_root():
    assert corpus.repo_path("") is None
    assert corpus.repo_path("data/x") == (config.project_root() / "data" / "x").resolve()


def test_synth_config_from_params():
    cfg = corpus.synth_config_from_params(NOTEBOOK_00)
    assert cfg.base_voices == ("awb", "slt") and cfg.seed == 5 and cfg.workers == 2
    assert (cfg.eval_speakers_per_gender, cfg.train_speakers_per_gender) == (2, 3)
    assert (cfg.dev_speakers_per_gender, cfg.candidates_per_gender) == (1, 6)


def test_prepare_from_params_passes_every_notebook_parameter(monkeypatch, tmp_path: Path):
    seen = {}

    def fake(corpus_dir, source, **kwargs):
        seen.update(corpus_dir=corpus_dir, source=source, **kwargs)
        return pd.DataFrame(), {"reused": False}

    monkeypatch.setattr(corpus, "prepare_corpus", fake)

    def embed(paths):
        return paths

    corpus.prepare_from_params(tmp_path, NOTEBOOK_00, embed_fn=embed)
    assert seen["corpus_dir"] == tmp_path and seen["source"] == "synthetic" and seen["root"] is None
    assert seen["librispeech_train"] == ["train-clean-100", "train-clean-360"]
    assert seen["librispeech_eval"] == ["test-clean"] and seen["librispeech_dev"] == "dev-other"
    assert seen["speechocean762_archive"] == corpus.repo_path("data/so.tar.gz")
    assert seen["synth_config"] == corpus.synth_config_from_params(NOTEBOOK_00)
    assert seen["embed_fn"] is embed and seen["embed_name"] == "campplus"
    assert seen["seed"] == 5 and seen["force"] is True and seen["eval_speakers_per_gender"] == 2
    with pytest.raises(KeyError):
        corpus.prepare_from_params(tmp_path, {k: v for k, v in NOTEBOOK_00.items() if k != "SEED"})
