"""The speed / strength frontier of protection on a profile's eval speakers, in one run on one
torch thread.

The profile's trained model (notebook 20) and its code predictor (study 95, trained on
train-speaker codes, its settings chosen on dev speakers) protect ``PER_SPEAKER`` utterances of
every eval speaker (cut to ``MAX_SECONDS``; trials made as Table 1's): the predicted code refined
for k steps (k = 0: one pass, no white-box encoder at protect time) and today's protection (the
zero code and the model's ``code_steps`` steps). Per-utterance PGD on the white box for n steps at
today's SNR is the keyless reference. Each point: white-box and held-out black-box (the profile's
``BLACKBOX_ENCODER``) rec-adv EER, rec-rst EER, SNR(adv), SNR(rst) and the protect CPU seconds
per audio second. Writes ``runs/bench/frontier-<profile>.json`` (points and the fast-protection
targets as value / target / met, :func:`spkadv.studies.frontier.speed_targets`), ``.csv`` and
the figure ``figures/frontier[_<profile>].png``.

    python -m benchmarks.bench_frontier --profile default         # about 25 CPU minutes
    python -m benchmarks.bench_frontier --profile speechocean762  # needs $SPKADV_SPEECHOCEAN762
    python -m benchmarks.run_all --only frontier                  # the default profile
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from benchmarks import common

PROFILE = "default"
PER_SPEAKER, QUICK_PER_SPEAKER = 2, 2
MAX_SECONDS = {"default": 6.0, "speechocean762": 4.0}
QUICK_SPEAKERS_PER_GENDER = 2
REFINE_STEPS, QUICK_REFINE_STEPS = (0, 1, 2, 5, 10), (0, 1)
PGD_STEPS, QUICK_PGD_STEPS = (1, 2, 5, 10), (1,)


def _steps(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers") from None
    if not steps or min(steps) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected integers >= 0")
    return steps


def run(
    quick: bool = False,
    profile: str = PROFILE,
    refine_steps: Sequence[int] | None = None,
    pgd_steps: Sequence[int] | None = None,
    per_speaker: int | None = None,
    max_seconds: float | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    import datetime as dt
    import os

    import pandas as pd
    from spkadv.base import config
    from spkadv.core import modelfile
    from spkadv.data import manifest as data
    from spkadv.encoders import speaker
    from spkadv.evaluation import conditions, plotting
    from spkadv.report import runinfo
    from spkadv.studies import amortised, frontier, settings, study

    predictor = common.require("spkadv.core.predictor", "the amortised code")
    environment = {
        **runinfo.git_state(config.project_root()),
        **runinfo.machine(),
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
        "load_average_at_start": list(os.getloadavg()),
    }
    model_path = config.stage_dir(profile, "20_joint_training", create=False) / "model.pt"
    if not model_path.is_file():
        raise common.Unavailable(f"no trained {profile} model ({model_path}): run its pipeline")
    model = modelfile.load_model(model_path)
    net_path = config.stage_dir(profile, "95_code_predictor", create=False) / "code_predictor.pt"
    try:
        net = predictor.load_predictor(net_path, model)
    except predictor.PredictorFileError as err:
        raise common.Unavailable(
            f"no code predictor for this model ({err}); run: make study PROFILE={profile} "
            "STUDY=95_code_predictor"
        ) from err
    params = config.load_profile(profile)
    try:
        manifest = data.read_manifest(data.manifest_path(profile))
    except data.CorpusError as err:
        raise common.Unavailable(str(err)) from err
    rows = manifest[manifest["subset"] == "eval"]
    per_speaker = per_speaker or (QUICK_PER_SPEAKER if quick else PER_SPEAKER)
    max_seconds = max_seconds or MAX_SECONDS.get(profile, 6.0)
    evalset, trials = settings.dev_set(
        rows,
        per_speaker,
        max_seconds,
        int(params["TRIAL_NONTARGETS"]),
        int(params["TRIAL_SEED"]),
        QUICK_SPEAKERS_PER_GENDER if quick else 0,
    )
    refine = tuple(refine_steps or (QUICK_REFINE_STEPS if quick else REFINE_STEPS))
    pgd_n = tuple(pgd_steps or (QUICK_PGD_STEPS if quick else PGD_STEPS))
    code_steps = int(model.meta.get("code_steps", 0))
    white = model.encoder()
    bb_name = str(params.get("BLACKBOX_ENCODER") or "")
    try:
        black = speaker.load(bb_name, device="cpu") if bb_name else None
    except Exception as err:  # asset missing: the white-box frontier alone
        print(f"black box {bb_name!r} unavailable ({err}); white box only", file=sys.stderr)
        black, bb_name = None, ""
    with settings.one_thread():
        rec = dict(zip(evalset.utt_ids, study.embed(white, evalset.waves), strict=True))
        blackbox = {}
        if black is not None:
            rec_bb = dict(zip(evalset.utt_ids, study.embed(black, evalset.waves), strict=True))
            blackbox[bb_name] = (black, rec_bb)
    recrec = {"white": conditions.condition_eers(trials, {"rec": rec}, ["rec-rec"])["rec-rec"]}
    for name, (_, rec_b) in blackbox.items():
        recrec[name] = conditions.condition_eers(trials, {"rec": rec_b}, ["rec-rec"])["rec-rec"]
    audio = sum(len(x) for x in evalset.waves) / common.SAMPLE_RATE
    print(
        f"{profile} eval: {len(evalset.waves)} utterances of {len(set(evalset.speakers))} speakers, "
        f"{audio / 60:.1f} min, {len(trials)} trials ({int(trials['target'].sum())} target); "
        f"rec-rec {', '.join(f'{k} {v:.2f} %' for k, v in recrec.items())}",
        flush=True,
    )
    settings.warm_up(model, evalset)  # one-time set-up, not charged to a point
    predictor.amortised_code(model, net, evalset.waves[0])
    current = f"today: zero code, {code_steps} steps"
    variants = {current: {"start": "zero", "steps": code_steps}}
    variants |= {f"predicted, {k} steps": {"start": "predicted", "steps": k} for k in refine}
    points: dict[str, dict[str, Any]] = {}

    def report(name: str, row: dict[str, Any]) -> None:
        bb = f", {bb_name} {row[f'{bb_name}_eer_recadv']:.2f} %" if bb_name else ""
        print(
            f"  {name}: {row['protect_cost']:.3f} CPU s per audio s; rec-adv {row['eer_recadv']:.2f} %"
            f"{bb}; rec-rst {row['eer_recrst']:.2f} %; SNR(adv) {row['snr_adv_db']:.1f}, "
            f"SNR(rst) {row['snr_rst_db']:.1f} dB",
            flush=True,
        )

    for name, variant in variants.items():
        points[name] = amortised.measure(
            model, net, evalset, trials, rec, variant, progress=progress, blackbox=blackbox
        )
        report(name, points[name])
    snr = round(float(points[current]["snr_adv_db"]), 1)
    for n in pgd_n:
        name = f"PGD, {n} steps"
        points[name] = frontier.pgd_point(
            white, evalset, trials, rec, snr, n, blackbox=blackbox, progress=progress
        )
        report(name, points[name])
    table = pd.DataFrame.from_dict(points, orient="index")
    targets = frontier.speed_targets(table, current, recrec["white"])
    out_dir = common.results_dir()
    stem = f"frontier-{profile}" + ("-quick" if quick else "")  # a quick run keeps the real files
    table.reset_index(names="point").to_csv(out_dir / f"{stem}.csv", index=False)
    fig = frontier.speed_figure(
        table, current, recrec, bb_name or None,
        f"{profile}: protection speed and strength, eval speakers "
        f"({len(evalset.waves)} utterances, {audio / 60:.1f} min)",
    )  # fmt: skip
    if quick:
        figure = [out_dir / f"{stem}.png"]
        fig.savefig(figure[0], dpi=120, bbox_inches="tight")
    else:
        # committed beside the default profile's figures (figures/<profile>/ is not committed)
        name = "frontier" if profile == "default" else f"frontier_{profile}"
        figure = plotting.save_figure(fig, name, None)
    k0 = f"predicted, {min(refine)} steps"
    environment["load_average_at_end"] = list(os.getloadavg())
    out: dict[str, Any] = {
        "profile": profile,
        "quick": quick,
        "environment": environment,
        "command": f"python -m benchmarks.bench_frontier --profile {profile}",
        "model": str(model_path),
        "predictor": str(net_path),
        "subset": "eval",
        "utterances": len(evalset.waves),
        "speakers": len(set(evalset.speakers)),
        "audio_seconds": audio,
        "trials": len(trials),
        "target_trials": int(trials["target"].sum()),
        "blackbox": bb_name or None,
        "eer_recrec": recrec,
        "current": current,
        "threads": 1,
        "pgd_snr_db": snr,
        "targets": targets,
        **{name: t["value"] for name, t in targets.items() if isinstance(t, dict)},
        "figure": str(figure[0]),
        "protect_rtf_1thread": float(points[current]["protect_cost"]),
        "protect_rtf_1thread_k0": float(points[k0]["protect_cost"]),
        "eer_recadv_current": float(points[current]["eer_recadv"]),
        "eer_recadv_k0": float(points[k0]["eer_recadv"]),
        "points": {
            name: {
                k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()
            }
            for name, row in points.items()
        },
    }
    if bb_name:
        out["blackbox_eer_recadv_current"] = float(points[current][f"{bb_name}_eer_recadv"])
        out["blackbox_eer_recadv_k0"] = float(points[k0][f"{bb_name}_eer_recadv"])
    (out_dir / f"{stem}.json").write_text(json.dumps(out, indent=1, default=float))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=PROFILE, help="profile whose run and predictor to use")
    parser.add_argument("--quick", action="store_true", help="4 speakers, k = 0, 1, one PGD step")
    parser.add_argument(
        "--refine-steps", type=_steps, help="k of the predicted code, e.g. 0,1,2,5,10"
    )
    parser.add_argument("--pgd-steps", type=_steps, help="n of PGD, e.g. 1,2,5,10")
    parser.add_argument(
        "--per-speaker", type=int, help=f"eval utterances per speaker ({PER_SPEAKER})"
    )
    parser.add_argument("--max-seconds", type=float, help="utterances cut to this length")
    args = parser.parse_args(argv)
    if args.per_speaker is not None and args.per_speaker < 2:
        parser.error("--per-speaker: at least 2 (a target trial needs two utterances)")
    try:
        result = run(
            args.quick, args.profile, args.refine_steps, args.pgd_steps,
            args.per_speaker, args.max_seconds, progress=sys.stderr.isatty(),
        )  # fmt: skip
    except common.Unavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result["targets"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
