"""Who speaks what in the synthetic corpus: flite's base voices, the seeded pseudo-speaker
specifications (:class:`VoiceSpec`), the pool of sentences they read, and the choice of the eval,
train and dev speakers among the candidates (see :mod:`spkadv.data.synth`).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import subprocess
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from spkadv.data.synth import SynthConfig

# Base voices of Debian's flite package: name -> gender of the recorded speaker.
FLITE_VOICES = {"awb": "M", "rms": "M", "slt": "F", "kal16": "M"}
F0_RANGE_HZ = {"M": (85.0, 150.0), "F": (165.0, 260.0)}
# Vocal-tract warp ranges by (base gender, target gender).
WARP_RANGE = {
    ("M", "M"): (0.90, 1.10),
    ("F", "F"): (0.90, 1.10),
    ("M", "F"): (1.12, 1.26),
    ("F", "M"): (0.78, 0.90),
}


class SynthError(RuntimeError):
    """The synthetic corpus cannot be built (missing synthesiser, impossible configuration)."""


@dataclasses.dataclass(frozen=True)
class VoiceSpec:
    """One pseudo-speaker: a base voice and the WORLD transformation that makes it someone else."""

    speaker: str
    gender: str
    base: str
    f0_median_hz: float
    f0_range: float  # scale of log-F0 deviations around the median
    warp: float  # spectral-envelope frequency warp (> 1: shorter vocal tract, formants up)
    rate: float  # speaking-rate factor (> 1: faster)
    breath: float  # 0..1, extra aperiodicity above 1 kHz
    tilt_db_per_octave: float
    eq_hz: float
    eq_db: float


# ----------------------------------------------------------------------------- sentences

_NAMES = "ANNA BEN CLARA DAVID ELLEN FRANK GRACE HENRY IRIS JACK KAREN LEO MARTHA NORA OLIVER PAUL RUTH SAM".split()
_ADJ = "OLD YOUNG QUIET BUSY COLD WARM TALL SMALL BRIGHT DARK HEAVY GENTLE NARROW EMPTY GREEN WOODEN".split()
_NOUNS = "GARDEN LETTER KITCHEN BRIDGE WINDOW MARKET RIVER TRAIN LIBRARY VILLAGE HARBOUR ORCHARD STATION FARMER TEACHER DOCTOR".split()
_OBJECTS = "A BASKET OF APPLES|THE MORNING PAPER|A BOX OF TOOLS|SOME FRESH BREAD|THE SILVER KEY|A MAP OF THE COAST|TWO CUPS OF TEA|THE BLUE UMBRELLA|A PAIR OF BOOTS|THE LAST TICKET|A BUNDLE OF LETTERS|THE BROKEN CLOCK".split(
    "|"
)
_PLACES = "NEAR THE OLD MILL|BY THE NORTH GATE|ACROSS THE VALLEY|UNDER THE STONE BRIDGE|AT THE EDGE OF TOWN|BEHIND THE SCHOOL|ON THE HILL ROAD|IN THE SMALL SQUARE|ALONG THE CANAL|INSIDE THE GREAT HALL".split(
    "|"
)
_TIMES = "EARLY IN THE MORNING|LATE LAST NIGHT|BEFORE THE RAIN|AFTER SUPPER|ON SUNDAY|EVERY WINTER|AT NOON|WHEN THE BELLS RANG|LONG AGO|THIS AFTERNOON".split(
    "|"
)
_VERBS_PAST = (
    "CARRIED|FOUND|BROUGHT|PAINTED|SOLD|LEFT|OPENED|MENDED|WRAPPED|COUNTED|HID|SHOWED".split("|")
)
_TEMPLATES = (
    "{name} {verb} {obj} {place}",
    "THE {adj} {noun} WAS {place} {time}",
    "{time} {name} {verb} {obj} FOR THE {noun}",
    "WE WALKED {place} AND SAW THE {adj} {noun}",
    "IF THE {noun} IS {adj} WE SHALL WAIT {place}",
    "{name} SAID THAT THE {noun} HAD BEEN {adj} {time}",
    "THE {noun} {verb} {obj} AND WENT HOME {time}",
    "NOBODY KNEW WHY {name} {verb} {obj} {place}",
    "{time} THE {adj} {noun} STOOD {place}",
    "PLEASE ASK {name} TO BRING {obj} TO THE {noun}",
    "THE {adj} {noun} AND THE {adj2} {noun2} MET {place} {time}",
    "{name} AND {name2} {verb} {obj} {place} {time}",
)


def sentence_pool(n: int, seed: int) -> list[str]:
    """``n`` distinct upper-case English sentences built from templates (deterministic)."""
    rng = np.random.default_rng([seed, 7])
    pool: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(pool) < n:
        attempts += 1
        if attempts > 200 * n:
            raise SynthError(f"could not build {n} distinct sentences; the templates allow fewer")
        template = _TEMPLATES[rng.integers(len(_TEMPLATES))]
        pick = lambda words: words[rng.integers(len(words))]  # noqa: E731
        text = template.format(
            name=pick(_NAMES), name2=pick(_NAMES), adj=pick(_ADJ), adj2=pick(_ADJ), noun=pick(_NOUNS),
            noun2=pick(_NOUNS), obj=pick(_OBJECTS), place=pick(_PLACES), time=pick(_TIMES), verb=pick(_VERBS_PAST),
        )  # fmt: skip
        if text not in seen:
            seen.add(text)
            pool.append(text)
    return pool


# ----------------------------------------------------------------------------- voices


def available_flite_voices() -> list[str]:
    """Voices the installed ``flite`` offers (empty when flite is not installed)."""
    if shutil.which("flite") is None:
        return []
    out = subprocess.run(["flite", "-lv"], capture_output=True, text=True, check=False).stdout
    return out.split(":", 1)[-1].split()


def check_synthesizer(base_voices: Sequence[str]) -> None:
    """Fail with instructions when flite or one of the requested voices is missing."""
    have = available_flite_voices()
    if not have:
        raise SynthError(
            "the synthetic corpus needs Debian's `flite`: run `sudo apt-get install flite` (or `make setup`)"
        )
    missing = [v for v in base_voices if v not in have]
    unknown = [v for v in base_voices if v not in FLITE_VOICES]
    if unknown:
        raise SynthError(f"unknown base voice(s) {unknown}; choose from {sorted(FLITE_VOICES)}")
    if missing:
        raise SynthError(
            f"flite lacks voice(s) {missing} (it has {have}); install Debian's full `flite` package"
        )


def dev_candidates_per_gender(config: SynthConfig) -> int:
    """Dev candidates per gender: the dev speakers asked for and a quarter more (rounded up), from
    which near-duplicates of each other or of a train / eval voice are dropped."""
    return math.ceil(1.25 * config.dev_speakers_per_gender)


def make_specs(config: SynthConfig, dev: bool = False) -> list[VoiceSpec]:
    """Seeded candidate pseudo-speakers, ``candidates_per_gender`` of each gender.

    ``dev``: the candidates of the held-out dev speakers instead (:func:`dev_candidates_per_gender`
    of each gender, named ``syn<gender>dev<nn>``), drawn from a seed stream of their own, so asking
    for dev speakers changes nothing about the train and eval candidates.
    """
    rng = np.random.default_rng([config.seed, 11, 1] if dev else [config.seed, 11])
    count = dev_candidates_per_gender(config) if dev else config.candidates_per_gender
    specs = []
    for gender in ("M", "F"):
        for i in range(count):
            base = config.base_voices[i % len(config.base_voices)]
            lo, hi = F0_RANGE_HZ[gender]
            wlo, whi = WARP_RANGE[(FLITE_VOICES[base], gender)]
            specs.append(
                VoiceSpec(
                    speaker=f"syn{gender}dev{i:02d}" if dev else f"syn{gender}{i:03d}",
                    gender=gender,
                    base=base,
                    f0_median_hz=float(math.exp(rng.uniform(math.log(lo), math.log(hi)))),
                    f0_range=float(rng.uniform(0.6, 1.5)),
                    warp=float(rng.uniform(wlo, whi)),
                    rate=float(rng.uniform(0.85, 1.2)),
                    breath=float(rng.uniform(0.0, 0.5)),
                    tilt_db_per_octave=float(rng.uniform(-3.0, 3.0)),
                    eq_hz=float(math.exp(rng.uniform(math.log(300.0), math.log(4000.0)))),
                    eq_db=float(rng.uniform(-5.0, 5.0)),
                )
            )
    return specs


# ----------------------------------------------------------------------------- speaker choice


def speaker_centroids(table: pd.DataFrame, embeddings: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Length-normalised mean of each speaker's length-normalised utterance embeddings
    (:func:`spkadv.data.centroids.speaker_centroids`), the speakers in sorted order."""
    # imported here: it pulls in torch, which the rest of this module does without
    from spkadv.data.centroids import speaker_centroids as centroids_of

    emb = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    speakers, cents, _ = centroids_of(emb, table["speaker"].tolist())
    return speakers, cents.numpy()


def select_speakers(
    table: pd.DataFrame, embeddings: np.ndarray | None, config: SynthConfig
) -> tuple[dict[str, str], dict]:
    """Drop near-duplicate voices, then choose the eval and train speakers of each gender.

    Per gender, while two remaining candidates have a speaker-centroid cosine above
    ``config.duplicate_cosine`` and more candidates remain than needed, the candidate with the
    highest cosine to any other is dropped. The eval speakers are then picked greedily to be as far
    apart as possible (each new one has the lowest maximal cosine to those already picked); the
    train speakers are the remaining candidates in order.

    Returns ({speaker: "eval" | "train"}, info); info counts candidates, dropped near-duplicates and
    near-duplicate pairs that had to stay (too few candidates), and the largest centroid cosine
    between two eval speakers per gender.
    """
    speakers = sorted(table["speaker"].unique())
    gender = table.groupby("speaker")["gender"].first().to_dict()
    need = config.eval_speakers_per_gender + config.train_speakers_per_gender
    if embeddings is None:
        sim = np.zeros((len(speakers), len(speakers)))
    else:
        order, cents = speaker_centroids(table, embeddings)
        assert order == speakers
        sim = cents @ cents.T
    np.fill_diagonal(sim, -np.inf)
    roles: dict[str, str] = {}
    info: dict = {"candidates": len(speakers), "near_duplicates": 0, "near_duplicate_pairs_kept": 0}
    for g in ("M", "F"):
        pool = [i for i, s in enumerate(speakers) if gender[s] == g]
        if len(pool) < need:
            raise SynthError(
                f"{len(pool)} {g} candidate voices, need {need} (eval + train): raise SYNTH_CANDIDATES_PER_GENDER"
            )
        while len(pool) > need:
            worst = max(pool, key=lambda i: (sim[i, pool].max(), -i))
            if sim[worst, pool].max() <= config.duplicate_cosine:
                break
            pool.remove(worst)
            info["near_duplicates"] += 1
        sub = sim[np.ix_(pool, pool)]
        info["near_duplicate_pairs_kept"] += int((sub > config.duplicate_cosine).sum() // 2)
        chosen = [min(pool, key=lambda i: (sim[i, pool].max(), i))]
        while len(chosen) < config.eval_speakers_per_gender:
            rest = [i for i in pool if i not in chosen]
            chosen.append(min(rest, key=lambda i: (sim[i, chosen].max(), i)))
        train = [i for i in pool if i not in chosen][: config.train_speakers_per_gender]
        roles.update({speakers[i]: "eval" for i in chosen})
        roles.update({speakers[i]: "train" for i in train})
        if embeddings is not None and len(chosen) > 1:
            info[f"eval_max_centroid_cosine_{g}"] = float(sim[np.ix_(chosen, chosen)].max())
    return roles, info


def select_dev_speakers(
    table: pd.DataFrame,
    embeddings: np.ndarray | None,
    kept: pd.DataFrame,
    kept_embeddings: np.ndarray | None,
    config: SynthConfig,
) -> tuple[dict[str, str], dict]:
    """Choose the dev speakers of each gender among the dev candidates (:func:`make_specs` with
    ``dev=True``), after the eval and train speakers were chosen (``kept``: their screening rows).

    A dev candidate's closeness is its largest centroid cosine to a chosen eval / train speaker or
    to another remaining dev candidate of its gender. Per gender, while more candidates remain than
    needed and the closest one is above ``config.duplicate_cosine``, it is dropped; the dev speakers
    are then the remaining candidates in order. The eval and train speakers are not touched.

    Returns ({speaker: "dev"}, info) with info counting the dev candidates, the dropped
    near-duplicates and the dev speakers that stay near-duplicates (too few candidates).
    """
    speakers = sorted(table["speaker"].unique())
    gender = table.groupby("speaker")["gender"].first().to_dict()
    need = config.dev_speakers_per_gender
    if embeddings is None or kept_embeddings is None:
        sim = np.zeros((len(speakers), len(speakers)))
        to_kept = np.zeros(len(speakers))
    else:
        order, cents = speaker_centroids(table, embeddings)
        assert order == speakers
        _, kept_cents = speaker_centroids(kept, kept_embeddings)
        sim = cents @ cents.T
        to_kept = (cents @ kept_cents.T).max(axis=1) if len(kept_cents) else np.zeros(len(speakers))
    np.fill_diagonal(sim, -np.inf)
    roles: dict[str, str] = {}
    info = {
        "dev_candidates": len(speakers),
        "dev_near_duplicates": 0,
        "dev_near_duplicates_kept": 0,
    }
    for g in ("M", "F"):
        pool = [i for i, s in enumerate(speakers) if gender[s] == g]
        if len(pool) < need:
            raise SynthError(f"{len(pool)} {g} dev candidate voices, need {need}")
        while len(pool) > need:
            worst = max(pool, key=lambda i: (max(to_kept[i], sim[i, pool].max()), -i))
            if max(to_kept[worst], sim[worst, pool].max()) <= config.duplicate_cosine:
                break
            pool.remove(worst)
            info["dev_near_duplicates"] += 1
        chosen = pool[:need]
        info["dev_near_duplicates_kept"] += sum(
            int(max(to_kept[i], sim[i, chosen].max()) > config.duplicate_cosine) for i in chosen
        )
        roles.update({speakers[i]: "dev" for i in chosen})
    return roles, info
