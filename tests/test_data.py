"""Corpus readers, trial lists and the LibriSpeech download path (local server, no network)."""

from __future__ import annotations

import hashlib
import io
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from spkadv.data import corpus, download, librispeech, synth
from spkadv.data import manifest as data

from .http_server import RangeServer

SR = 16000


def tone(path: Path, seconds: float = 1.0, freq: float = 200.0, fmt: str = "WAV") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    sf.write(str(path), 0.1 * np.sin(2 * np.pi * freq * t).astype(np.float32), SR, format=fmt)
    return path


# ----------------------------------------------------------------------------- LibriSpeech layout


def make_librispeech(
    root: Path, eval_per_gender: int = 3, utts: int = 3, dev_per_gender: int = 0
) -> Path:
    """A LibriSpeech root: train-clean-100, test-clean and dev-clean (and dev-other, the held-out
    dev speakers, with ``dev_per_gender``), every speaker in one subset only, as in LibriSpeech."""
    lines = [";ID  |SEX| SUBSET           |MINUTES| NAME", ";comment line"]
    spk_id = 100
    for subset, per_gender in (
        ("train-clean-100", 1),
        ("test-clean", eval_per_gender),
        ("dev-clean", eval_per_gender),
        ("dev-other", dev_per_gender),
    ):
        for gender in ("M", "F"):
            for _ in range(per_gender):
                spk_id += 1
                lines.append(f"{spk_id:<5}| {gender} | {subset:<17}| 25.0 | Reader {spk_id}")
                chapter = root / subset / str(spk_id) / "7"
                trans = []
                for k in range(utts):
                    utt = f"{spk_id}-7-{k:04d}"
                    tone(chapter / f"{utt}.flac", 0.5 + 0.1 * k, 100 + spk_id, fmt="FLAC")
                    trans.append(f"{utt} hello world number {k}")
                (chapter / f"{spk_id}-7.trans.txt").write_text("\n".join(trans) + "\n")
    (root / "SPEAKERS.TXT").write_text("\n".join(lines) + "\n")
    return root


def test_librispeech_layout_reads_and_picks_seeded_speakers(tmp_path):
    root = make_librispeech(tmp_path / "LibriSpeech")
    m1, skipped = librispeech.load_librispeech(
        root, ["train-clean-100"], ["test-clean", "dev-clean"], 2, seed=1, progress=False
    )
    m2, _ = librispeech.load_librispeech(
        root, ["train-clean-100"], ["test-clean", "dev-clean"], 2, seed=1, progress=False
    )
    assert skipped == []
    pd.testing.assert_frame_equal(m1, m2)
    assert list(m1.columns) == list(data.MANIFEST_COLUMNS)
    ev = m1[m1["subset"] == "eval"]
    for s in ("test-clean", "dev-clean"):
        genders = ev[ev["set"] == s].groupby("speaker")["gender"].first()
        assert (genders == "M").sum() == 2 and (genders == "F").sum() == 2
    assert set(m1.loc[m1["subset"] == "train", "set"]) == {"train-clean-100"}
    assert m1["transcript"].str.isupper().all() and m1["transcript"].iloc[0].startswith(
        "HELLO WORLD"
    )
    assert all(Path(p).is_absolute() for p in m1["path"])
    assert m1["duration"].min() == pytest.approx(0.5, abs=1e-3)
    seeds = {
        tuple(
            sorted(
                librispeech.load_librispeech(root, [], ["test-clean"], 2, seed=s, progress=False)[
                    0
                ]["speaker"].unique()
            )
        )
        for s in range(6)
    }
    assert len(seeds) > 1  # the seed changes the choice


def test_librispeech_dev_speakers_are_held_out_and_checked(tmp_path):
    root = make_librispeech(tmp_path / "LibriSpeech", eval_per_gender=2, utts=2, dev_per_gender=3)
    load = lambda **kw: librispeech.load_librispeech(  # noqa: E731
        root, ["train-clean-100"], ["test-clean"], 2, seed=0, progress=False, **kw
    )
    without, _ = load()
    manifest, _ = load(dev_subset="dev-other", dev_speakers_per_gender=2)
    dev = manifest[manifest["subset"] == "dev"]
    genders = dev.groupby("speaker")["gender"].first()
    assert (genders == "M").sum() == 2 and (genders == "F").sum() == 2
    assert set(dev["set"]) == {"dev-other"} and len(dev) == 4 * 2
    assert set(dev["speaker"]).isdisjoint(manifest.loc[manifest["subset"] != "dev", "speaker"])
    # the train and eval rows are those of a corpus without dev speakers
    pd.testing.assert_frame_equal(manifest[manifest["subset"] != "dev"], without)
    with pytest.raises(data.CorpusError, match="also a train or eval subset"):
        load(dev_subset="test-clean", dev_speakers_per_gender=1)
    with pytest.raises(data.CorpusError, match="has 3 M speakers; need 4"):
        load(dev_subset="dev-other", dev_speakers_per_gender=4)
    bare = make_librispeech(tmp_path / "bare" / "LibriSpeech", eval_per_gender=2, utts=2)
    with pytest.raises(data.CorpusError, match="dev subset 'dev-other'.*LIBRISPEECH_DEV_SUBSET"):
        librispeech.load_librispeech(
            bare, [], ["test-clean"], 2, progress=False, dev_subset="dev-other",
            dev_speakers_per_gender=2,
        )  # fmt: skip


def test_librispeech_missing_root_and_subset_say_what_is_expected(tmp_path):
    with pytest.raises(data.CorpusError, match="SPEAKERS.TXT.*openslr.org/12"):
        librispeech.load_librispeech(
            tmp_path / "nothing", ["train-clean-100"], ["test-clean"], progress=False
        )
    root = make_librispeech(tmp_path / "LibriSpeech")
    with pytest.raises(data.CorpusError, match=r"\['train-clean-360'\] missing"):
        librispeech.load_librispeech(root, ["train-clean-360"], ["test-clean"], 2, progress=False)
    with pytest.raises(data.CorpusError, match="has 3 M speakers; need 5"):
        librispeech.load_librispeech(root, [], ["test-clean"], 5, progress=False)


def test_librispeech_empty_file_is_reported_and_excluded(tmp_path):
    root = make_librispeech(tmp_path / "LibriSpeech", eval_per_gender=2)
    bad = sorted((root / "test-clean").rglob("*.flac"))[0]
    bad.write_bytes(b"")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        manifest, skipped = librispeech.load_librispeech(
            root, [], ["test-clean"], 2, progress=False
        )
    assert len(skipped) == 1 and str(bad) in skipped[0] and "empty" in skipped[0]
    assert bad.stem not in set(manifest["utt_id"]) and len(manifest) == 2 * 2 * 3 - 1


# ----------------------------------------------------------------------------- manifest source

HEADER = "utt_id\tspeaker\tgender\tage\tsubset\tpath\tduration_s\ttext"


def make_manifest_corpus(root: Path, lines: list[str] | None = None) -> Path:
    if lines is None:
        lines = [HEADER]
        for spk, gender in (("a", "M"), ("b", "F")):
            for k in range(3):
                tone(root / "eval" / spk / f"{spk}{k}.flac", 1.0, fmt="FLAC")
                lines.append(
                    f"{spk}{k}\t{spk}\t{gender}\t30\teval\teval/{spk}/{spk}{k}.flac\t1.0\tsome words {k}"
                )
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_manifest_source_reads_and_maps_columns(tmp_path):
    root = make_manifest_corpus(tmp_path / "corpus")
    manifest, skipped = corpus.load_manifest_source(root, "myset", progress=False)
    assert skipped == [] and len(manifest) == 6
    assert set(manifest["set"]) == {"myset"} and manifest["transcript"].iloc[0] == "SOME WORDS 0"
    assert manifest["duration"].tolist() == pytest.approx([1.0] * 6)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("x\ta\tM\t30\teval\t../outside.flac\t1.0\tt", r":2: path '../outside.flac' escapes"),
        ("x\ta\tM\t30\teval\t/etc/passwd\t1.0\tt", r":2: path '/etc/passwd' escapes"),
        ("x\ta\tM\t30\teval\teval/nope.flac\t1.0\tt", r":2: audio file .*nope.flac does not exist"),
        ("x\ta\tQ\t30\teval\teval/nope.flac\t1.0\tt", r":2: gender 'Q'"),
        ("x\ta\tM\t30\ttest\teval/nope.flac\t1.0\tt", r":2: subset 'test'"),
        ("x\ta\tM\teval", r":2: 4 fields, header has 8"),
    ],
)
def test_manifest_source_bad_rows_fail_with_line_number(tmp_path, line, message):
    (tmp_path / "outside.flac").write_bytes(b"x")
    root = make_manifest_corpus(tmp_path / "corpus", [HEADER, line])
    with pytest.raises(data.CorpusError, match=message):
        corpus.load_manifest_source(root, "s", progress=False)


def test_manifest_source_bad_header_and_missing_root(tmp_path):
    root = make_manifest_corpus(
        tmp_path / "c1", [HEADER + "\tcolour", "x\ta\tM\t30\teval\tp\t1\tt\tred"]
    )
    with pytest.raises(data.CorpusError, match=r"manifest.tsv:1: unknown column\(s\) \['colour'\]"):
        corpus.load_manifest_source(root, "s", progress=False)
    root = make_manifest_corpus(tmp_path / "c2", ["utt_id\tspeaker\tsubset\tpath", "x\ta\teval\tp"])
    with pytest.raises(data.CorpusError, match=r":1: .*missing column\(s\) \['gender'\]"):
        corpus.load_manifest_source(root, "s", progress=False)
    with pytest.raises(data.CorpusError, match="not found; expected a folder holding manifest.tsv"):
        corpus.load_manifest_source(tmp_path / "none", "s", progress=False)


def test_manifest_source_reports_unreadable_audio(tmp_path):
    root = make_manifest_corpus(tmp_path / "corpus")
    (root / "eval" / "a" / "a1.flac").write_bytes(b"not audio at all")
    (root / "eval" / "b" / "b2.flac").write_bytes(b"")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        manifest, skipped = corpus.load_manifest_source(root, "s", progress=False)
    assert (
        len(skipped) == 2
        and any("a1.flac" in s for s in skipped)
        and any("b2.flac" in s for s in skipped)
    )
    assert {"a1", "b2"}.isdisjoint(manifest["utt_id"]) and len(manifest) == 4


def test_manifest_roundtrip_and_reader_checks(tmp_path):
    root = make_manifest_corpus(tmp_path / "corpus")
    manifest, _ = corpus.load_manifest_source(root, "s", progress=False)
    path = data.write_manifest(manifest, tmp_path / "m.tsv")
    back = data.read_manifest(path)
    pd.testing.assert_frame_equal(back, manifest.reset_index(drop=True), check_exact=False)
    text = path.read_text().splitlines()
    text[3] = text[3].replace("\tM\t", "\tX\t")
    (tmp_path / "bad.tsv").write_text("\n".join(text) + "\n")
    with pytest.raises(data.CorpusError, match=r"bad.tsv:4: gender 'X'"):
        data.read_manifest(tmp_path / "bad.tsv")
    with pytest.raises(data.CorpusError, match="run notebooks/00_data_prep"):
        data.read_manifest(tmp_path / "absent.tsv")


def test_prepare_corpus_reuses_a_matching_build(tmp_path):
    root = make_manifest_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    m1, info1 = corpus.prepare_corpus(out, "manifest", root=root, set_name="s", progress=False)
    m2, info2 = corpus.prepare_corpus(out, "manifest", root=root, set_name="s", progress=False)
    _, info3 = corpus.prepare_corpus(out, "manifest", root=root, set_name="other", progress=False)
    assert not info1["reused"] and info2["reused"] and not info3["reused"]
    pd.testing.assert_frame_equal(m1, m2)
    with pytest.raises(data.CorpusError, match="needs CORPUS_ROOT"):
        corpus.prepare_corpus(out, "manifest", progress=False)
    with pytest.raises(
        data.CorpusError, match="choose synthetic, manifest, speechocean762 or librispeech"
    ):
        corpus.prepare_corpus(out, "timit", progress=False)


def test_prepare_corpus_synthetic_resumes_or_starts_afresh(tmp_path, monkeypatch):
    calls = []

    def fake_build(config, out_dir, embed_fn=None, progress=True):
        calls.append(config.seed)
        wav = tone(out_dir / "audio" / "s" / f"u{config.seed}.wav", 0.5)
        rows = [
            {
                "utt_id": f"u{config.seed}",
                "speaker": "s",
                "gender": "M",
                "subset": "eval",
                "set": "synthetic",
                "path": str(wav),
                "duration": 0.5,
                "transcript": "A",
            }
        ]
        return pd.DataFrame(rows), {"candidates": 1}

    monkeypatch.setattr(synth, "build_corpus", fake_build)
    out = tmp_path / "corpus"
    stale = tone(out / "audio" / "old" / "x.wav")  # left by a build with other settings
    _, info = corpus.prepare_corpus(
        out, "synthetic", synth_config=synth.SynthConfig(seed=1), progress=False
    )
    assert not info["reused"] and not stale.exists() and info["candidates"] == 1
    assert info["build_minutes"] >= 0
    _, info = corpus.prepare_corpus(
        out, "synthetic", synth_config=synth.SynthConfig(seed=1, workers=1), progress=False
    )
    assert info["reused"] and calls == [1]  # the worker count does not change the corpus
    _, info = corpus.prepare_corpus(
        out, "synthetic", synth_config=synth.SynthConfig(seed=2), progress=False
    )
    assert not info["reused"] and calls == [1, 2] and not (out / "audio" / "s" / "u1.wav").exists()


# ----------------------------------------------------------------------------- trials


def eval_manifest(speakers_per_gender: int = 4, utts: int = 5, sets=("s1",)) -> pd.DataFrame:
    rows = []
    for s in sets:
        for g in ("M", "F"):
            for i in range(speakers_per_gender):
                for k in range(utts):
                    spk = f"{s}{g}{i}"
                    rows.append(
                        {
                            "utt_id": f"{spk}_{k}",
                            "speaker": spk,
                            "gender": g,
                            "subset": "eval",
                            "set": s,
                            "path": f"/x/{spk}_{k}.wav",
                            "duration": 3.0,
                            "transcript": "A",
                        }
                    )
    rows.append(
        {
            "utt_id": "tr_0",
            "speaker": "tr",
            "gender": "M",
            "subset": "train",
            "set": "t",
            "path": "/x/t.wav",
            "duration": 3.0,
            "transcript": "A",
        }
    )
    return pd.DataFrame(rows)


def test_trials_counts_genders_and_no_self_trials():
    manifest = eval_manifest(speakers_per_gender=4, utts=5, sets=("s1", "s2"))
    trials = data.make_trials(manifest, nontargets=6, seed=3)
    spk = manifest.set_index("utt_id")["speaker"]
    gen = manifest.set_index("utt_id")["gender"]
    n_eval = 2 * 2 * 4 * 5
    assert (trials["target"] == 1).sum() == n_eval and (trials["target"] == 0).sum() == n_eval * 6
    assert (trials["enrol"] != trials["test"]).all()
    assert (trials["enrol"].map(gen) == trials["test"].map(gen)).all()
    assert (trials["gender"] == trials["test"].map(gen)).all()
    same = trials["enrol"].map(spk) == trials["test"].map(spk)
    assert (same == (trials["target"] == 1)).all()
    # 6 non-targets over 3 other speakers: each other speaker exactly twice per test utterance
    per = (
        trials[trials["target"] == 0]
        .assign(es=lambda d: d["enrol"].map(spk))
        .groupby(["test", "es"])
        .size()
    )
    assert set(per) == {2}
    assert not trials.duplicated().any() and "tr_0" not in set(trials["enrol"]) | set(
        trials["test"]
    )
    assert set(trials["test"]) == set(manifest.loc[manifest["subset"] == "eval", "utt_id"])


def test_trials_are_seeded_and_cap_at_available_utterances():
    manifest = eval_manifest(speakers_per_gender=3, utts=4)
    a, b, c = (data.make_trials(manifest, 30, seed=s) for s in (1, 1, 2))
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    # 2 other speakers x 4 utterances = 8 possible non-target enrolments, not 30
    assert a[a["target"] == 0].groupby("test").size().max() == 8
    with pytest.raises(data.CorpusError, match="one utterance"):
        data.make_trials(eval_manifest(2, 1), 30, 0)


def test_trials_file_roundtrip_with_header(tmp_path):
    trials = data.make_trials(eval_manifest(2, 3), 30, 0)
    path = data.write_trials(trials, tmp_path / "trials.tsv", ["protocol: x", "seed: 0"])
    assert data.trial_header_lines(path) == ["protocol: x", "seed: 0"]
    pd.testing.assert_frame_equal(data.read_trials(path), trials)


def test_loo_identification():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 16))
    speakers = np.repeat(np.arange(5), 4)
    clean = centers[speakers] + 0.05 * rng.normal(size=(20, 16))
    assert corpus.loo_identification(speakers, clean) == 1.0
    noise = rng.normal(size=(200, 16))
    assert corpus.loo_identification(np.repeat(np.arange(50), 4), noise) < 0.3


# ----------------------------------------------------------------------------- download


def tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def test_download_resumes_an_interrupted_transfer(tmp_path):
    body = np.random.default_rng(0).bytes(300_000)
    md5 = hashlib.md5(body).hexdigest()
    with RangeServer({"a.bin": body}, truncate_first=True) as server:
        with pytest.raises(download.DownloadError, match="run again to resume"):
            download.download(
                f"{server.url}/a.bin", tmp_path / "a.bin", md5=md5, progress=False, retries=1
            )
        part = tmp_path / "a.bin.part"
        assert (
            part.exists()
            and 0 < part.stat().st_size < len(body)
            and not (tmp_path / "a.bin").exists()
        )
        out = download.download(f"{server.url}/a.bin", tmp_path / "a.bin", md5=md5, progress=False)
    assert out.read_bytes() == body and not part.exists()
    assert server.requests[-1][1] == f"bytes={len(body) // 2}-"


def test_download_retries_within_one_call_and_rejects_bad_checksum(tmp_path):
    body = b"0123456789" * 5000
    with RangeServer({"b.bin": body}, truncate_first=True) as server:
        download.download(
            f"{server.url}/b.bin",
            tmp_path / "b.bin",
            md5=hashlib.md5(body).hexdigest(),
            progress=False,
        )
        assert (tmp_path / "b.bin").read_bytes() == body and len(server.requests) == 2
        with pytest.raises(
            download.DownloadError, match="md5 .* != published 0+; the partial file was deleted"
        ):
            download.download(
                f"{server.url}/b.bin", tmp_path / "c.bin", md5="0" * 32, progress=False
            )
        assert not (tmp_path / "c.bin").exists() and not (tmp_path / "c.bin.part").exists()
        with pytest.raises(download.DownloadError, match="HTTP 404"):
            download.download(f"{server.url}/missing.bin", tmp_path / "d.bin", progress=False)


def test_safe_extract_refuses_escaping_members(tmp_path):
    evil = tmp_path / "evil.tar.gz"
    evil.write_bytes(tar_gz({"ok/a.txt": b"a", "../escape.txt": b"x"}))
    with pytest.raises(download.DownloadError, match="outside the destination"):
        download.safe_extract(evil, tmp_path / "dest")
    assert not (tmp_path / "escape.txt").exists()
    assert not (tmp_path / "dest" / "ok").exists()  # every member is checked before any is written
    for name, kind, target, message in (
        ("link", tarfile.SYMTYPE, "/etc/passwd", "'link' is a link to an absolute path"),
        ("ok/link", tarfile.SYMTYPE, "../../x", "'ok/link' would link to .* outside"),
        ("hard", tarfile.LNKTYPE, "../x", "'hard' would link to .* outside"),
        ("fifo", tarfile.FIFOTYPE, "", "'fifo' is a special file"),
    ):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            member = tarfile.TarInfo(name)
            member.type, member.linkname = kind, target
            tar.addfile(member)
        (tmp_path / "bad.tar.gz").write_bytes(buf.getvalue())
        with pytest.raises(download.DownloadError, match=message):
            download.safe_extract(tmp_path / "bad.tar.gz", tmp_path / "dest2")
    good = tmp_path / "good.tar.gz"
    good.write_bytes(tar_gz({"d/x.txt": b"hi", "/abs.txt": b"a"}))
    download.safe_extract(good, tmp_path / "dest3")
    assert (tmp_path / "dest3" / "d" / "x.txt").read_bytes() == b"hi"
    assert (tmp_path / "dest3" / "abs.txt").read_bytes() == b"a"  # leading "/" stripped


def test_download_librispeech_from_a_local_mirror(tmp_path, monkeypatch):
    src = make_librispeech(tmp_path / "src" / "LibriSpeech", eval_per_gender=2, utts=2)
    members = {
        f"LibriSpeech/{p.relative_to(src)}": p.read_bytes()
        for p in sorted(src.rglob("*"))
        if p.is_file() and "test-clean" in str(p) or p.name == "SPEAKERS.TXT"
    }
    archive = tar_gz(members)
    monkeypatch.setitem(librispeech.LIBRISPEECH_MD5, "test-clean", hashlib.md5(archive).hexdigest())
    root = tmp_path / "data" / "LibriSpeech"
    with RangeServer({"test-clean.tar.gz": archive}) as server:
        librispeech.download_librispeech(root, ["test-clean"], mirror=server.url, progress=False)
        librispeech.download_librispeech(
            root, ["test-clean"], mirror=server.url, progress=False
        )  # present: no request
        assert len(server.requests) == 1
    manifest, skipped = librispeech.load_librispeech(root, [], ["test-clean"], 2, progress=False)
    assert skipped == [] and len(manifest) == 2 * 2 * 2
    with pytest.raises(data.CorpusError, match="unknown LibriSpeech subset"):
        librispeech.download_librispeech(root, ["test-dirty"], progress=False)
