"""The black-box study's conclusion (notebook 93), written from the run's tables: what reaches the
black-box encoder, which hypotheses for why it does not were tested and how they came out, how
much noise it notices, and the ceiling of transfer that PGD gives.

Inputs are the study's tables: ``table`` (one row per protect-time setting, columns of
:meth:`spkadv.studies.blackbox_scoring.Scorer.score_set` plus the feature changes), ``settings``
(``BLACKBOX_VARIANTS``), ``noise`` (:func:`spkadv.studies.blackbox_scoring.noise_probe`) and
``pgd`` (:func:`spkadv.studies.blackbox_scoring.pgd_row` rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from spkadv import SAMPLE_RATE
from spkadv.studies.wording import COS_TOLERANCE, bullets, listing, signed, spread, times

# An EER this many times rec-rec (and above it) is what the study counts as an encoder noticing a
# change: the noise probe's threshold.
NOTICED = 1.5
# a named encoder in the code's loss helps the black box when its rec-adv rises by at least this
# (points; about one target pair's worth of EER on a 16-speaker subset of 3 utterances each)
GAIN_POINTS = 1.0
SPLIT_HZ = 2000.0  # bands below / above this frequency: where speech power is, and where it is not


def noticed(eer: float, recrec: float) -> bool:
    """Whether an EER shows the encoder noticing a change: at least ``NOTICED`` × rec-rec, and
    above it (a rec-rec of 0 would make any EER count)."""
    return eer >= NOTICED * recrec and eer > recrec


def band_centres_hz(bands: int, top_hz: float = SAMPLE_RATE / 2) -> np.ndarray:
    """Centre frequencies of ``bands`` HTK mel bands from 0 to ``top_hz`` (torchaudio's default
    mel scale, as :func:`spkadv.studies.blackbox.mel_power` uses)."""
    top = 2595.0 * np.log10(1.0 + top_hz / 700.0)
    mels = np.linspace(0.0, top, bands + 2)[1:-1]
    return 700.0 * (10 ** (mels / 2595.0) - 1.0)


def _kind(settings: dict[str, Any]) -> str:
    """plain (code steps only), or the extra the setting tests: shift, surrogate, lowpass."""
    for key, kind in (("code_shift", "shift"), ("surrogate_weight", "surrogate"), ("lowpass_hz", "lowpass")):  # fmt: skip
        if settings.get(key):
            return kind
    if _named(settings):
        return "named"
    return "plain"


def _named(settings: dict[str, Any]) -> list[tuple[str, float]]:
    """(encoder, weight) of the named encoders a setting puts into the code's loss."""
    return [
        (str(item["encoder"]), float(item.get("weight", 1.0)))
        for item in settings.get("code_surrogates") or []
        if isinstance(item, dict) and "encoder" in item
    ]


def _reference(name: str, settings: dict[str, dict[str, Any]]) -> str | None:
    """The plain setting with the same code steps as ``name`` (what its extra is measured against)."""
    steps = settings[name].get("code_steps", 0)
    for other, s in settings.items():
        if _kind(s) == "plain" and s.get("code_steps", 0) == steps:
            return other
    return None


def _encoders_lines(table: pd.DataFrame, white: str, black: str) -> list[str]:
    b_rr, w_rr = float(table["black_recrec"].iloc[0]), float(table["white_recrec"].iloc[0])
    quiet = table["black_cos_adv"] >= table["black_cos_gn"] - COS_TOLERANCE
    verdict = (
        "the protection moves the black box no more than noise of the same power does"
        if quiet.all()
        else "the protection moves the black box more than noise does in every setting"
        if not quiet.any()
        else f"more than noise only with {listing(table.loc[~quiet, 'variant'])}"
    )
    hits = sum(noticed(e, b_rr) for e in table["black_recadv"])
    return [
        f"**{black}** (never in a loss or a choice): rec-adv {spread(table['black_recadv'], 2, ' %')} over the settings against "
        f"rec-rec {b_rr:.2f} %, {NOTICED:g}× rec-rec or more in {hits} of {len(table)}; cos(x, x′) {spread(table['black_cos_adv'], 4)} "
        f"against {spread(table['black_cos_gn'], 4)} for noise: {verdict}",
        f"{white} (the white box): rec-adv {spread(table['white_recadv'], 2, ' %')} against rec-rec {w_rr:.2f} %, "
        f"cos(x, x′) {spread(table['white_cos_adv'], 3)} against {spread(table['white_cos_gn'], 3)} for noise",
    ]  # fmt: skip


def _settings_lines(table: pd.DataFrame, settings: dict[str, dict[str, Any]], white: str, black: str) -> list[str]:  # fmt: skip
    rows = table.set_index("variant")
    lines = []
    plain = sorted((s.get("code_steps", 0), n) for n, s in settings.items() if _kind(s) == "plain")
    if len({steps for steps, _ in plain}) > 1:
        (s0, a), (s1, b) = plain[0], plain[-1]
        dw = rows.loc[b, "white_cos_adv"] - rows.loc[a, "white_cos_adv"]
        db = rows.loc[b, "black_cos_adv"] - rows.loc[a, "black_cos_adv"]
        gain = "nothing" if db >= -COS_TOLERANCE else f"{-db:.4f} of cos"
        lines.append(
            f"More code steps ({s0} → {s1}) moved {white}'s cos(x, x′) by {signed(dw, 3)} and {black}'s by {signed(db, 4)}: "
            f"the steps buy the white box {-dw:.3f} of cos and the black box {gain}"
        )  # fmt: skip
    for name, s in settings.items():
        kind, ref = _kind(s), _reference(name, settings)
        if kind == "plain" or ref is None:
            continue
        r, q = rows.loc[name], rows.loc[ref]
        db, dw = r["black_cos_adv"] - q["black_cos_adv"], r["white_cos_adv"] - q["white_cos_adv"]
        de = r["black_recadv"] - q["black_recadv"]
        helped = db < -COS_TOLERANCE or de > 0
        moved = f"{black}'s cos(x, x′) by {signed(db, 4)} and its rec-adv by {signed(de, 2)} points, {white}'s cos by {signed(dw, 3)}"
        if kind == "shift":
            lines.append(
                f"*Frame alignment*: random offsets up to {s['code_shift']} samples in the code's steps (`{name}` against `{ref}`) moved {moved}: "
                + ("some of the attack carried over" if helped else "alignment to the white box's frames is not what keeps the black box out (hypothesis lost)")
            )  # fmt: skip
        elif kind == "lowpass":
            lines.append(
                f"*Where δ sits*: δ moved below {s['lowpass_hz']:g} Hz at the same power (`{name}`, a probe) changed {black}'s linear-mel "
                f"input by {times(r['linmel_adv'], q['linmel_adv'])} as much as the δ of `{ref}` did, and moved {moved}: "
                + ("energy where the speech is reached the black box" if helped else "energy where the speech is does not reach the black box at this power either (hypothesis lost)")
            )  # fmt: skip
        elif kind == "surrogate" and "surrogate_cos_adv" in rows:
            ds = r["surrogate_cos_adv"] - q["surrogate_cos_adv"]
            attacked = (
                "attacks the surrogate"
                if ds < -COS_TOLERANCE
                else "does not attack the surrogate further"
            )
            lines.append(
                f"*A second white box*: the surrogate in the code's loss (w {s['surrogate_weight']:g}, `{name}`) moved the surrogate's cos(x, x′) "
                f"by {signed(ds, 3)} (rec-adv {q['surrogate_recadv']:.2f} → {r['surrogate_recadv']:.2f} %) and {moved}: the code {attacked}, "
                + ("and some of it reaches the black box" if helped else "and that does not reach the black box (hypothesis lost)")
            )  # fmt: skip
        elif kind == "named":
            parts = []
            for enc, weight in _named(s):
                if f"{enc}_cos_adv" in rows:
                    de_enc = r[f"{enc}_cos_adv"] - q[f"{enc}_cos_adv"]
                    parts.append(
                        f"{enc} (w {weight:g}) in the code's loss moved its own cos(x, x′) by {signed(de_enc, 3)} "
                        f"(rec-adv {q[f'{enc}_recadv']:.2f} → {r[f'{enc}_recadv']:.2f} %)"
                    )  # fmt: skip
                else:
                    parts.append(f"{enc} (w {weight:g}) in the code's loss")
            lines.append(
                f"*A second white box by name* (`{name}` against `{ref}`): {'; '.join(parts)}; it moved {moved}; "
                f"{black} rec-adv {r['black_recadv']:.2f} % against rec-rec {r['black_recrec']:.2f} % and noise {r['black_recgn']:.2f} %: "
                + (f"the black box gains {de:.2f} points" if de >= GAIN_POINTS
                   else f"a gain under {GAIN_POINTS:g} point on the black box (hypothesis lost)")
            )  # fmt: skip
    if "surrogate_recrec" in rows:
        first = plain[-1][1] if plain else rows.index[0]  # the plain setting with the most steps
        base = rows.loc[first]
        fragile = (1 - base["surrogate_cos_adv"]) > (1 - base["black_cos_adv"])
        lines.append(
            f"The surrogate (trained here on the train speakers) separates this subset at rec-rec {base['surrogate_recrec']:.2f} % "
            f"({white}: {base['white_recrec']:.2f}, {black}: {base['black_recrec']:.2f} %). The δ of `{first}` moves "
            f"the surrogate's cos(x, x′) to {base['surrogate_cos_adv']:.3f} (noise {base['surrogate_cos_gn']:.3f})"
            + (f", further than the black box's ({base['black_cos_adv']:.4f}): a small encoder trained on few speakers is fragile, and what fools it says little about one trained on many" if fragile else "")
        )  # fmt: skip
    return lines


def _bands_line(bands: dict[tuple[str, str], np.ndarray], share: np.ndarray, settings: dict[str, dict[str, Any]]) -> str:  # fmt: skip
    low = band_centres_hz(len(share)) < SPLIT_HZ
    advs = [v for (name, cond), v in bands.items() if cond == "adv" and _kind(settings.get(name, {})) != "lowpass"]  # fmt: skip
    if not advs or low.all() or not low.any():
        return ""
    delta = np.mean(advs, axis=0)
    noise = np.mean([v for (_, cond), v in bands.items() if cond == "gn"], axis=0)
    d_low, d_high, n_low, n_high = (
        delta[low].mean(),
        delta[~low].mean(),
        noise[low].mean(),
        noise[~low].mean(),
    )
    where = (
        "δ keeps out of the strong low bands and sits where the speech is weak, so a linear-power front end that the strong bands dominate sees little of it"
        if d_low > n_low and d_high < d_low
        else "δ is not kept out of the strong low bands"
    )
    return (
        f"Below {SPLIT_HZ / 1000:g} kHz (mel bands 0-{int(low.sum()) - 1}), which carry {100 * share[low].sum():.0f} % of the speech power, δ sits "
        f"{d_low:.1f} dB below the speech on average over the bands (noise of the same power: {n_low:.1f} dB); above, where the speech has "
        f"{100 * share[~low].sum():.0f} %, {d_high:.1f} dB (noise {n_high:.1f} dB): {where}"
    )  # fmt: skip


def _noise_lines(noise: pd.DataFrame, table: pd.DataFrame, white: str, black: str) -> list[str]:
    if noise.empty:
        return []
    lines = []
    bl = noise[noise["side"] == "black"]
    first = bl["snr_db"].iloc[0]
    at_first = bl[bl["snr_db"] == first]
    rr = float(bl["eer_recrec"].iloc[0])
    loud = [
        s for s, e in zip(at_first["shape"], at_first["eer_rec"], strict=True) if noticed(e, rr)
    ]
    reach = []
    for shape, g in bl.groupby("shape", sort=False):
        hit = g[[noticed(e, rr) for e in g["eer_rec"]]]
        reach.append(f"{shape} from {hit['snr_db'].max():g} dB down" if len(hit) else f"{shape} at none of {listing(f'{s:g}' for s in g['snr_db'])} dB")  # fmt: skip
    lines.append(
        f"At {first:g} dB, noise of the shapes tried gives {black} EERs of {at_first['eer_rec'].min():.2f}-{at_first['eer_rec'].max():.2f} % "
        f"(rec-rec {rr:.2f} %): " + (f"{listing(loud)} reach {NOTICED:g}× rec-rec" if loud else f"no shape reaches {NOTICED:g}× rec-rec")
        + f". Where {NOTICED:g}× is reached: {'; '.join(reach)}"
    )  # fmt: skip
    shapes = dict(zip(at_first["shape"], at_first["cos"], strict=True))
    if {"flat", "level"} <= set(shapes):
        flat, level = 1 - shapes["flat"], 1 - shapes["level"]
        lines.append(
            f"Noise that follows the speech level moves {black}'s cos by {level:.4f} at {first:g} dB, flat noise by {flat:.4f}: "
            + (
                f"flat noise moves it {times(flat, level)} as far, so {black} reacts mostly to noise in the pauses, which the level-scaled δ leaves nearly clean"
                if flat >= 2 * level
                else f"flat noise moves it {times(flat, level)} as far: {black} is not much less sensitive to noise shaped like δ"
            )
        )  # fmt: skip
    wh = noise[(noise["side"] == "white") & (noise["snr_db"] == first)]
    if len(wh):
        cos = ", ".join(f"{s} {c:.3f}" for s, c in zip(wh["shape"], wh["cos"], strict=True))
        lines.append(
            f"For comparison, {white} at {first:g} dB: cos(x, x + noise) {cos}; the optimised δ's lowest {table['white_cos_adv'].min():.3f}"
        )
    return lines


def _over(eer: float, recrec: float) -> str:
    """rec-adv against rec-rec as words: ``"6.61× rec-rec"``, or ``"rec-rec 0 %"`` (no ratio)."""
    return f"{times(eer, recrec)} rec-rec" if recrec > 0 else "rec-rec 0 %"


def _pgd_lines(pgd: pd.DataFrame, white: str, black: str) -> list[str]:
    if pgd.empty:
        return []
    names = {"white": white, "black": black}
    lines, transfer, oracle = [], [], []
    for r in pgd.to_dict("records"):
        rr = r["black_recrec"]
        if r["oracle"]:
            oracle.append(noticed(r["black_recadv"], rr))
            lines.append(
                f"PGD on {black} itself ({r['attack']}: an oracle, not a black-box result) takes its rec-adv to {r['black_recadv']:.2f} % "
                f"({_over(r['black_recadv'], rr)}), cos {r['black_cos_adv']:.3f}; it moves {white}'s cos to {r['white_cos_adv']:.3f} "
                f"(noise {r['white_cos_gn']:.3f}) and its rec-adv to {r['white_recadv']:.2f} % ({_over(r['white_recadv'], r['white_recrec'])}): "
                + ("it carries over to the white box" if noticed(r["white_recadv"], r["white_recrec"]) else "transfer fails in that direction too")
            )  # fmt: skip
        else:
            transfer.append(
                (
                    r["attack"],
                    r["attacked"],
                    noticed(r["black_recadv"], rr),
                    r["black_recadv"] / rr if rr else float("inf"),
                )
            )
            lines.append(
                f"PGD on {' + '.join(names.get(a, a) for a in r['attacked'].split('+'))} ({r['attack']}, {r['snr_adv_db']:.1f} dB) takes {white}'s rec-adv to {r['white_recadv']:.2f} % "
                f"(cos {r['white_cos_adv']:.3f}) and {black}'s to {r['black_recadv']:.2f} % "
                f"({_over(r['black_recadv'], rr)}; cos {r['black_cos_adv']:.4f}, noise {r['black_cos_gn']:.4f})"
            )  # fmt: skip
    if oracle and transfer:
        carried = [(name, sides, ratio) for name, sides, hit, ratio in transfer if hit]
        if any(oracle) and not carried:
            lines.append(
                f"**{black} is not robust at this power, yet nothing optimised without it reaches it: the limit is transfer, not "
                f"{black}'s robustness. No protection optimised only on the white box can make {black} notice it at this power, whatever its generator.**"
            )  # fmt: skip
        elif not any(oracle):
            lines.append(f"**Even PGD on {black} itself does not reach {NOTICED:g}× rec-rec at this power: the limit is {black}'s robustness, not only transfer.**")  # fmt: skip
        else:
            from_white = [name for name, sides, _ in carried if sides == "white"]
            top = max(ratio for _, _, ratio in carried)
            lines.append(
                f"**{listing([name for name, _, _ in carried])} carr{'ies' if len(carried) == 1 else 'y'} over to {black} at this power "
                f"(at most {top:.2f}× rec-rec): "
                + ("a stronger generator could reach it.**" if from_white
                   else f"none that attacks the white box alone does, so a generator optimised on {white} alone is not shown to reach it.**")
            )  # fmt: skip
    return lines


def conclusion(
    table: pd.DataFrame,
    settings: dict[str, dict[str, Any]],
    noise: pd.DataFrame,
    pgd: pd.DataFrame,
    bands: dict[tuple[str, str], np.ndarray],
    share: np.ndarray,
    white: str,
    black: str,
) -> str:
    """The study's conclusion in Markdown, every number and comparison word taken from its
    tables (see the module); ``white`` and ``black`` name the encoders."""
    lines = _encoders_lines(table, white, black)
    lines += _settings_lines(table, settings, white, black)
    lines.append(_bands_line(bands, share, settings))
    lines += _noise_lines(noise, table, white, black)
    lines += _pgd_lines(pgd, white, black)
    return bullets(lines)
