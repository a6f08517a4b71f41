"""The held-out protocol (docs/protocol.md §8): Table 1's speakers are disjoint from every speaker a
choice was measured on.

Choices are measured on the dev speakers: the studies' subset (``STUDY_SUBSET``,
:func:`spkadv.studies.study.subset_rows`) and the rows the verification thresholds of
``spkadv check`` come from (notebook 40's ``THRESHOLD_SUBSET``,
:func:`spkadv.evaluation.verification.held_out_trials`). Table 1 scores the trials of
:func:`spkadv.data.manifest.make_trials`, the eval speakers. Checked on synthetic corpora built here,
and statically on every profile and study notebook: a study that went back to the eval speakers
fails here.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from spkadv.base import config
from spkadv.data import manifest as data
from spkadv.data import synth, voices
from spkadv.evaluation import verification
from spkadv.studies import study

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted((ROOT / "params").glob("*.yaml"))
STUDIES = [ROOT / "notebooks" / config.STUDIES_DIR / f"{s}.ipynb" for s in config.STUDY_STAGES]
TABLE1 = ROOT / "notebooks" / "40_table1_eer.ipynb"

needs_flite = pytest.mark.skipif(
    not set(voices.FLITE_VOICES) <= set(voices.available_flite_voices()),
    reason="Debian flite with voices awb, rms, slt, kal16 is not installed (sudo apt-get install flite)",
)


def speakers_of(rows: pd.DataFrame) -> set[str]:
    return set(rows["speaker"])


def check_held_out(manifest: pd.DataFrame, study_subset: str, threshold_subset: str) -> None:
    """Table 1's speakers (its trials) against the studies' and the thresholds' speakers, and the
    dev speakers against train and eval."""
    subsets = {s: speakers_of(manifest[manifest["subset"] == s]) for s in data.SUBSETS}
    assert subsets["dev"], "the corpus has no dev speakers"
    assert subsets["dev"].isdisjoint(subsets["eval"]) and subsets["dev"].isdisjoint(
        subsets["train"]
    )
    trials = data.make_trials(manifest, nontargets=30, seed=0)
    by_utt = manifest.set_index("utt_id")["speaker"]
    table1 = set(by_utt[trials["enrol"]]) | set(by_utt[trials["test"]])
    assert table1 == subsets["eval"]
    measured = speakers_of(study.subset_rows(manifest, study_subset))
    held_rows, held_trials = verification.held_out_trials(manifest, threshold_subset, 6)
    measured |= speakers_of(held_rows) | set(by_utt[held_trials["enrol"]])
    assert measured and measured.isdisjoint(table1)
    assert measured <= subsets["dev"]


def manifest_from_roles(table: pd.DataFrame, roles: dict[str, str]) -> pd.DataFrame:
    rows = table[table["speaker"].isin(roles)].copy()
    rows["subset"] = rows["speaker"].map(roles)
    rows["set"] = "synthetic"
    rows["path"] = "/none/" + rows["utt_id"] + ".wav"
    rows["duration"] = 3.0
    rows["transcript"] = "SOME WORDS"
    return rows.loc[:, list(data.MANIFEST_COLUMNS)].reset_index(drop=True)


def candidates(prefix: str, per_gender: int, utts: int, rng, centres=None):
    rows, embs = [], []
    for g in ("M", "F"):
        for i in range(per_gender):
            centre = rng.normal(size=16) if centres is None else centres[(g, i)]
            for k in range(utts):
                rows.append(
                    {
                        "utt_id": f"{prefix}{g}{i:02d}_{k}",
                        "speaker": f"{prefix}{g}{i:02d}",
                        "gender": g,
                    }
                )
                embs.append(centre + 0.05 * rng.normal(size=16))
    return pd.DataFrame(rows), np.array(embs)


def test_speaker_choice_keeps_dev_apart_from_train_and_eval():
    """The synthetic speaker choice (no audio): the dev speakers come after eval and train, and a
    dev candidate that duplicates a kept voice is dropped."""
    rng = np.random.default_rng(0)
    cfg = synth.SynthConfig(
        eval_speakers_per_gender=2, train_speakers_per_gender=2, dev_speakers_per_gender=2,
        duplicate_cosine=0.8,
    )  # fmt: skip
    table, embs = candidates("syn", 4, 3, rng)
    roles, _ = voices.select_speakers(table, embs, cfg)
    eval_speaker = next(s for s, r in roles.items() if r == "eval" and s.startswith("synM"))
    centre = embs[table["speaker"].to_numpy() == eval_speaker].mean(axis=0)
    fresh = {(g, i): rng.normal(size=16) for g in "MF" for i in range(3)}
    fresh[("M", 0)] = centre  # the first male dev candidate is a copy of an eval voice
    dev_table, dev_embs = candidates("dev", 3, 3, rng, fresh)
    assert voices.dev_candidates_per_gender(cfg) == 3
    kept = table["speaker"].isin(roles).to_numpy()
    dev_roles, info = voices.select_dev_speakers(dev_table, dev_embs, table[kept], embs[kept], cfg)
    assert "devM00" not in dev_roles and info["dev_near_duplicates"] == 1
    assert sorted(dev_roles) == ["devF00", "devF01", "devM01", "devM02"]
    assert set(dev_roles.values()) == {"dev"} and set(dev_roles).isdisjoint(roles)
    manifest = manifest_from_roles(pd.concat([table, dev_table]), {**roles, **dev_roles})
    check_held_out(manifest, "dev", "dev")


@needs_flite
@pytest.mark.slow  # two tiny builds: a few seconds
def test_synthetic_dev_speakers_change_nothing_about_train_and_eval(tmp_path: Path):
    base = synth.SynthConfig(
        eval_speakers_per_gender=1, train_speakers_per_gender=1, utterances_per_speaker=2,
        candidates_per_gender=2, base_voices=("slt", "awb"), workers=1,
    )  # fmt: skip
    without, _ = synth.build_corpus(base, tmp_path / "a", progress=False)
    cfg = synth.SynthConfig(**{**base.to_dict(), "dev_speakers_per_gender": 2})
    manifest, info = synth.build_corpus(cfg, tmp_path / "b", progress=False)
    assert info["dev_candidates"] == 2 * 3 and manifest["subset"].tolist()[-8:] == ["dev"] * 8
    kept = manifest[manifest["subset"] != "dev"].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept.drop(columns="path"), without.drop(columns="path"))
    for a, b in zip(kept["path"], without["path"], strict=True):
        assert Path(a).read_bytes() == Path(b).read_bytes()
    assert base.fingerprint() != cfg.fingerprint()
    assert synth.SynthConfig(**{**base.to_dict(), "dev_speakers_per_gender": 0}).fingerprint() == (
        base.fingerprint()
    )
    check_held_out(manifest, "dev", "dev")


def test_studies_and_thresholds_refuse_or_flag_eval():
    rows = [
        {"utt_id": f"{s}{k}", "speaker": s, "gender": g, "subset": sub, "set": "x", "path": "",
         "duration": 1.0, "transcript": ""}
        for s, g, sub in (("a", "M", "eval"), ("b", "M", "eval"), ("c", "M", "train"))
        for k in range(2)
    ]  # fmt: skip
    manifest = pd.DataFrame(rows)
    with pytest.raises(ValueError, match="no dev rows"):
        study.subset_rows(manifest, "dev")
    with pytest.raises(ValueError, match="never on the eval speakers"):
        verification.held_out_trials(manifest, "eval")
    with pytest.warns(UserWarning, match="not on held-out dev ones"):
        assert speakers_of(study.subset_rows(manifest, "eval")) == {"a", "b"}
    held_rows, held_trials = verification.held_out_trials(manifest, "dev")
    assert held_rows.empty and held_trials.empty


# ----------------------------------------------------------------------------- static checks

EVAL_SELECTION = re.compile(r"""subset["']?\s*\]?\s*(==|!=|\.isin)\s*\(?\[?\s*["']eval["']""")


def code_cells(notebook: Path) -> tuple[str, list[str]]:
    """(source of the parameters cell, sources of the other code cells)."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, notebook
    rest = ["".join(c["source"]) for c in code if c is not params[0]]
    return "".join(params[0]["source"]), rest


def eval_selections(source: str) -> list[str]:
    """Where code selects eval rows: the literal "eval" anywhere in the code (a comparison, an
    ``isin``, a query string, an argument), or a ``subset`` compared with it."""
    found = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value == "eval" or EVAL_SELECTION.search(node.value):
                found.append(f"line {node.lineno}: {node.value!r}")
    found += [f"text: {m.group(0)!r}" for m in EVAL_SELECTION.finditer(source)]
    return found


def measured_subset(source: str) -> list[str]:
    """The names a code cell passes as the subset of :func:`spkadv.studies.study.subset_rows`."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "subset_rows"
            and len(node.args) == 2
        ):
            arg = node.args[1]
            names.append(arg.id if isinstance(arg, ast.Name) else ast.unparse(arg))
    return names


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_every_profile_measures_choices_on_dev(profile: Path):
    params = config.load_profile(profile)
    assert params.get("STUDY_SUBSET") == "dev", f"{profile.name}: STUDY_SUBSET must be dev"
    assert params.get("THRESHOLD_SUBSET", "dev") in ("dev", "train"), profile.name


@pytest.mark.parametrize("notebook", STUDIES, ids=lambda p: p.stem)
def test_study_notebooks_measure_on_the_study_subset_never_eval(notebook: Path):
    params, cells = code_cells(notebook)
    assert config.notebook_parameters(notebook).get("STUDY_SUBSET") == "dev", params
    found = [f for cell in cells for f in eval_selections(cell)]
    assert not found, f"{notebook.name} selects eval rows: {found}"
    passed = [name for cell in cells for name in measured_subset(cell)]
    assert passed and set(passed) == {"STUDY_SUBSET"}, (notebook.name, passed)
    # every manifest row a study reads is either its subset or the train speakers (surrogate, training)
    selections = [m for cell in cells for m in re.findall(r'subset"\] == "(\w+)"', cell)]
    assert set(selections) <= {"train"}, selections


def test_table1_thresholds_are_measured_on_held_out_speakers():
    params, cells = code_cells(TABLE1)
    assert config.notebook_parameters(TABLE1)["THRESHOLD_SUBSET"] == "dev"
    source = "\n".join(cells)
    assert "held_out_trials(manifest, THRESHOLD_SUBSET" in source
    assert "rec_rec_scores(held_trials" in source  # not the Table 1 scores of the eval speakers


def test_the_static_check_catches_a_study_that_went_back_to_eval():
    went_back = [
        'rows = manifest[manifest["subset"] == "eval"]',
        "rows = manifest.query(\"subset == 'eval'\")",
        'rows = manifest[manifest.subset.isin(["eval"])]',
        'rows = study.subset_rows(manifest, "eval")',
    ]
    for source in went_back:
        assert eval_selections(source), source
    assert measured_subset('rows = study.subset_rows(manifest, "eval")') == ["'eval'"]
    assert not eval_selections(
        'rows = study.subset_rows(manifest, STUDY_SUBSET)\nn = "eval_utterances"'
    )
