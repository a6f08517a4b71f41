"""Block-by-block file processing: identical to whole-file processing, bounded reads, resampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from spkadv.audio import sidecar, streaming
from spkadv.audio.io import AudioError, AudioSource, load_audio, save_audio
from spkadv.cli import main as cli
from spkadv.core import conditioning, modelfile
from spkadv.core import protect as P
from spkadv.core.models import RemovalModule, SSEDConfig, SSEDGenerator
from spkadv.encoders.random_conv import RandomConvEncoder

CONFIG = SSEDConfig(width=4, stages=2, res_blocks=1, level_window=101)
LENGTH = 3 * 16_000 + 7  # odd, not a multiple of the alignment or the block
CHUNK_SECONDS = 0.25


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return modelfile.save_model(
        tmp_path / "model.pt", SSEDGenerator(CONFIG), RemovalModule(CONFIG), 0.05
    )


def _speechlike(length: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    envelope = np.abs(np.sin(np.linspace(0, 9 * np.pi, length)))  # louder and quieter stretches
    return (0.2 * envelope * rng.standard_normal(length)).astype(np.float32)


def _bits(path: Path) -> np.ndarray:
    info = sf.info(str(path))
    dtype = "int16" if info.subtype == "PCM_16" else "float32"
    data, _ = sf.read(str(path), dtype=dtype)
    return data.view(np.uint16 if dtype == "int16" else np.uint32)


def _cli(*args: str) -> int:
    return cli.main([*args, "--quiet", "--chunk-seconds", str(CHUNK_SECONDS)])


@pytest.mark.parametrize("fmt", ["pcm16", "float"])
def test_streamed_files_equal_whole_file_processing_bit_for_bit(tmp_path, model_path, fmt):
    src = tmp_path / "in.wav"
    sf.write(src, _speechlike(LENGTH), 16_000, subtype="FLOAT")
    model = modelfile.load_model(model_path)
    assert LENGTH > 4 * CHUNK_SECONDS * 16_000 + 2 * model.overlap  # several blocks
    adv, rst = tmp_path / "adv.wav", tmp_path / "rst.wav"
    assert (
        _cli("protect", str(src), "-o", str(adv), "--model", str(model_path), "--format", fmt) == 0
    )
    assert _cli("restore", str(adv), "-o", str(rst), "--model", str(model_path)) == 0

    subtype = cli.SUBTYPES[fmt]
    whole_adv = P.protect(model, load_audio(src), CHUNK_SECONDS)
    save_audio(tmp_path / "whole_adv.wav", whole_adv, subtype=subtype)
    whole_rst = P.restore(model, load_audio(tmp_path / "whole_adv.wav"), CHUNK_SECONDS)
    save_audio(tmp_path / "whole_rst.wav", whole_rst)
    assert len(sf.read(adv)[0]) == LENGTH
    np.testing.assert_array_equal(_bits(adv), _bits(tmp_path / "whole_adv.wav"))
    np.testing.assert_array_equal(_bits(rst), _bits(tmp_path / "whole_rst.wav"))
    # and the block cut does not matter either (the model is local): one pass over the whole file
    one_pass = P.protect(model, load_audio(src), LENGTH / 16_000 + 1)
    np.testing.assert_allclose(whole_adv, one_pass, atol=1e-6)


def test_reads_are_bounded_by_the_block_and_its_context(tmp_path, model_path, monkeypatch):
    src = tmp_path / "in.wav"
    sf.write(src, _speechlike(LENGTH), 16_000, subtype="PCM_16")
    model = modelfile.load_model(model_path)
    sizes = []
    read = AudioSource.read

    def spy(self, start, stop):
        out = read(self, start, stop)
        sizes.append(len(out))
        return out

    monkeypatch.setattr(AudioSource, "read", spy)
    assert (
        _cli("protect", str(src), "-o", str(tmp_path / "adv.wav"), "--model", str(model_path)) == 0
    )
    chunk = int(CHUNK_SECONDS * 16_000) // model.alignment * model.alignment
    assert len(sizes) == -(-LENGTH // chunk)
    assert max(sizes) <= chunk + 2 * model.overlap < LENGTH


def test_refined_restore_streams_with_wider_context(tmp_path, model_path):
    src = tmp_path / "in.wav"
    sf.write(src, _speechlike(LENGTH, seed=2), 16_000, subtype="FLOAT")
    model = modelfile.load_model(model_path)
    adv, ref = tmp_path / "adv.wav", tmp_path / "ref.wav"
    assert (
        _cli("protect", str(src), "-o", str(adv), "--model", str(model_path), "--format", "float")
        == 0
    )
    assert (
        _cli("restore", str(adv), "-o", str(ref), "--model", str(model_path), "--refine", "2") == 0
    )
    whole = P.restore_refined(model, load_audio(adv), 2, CHUNK_SECONDS)
    np.testing.assert_allclose(sf.read(ref, dtype="float32")[0], whole, atol=1e-6)


def test_resampled_stereo_windows_match_load_audio(tmp_path):
    rng = np.random.default_rng(1)
    frames = 44_100 * 2 + 13
    stereo = 0.3 * rng.standard_normal((frames, 2))
    stereo[1000, 0] = 1.7  # one sample beyond [-1, 1]: clipped as load_audio clips it
    path = tmp_path / "stereo44k.wav"
    sf.write(path, stereo.astype(np.float32), 44_100, subtype="FLOAT")
    with pytest.warns(UserWarning):
        whole = load_audio(path)
    with pytest.warns(UserWarning, match="down-mixed"):
        source = AudioSource(path)
    with source:
        assert len(source) == len(whole)
        pieces = [source.read(a, a + 5_003) for a in range(0, len(source), 5_003)]
        assert source.peak == pytest.approx(1.7 * 0.5 + 0.3 * abs(stereo[1000, 1]), abs=0.5)
    np.testing.assert_allclose(np.concatenate(pieces), whole, atol=1e-6)


def test_cli_streams_resampled_input(tmp_path, model_path):
    x = _speechlike(22_050 * 2 + 5, seed=3)
    src = tmp_path / "in22k.flac"
    sf.write(src, x, 22_050, subtype="PCM_24")
    adv = tmp_path / "adv.wav"
    assert (
        _cli("protect", str(src), "-o", str(adv), "--model", str(model_path), "--format", "float")
        == 0
    )
    model = modelfile.load_model(model_path)
    whole = P.protect(model, load_audio(src), CHUNK_SECONDS)
    y, sr = sf.read(adv, dtype="float32")
    assert sr == 16_000 and len(y) == len(whole)
    np.testing.assert_allclose(y, whole, atol=1e-5)


def test_nan_input_leaves_no_output(tmp_path, model_path, capsys):
    x = _speechlike(LENGTH)
    x[LENGTH - 100] = np.nan  # in the last block: earlier blocks are written already
    src = tmp_path / "nan.wav"
    sf.write(src, x, 16_000, subtype="FLOAT")
    out = tmp_path / "adv.wav"
    assert _cli("protect", str(src), "-o", str(out), "--model", str(model_path)) == 1
    assert "NaN/Inf" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".adv*"))


def test_source_refuses_unusable_files(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        AudioSource(tmp_path / "missing.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        AudioSource(tmp_path / "empty.wav")
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="not a readable audio file"):
        AudioSource(tmp_path / "junk.wav")


def test_block_bounds_match_chunked():
    assert streaming.block_bounds(400, 300, 64, 8) == [(0, 400)]  # fits in one pass
    bounds = streaming.block_bounds(10_001, 1000, 64, 8)
    assert bounds[0] == (0, 1000) and bounds[-1] == (10_000, 10_001)
    assert all(a % 8 == 0 for a, _ in bounds)
    with pytest.raises(ValueError, match="multiple of the alignment"):
        streaming.block_bounds(10_001, 1000, 60, 8)


def test_bf16_flag_runs_and_stays_close(tmp_path, model_path):
    src = tmp_path / "in.wav"
    sf.write(src, _speechlike(LENGTH), 16_000, subtype="FLOAT")
    a32, a16 = tmp_path / "a32.wav", tmp_path / "a16.wav"
    base = ("protect", str(src), "--model", str(model_path), "--format", "float")
    assert _cli(*base, "-o", str(a32)) == 0
    assert _cli(*base, "-o", str(a16), "--bf16") == 0
    x = sf.read(src, dtype="float32")[0]
    y32, y16 = sf.read(a32, dtype="float32")[0], sf.read(a16, dtype="float32")[0]
    d32, d16 = y32 - x, y16 - x
    assert not np.array_equal(d32, d16)  # bf16 really ran
    # the same perturbation up to bf16 rounding
    assert np.linalg.norm(d16 - d32) < 0.05 * np.linalg.norm(d32)


def test_models_that_need_the_whole_file_fall_back_to_it(tmp_path):
    config = SSEDConfig(width=4, stages=2, res_blocks=1, level_window=101, mask_norm="minmax")
    assert not config.is_local
    torch.manual_seed(0)
    path = modelfile.save_model(
        tmp_path / "m.pt", SSEDGenerator(config), RemovalModule(config), 0.05
    )
    src = tmp_path / "in.wav"
    sf.write(src, _speechlike(LENGTH), 16_000, subtype="FLOAT")
    adv = tmp_path / "adv.wav"
    assert _cli("protect", str(src), "-o", str(adv), "--model", str(path), "--format", "float") == 0
    whole = P.protect(modelfile.load_model(path), load_audio(src), CHUNK_SECONDS)
    np.testing.assert_array_equal(sf.read(adv, dtype="float32")[0], whole)


def test_code_models_stream_with_the_code_of_a_first_pass(tmp_path, capsys):
    config = SSEDConfig(
        width=4, stages=2, res_blocks=1, level_window=101, code_film=True, code_segment_seconds=0.25
    )
    torch.manual_seed(0)
    meta = {"encoder": "random-conv", "code_steps": 2, "code_radius": 2.0}
    path = modelfile.save_model(
        tmp_path / "m.pt", SSEDGenerator(config), RemovalModule(config), 0.05, meta=meta
    )
    src = tmp_path / "in.wav"
    sf.write(src, _speechlike(LENGTH), 16_000, subtype="FLOAT")
    adv, rst = tmp_path / "adv.wav", tmp_path / "rst.wav"
    assert _cli("protect", str(src), "-o", str(adv), "--model", str(path), "--format", "float") == 0
    assert _cli("restore", str(adv), "-o", str(rst), "--model", str(path)) == 0
    assert "held in memory" not in capsys.readouterr().err
    model = modelfile.load_model(path)
    x = load_audio(src)
    code = P.protection_code(model, x)
    assert code.shape == (config.code_segments(LENGTH), config.code_dim) and np.abs(code).sum() > 0
    np.testing.assert_array_equal(
        sidecar.read_code(adv), code
    )  # the first pass found the same code
    whole = P.protect(model, x, CHUNK_SECONDS, code=code)
    np.testing.assert_array_equal(sf.read(adv, dtype="float32")[0], whole)
    whole_rst = P.restore(model, whole, CHUNK_SECONDS, code=code)
    np.testing.assert_array_equal(sf.read(rst, dtype="float32")[0], whole_rst)


def test_segment_codes_read_in_pieces_equal_the_whole_signal_codes():
    config = SSEDConfig(width=4, stages=2, res_blocks=1, code_film=True, code_segment_seconds=0.05)
    torch.manual_seed(0)
    gen, enc = SSEDGenerator(config), RandomConvEncoder()
    x = _speechlike(16_000 + 123)
    reads = []

    def read(a: int, b: int) -> np.ndarray:
        reads.append(b - a)
        return x[a:b]

    kwargs = dict(eps=0.3, steps=2, radius=1.0, piece_seconds=0.4)
    whole, _ = conditioning.optimise_code(gen, enc, x, **kwargs)
    pieces, _ = conditioning.optimise_code(gen, enc, read, total=len(x), **kwargs)
    np.testing.assert_array_equal(whole, pieces)
    assert len(reads) == 3 and max(reads) <= 0.4 * 16_000  # never the whole signal at once
