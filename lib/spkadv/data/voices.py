"""Who speaks what in the synthetic corpus: flite's base voices, the seeded pseudo-speaker
specifications (:class:`VoiceSpec`) and the pool of sentences they read (see :mod:`spkadv.data.synth`).
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


def make_specs(config: SynthConfig) -> list[VoiceSpec]:
    """Seeded candidate pseudo-speakers, ``candidates_per_gender`` of each gender."""
    rng = np.random.default_rng([config.seed, 11])
    specs = []
    for gender in ("M", "F"):
        for i in range(config.candidates_per_gender):
            base = config.base_voices[i % len(config.base_voices)]
            lo, hi = F0_RANGE_HZ[gender]
            wlo, whi = WARP_RANGE[(FLITE_VOICES[base], gender)]
            specs.append(
                VoiceSpec(
                    speaker=f"syn{gender}{i:03d}",
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
