"""The librispeech profile (params/librispeech.yaml): the default profile's settings on LibriSpeech
train-clean-100 / test-clean / dev-clean, and its corpus obtained through the project's opt-in
download from a local mirror (a real HTTP server in a thread, archives with LibriSpeech's layout;
no network)."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import pytest
from spkadv.base import config as cfgmod
from spkadv.core import datasets
from spkadv.core.datasets import CropDataset
from spkadv.data import corpus, librispeech
from spkadv.data.manifest import CorpusError

from .http_server import RangeServer
from .test_data import make_librispeech, tar_gz

# keys the librispeech profile sets otherwise than the default profile, or alone
CORPUS_KEYS = {
    "CORPUS_SOURCE",
    "CORPUS_ROOT",
    "LIBRISPEECH_DOWNLOAD",
    "LIBRISPEECH_TRAIN_SUBSETS",
    "LIBRISPEECH_EVAL_SUBSETS",
    "LIBRISPEECH_DEV_SUBSET",
    "LIBRISPEECH_DEV_SPEAKERS_PER_GENDER",
    "TRAIN_UTTERANCES",
    "TRAIN_DATA",
    "EVAL_UTTS_PER_SPEAKER",
    "EVAL_TEST_UTTS_PER_SPEAKER",
}
TRANSFER_KEYS = {
    "TRANSFER_MODEL_PROFILE",
    "TRANSFER_UTTS_PER_SPEAKER",
    "TRANSFER_MAX_SECONDS",
    "TRANSFER_PESQ_UTTS",
}
# LibriSpeech's release files beside the subset folders in every archive
RELEASE_FILES = ("BOOKS.TXT", "CHAPTERS.TXT", "LICENSE.TXT", "README.TXT")


def split(text: str) -> list[str]:
    """How notebook 00 splits a comma-separated subset list."""
    return [s.strip() for s in text.split(",") if s.strip()]


def test_librispeech_profile_is_the_default_on_another_corpus() -> None:
    default, libri = cfgmod.load_profile("default"), cfgmod.load_profile("librispeech")
    only_default = set(default) - set(libri)
    assert all(key.startswith("SYNTH_") for key in only_default), only_default
    assert set(libri) - set(default) <= CORPUS_KEYS | TRANSFER_KEYS
    differ = {k for k in set(default) & set(libri) if default[k] != libri[k]}
    assert differ <= CORPUS_KEYS, {k: (default[k], libri[k]) for k in differ - CORPUS_KEYS}
    assert libri["CORPUS_SOURCE"] == "librispeech" and libri["LIBRISPEECH_DOWNLOAD"] is False
    assert split(libri["LIBRISPEECH_TRAIN_SUBSETS"]) == ["train-clean-100"]
    assert split(libri["LIBRISPEECH_EVAL_SUBSETS"]) == ["test-clean", "dev-clean"]
    assert libri["EVAL_SPEAKERS_PER_GENDER"] == 20  # the paper's eval speakers per set
    assert libri["WHITEBOX_ENCODER"] == "campplus" and libri["TRAIN_DATA"] == "disk"
    assert (
        not Path(libri["CORPUS_ROOT"]).is_absolute()
        and ".." not in Path(libri["CORPUS_ROOT"]).parts
    )


def _mirror(source: Path, subsets: list[str]) -> dict[str, bytes]:
    """One ``<subset>.tar.gz`` per subset holding ``LibriSpeech/`` with the release files and the
    subset's folder, as openslr.org serves them."""
    archives = {}
    for subset in subsets:
        members = {f"LibriSpeech/{name}": (source / name).read_bytes() for name in RELEASE_FILES}
        members["LibriSpeech/SPEAKERS.TXT"] = (source / "SPEAKERS.TXT").read_bytes()
        for path in sorted((source / subset).rglob("*")):
            if path.is_file():
                members[f"LibriSpeech/{path.relative_to(source)}"] = path.read_bytes()
        archives[f"{subset}.tar.gz"] = tar_gz(members)
    return archives


def test_librispeech_profile_downloads_and_builds_its_corpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = cfgmod.load_profile("librispeech")
    train_subsets = split(params["LIBRISPEECH_TRAIN_SUBSETS"])
    eval_subsets = split(params["LIBRISPEECH_EVAL_SUBSETS"])
    per_gender = params["EVAL_SPEAKERS_PER_GENDER"]
    dev_subset, dev_per_gender = (
        params["LIBRISPEECH_DEV_SUBSET"],
        params["LIBRISPEECH_DEV_SPEAKERS_PER_GENDER"],
    )
    assert dev_subset == "dev-other" and dev_per_gender > 0  # held-out speakers for choices
    source = make_librispeech(
        tmp_path / "src" / "LibriSpeech", eval_per_gender=per_gender, utts=2,
        dev_per_gender=dev_per_gender,
    )  # fmt: skip
    for name in RELEASE_FILES:
        (source / name).write_text(f"{name}\n")
    archives = _mirror(source, train_subsets + eval_subsets + [dev_subset])
    for name, body in archives.items():
        monkeypatch.setitem(
            librispeech.LIBRISPEECH_MD5, name.removesuffix(".tar.gz"), hashlib.md5(body).hexdigest()
        )
    root = (tmp_path / "repo" / params["CORPUS_ROOT"]).resolve()  # as notebook 00 resolves it
    build = functools.partial(
        corpus.prepare_corpus,
        tmp_path / "corpus",
        params["CORPUS_SOURCE"],
        root=root,
        librispeech_train=train_subsets,
        librispeech_eval=eval_subsets,
        librispeech_dev=dev_subset,
        librispeech_dev_speakers_per_gender=dev_per_gender,
        eval_speakers_per_gender=per_gender,
        seed=params["SEED"],
        progress=False,
    )
    with RangeServer(archives) as server:
        mirror = functools.partial(librispeech.download_librispeech, mirror=server.url)
        monkeypatch.setattr(corpus, "download_librispeech", mirror)
        # the profile as shipped: no download (opt-in), and the error says how to get the corpus
        with pytest.raises(CorpusError, match="LIBRISPEECH_DOWNLOAD"):
            build(librispeech_download=params["LIBRISPEECH_DOWNLOAD"])
        assert server.requests == []
        manifest, info = build(librispeech_download=True)  # the user opts in
        assert sorted(path for path, _ in server.requests) == sorted(f"/{n}" for n in archives)
        again, info_again = build(librispeech_download=True)  # present: nothing fetched again
        assert len(server.requests) == len(archives) and info_again["reused"]
    assert info["skipped"] == [] and not info["reused"]
    for name in ("SPEAKERS.TXT", *RELEASE_FILES, *train_subsets, *eval_subsets, dev_subset):
        assert (root / name).exists(), name
    train = manifest[manifest["subset"] == "train"]
    assert set(train["set"]) == set(train_subsets) and len(train) == 2 * 2
    evaluation = manifest[manifest["subset"] == "eval"]
    for subset in eval_subsets:
        genders = evaluation[evaluation["set"] == subset].groupby("speaker")["gender"].first()
        assert (genders == "M").sum() == per_gender and (genders == "F").sum() == per_gender
    assert set(evaluation["speaker"]).isdisjoint(train["speaker"])
    dev = manifest[manifest["subset"] == "dev"]
    assert set(dev["set"]) == {dev_subset} and dev["speaker"].nunique() == 2 * dev_per_gender
    assert set(dev["speaker"]).isdisjoint(set(train["speaker"]) | set(evaluation["speaker"]))
    # training reads its crops from the extracted FLAC files as the profile asks
    audio = datasets.train_audio(
        train["path"].tolist(),
        params["TRAIN_UTTERANCES"],
        params["TRAIN_DATA"],
        progress=False,
        cache_dir=tmp_path / "cache",
    )
    assert len(audio) == len(train)
    crop, index = CropDataset(audio, 4000, seed=0)[0]
    assert crop.shape == (4000,) and float(crop.abs().max()) > 0 and 0 <= index < len(train)
