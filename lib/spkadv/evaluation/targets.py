"""Targets of a stage, recorded beside its figures of merit.

A target is a name, the measured value, what it is measured against (text, e.g. ``">= 4x
rec-rec"``) and whether it is met. Notebooks record them with :func:`record`, write them into their
flat ``metrics.json`` through :func:`as_metrics` (keys ``target.<slug>.value``, ``.target``,
``.met``), show them with :func:`markdown`, and assert them with :func:`enforce` when the profile
sets ``ASSERT_TARGETS``. The pipeline prints every stage's targets at the end of a run
(:func:`summary_lines`). A target is never a test threshold: an unmet target is reported, not
tuned away.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PREFIX = "target."


@dataclass(frozen=True)
class Target:
    name: str
    value: float
    target: str
    met: bool

    @property
    def slug(self) -> str:
        return slug(self.name)


def slug(name: str) -> str:
    """``"rec-adv EER >= 4x rec-rec"`` -> ``"rec_adv_eer_4x_rec_rec"`` (a metrics.json key part)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def record(name: str, value: float, target: str, met: bool) -> Target:
    """One target: ``value`` as measured, ``target`` as text, ``met`` as decided by the caller
    (who knows the comparison, e.g. ``rec_adv >= 4 * rec_rec``, which stays defined when rec-rec
    is 0 and a ratio is not)."""
    if not name.strip():
        raise ValueError("a target needs a name")
    return Target(name, float(value), str(target), bool(met))


def as_metrics(targets: Iterable[Target]) -> dict[str, Any]:
    """The targets as flat metrics.json entries (names must give distinct slugs)."""
    out: dict[str, Any] = {}
    for t in targets:
        key = f"{PREFIX}{t.slug}"
        if f"{key}.met" in out:
            raise ValueError(f"two targets share the key {key!r}; rename one")
        value = t.value if math.isfinite(t.value) else str(t.value)  # JSON has no inf / nan
        out.update({f"{key}.name": t.name, f"{key}.value": value, f"{key}.target": t.target})
        out[f"{key}.met"] = t.met
    return out


def from_metrics(metrics: Mapping[str, Any]) -> list[Target]:
    """The targets recorded in a metrics.json, in their order."""
    found = []
    for key, met in metrics.items():
        if key.startswith(PREFIX) and key.endswith(".met"):
            base = key[: -len(".met")]
            value = metrics.get(f"{base}.value", float("nan"))
            found.append(
                Target(
                    str(metrics.get(f"{base}.name", base[len(PREFIX) :])),
                    float(value),
                    str(metrics.get(f"{base}.target", "")),
                    bool(met),
                )
            )
    return found


def _fmt(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def markdown(targets: Sequence[Target]) -> str:
    """A Markdown table: target | measured | against | met."""
    lines = ["| target | measured | against | met |", "|---|---|---|---|"]
    for t in targets:
        lines.append(
            f"| {t.name} | {_fmt(t.value)} | {t.target} | {'met' if t.met else 'NOT met'} |"
        )
    return "\n".join(lines)


def enforce(targets: Sequence[Target], assert_targets: bool) -> None:
    """With ``assert_targets`` (the profile's ``ASSERT_TARGETS``), fail naming every unmet target."""
    missed = [t for t in targets if not t.met]
    if assert_targets and missed:
        raise AssertionError(
            "targets not met: "
            + "; ".join(f"{t.name} (measured {_fmt(t.value)}, {t.target})" for t in missed)
        )


def summary_lines(metrics_by_stage: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per recorded target of every stage: ``stage  met|NOT met  name: value (target)``."""
    lines = []
    for stage, metrics in metrics_by_stage.items():
        for t in from_metrics(metrics):
            verdict = "met    " if t.met else "NOT met"
            lines.append(f"  {stage}  {verdict}  {t.name}: {_fmt(t.value)} ({t.target})")
    return lines
