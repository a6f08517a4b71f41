"""The code predictor adopted as an option of protection (beyond the paper): ``optimise_code``'s
``init``, ``protection_code(predictor=...)`` and ``spkadv protect --code-predictor PATH
[--refine-steps K]``: no encoder backward pass at k = 0, the predicted code the same in pieces as
whole, refinement from the given code, the command's errors, and today's protection unchanged."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from spkadv.audio import sidecar
from spkadv.audio.io import AudioSource, load_audio
from spkadv.cli import main as cli
from spkadv.core import conditioning, modelfile, predictor
from spkadv.core import protect as P
from spkadv.core.models import RemovalModule, SSEDConfig, SSEDGenerator
from spkadv.encoders.random_conv import RandomConvEncoder

CONFIG = SSEDConfig(
    width=4, stages=2, res_blocks=1, level_window=101, code_film=True, code_segment_seconds=0.25
)
META = {"encoder": "random-conv", "code_steps": 2, "code_radius": 2.0}
LENGTH = 3 * 16_000 + 7  # odd: neither a whole number of segments nor of blocks
CHUNK_SECONDS = 0.25


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class SpyEncoder(torch.nn.Module):
    """The random stand-in encoder; counts forward calls and fails any backward pass through it."""

    def __init__(self) -> None:
        super().__init__()
        self.inner, self.name = RandomConvEncoder(), "spy"
        self.forwards = self.backwards = 0
        self.fail_on_backward = True

    def embed(self, waves: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        z = self.inner.embed(waves)
        if z.requires_grad:
            z.register_hook(self._backward)
        return z

    def _backward(self, grad: torch.Tensor) -> None:
        self.backwards += 1
        if self.fail_on_backward:
            raise AssertionError("backward pass through the white-box encoder")


def _speech(length: int = LENGTH, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    envelope = np.abs(np.sin(np.linspace(0, 9 * np.pi, length)))  # louder and quieter stretches
    tone = np.sin(2 * np.pi * rng.uniform(100, 400) * np.arange(length) / 16_000)
    return (0.2 * envelope * (rng.standard_normal(length) + tone)).astype(np.float32)


def _model_file(tmp_path: Path, seed: int = 0, config: SSEDConfig = CONFIG) -> Path:
    torch.manual_seed(seed)
    return modelfile.save_model(
        tmp_path / f"model{seed}-{config.width}-{config.code_film}.pt",
        SSEDGenerator(config),
        RemovalModule(config),
        0.05,
        meta=META,
    )


def _net(model: modelfile.ProtectionModel) -> predictor.CodePredictor:
    torch.manual_seed(1)
    config = predictor.PredictorConfig.for_model(model, hidden=8, batch_segments=4)
    return predictor.CodePredictor(config).eval()


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(model file, its predictor file, a 3 s input wav)."""
    model_path = _model_file(tmp_path)
    model = modelfile.load_model(model_path)
    net_path = predictor.save_predictor(tmp_path / "p.pt", _net(model), model)
    src = tmp_path / "in.wav"
    sf.write(src, _speech(), 16_000, subtype="FLOAT")
    return model_path, net_path, src


def _cli(*args: str) -> int:
    return cli.main([*args, "--quiet", "--chunk-seconds", str(CHUNK_SECONDS)])


# ------------------------------------------------------------------- (a) no backward at k = 0


def test_protection_with_the_predictor_and_no_steps_never_runs_the_encoder(files):
    model = modelfile.load_model(files[0])
    spy = model._encoder = SpyEncoder()
    net = predictor.load_predictor(files[1], model)
    x = _speech()
    code = P.protection_code(model, x, predictor=net)
    assert code.shape == (CONFIG.code_segments(LENGTH), CONFIG.code_dim)
    assert spy.forwards == 0 and spy.backwards == 0
    assert predictor.in_ball(code, net.config.radius) and np.abs(code).sum() > 0
    assert np.array_equal(code, predictor.predict_codes(net, x))
    adv = P.protect(model, x, code=code)
    assert np.isfinite(adv).all() and not np.array_equal(adv, x) and spy.forwards == 0
    spy.fail_on_backward = False  # the spy does see a refinement step's backward pass
    P.protection_code(model, x, 1, predictor=net)
    assert spy.backwards == 1


def test_the_command_with_the_predictor_and_no_steps_never_runs_the_encoder(
    tmp_path, files, monkeypatch
):
    model_path, net_path, src = files
    spies: list[SpyEncoder] = []

    def load(name, device="cpu"):
        spies.append(SpyEncoder())
        return spies[-1]

    monkeypatch.setattr(modelfile.encoders, "load", load)
    adv = tmp_path / "adv.wav"
    args = ("protect", str(src), "-o", str(adv), "--model", str(model_path))
    assert _cli(*args, "--code-predictor", str(net_path), "--format", "float") == 0
    assert all(s.forwards == 0 and s.backwards == 0 for s in spies)
    assert sidecar.read_code(adv) is not None


# ------------------------------------------------------------------- (b) exact in pieces


def test_the_predicted_code_of_a_file_read_in_pieces_equals_the_whole_files(tmp_path, files):
    model = modelfile.load_model(files[0])
    net = predictor.load_predictor(files[1], model)
    x = _speech(int(41.3 * 16_000), seed=4)  # three pieces of about 20 s: 20, 20 and 1.3 s
    src = tmp_path / "long.wav"
    sf.write(src, x, 16_000, subtype="FLOAT")
    whole = P.protection_code(model, x, predictor=net)
    refined = P.protection_code(model, x, 1, predictor=net)
    with AudioSource(src) as source:
        reads = []
        read = source.read
        source.read = lambda a, b: reads.append(b - a) or read(a, b)
        pieced = P.protection_code(model, source, predictor=net)
        assert len(reads) >= 3 and max(reads) < len(x) / 2  # never the whole file at once
        refined_pieces = P.protection_code(model, source, 1, predictor=net)
    assert np.array_equal(whole, pieced)
    assert np.array_equal(refined, refined_pieces)
    assert np.array_equal(refined, predictor.amortised_code(model, net, x, steps=1))
    assert not np.array_equal(refined, whole)


def dataclasses_replace(config, **changes):
    return dataclasses.replace(config, **changes)


@pytest.mark.parametrize("steps", [0, 1])
def test_the_command_streams_with_the_predicted_code_bit_for_bit(tmp_path, files, steps):
    model_path, net_path, src = files
    adv, rst = tmp_path / "adv.wav", tmp_path / "rst.wav"
    args = ["protect", str(src), "-o", str(adv), "--model", str(model_path), "--format", "float"]
    args += ["--code-predictor", str(net_path), "--refine-steps", str(steps)]
    assert _cli(*args) == 0
    assert _cli("restore", str(adv), "-o", str(rst), "--model", str(model_path)) == 0
    model = modelfile.load_model(model_path)
    assert LENGTH > 4 * CHUNK_SECONDS * 16_000 + 2 * model.overlap  # several blocks
    x = load_audio(src)
    code = P.protection_code(model, x, steps, predictor=predictor.load_predictor(net_path, model))
    np.testing.assert_array_equal(sidecar.read_code(adv), code)  # the sidecar: unchanged format
    assert sidecar.read_tag(adv) == model.fingerprint
    whole = P.protect(model, x, CHUNK_SECONDS, code=code)
    np.testing.assert_array_equal(sf.read(adv, dtype="float32")[0], whole)
    whole_rst = P.restore(model, whole, CHUNK_SECONDS, code=code)
    np.testing.assert_array_equal(sf.read(rst, dtype="float32")[0], whole_rst)


# ------------------------------------------------------------------- (c) init=


def _generator(segment_seconds: float = 0.05) -> SSEDGenerator:
    config = SSEDConfig(
        width=4, stages=2, res_blocks=1, code_film=True, code_segment_seconds=segment_seconds
    )
    torch.manual_seed(0)
    return SSEDGenerator(config).eval()


@pytest.mark.parametrize("segment_seconds", [0.05, 0.0])
def test_optimise_code_starts_from_init(segment_seconds):
    gen, enc = _generator(segment_seconds), SpyEncoder()
    x = _speech(8_000 + 33)
    cfg = gen.config
    shape = (cfg.code_segments(len(x)), cfg.code_dim) if segment_seconds else (cfg.code_dim,)
    init = np.random.default_rng(3).uniform(-0.3, 0.3, size=shape).astype(np.float32)
    kwargs = dict(eps=0.3, radius=10.0, piece_seconds=0.2)  # init inside the ball
    code, history = conditioning.optimise_code(gen, enc, x, steps=0, init=init, **kwargs)
    assert np.array_equal(code, init) and code is not init and history == []
    assert enc.forwards == 0  # k = 0: the starting code, no encoder at all
    enc.fail_on_backward = False
    still, _ = conditioning.optimise_code(gen, enc, x, steps=2, lr=0.0, init=init, **kwargs)
    assert np.array_equal(still, init)  # steps of length 0 stay where they started
    moved, history = conditioning.optimise_code(gen, enc, x, steps=2, init=init, **kwargs)
    assert len(history) == 2 and moved.shape == shape and not np.array_equal(moved, init)
    from_zero, _ = conditioning.optimise_code(gen, enc, x, steps=2, **kwargs)
    assert not np.array_equal(moved, from_zero)
    with pytest.raises(ValueError, match="init code of shape"):
        conditioning.optimise_code(gen, enc, x, steps=1, init=init[..., :-1], **kwargs)
    with pytest.raises(ValueError, match="NaN"):
        conditioning.optimise_code(gen, enc, x, steps=1, init=init * np.nan, **kwargs)


# ------------------------------------------------------------------- (e) default unchanged


def test_without_a_predictor_the_code_is_todays_bit_for_bit(tmp_path, files):
    model = modelfile.load_model(files[0])
    x = _speech()
    default = P.protection_code(model, x)
    gen, enc = model.generator, model.code_encoder()
    kwargs = dict(eps=model.eps, steps=2, radius=2.0)
    plain, _ = conditioning.optimise_code(gen, enc, x, **kwargs)
    zeros = np.zeros_like(plain)
    from_zeros, _ = conditioning.optimise_code(gen, enc, x, init=zeros, **kwargs)
    assert np.array_equal(default, plain) and np.array_equal(default, from_zeros)
    zero_start = predictor.amortised_code(model, None, x, 2, start="zero")
    assert np.array_equal(default, zero_start)
    adv = tmp_path / "adv.wav"
    assert _cli("protect", str(files[2]), "-o", str(adv), "--model", str(files[0])) == 0
    np.testing.assert_array_equal(
        sidecar.read_code(adv), P.protection_code(model, load_audio(files[2]))
    )
    assert P.protection_code(model, x, steps=0).shape == (CONFIG.code_dim,)  # the zero code


# ------------------------------------------------------------------- (d) the command's errors


def _protect_error(tmp_path: Path, capsys, src: Path, model: Path, *extra: str) -> str:
    out = tmp_path / "never.wav"
    assert _cli("protect", str(src), "-o", str(out), "--model", str(model), *extra) == 2
    assert not out.exists() and not sidecar.tag_path(out).exists()
    return capsys.readouterr().err


def test_the_command_explains_a_bad_predictor_or_step_count(tmp_path, files, capsys):
    model_path, net_path, src = files

    def error(model: Path, *extra: str) -> str:
        return _protect_error(tmp_path, capsys, src, model, *extra)

    err = error(model_path, "--code-predictor", "nope.pt")
    assert "nope.pt: no such file" in err and "notebook 95" in err
    err = error(model_path, "--code-predictor", str(net_path), "--refine-steps", "-1")
    assert "--refine-steps -1: need 0 or more" in err
    err = error(model_path, "--refine-steps", "2")
    assert "--refine-steps needs --code-predictor" in err
    err = error(_model_file(tmp_path, seed=1), "--code-predictor", str(net_path))  # other weights
    assert "trained for model" in err and "notebook 95" in err
    wider = dataclasses_replace(CONFIG, width=2 * CONFIG.width)  # another code_dim
    err = error(_model_file(tmp_path, config=wider), "--code-predictor", str(net_path))
    assert f"codes of {CONFIG.code_dim} values" in err
    assert f"the model takes 4000, {wider.code_dim}" in err
    plain = dataclasses_replace(CONFIG, code_film=False, code_segment_seconds=0.0)
    err = error(_model_file(tmp_path, config=plain), "--code-predictor", str(net_path))
    assert "takes no code" in err
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    err = error(model_path, "--code-predictor", str(tmp_path / "bad.pt"))
    assert "cannot read" in err


def test_the_help_names_the_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["protect", "--help"])
    text = capsys.readouterr().out
    assert "--code-predictor PATH" in text and "--refine-steps K" in text
    with pytest.raises(SystemExit):
        cli.main(["restore", "--help"])
    assert "--code-predictor" not in capsys.readouterr().out


def test_protection_code_refuses_negative_steps_and_another_model(files, tmp_path):
    model = modelfile.load_model(files[0])
    net = predictor.load_predictor(files[1], model)
    with pytest.raises(ValueError, match="expected 0 or more"):
        P.protection_code(model, _speech(4000), -1, predictor=net)
    other = modelfile.load_model(_model_file(tmp_path, seed=1))
    with pytest.raises(predictor.PredictorFileError, match="trained for model"):
        P.protection_code(other, _speech(4000), predictor=net)


# ------------------------------------------------------------------- the benchmark item


def test_the_benchmark_item_is_registered_and_feeds_the_headline():
    from benchmarks import run_all

    assert "predictor" in run_all.ITEMS
    item = {"status": "ok", "protect_rtf_1thread": 1.2, "protect_rtf_1thread_predictor_k0": 0.02,
            "pgd_speed_ratio": 0.2, "pgd_speed_ratio_predictor_k0": 9.0}  # fmt: skip
    summary = run_all.headline({"predictor": item})
    assert summary["protect_rtf_1thread"] == 1.2
    assert summary["protect_rtf_1thread_predictor_k0"] == 0.02
    assert summary["pgd_speed_ratio_current"] == 0.2
    assert summary["pgd_speed_ratio_predictor_k0"] == 9.0
    assert summary["protect_rtf_1thread_predictor_k1"] is None
    assert "not run" in run_all.headline({})["protect_rtf_1thread_reason"]


def test_the_benchmark_says_what_to_run_without_a_trained_predictor(tmp_runs):
    from benchmarks import bench_predictor, common

    with pytest.raises(common.Unavailable, match="STUDY=95_code_predictor"):
        bench_predictor.run(quick=False, encoder_name="random-conv")
    quick = bench_predictor.run(quick=True, encoder_name="random-conv")  # fresh: timings only
    assert "freshly initialised" in quick["predictor"] and quick["pieces_equal_whole"]
    assert quick["protect_rtf_1thread_predictor_k0"] < quick["protect_rtf_1thread"]
    variants = {"current", *(f"predictor_k{k}" for k in bench_predictor.REFINE_STEPS)}
    assert quick["threads"] == 1 and set(quick["rows"]) == variants
