"""The speechocean762 source: download (real local HTTP server), build from the SLR101 layout,
the shipped speaker selection, and no path outside the repository."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from spkadv.data import corpus, speechocean762
from spkadv.data import manifest as data
from spkadv.data.download import DownloadError

from .http_server import RangeServer

REPO = Path(__file__).resolve().parents[1]

# speaker -> (gender, age, subset in the test selection or None, Kaldi split); 0001/0002 are
# children, 0105 an adult left out of the selection
SPEAKERS = {
    "0001": ("m", 6, None, "train"),
    "0002": ("f", 8, None, "test"),
    "0101": ("m", 25, "eval", "test"),
    "0102": ("f", 30, "eval", "train"),
    "0103": ("m", 40, "train", "train"),
    "0104": ("f", 22, "dev", "test"),
    "0105": ("f", 19, None, "train"),
}
UTTS = 3


def _wav(seconds: float, sr: int, channels: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    x = 0.1 * rng.standard_normal((int(seconds * sr), channels)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, sr, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def make_archive(path: Path, drop: str = "") -> bytes:
    """A small speechocean762.tar.gz with the real layout; returns its bytes."""
    kaldi = {
        split: {n: [] for n in speechocean762.slr101.KALDI_FILES} for split in ("train", "test")
    }
    members: dict[str, bytes] = {}
    for k, (spk, (gender, age, _, split)) in enumerate(SPEAKERS.items()):
        kaldi[split]["spk2gender"].append(f"{spk}\t{gender}")
        kaldi[split]["spk2age"].append(f"{spk}\t{age}")
        for j in range(UTTS):
            utt = f"0{spk}{j:04d}"
            rel = f"WAVE/SPEAKER{spk}/{utt}.WAV"
            # one speaker recorded at 44.1 kHz stereo: the build converts to 16 kHz mono
            sr, ch = (44100, 2) if spk == "0102" else (16000, 1)
            members[f"speechocean762/{rel}"] = _wav(0.5 + 0.1 * j, sr, ch, seed=10 * k + j)
            kaldi[split]["wav.scp"].append(f"{utt}\t{rel}")
            kaldi[split]["text"].append(f"{utt}\tword{j}  of speaker {spk}")
            kaldi[split]["utt2spk"].append(f"{utt}\t{spk}")
    for split, files in kaldi.items():
        for name, lines in files.items():
            if f"{split}/{name}" != drop:
                members[f"speechocean762/{split}/{name}"] = ("\n".join(lines) + "\n").encode()
    members["speechocean762/README.md"] = b"speechocean762\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def write_test_selection(path: Path) -> Path:
    rows = [
        {"speaker": s, "gender": g.upper(), "age": a, "subset": sub}
        for s, (g, a, sub, _) in SPEAKERS.items()
        if sub is not None
    ]
    sel = speechocean762._ordered(pd.DataFrame(rows))
    return speechocean762.write_selection(sel, path)


@pytest.fixture
def small(tmp_path, monkeypatch):
    """The module pointed at a test selection and a small archive (md5 and size of its bytes)."""
    monkeypatch.delenv(speechocean762.ENV_VAR, raising=False)
    monkeypatch.setattr(
        speechocean762, "SELECTION_FILE", write_test_selection(tmp_path / "sel.tsv")
    )
    body = make_archive(tmp_path / "src" / speechocean762.ARCHIVE_NAME)
    monkeypatch.setattr(speechocean762, "SPEECHOCEAN762_MD5", hashlib.md5(body).hexdigest())
    monkeypatch.setattr(speechocean762, "SPEECHOCEAN762_SIZE", len(body))
    return body


def check_built(manifest: pd.DataFrame, corpus_dir: Path | None = None) -> None:
    """The manifest of the test selection: speakers, subsets, order, transcripts, 16 kHz FLAC."""
    assert list(manifest.columns) == list(data.MANIFEST_COLUMNS)
    by_spk = manifest.groupby("speaker", sort=False)["subset"].first()
    assert by_spk.to_dict() == {"0101": "eval", "0102": "eval", "0103": "train", "0104": "dev"}
    assert list(by_spk.index) == ["0101", "0102", "0103", "0104"]  # eval, train, dev as the copy
    assert (manifest.groupby("speaker").size() == UTTS).all()
    assert set(manifest["gender"]) == {"M", "F"} and set(manifest["set"]) == {"speechocean762"}
    row = manifest.set_index("utt_id").loc["001030001"]
    assert row["transcript"] == "WORD1 OF SPEAKER 0103" and row["subset"] == "train"
    for path in manifest["path"]:
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
        if corpus_dir is not None:
            assert Path(path).is_relative_to(corpus_dir / "audio")
    assert manifest.loc[manifest["utt_id"] == "001020002", "duration"].item() == pytest.approx(0.7)


def test_download_resumes_a_partial_file_and_builds_the_selection(tmp_path, small, monkeypatch):
    root, out = tmp_path / "data" / "speechocean762", tmp_path / "run" / "corpus"
    part = root / f"{speechocean762.ARCHIVE_NAME}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(small[: len(small) // 3])  # an earlier run was interrupted here
    with RangeServer({speechocean762.ARCHIVE_NAME: small}) as server:
        monkeypatch.setattr(
            speechocean762,
            "SPEECHOCEAN762_URL",
            f"{server.url}/resources/101/{speechocean762.ARCHIVE_NAME}",
        )
        manifest, info = corpus.prepare_corpus(
            out, "speechocean762", root=root, speechocean762_download=True, progress=False
        )
        assert server.requests == [
            (f"/resources/101/{speechocean762.ARCHIVE_NAME}", f"bytes={len(small) // 3}-")
        ]
        again, info2 = corpus.prepare_corpus(out, "speechocean762", root=root, progress=False)
        assert len(server.requests) == 1  # reused: nothing fetched or read again
    assert (root / speechocean762.ARCHIVE_NAME).read_bytes() == small and not part.exists()
    check_built(manifest, out)
    assert not info["reused"] and info2["reused"] and info["origin"] == "archive"
    assert info["archive_md5"] == hashlib.md5(small).hexdigest() and info["converted_files"] == 12
    pd.testing.assert_frame_equal(manifest, again)
    # dev rows are carried, read back, and left out of the trials and the train/eval summary
    back = data.read_manifest(out / "manifest.tsv")
    assert set(back["subset"]) == {"train", "dev", "eval"}
    trials = data.make_trials(back, nontargets=2)
    eval_utts = set(back.loc[back["subset"] == "eval", "utt_id"])
    assert set(trials["test"]) == eval_utts and set(trials["enrol"]) <= eval_utts
    summary = corpus.corpus_summary(back)
    assert summary["train_speakers"] == 1 and summary["eval_utterances"] == 2 * UTTS
    assert summary["dev_speakers"] == 1 and summary["shared_speakers_dev_train_eval"] == 0


def test_download_resumes_within_a_call_and_rejects_a_bad_md5_or_size(tmp_path, small, monkeypatch):
    with RangeServer({speechocean762.ARCHIVE_NAME: small}, truncate_first=True) as server:
        monkeypatch.setattr(
            speechocean762,
            "SPEECHOCEAN762_URL",
            f"{server.url}/resources/101/{speechocean762.ARCHIVE_NAME}",
        )
        path = speechocean762.download_archive(tmp_path / "a", progress=False)
        assert path.read_bytes() == small and server.requests[-1][1] == f"bytes={len(small) // 2}-"
        monkeypatch.setattr(speechocean762, "SPEECHOCEAN762_MD5", "0" * 32)
        with pytest.raises(
            DownloadError, match="md5 .* != published 0+; the partial file was deleted"
        ):
            speechocean762.download_archive(tmp_path / "b", progress=False)
        assert list((tmp_path / "b").iterdir()) == []
        monkeypatch.setattr(speechocean762, "SPEECHOCEAN762_MD5", None)
        monkeypatch.setattr(speechocean762, "SPEECHOCEAN762_SIZE", len(small) + 1)
        with pytest.raises(DownloadError, match=rf"{len(small)} bytes, expected {len(small) + 1}"):
            speechocean762.download_archive(tmp_path / "c", progress=False)
        assert list((tmp_path / "c").iterdir()) == []
        # an archive already there that fails its check is reported, never deleted
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / speechocean762.ARCHIVE_NAME).write_bytes(small)
        with pytest.raises(data.CorpusError, match="incomplete or not the SLR101 archive"):
            speechocean762.download_archive(tmp_path / "d", progress=False)
        assert (tmp_path / "d" / speechocean762.ARCHIVE_NAME).read_bytes() == small


def test_local_archive_extracted_archive_and_environment_variable_agree(
    tmp_path, small, monkeypatch
):
    archive = tmp_path / "src" / speechocean762.ARCHIVE_NAME
    stamp = archive.stat().st_mtime_ns
    m1, info = corpus.prepare_corpus(
        tmp_path / "r1", "speechocean762", speechocean762_archive=archive, progress=False
    )
    check_built(m1, tmp_path / "r1")
    assert archive.read_bytes() == small and archive.stat().st_mtime_ns == stamp  # input untouched
    # an interrupted build (manifest not yet written) keeps the audio it converted
    (tmp_path / "r1" / "manifest.tsv").unlink()
    Path(m1["path"].iloc[0]).unlink()
    m3, info3 = corpus.prepare_corpus(
        tmp_path / "r1", "speechocean762", speechocean762_archive=archive, progress=False
    )
    assert not info3["reused"] and info3["converted_files"] == 1
    pd.testing.assert_frame_equal(m1, m3)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    monkeypatch.setenv(speechocean762.ENV_VAR, str(tmp_path / "x"))  # finds x/speechocean762/
    m2, info2 = corpus.prepare_corpus(tmp_path / "r2", "speechocean762", progress=False)
    check_built(m2, tmp_path / "r2")
    assert info2["origin"] == "extracted"
    cols = ["utt_id", "speaker", "gender", "subset", "transcript", "duration"]
    pd.testing.assert_frame_equal(m1[cols], m2[cols])
    for a, b in zip(m1["path"], m2["path"], strict=True):
        assert np.array_equal(sf.read(a)[0], sf.read(b)[0])


def test_missing_corpus_bad_archive_and_other_selection_say_what_to_do(
    tmp_path, small, monkeypatch
):
    with pytest.raises(data.CorpusError, match="no corpus at .*SPEECHOCEAN762_DOWNLOAD = True"):
        corpus.prepare_corpus(
            tmp_path / "o", "speechocean762", root=tmp_path / "none", progress=False
        )
    with pytest.raises(data.CorpusError, match="SPEECHOCEAN762_ARCHIVE .*: no such file"):
        speechocean762.locate(archive=tmp_path / "absent.tar.gz")
    short = tmp_path / "short" / speechocean762.ARCHIVE_NAME
    short.parent.mkdir()
    short.write_bytes(small[:-10])
    with pytest.raises(data.CorpusError, match="bytes, expected"):
        speechocean762.locate(root=short.parent)
    assert short.exists()
    monkeypatch.setattr(speechocean762, "SPEECHOCEAN762_MD5", None)
    monkeypatch.setattr(speechocean762, "SPEECHOCEAN762_SIZE", None)
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(small[: len(small) // 2])
    with pytest.raises(data.CorpusError, match="unreadable archive"):
        speechocean762.build_manifest(
            speechocean762.locate(archive=broken), tmp_path / "a", progress=False
        )
    make_archive(tmp_path / "nok" / speechocean762.ARCHIVE_NAME, drop="test/spk2age")
    with pytest.raises(
        data.CorpusError, match="test/spk2age not found; expected the SLR101 layout"
    ):
        corpus.prepare_corpus(
            tmp_path / "o2", "speechocean762", root=tmp_path / "nok", progress=False
        )
    sel = speechocean762.read_selection()
    sel.loc[sel["speaker"] == "0103", "gender"] = "F"
    speechocean762.write_selection(sel, speechocean762.SELECTION_FILE)
    with pytest.raises(
        data.CorpusError, match="speaker 0103 is M aged '40' here .*not the SLR101 archive"
    ):
        speechocean762.build_manifest(
            speechocean762.locate(archive=tmp_path / "src" / speechocean762.ARCHIVE_NAME),
            tmp_path / "a2",
            progress=False,
        )


def make_selection_copy(folder: Path, subset_of_0103: str = "train") -> Path:
    """An extracted selection as the local copy is laid out: manifest.tsv and manifest-dev.tsv."""
    header = "utt_id\tspeaker\tgender\tage\tsubset\tpath\tduration_s\ttext"
    lines = {"manifest.tsv": [header], "manifest-dev.tsv": [header]}
    for spk, (gender, age, subset, _) in SPEAKERS.items():
        if subset is None:
            continue
        subset = subset_of_0103 if spk == "0103" else subset
        for j in range(UTTS):
            rel = f"{subset}/{spk}/0{spk}{j:04d}.flac"
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(folder / rel, np.zeros(8000, np.float32) + 0.01, 16000, format="FLAC")
            name = "manifest-dev.tsv" if subset == "dev" else "manifest.tsv"
            lines[name].append(
                f"0{spk}{j:04d}\t{spk}\t{gender.upper()}\t{age}\t{subset}\t{rel}\t0.5\tW {j}"
            )
    for name, rows in lines.items():
        (folder / name).write_text("\n".join(rows) + "\n")
    return folder


def test_extracted_selection_is_read_in_place_with_its_dev_speakers(tmp_path, small):
    copy = make_selection_copy(tmp_path / "copy")
    manifest, info = corpus.prepare_corpus(
        tmp_path / "o", "speechocean762", root=copy, progress=False
    )
    assert info["origin"] == "selection" and not (tmp_path / "o" / "audio").exists()
    assert manifest.groupby("speaker", sort=False)["subset"].first().to_dict() == {
        "0101": "eval",
        "0102": "eval",
        "0103": "train",
        "0104": "dev",
    }
    assert all(Path(p).is_relative_to(copy) for p in manifest["path"])
    bad = make_selection_copy(tmp_path / "bad", subset_of_0103="eval")
    with pytest.raises(
        data.CorpusError, match=r"not the project's speechocean762 selection.*\['0103'\]"
    ):
        corpus.prepare_corpus(tmp_path / "o2", "speechocean762", root=bad, progress=False)
    # the selection file is regenerated from such a copy by the module's command line
    out = tmp_path / "regenerated.tsv"
    assert speechocean762.main(["selection", "--from", str(copy), "--out", str(out)]) == 0
    assert out.read_text() == speechocean762.SELECTION_FILE.read_text()
    assert speechocean762.main(["selection", "--from", str(tmp_path / "none")]) == 1


def test_shipped_selection_is_112_adults_disjoint_by_subset():
    sel = speechocean762.read_selection()
    counts = sel.groupby(["subset", "gender"]).size().to_dict()
    assert counts == {
        ("dev", "F"): 16,
        ("dev", "M"): 16,
        ("eval", "F"): 20,
        ("eval", "M"): 20,
        ("train", "F"): 20,
        ("train", "M"): 20,
    }
    assert (sel["age"] >= 18).all() and sel["speaker"].is_unique
    assert list(sel["subset"].drop_duplicates()) == ["eval", "train", "dev"]


def test_shipped_selection_equals_the_local_copy(shared_corpus, tmp_path):
    copy = speechocean762.selection_from_copy(shared_corpus)
    pd.testing.assert_frame_equal(copy.reset_index(drop=True), speechocean762.read_selection())
    # and the source reads that copy in place: train, dev and eval rows, 20 utterances each
    manifest, info = corpus.prepare_corpus(
        tmp_path / "o", "speechocean762", root=shared_corpus, progress=False
    )
    assert info["origin"] == "selection" and info["skipped"] == []
    assert manifest["subset"].value_counts().to_dict() == {"eval": 800, "train": 800, "dev": 640}
    assert list(manifest["subset"].drop_duplicates()) == ["eval", "train", "dev"]


_OUTSIDE = re.compile(r"(?:\.\./)+[A-Za-z0-9_.-][A-Za-z0-9_./-]*")
_ABSOLUTE = re.compile(r"(?<![\w.:/~-])/(?:home|Users|work|mnt|media|scratch)/[A-Za-z0-9_.-]+")


def test_no_file_references_a_path_outside_the_repository():
    found = []
    for top in ("notebooks", "lib", "params", "docs"):
        for path in sorted((REPO / top).rglob("*")):
            rel_parts = path.relative_to(REPO).parts
            if not path.is_file() or any(
                p.endswith(".egg-info") or p in ("__pycache__", ".ipynb_checkpoints")
                for p in rel_parts
            ):
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
            for match in _OUTSIDE.finditer(text):
                ref = match.group(0)
                # notebooks and params take paths from the repository root, the rest (and tool
                # configuration such as notebooks/ruff.toml) from their folder
                from_root = top in ("notebooks", "params") and path.suffix != ".toml"
                bases = [path.parent] + ([REPO] if from_root else [])
                if "../shared" in ref or any(
                    not (base / ref).resolve().is_relative_to(REPO) for base in bases
                ):
                    found.append(f"{path.relative_to(REPO)}: {ref}")
            found += [f"{path.relative_to(REPO)}: {m.group(0)}" for m in _ABSOLUTE.finditer(text)]
    assert found == []
