"""Model file format, chunked protect / restore / refinement on arbitrary lengths."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from spkadv.audio import sidecar
from spkadv.core import modelfile
from spkadv.core import protect as P
from spkadv.core.models import RemovalModule, SSEDConfig, SSEDGenerator
from spkadv.evaluation import conditions

CONFIG = SSEDConfig(width=4, stages=3, res_blocks=1, level_window=101)


def _model(
    tmp_path, config: SSEDConfig = CONFIG, seed: int = 0, eps: float = 0.05
) -> modelfile.ProtectionModel:
    torch.manual_seed(seed)
    path = modelfile.save_model(
        tmp_path / f"model{seed}.pt", SSEDGenerator(config), RemovalModule(config), eps
    )
    return modelfile.load_model(path)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> modelfile.ProtectionModel:
    return _model(tmp_path_factory.mktemp("m"))


def _signal(length: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(length)).astype(np.float32)


def test_protect_bounds_length_and_restore(model: modelfile.ProtectionModel) -> None:
    x = _signal(12_345)
    x_adv = P.protect(model, x)
    assert x_adv.shape == x.shape and x_adv.dtype == np.float32
    assert np.abs(x_adv - x).max() <= model.eps + 1e-6 and np.abs(x_adv - x).max() > 0
    rst = P.restore(model, x_adv)
    assert rst.shape == x.shape and np.isfinite(rst).all()


@settings(max_examples=25, deadline=None)
@given(length=st.integers(2, 6000), chunk=st.integers(1, 3000))
def test_chunk_boundaries_never_change_the_result(
    model: modelfile.ProtectionModel, length: int, chunk: int
) -> None:
    x = _signal(length, seed=length)
    whole = P.protect(model, x, chunk_seconds=1e3)
    parts = P.protect(model, x, chunk_seconds=chunk / 16_000)
    assert np.abs(parts - whole).max() <= 1e-5
    assert (
        np.abs(
            P.restore(model, whole, chunk_seconds=chunk / 16_000) - P.restore(model, whole, 1e3)
        ).max()
        <= 1e-5
    )


def test_level_scaled_model_chunks_exactly(tmp_path) -> None:
    model = _model(
        tmp_path, SSEDConfig(width=4, stages=2, res_blocks=1, level_scaled=True, level_window=301)
    )
    x = _signal(9_001)
    assert np.abs(P.protect(model, x, 0.02) - P.protect(model, x, 10.0)).max() <= 1e-5


def test_mask_init_model_chunks_exactly(tmp_path) -> None:
    config = SSEDConfig(width=4, stages=2, res_blocks=1, level_scaled=True, mask_init=0.5)
    torch.manual_seed(0)
    gen = SSEDGenerator(config)
    torch.nn.init.normal_(gen.mask_decoder.net[-1].weight, std=0.1)  # as after some training
    model = modelfile.load_model(
        modelfile.save_model(tmp_path / "m.pt", gen, RemovalModule(config), 0.1)
    )
    x = _signal(9_001)
    assert np.abs(P.protect(model, x, 0.02) - P.protect(model, x, 10.0)).max() <= 1e-6


def test_refinement_converges_to_the_generator_fixed_point(tmp_path) -> None:
    model = _model(tmp_path, eps=0.01)
    x = _signal(4_000)
    x_adv = P.protect(model, x)
    refined = P.restore_refined(model, x_adv, iterations=8, start="adv")
    err0, err = np.abs(x_adv - x).max(), np.abs(refined - x).max()
    assert (
        err < 1e-3 * err0
    )  # x ↦ eps·n⊙m is a contraction at this eps: whoever holds F_P can undo it
    assert np.abs(P.restore_refined(model, x_adv, 8, chunk_seconds=0.01) - refined).max() <= 1e-5


def test_model_file_round_trip_and_fingerprint(tmp_path, model: modelfile.ProtectionModel) -> None:
    other = _model(tmp_path, seed=1)
    assert len(model.fingerprint) == 64 and model.fingerprint != other.fingerprint
    again = modelfile.load_model(tmp_path / "model1.pt")
    assert again.fingerprint == other.fingerprint and again.eps == 0.05
    state = torch.load(tmp_path / "model1.pt", weights_only=True)
    assert state["format"] == modelfile.FORMAT


def test_tampered_model_is_refused(tmp_path) -> None:
    _model(tmp_path)
    state = torch.load(tmp_path / "model0.pt", weights_only=True)
    key = next(iter(state["generator"]))
    state["generator"][key] = state["generator"][key] + 1
    torch.save(state, tmp_path / "tampered.pt")
    with pytest.raises(modelfile.ModelFileError, match="fingerprint mismatch"):
        modelfile.load_model(tmp_path / "tampered.pt")


@pytest.mark.parametrize("content", [b"", b"garbage" * 50, "truncated"])
def test_damaged_or_foreign_model_file_names_the_file(tmp_path, content) -> None:
    _model(tmp_path)
    good = (tmp_path / "model0.pt").read_bytes()
    bad = tmp_path / "bad model.pt"
    bad.write_bytes(good[: len(good) // 2] if content == "truncated" else content)
    with pytest.raises(modelfile.ModelFileError, match="bad model.pt"):
        modelfile.load_model(bad)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(modelfile.ModelFileError, match="not a spkadv protection model"):
        modelfile.load_model(tmp_path / "foreign.pt")
    with pytest.raises(modelfile.ModelFileError, match="not found"):
        modelfile.load_model(tmp_path / "missing.pt")


def test_pickled_code_is_not_executed(tmp_path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"format": modelfile.FORMAT, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(modelfile.ModelFileError, match="cannot read"):
        modelfile.load_model(tmp_path / "evil.pt")


def test_bad_waveforms_are_refused(model: modelfile.ProtectionModel) -> None:
    with pytest.raises(ValueError, match="mono"):
        P.protect(model, np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        P.protect(model, np.array([0.0, np.nan, 0.1], np.float32))


def test_tag_holds_only_the_fingerprint(tmp_path) -> None:
    audio = tmp_path / "a.wav"
    sidecar.write_tag(audio, "ab" * 32)
    assert sidecar.read_tag(audio) == "ab" * 32
    assert sidecar.tag_path(audio).read_text().count(":") == 1
    assert sidecar.read_tag(tmp_path / "none.wav") is None


def test_write_conditions_and_eers(tmp_path, model: modelfile.ProtectionModel) -> None:
    rows = []
    for i in range(3):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, _signal(3_000 + i, seed=i), 16_000, subtype="FLOAT")
        rows.append({"utt_id": f"u{i}", "path": str(path)})
    folders = {c: tmp_path / c for c in ("adv", "rst", "rst_refined")}
    table = conditions.write_conditions(
        model, pd.DataFrame(rows), folders, refine_iterations=2, int16_utterances=1, progress=False
    )
    assert len(table) == 3 and all((folders[c] / "u2.wav").exists() for c in folders)
    assert table["snr_int16_floor_db"].notna().sum() == 1
    assert (table["snr_rst_refined_db"] >= table["snr_rst_db"]).all()
    written, _ = sf.read(folders["adv"] / "u1.wav", dtype="float32")
    assert len(written) == 3_001 and sf.info(str(folders["adv"] / "u1.wav")).subtype == "FLOAT"
    assert conditions.mean_db([10.0, float("inf")]) == pytest.approx(105.0)


def test_write_conditions_in_worker_processes_equals_one_process(
    tmp_path, model: modelfile.ProtectionModel
) -> None:
    rows = []
    for i in range(5):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, _signal(2_000 + 37 * i, seed=i), 16_000, subtype="FLOAT")
        rows.append({"utt_id": f"u{i}", "path": str(path)})
    rows = pd.DataFrame(rows)
    tables, folders = {}, {}
    for workers in (1, 2):
        folders[workers] = {c: tmp_path / f"w{workers}" / c for c in ("adv", "gn", "rst")}
        for folder in folders[workers].values():
            folder.mkdir(parents=True)
        tables[workers] = conditions.write_conditions(
            model, rows, folders[workers], int16_utterances=2, progress=False, workers=workers
        )
    assert list(tables[2]["utt_id"]) == list(rows["utt_id"])  # the rows' order, not completion's
    assert list(tables[2].columns) == list(tables[1].columns)
    assert tables[2]["snr_int16_floor_db"].notna().sum() == 2
    np.testing.assert_allclose(tables[2]["snr_adv_db"], tables[1]["snr_adv_db"], atol=1e-4)
    for cond in ("adv", "gn", "rst"):
        for utt in rows["utt_id"]:
            one, _ = sf.read(folders[1][cond] / f"{utt}.wav", dtype="float32")
            two, _ = sf.read(folders[2][cond] / f"{utt}.wav", dtype="float32")
            assert one.shape == two.shape and np.abs(one - two).max() <= 1e-5


def test_worker_count_resolution(model: modelfile.ProtectionModel) -> None:
    assert (
        conditions.resolve_workers(model, 4, items=3) == 3
    )  # never more processes than utterances
    assert conditions.resolve_workers(model, 1, items=10) == 1
    assert conditions.resolve_workers(model, 0, items=10) == max(
        1, min(torch.get_num_threads(), 10)
    )
    with pytest.raises(ValueError, match="workers=-1"):
        conditions.resolve_workers(model, -1, items=10)


def test_condition_eers_pool_trials() -> None:
    trials = pd.DataFrame(
        {"enrol": ["a", "a", "b", "b"], "test": ["a2", "b2", "b2", "a2"], "target": [1, 0, 1, 0]}
    )
    clean = {
        "a": np.array([1.0, 0.0]),
        "b": np.array([0.0, 1.0]),
        "a2": np.array([1.0, 0.1]),
        "b2": np.array([0.1, 1.0]),
    }
    swapped = {**clean, "a2": clean["b2"], "b2": clean["a2"]}  # an attack that flips identities
    eers = conditions.condition_eers(trials, {"rec": clean, "adv": swapped}, ["rec-rec", "rec-adv"])
    assert eers["rec-rec"] == pytest.approx(0.0) and eers["rec-adv"] == pytest.approx(100.0)
