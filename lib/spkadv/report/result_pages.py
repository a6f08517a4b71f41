"""The pages of published results: the headline table, run minutes, per-profile sections and the
dev choices, rendered from snapshots (:mod:`spkadv.report.results`) alone."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spkadv.base import config
from spkadv.evaluation import targets as target_records
from spkadv.report import headline

PAPER_STAGES = config.NOTEBOOK_STAGES  # the stages a full run has
PUBLISHED = ("smoke", "default", "speechocean762", "librispeech", "paper")
HEADLINE_PROFILES = ("default", "speechocean762", "librispeech", "paper")
CORPUS_WORDS = {
    "smoke": "synthetic voices, tiny",
    "default": "synthetic voices",
    "speechocean762": "real read speech",
    "librispeech": "LibriSpeech 100 h",
    "paper": "LibriSpeech 960 h",
}
# The Markdown tables a stage writes, in the order results.md shows them.
STAGE_TABLES = {
    "40_table1_eer": ("table1.md",),
    "50_table2_quality": ("table2.md",),
    "30_purification": ("robustness.md",),
    "60_attackers": ("attackers.md",),
}
# The studies a snapshot takes when they finished in the run folder (measured on dev speakers).
STUDY_TABLES = {
    "90_attack_study": ("study.md",),
    "91_joint_robustness": ("runs.md",),
    "92_transfer": (),
    "93_blackbox": ("blackbox.md",),
    "94_protect_settings": ("settings.md",),
    "95_code_predictor": ("frontier.md",),
    "96_training_settings": ("arms.md",),
}
# One figure per stage for the console line and the minutes table: (metrics key, label, unit).
STAGE_HEADLINE = {
    "00_data_prep": ("eer_recrec_whitebox", "white-box rec-rec EER", " %"),
    "10_ssed_baseline": ("eer_recadv", "SSED rec-adv EER", " %"),
    "20_joint_training": ("eer_recadv", "rec-adv EER", " %"),
    "30_purification": ("snr_an_db", "SNR after noise purification", " dB"),
    "40_table1_eer": ("eer_whitebox_rec_adv", "Table 1 white-box rec-adv EER", " %"),
    "50_table2_quality": ("pesq_adv", "Table 2 PESQ adv", ""),
    "60_attackers": (
        "attacker_stft_mask_undone_white_pct",
        "share undone by the STFT remover",
        " %",
    ),
}


def stage_headline(stem: str, metrics: Mapping[str, Any]) -> str:
    """``"rec-adv EER 14.4 %"`` for a stage's console line ('' when the stage has no such figure)."""
    key, label, unit = STAGE_HEADLINE.get(stem, ("", "", ""))
    value = headline.number(metrics.get(key)) if key else float("nan")
    return "" if value != value else f"{label} {value:.3g}{unit}"


# The attack study's variant that the CPU profiles adopted (per-segment codes, bf16 where native).
PROFILE_GENERATOR_VARIANT = "segcode"


def _choice_94(m: Mapping[str, Any]) -> str:
    verdict = "confirms" if m.get("dev_confirms_current") else "does not confirm"
    return (
        f"protect-time code settings (study 94): dev {verdict} the setting chosen earlier on eval "
        f"speakers ('{m.get('current')}'): {m.get('conclusion', '')}"
    )


def _choice_96(m: Mapping[str, Any]) -> str:
    head, _, rest = str(m.get("conclusion", "")).partition("\n")
    rule = next((line for line in rest.splitlines() if line.startswith("Rule:")), "")
    return f"training settings (study 96): {head} {rule}".strip()


def _choice_90(m: Mapping[str, Any]) -> str:
    """The attack study's verdict: the profile's generator is ``segcode`` as it protects, with its
    code optimised (the row ``segcode+opt<steps>`` when the study measured it)."""
    best, base = str(m.get("best_variant")), PROFILE_GENERATOR_VARIANT
    names = str(m.get("variants", "")).split(",")
    ours = next((n for n in names if n.startswith(f"{base}+opt")), base if base in names else None)
    if ours is None:
        return f"generator variants (study 90): best on dev '{best}'; the profile's '{base}' was not run"
    verdict = "confirms" if best.split("+")[0] == base else "does not confirm"

    def eer(name: Any) -> str:
        return f"{_fmt(m.get(f'{name}.eer_recadv'))} % at {_fmt(m.get(f'{name}.snr_adv_db'), 1)} dB"

    tail = "" if best == ours else f"; the best on dev is '{best}' (rec-adv {eer(best)})"
    return (
        f"generator variants at equal CPU time (study 90): dev {verdict} the profile's '{ours}' "
        f"(rec-adv {eer(ours)}; noise of the same power {_fmt(m.get(f'{ours}.eer_recgn'))} %, "
        f"rec-rec {_fmt(m.get('eer_recrec'))} %){tail}"
    )


DEV_CHOICE_STUDIES = {
    "94_protect_settings": _choice_94,
    "96_training_settings": _choice_96,
    "90_attack_study": _choice_90,
}


def dev_choices(snaps: Mapping[str, Mapping[str, Any]]) -> str:
    """Per profile, what studies 94 (protect-time settings), 96 (training settings) and 90
    (generator variants) concluded on the dev speakers about the settings chosen before on eval."""
    lines = []
    for p, snap in snaps.items():
        studies = snap.get("studies", {})
        found = [
            f"  - {say(studies[stem]['metrics'])}"
            for stem, say in DEV_CHOICE_STUDIES.items()
            if studies.get(stem, {}).get("metrics")
        ]
        if found:
            lines += [f"- **{p}**:", *found]
    return "\n".join(lines) or "_No dev-choice study (90, 94, 96) has been published yet._"


def _fmt(value: Any, digits: int = 2) -> str:
    v = headline.number(value)
    return "n/a" if v != v else (f"{v:.{digits}f}" if abs(v) < 1e4 else f"{v:.3g}")


def _environment_line(snap: Mapping[str, Any]) -> str:
    env = snap.get("environment", {})
    threads = sorted({s.get("threads") for s in snap["stages"].values() if s.get("threads")})
    commit = env.get("commit", "unknown") + (" with local changes" if env.get("dirty") else "")
    return (
        f"commit {commit}; {env.get('cpu', 'CPU unknown')}, {env.get('cores', '?')} cores, "
        f"{'/'.join(map(str, threads)) or '?'} torch thread(s); "
        f"{snap['total_minutes']:.1f} min for stages 00-60"
        + (f"; finished {env['finished']}" if env.get("finished") else "")
        + (f"; {env['note']}" if env.get("note") else "")
    )


def headline_table(snaps: Mapping[str, Mapping[str, Any]]) -> str:
    """Figure | paper | one column per profile, from the headline rows of stages 40 and 50."""
    profiles = [p for p in HEADLINE_PROFILES if p in snaps]
    if not profiles:
        return "_No full run has been published yet: run `make reproduce`, then `make results`._"
    rows: dict[str, dict[str, Any]] = {}
    for p in profiles:
        metrics = {s: v["metrics"] for s, v in snaps[p]["stages"].items()}
        for row in headline.headline_rows(metrics):
            if "adv-adv" in row["what"] or row["what"].endswith(" an"):
                continue  # the headline: rec-side EERs, adv / rst quality (the rest: report, results.md)
            rows.setdefault(row["what"], {"paper": row["paper"]})[p] = row["ours"]
    head = "| figure | paper | " + " | ".join(f"{p} ({CORPUS_WORDS[p]})" for p in profiles) + " |"
    lines = [head, "|---" * (2 + len(profiles)) + "|"]
    for what, vals in rows.items():
        lines.append(
            f"| {what} | {_fmt(vals['paper'])} | "
            + " | ".join(_fmt(vals.get(p)) for p in profiles)
            + " |"
        )
    met = [
        f"{sum(t.met for t in ts)} of {len(ts)}"
        for p in profiles
        for ts in [[t for s in snaps[p]["stages"].values() for t in _targets(s)]]
    ]
    lines.append("| targets met (docs/results.md) | | " + " | ".join(met) + " |")
    return "\n".join(lines)


def _targets(stage: Mapping[str, Any]) -> list[target_records.Target]:
    return target_records.from_metrics(stage["metrics"])


def minutes_lines(snaps: Mapping[str, Mapping[str, Any]], ci: Mapping[str, Any] | None) -> str:
    """The README's measured run times: `make reproduce` per profile and `make test` in CI."""
    lines = []
    for p in (p for p in PUBLISHED if p in snaps and p != "smoke"):
        lines.append(f"- `make reproduce PROFILE={p}`: {_environment_line(snaps[p])}.")
    if ci:
        lines.append(
            f"- `.ci/run` (setup, then `make test`) on a fresh clone of {ci.get('commit', '?')}: "
            f"setup {ci.get('setup_minutes', '?')} min, `make test` {ci.get('test_minutes', '?')} "
            f"min ({ci.get('cpu', 'CPU unknown')}, {ci.get('cores', '?')} cores)."
        )
    return "\n".join(lines) or "_No run has been published yet._"


def notebook_minutes(snaps: Mapping[str, Mapping[str, Any]]) -> str:
    """Notebook | minutes per published profile."""
    profiles = list(snaps)
    if not profiles:
        return "_No full run has been published yet._"
    lines = ["| notebook | " + " | ".join(profiles) + " |", "|---" * (1 + len(profiles)) + "|"]
    for stem in PAPER_STAGES:
        cells = [_fmt(snaps[p]["stages"][stem]["minutes"], 1) for p in profiles]
        lines.append(f"| {stem} | " + " | ".join(cells) + " |")
    lines.append(
        "| all | " + " | ".join(f"{snaps[p]['total_minutes']:.1f}" for p in profiles) + " |"
    )
    return "\n".join(lines)


def profile_section(snap: Mapping[str, Any]) -> str:
    """One profile's part of results.md: run facts, stage minutes, targets and every table."""
    p = snap["profile"]
    out = [f"## {p} ({CORPUS_WORDS.get(p, p)})", "", _environment_line(snap) + ".", ""]
    out += ["| stage | minutes | threads | headline |", "|---|---|---|---|"]
    for stem, s in snap["stages"].items():
        out.append(
            f"| {stem} | {s['minutes']:.1f} | {s.get('threads') or '?'} | "
            f"{stage_headline(stem, s['metrics'])} |"
        )
    found = [(stem, t) for stem, s in snap["stages"].items() for t in _targets(s)]
    if found:
        out += ["", "### Targets", "", "| stage | target | measured | against | met |"]
        out.append("|---|---|---|---|---|")
        out += [
            f"| {stem} | {t.name} | {t.value:.4g} | {t.target} | {'met' if t.met else 'NOT met'} |"
            for stem, t in found
        ]
    for stem in STAGE_TABLES:
        for name, text in snap["stages"].get(stem, {}).get("tables", {}).items():
            out += ["", f"### {stem}: {name}", "", text]
    for stem, study in snap.get("studies", {}).items():
        out += ["", f"### Study {stem} (dev speakers, {study['minutes']:.1f} min)"]
        if conclusion := study["metrics"].get("conclusion"):
            out += ["", str(conclusion)]
        for text in study.get("tables", {}).values():
            out += ["", text]
    return "\n".join(out)


def results_page(snaps: Mapping[str, Mapping[str, Any]]) -> str:
    parts = [
        "# Results",
        "",
        "Generated by `make results` from the snapshots in `docs/results/` (one per profile: the "
        "latest full run of `make reproduce PROFILE=<name>`); do not edit. Definitions of every "
        "figure are in docs/protocol.md. EERs are in %.",
        "",
        "## Headline: the paper beside each profile",
        "",
        headline_table(snaps),
    ]
    for p in snaps:
        parts += ["", profile_section(snaps[p])]
    return "\n".join(parts) + "\n"


# the frontier's figure per profile (others: ../figures/frontier_<profile>.png)
FRONTIER_FIGURES = {"default": "../figures/frontier.png"}


def _frontier_profile(snap: Mapping[str, Any]) -> list[str]:
    env = snap.get("environment", {})
    profile = str(snap["profile"])
    bb = snap.get("blackbox")
    rr = snap.get("eer_recrec", {})
    commit = env.get("commit", "unknown") + (" with local changes" if env.get("dirty") else "")
    load = env.get("load_average_at_start") or [float("nan")]
    lines = [
        f"### {profile}",
        "",
        f"`{snap.get('command', 'python -m benchmarks.bench_frontier --profile ' + profile)}`: "
        f"commit {commit}; {env.get('cpu', 'CPU unknown')}, one torch thread, load {_fmt(load[0])} "
        f"at the start; {env.get('date_utc', '')} UTC. {snap['utterances']} eval utterances of "
        f"{snap['speakers']} speakers ({_fmt(snap['audio_seconds'] / 60, 1)} min), {snap['trials']} "
        f"trials ({snap['target_trials']} target); rec-rec EER: white box {_fmt(rr.get('white'))} %"
        + (f", {bb} {_fmt(rr.get(bb))} %" if bb else "")
        + f". PGD at {_fmt(snap.get('pgd_snr_db'), 1)} dB, today's SNR(adv).",
        "",
        "| point | CPU s per audio s | rec-adv, white box | "
        + (f"rec-adv, {bb} (held out) | " if bb else "")
        + "rec-rst | SNR(adv) dB | SNR(rst) dB |",
        "|---|---|---|" + ("---|" if bb else "") + "---|---|---|",
    ]
    for name, p in _frontier_order(snap):
        lines.append(
            f"| {name} | {_fmt(p.get('protect_cost'), 3)} | {_fmt(p.get('eer_recadv'))} | "
            + (f"{_fmt(p.get(f'{bb}_eer_recadv'))} | " if bb else "")
            + f"{_fmt(p.get('eer_recrst'))} | {_fmt(p.get('snr_adv_db'), 1)} | "
            f"{_fmt(p.get('snr_rst_db'), 1)} |"
        )
    targets = snap.get("targets", {})
    lines += [
        "",
        f"Fast protection (the strongest keyed point at most 0.15 CPU s per audio second: "
        f"{targets.get('fast_point') or 'none'}):",
        "",
        "| figure | value | target | met |",
        "|---|---|---|---|",
    ]
    order = ["protect_rtf_fast", "eer_rise_fraction_fast", "eer_recrst_diff_points_fast"]
    for name, t in sorted(targets.items(), key=lambda kv: (order + [kv[0]]).index(kv[0])):
        if isinstance(t, Mapping):
            met = "met" if t.get("met") else "NOT met"
            lines.append(f"| {name} | {_fmt(t.get('value'), 3)} | {t.get('target')} | {met} |")
    figure = FRONTIER_FIGURES.get(profile, f"../figures/frontier_{profile}.png")
    lines += ["", f"![{profile}: speed against strength]({figure})"]
    return lines


def _frontier_order(snap: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """Today's protection first, then the predicted code by k, then PGD by n (snapshots are
    written with sorted keys, so the order is rebuilt here)."""
    kind = {"zero": 1, "predicted": 2, "mean": 3, "pgd": 4}

    def key(item: tuple[str, Mapping[str, Any]]) -> tuple[int, int, str]:
        name, p = item
        first = 0 if name == snap.get("current") else kind.get(str(p.get("start")), 5)
        return first, int(p.get("steps") or 0), name

    return sorted(snap["points"].items(), key=key)


def frontier_section(fronts: Mapping[str, Mapping[str, Any]]) -> str:
    """docs/performance.md's generated block: each profile's speed / strength frontier, from its
    snapshot of ``benchmarks.bench_frontier`` (``docs/results/frontier/<profile>.json``)."""
    if not fronts:
        return "No frontier published yet: `python -m benchmarks.bench_frontier --profile default`."
    parts: list[str] = []
    for profile in fronts:
        parts += _frontier_profile(fronts[profile]) + [""]
    return "\n".join(parts).rstrip()
