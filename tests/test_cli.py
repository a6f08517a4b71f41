"""The ``spkadv`` command: round trip, fingerprint refusal, inputs never overwritten, folders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from spkadv.audio import sidecar
from spkadv.base import allocator
from spkadv.cli import main as cli
from spkadv.core import modelfile
from spkadv.core.models import RemovalModule, SSEDConfig, SSEDGenerator

CONFIG = SSEDConfig(width=4, stages=2, res_blocks=1, level_window=101)


@pytest.fixture
def models(tmp_path: Path) -> tuple[Path, Path]:
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(
            modelfile.save_model(
                tmp_path / f"model{seed}.pt", SSEDGenerator(CONFIG), RemovalModule(CONFIG), 0.05
            )
        )
    return paths[0], paths[1]


def _wav(path: Path, length: int = 8_001, seed: int = 0) -> Path:
    x = 0.1 * np.random.default_rng(seed).standard_normal(length)
    sf.write(path, x.astype(np.float32), 16_000, subtype="PCM_16")
    return path


def test_round_trip_on_an_odd_length_file(tmp_path: Path, models, capsys) -> None:
    src = _wav(tmp_path / "speech ünï.wav", 8_001)
    before = src.read_bytes()
    adv, rst = tmp_path / "adv.wav", tmp_path / "rst.wav"
    assert (
        cli.main(["protect", str(src), "-o", str(adv), "--model", str(models[0]), "--quiet"]) == 0
    )
    assert (
        cli.main(["restore", str(adv), "-o", str(rst), "--model", str(models[0]), "--quiet"]) == 0
    )
    x, _ = sf.read(src, dtype="float32")
    y, sr = sf.read(adv, dtype="float32")
    info = sf.info(str(adv))
    assert len(y) == len(x) == 8_001 and sr == 16_000 and info.subtype == "PCM_16"
    r, _ = sf.read(rst, dtype="float32")
    assert len(r) == 8_001 and sf.info(str(rst)).subtype == "FLOAT"
    assert 0 < np.abs(y - x).max() <= 0.05 + 1 / 32768
    assert sidecar.read_tag(adv) == modelfile.load_model(models[0]).fingerprint
    assert src.read_bytes() == before
    assert (
        cli.main(
            [
                "restore",
                str(adv),
                "-o",
                str(tmp_path / "ref.wav"),
                "--model",
                str(models[0]),
                "--refine",
                "3",
                "--quiet",
            ]
        )
        == 0
    )


def _restore(src: Path, out: Path, model: Path, *extra: str) -> int:
    return cli.main(["restore", str(src), "-o", str(out), "--model", str(model), "--quiet", *extra])


def test_restore_refuses_a_file_protected_by_another_model(tmp_path: Path, models, capsys) -> None:
    src = _wav(tmp_path / "a.wav")
    adv = tmp_path / "adv.wav"
    cli.main(["protect", str(src), "-o", str(adv), "--model", str(models[0]), "--quiet"])
    capsys.readouterr()
    assert _restore(adv, tmp_path / "r.wav", models[1]) == 1
    err = capsys.readouterr().err
    assert "protected by another model" in err and not (tmp_path / "r.wav").exists()
    # a file without sidecar is refused unless asked
    assert _restore(src, tmp_path / "r.wav", models[0]) == 1
    assert "no fingerprint sidecar" in capsys.readouterr().err
    assert _restore(src, tmp_path / "r.wav", models[0], "--ignore-fingerprint") == 0


def test_input_is_never_overwritten(tmp_path: Path, models, capsys, monkeypatch) -> None:
    src = _wav(tmp_path / "a.wav")
    before = src.read_bytes()
    assert cli.main(["protect", str(src), "-o", str(src), "--model", str(models[0])]) == 2
    monkeypatch.chdir(tmp_path)
    assert (
        cli.main(
            [
                "protect",
                "a.wav",
                "-o",
                str(tmp_path / "." / "sub" / ".." / "a.wav"),
                "--model",
                str(models[0]),
            ]
        )
        == 2
    )
    assert "is the input itself" in capsys.readouterr().err
    assert src.read_bytes() == before
    out = tmp_path / "adv.wav"
    assert cli.main(["protect", "a.wav", "-o", str(out), "--model", str(models[0]), "--quiet"]) == 0
    assert cli.main(["protect", "a.wav", "-o", str(out), "--model", str(models[0]), "--quiet"]) == 1
    assert "pass --overwrite" in capsys.readouterr().err
    assert (
        cli.main(
            [
                "protect",
                "a.wav",
                "-o",
                str(out),
                "--model",
                str(models[0]),
                "--quiet",
                "--overwrite",
            ]
        )
        == 0
    )


def test_folder_run_reports_each_file_and_goes_on(tmp_path: Path, models, capsys) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    _wav(folder / "one.wav", 3_001)
    _wav(folder / "sub" / "two.wav", 5_000, seed=1)
    (folder / "broken.wav").write_bytes(b"RIFF garbage")
    out = tmp_path / "out"
    assert (
        cli.main(["protect", str(folder), "-o", str(out), "--model", str(models[0]), "--quiet"])
        == 1
    )
    captured = capsys.readouterr()
    assert "FAILED" in captured.err and "broken.wav" in captured.err
    assert (out / "one.wav").exists() and (out / "sub" / "two.wav").exists()
    assert "2 of 3 file(s) done, 1 failed" in captured.out
    assert (
        cli.main(["protect", str(folder), "-o", str(folder / "x"), "--model", str(models[0])]) == 2
    )
    assert "inside the input folder" in capsys.readouterr().err


def test_bad_model_file_is_reported(tmp_path: Path, capsys) -> None:
    src = _wav(tmp_path / "a.wav")
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"nope")
    assert cli.main(["protect", str(src), "-o", str(tmp_path / "b.wav"), "--model", str(bad)]) == 2
    assert "model.pt" in capsys.readouterr().err


def test_low_memory_flag_sets_the_allocator_and_keeps_the_output(
    tmp_path: Path, models, monkeypatch
) -> None:
    calls = []
    monkeypatch.setattr(allocator, "low_memory", lambda: calls.append(1) or True)
    src = _wav(tmp_path / "x.wav", 12_345)
    outs = []
    for extra in ([], ["--low-memory"]):
        out = tmp_path / f"adv{len(extra)}.wav"
        args = ["protect", str(src), "-o", str(out), "--model", str(models[0]), "--quiet", *extra]
        assert cli.main(args) == 0
        outs.append(out.read_bytes())
    assert calls == [1]  # only with the flag
    assert outs[0] == outs[1]


def test_inputs_sharing_an_output_name_are_refused_before_writing(
    tmp_path: Path, models, capsys
) -> None:
    folder = tmp_path / "col"
    (folder / "sub").mkdir(parents=True)
    _wav(folder / "a.wav", 3_001)
    sf.write(folder / "a.flac", np.zeros(3_001, np.float32), 16_000)  # also becomes a.wav
    _wav(folder / "sub" / "b.wav", 3_001)
    out = tmp_path / "out"
    out.mkdir()
    args = ["protect", str(folder), "-o", str(out), "--model", str(models[0]), "--quiet"]
    assert cli.main([*args, "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "a.flac" in err and "a.wav" in err and "same output" in err and "sub" not in err
    assert not any(out.iterdir())  # nothing written, not even the files without a clash


def test_protect_writes_audio_and_sidecar_as_a_pair(
    tmp_path: Path, models, capsys, monkeypatch
) -> None:
    src = _wav(tmp_path / "a.wav")
    out = tmp_path / "out" / "adv.wav"

    def fail(*args, **kwargs):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(sidecar, "write_tag", fail)  # fails after the audio is written
    assert (
        cli.main(["protect", str(src), "-o", str(out), "--model", str(models[0]), "--quiet"]) == 1
    )
    assert "disk full (injected)" in capsys.readouterr().err
    assert list(out.parent.iterdir()) == []  # neither the audio nor its sidecar, no temporaries
    monkeypatch.undo()
    assert (
        cli.main(["protect", str(src), "-o", str(out), "--model", str(models[0]), "--quiet"]) == 0
    )
    assert sorted(p.name for p in out.parent.iterdir()) == ["adv.wav", "adv.wav.spkadv.json"]


def test_a_failed_overwrite_keeps_the_old_pair(tmp_path: Path, models, monkeypatch) -> None:
    src = _wav(tmp_path / "a.wav")
    out = tmp_path / "adv.wav"
    args = ["protect", str(src), "-o", str(out), "--model", str(models[0]), "--quiet"]
    assert cli.main(args) == 0
    before = out.read_bytes(), sidecar.tag_path(out).read_bytes()

    def fail(*args, **kwargs):
        raise OSError("interrupted (injected)")

    monkeypatch.setattr(sidecar, "write_tag", fail)
    assert (
        cli.main(["protect", str(_wav(tmp_path / "b.wav", seed=3)), *args[2:], "--overwrite"]) == 1
    )
    assert (out.read_bytes(), sidecar.tag_path(out).read_bytes()) == before


def _code_model(path: Path) -> Path:
    config = SSEDConfig(width=4, stages=2, res_blocks=1, level_window=101, code_film=True)
    torch.manual_seed(0)
    meta = {"encoder": "random-conv", "code_steps": 1, "code_radius": 2.0}
    return modelfile.save_model(path, SSEDGenerator(config), RemovalModule(config), 0.05, meta)


def test_restore_without_the_code_warns_that_it_uses_the_zero_code(
    tmp_path: Path, models, capsys
) -> None:
    model = _code_model(tmp_path / "code.pt")
    src, adv = _wav(tmp_path / "a.wav"), tmp_path / "adv.wav"
    assert cli.main(["protect", str(src), "-o", str(adv), "--model", str(model), "--quiet"]) == 0
    assert sidecar.read_code(adv) is not None
    sidecar.tag_path(adv).unlink()  # the sidecar got lost
    capsys.readouterr()
    assert _restore(adv, tmp_path / "r.wav", model, "--ignore-fingerprint") == 0
    err = capsys.readouterr().err
    assert "WARNING" in err and "ZERO protection code" in err and "NOT removed" in err
    # a model without a code has nothing to warn about beyond the missing sidecar
    assert _restore(src, tmp_path / "r2.wav", models[0], "--ignore-fingerprint") == 0
    assert "ZERO" not in capsys.readouterr().err


def test_restore_with_another_models_sidecar_warns(tmp_path: Path, models, capsys) -> None:
    src, adv = _wav(tmp_path / "a.wav"), tmp_path / "adv.wav"
    cli.main(["protect", str(src), "-o", str(adv), "--model", str(models[0]), "--quiet"])
    capsys.readouterr()
    assert _restore(adv, tmp_path / "r.wav", models[1], "--ignore-fingerprint") == 0
    err = capsys.readouterr().err
    assert "WARNING" in err and "protected by another model" in err


def test_restore_over_a_protected_file_removes_its_stale_sidecar(
    tmp_path: Path, models, capsys
) -> None:
    src, adv = _wav(tmp_path / "a.wav"), tmp_path / "adv.wav"
    cli.main(["protect", str(src), "-o", str(adv), "--model", str(models[0]), "--quiet"])
    out = tmp_path / "out.wav"
    cli.main(["protect", str(src), "-o", str(out), "--model", str(models[0]), "--quiet"])
    assert sidecar.tag_path(out).exists()
    assert _restore(adv, out, models[0], "--overwrite") == 0
    assert not sidecar.tag_path(out).exists()  # out is restored audio, no longer protected
    assert _restore(out, tmp_path / "again.wav", models[0]) == 1  # and restore says so
    assert "no fingerprint sidecar" in capsys.readouterr().err


def test_parsing_the_command_line_does_not_import_torch() -> None:
    # the thread policy must be set before torch starts (spkadv.base.threads)
    code = (
        "import sys; from spkadv.cli import main; "
        "main._parser().parse_args(['protect', 'a.wav', '-o', 'b.wav', '--model', 'm.pt']); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
