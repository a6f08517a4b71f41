"""The protection oracle: a protection service as a black box, wave in, protected wave out.

The semi-informed attacker of :mod:`spkadv.evaluation.attackers` holds one: it sends its own speech
through :class:`ProtectionOracle` to build (x, x') pairs, and the victim's clean enrolment audio
through :func:`query_enrolments`. The oracle exposes only ``__call__`` (and :meth:`map` for many
queries): no model file, module or weights can be reached through it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from spkadv import SAMPLE_RATE
from spkadv.audio.io import load_audio, save_audio
from spkadv.base.threads import process_map
from spkadv.core import modelfile
from spkadv.core import protect as P
from spkadv.encoders.speaker import default_device
from spkadv.evaluation import conditions

# Enrolment clips held in memory at once by query_enrolments (one worker pool each).
ENROL_BLOCK = 256


class ProtectionOracle:
    """A protection service as a black box: ``oracle(x) -> x'`` (16 kHz float mono, same length).

    Built from a model file the way ``spkadv protect --model`` uses it. The loaded model lives only
    in a closure: the object has no attribute holding a module, a tensor or the model, refuses
    pickling, and counts its calls and the seconds of audio it protected (what a service would
    bill). As ``spkadv protect``, a model that takes a per-utterance code gets it optimised per call
    (:func:`spkadv.core.protect.protection_code`); extra keyword arguments go to
    :func:`spkadv.core.protect.protect`.

    :meth:`map` answers many queries at once; with ``workers`` > 1 (0: one per torch thread) it
    spreads them over that many processes of one torch thread each, each loading the model file
    itself, as a service with several servers would.
    """

    __slots__ = ("_protect", "_model_path", "_protect_kwargs", "_workers", "calls", "audio_seconds")

    def __init__(
        self,
        model_path: str | os.PathLike,
        device: str | None = None,
        workers: int = 1,
        **protect_kwargs,
    ):
        model = modelfile.load_model(model_path, device or default_device())
        self._protect = _oracle_function(model, protect_kwargs)
        self._model_path = str(model_path)
        self._protect_kwargs = tuple(protect_kwargs.items())  # for the workers (no dict: no stash)
        self._workers = conditions.resolve_workers(model, workers, items=1 << 30)
        self.calls = 0
        self.audio_seconds = 0.0

    def __call__(self, x: np.ndarray, **kwargs) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        out = self._protect(x, **kwargs)
        self._count(x)
        return out

    def map(
        self, waves: Sequence[np.ndarray], progress: bool = False, desc: str = "oracle queries"
    ) -> list[np.ndarray]:
        """``[oracle(x) for x in waves]``, in the waves' order, in worker processes if so built."""
        waves = [np.asarray(x, dtype=np.float32) for x in waves]
        bar = tqdm(total=len(waves), desc=desc, disable=not progress)
        answers: list[np.ndarray | None] = [None] * len(waves)
        setup = (_oracle_state, (self._model_path, dict(self._protect_kwargs)))
        workers = min(self._workers, len(waves))
        for i, answer in process_map(_ask_one, waves, workers, self._protect, setup):
            answers[i] = answer
            self._count(waves[i])
            bar.update()
        bar.close()
        return answers  # type: ignore[return-value]

    def _count(self, x: np.ndarray) -> None:
        self.calls += 1
        self.audio_seconds += len(x) / SAMPLE_RATE

    def __reduce__(self):
        raise TypeError("a ProtectionOracle is a black box and cannot be pickled or copied")

    def __repr__(self) -> str:
        return f"ProtectionOracle(calls={self.calls}, audio_seconds={self.audio_seconds:.1f})"


def _oracle_function(model, protect_kwargs: dict[str, Any]) -> Callable[..., np.ndarray]:
    def run(x: np.ndarray, **kwargs) -> np.ndarray:
        options = {**protect_kwargs, **kwargs}
        if "code" not in options:  # as the CLI: a per-utterance code where the model takes one
            options["code"] = P.protection_code(model, x)
        return P.protect(model, x, **options)

    return run


def _oracle_state(model_path: str, protect_kwargs: dict[str, Any]) -> Callable[..., np.ndarray]:
    """What a worker process of :meth:`ProtectionOracle.map` builds once: the model loaded from
    its file, on the CPU."""
    return _oracle_function(modelfile.load_model(model_path, "cpu"), protect_kwargs)


def _ask_one(protect: Callable[..., np.ndarray], x: np.ndarray) -> np.ndarray:
    return protect(x)


def ask(oracle, waves: list[np.ndarray], progress: bool, desc: str) -> list[np.ndarray]:
    """The oracle's answers to ``waves``: :meth:`ProtectionOracle.map` when it has one, else one
    ``oracle(x)`` call each (any callable)."""
    if issubclass(type(oracle), ProtectionOracle):  # type(): no attribute of oracle read
        return oracle.map(waves, progress=progress, desc=desc)
    return [oracle(x) for x in tqdm(waves, desc=desc, disable=not progress)]


def query_enrolments(
    oracle: Callable[[np.ndarray], np.ndarray],
    clean: Mapping[str, str | os.PathLike],
    published: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    check: int = 0,
    tolerance: float = 1.0e-6,
    progress: bool = True,
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Pass the victim's clean enrolment audio through the oracle; write ``out_dir/<utt>.wav``.

    With ``check > 0`` only the first ``check`` utterances (sorted) are queried; when every answer
    equals the protected audio already published for it (``published``, within ``tolerance``:
    a deterministic oracle), the others are taken from ``published``, which is what the oracle
    would return. Otherwise, and with ``check = 0``, every utterance is queried.

    Returns ``utt -> path`` and ``{"queried": n, "deterministic": bool}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    utts = sorted(clean)
    paths: dict[str, Path] = {}
    state = {"deterministic": True}

    def query(batch: list[str], desc: str) -> None:
        # bounded memory: a block of clips at a time
        for start in range(0, len(batch), ENROL_BLOCK):
            block = batch[start : start + ENROL_BLOCK]
            waves = [load_audio(clean[u]) for u in block]
            answers = ask(oracle, waves, progress, desc)
            for utt, answer in zip(block, answers, strict=True):
                answer = np.asarray(answer, dtype=np.float32)
                if utt in published:
                    reference = load_audio(published[utt])
                    state["deterministic"] &= reference.shape == answer.shape and bool(
                        np.max(np.abs(reference - answer), initial=0.0) <= tolerance
                    )
                else:
                    state["deterministic"] = False
                save_audio(out_dir / f"{utt}.wav", answer)
                paths[utt] = out_dir / f"{utt}.wav"

    first = utts[:check] if check > 0 else utts
    query(first, "oracle enrolment")
    rest = utts[len(first) :]
    if rest and state["deterministic"]:  # the oracle returns what was published: reuse it
        paths.update({u: Path(published[u]) for u in rest})
    elif rest:
        query(rest, "oracle enrolment (rest)")
    deterministic = state["deterministic"]
    queried = sum(1 for p in paths.values() if Path(p).parent == out_dir)
    return paths, {"queried": queried, "deterministic": deterministic}
