"""Where δ's energy sits relative to x on a profile's dev speakers (spkadv.evaluation.delta_bins).

Protects the first ``--per-speaker`` utterances of each dev speaker (manifest order, cut to the
profile's ``STUDY_MAX_SECONDS``, as the studies' dev set) with the profile's stage-20 model
(``protection_code`` then ``protect``, the model's own code steps), draws Gaussian noise of the same
power per utterance (``matched_noise``, seed 0, as the studies), and reports for both the global
SNR, the median local SNR weighted by the perturbation's energy and the share of that energy in
bins with local SNR below 0 dB and below 10 dB. One torch thread.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.delta_bins --profile default

writes ``runs/<profile>/analysis/delta_bins.json`` and ``delta_bins.png``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from spkadv.base import config  # noqa: E402
from spkadv.base.fileio import sha256_file, write_json  # noqa: E402
from spkadv.core.modelfile import load_model  # noqa: E402
from spkadv.core.protect import protect, protection_code  # noqa: E402
from spkadv.data.manifest import read_manifest  # noqa: E402
from spkadv.evaluation import delta_bins  # noqa: E402
from spkadv.evaluation.conditions import matched_noise  # noqa: E402
from spkadv.studies.study import EvalSet  # noqa: E402

NOISE_SEED = 0


def measure(profile: str = "default", per_speaker: int = 2, subset: str = "dev") -> dict[str, Any]:
    """The figures of the module docstring; also writes the JSON and the figure."""
    torch.set_num_threads(1)
    values = config.load_profile(profile)
    manifest = config.stage_dir(profile, "00_data_prep", create=False) / "corpus" / "manifest.tsv"
    model_path = config.stage_dir(profile, "20_joint_training", create=False) / "model.pt"
    rows = read_manifest(manifest)
    rows = rows[rows["subset"] == subset]
    evalset = EvalSet.from_manifest(rows, per_speaker, float(values["STUDY_MAX_SECONDS"]))
    model = load_model(model_path)
    stats = {"δ (protection)": delta_bins.BinStats(), "matched noise": delta_bins.BinStats()}
    start = time.perf_counter()
    per_utt = []
    for utt, x in zip(evalset.utt_ids, evalset.waves, strict=True):
        x = np.asarray(x, dtype=np.float32)
        adv = protect(model, x, code=protection_code(model, x))
        delta = adv.astype(np.float64) - x
        noise = matched_noise(x, delta, NOISE_SEED, utt).astype(np.float64) - x
        one = {
            k: delta_bins.BinStats().add(x, d) for k, d in zip(stats, (delta, noise), strict=True)
        }
        for k, d in zip(stats, (delta, noise), strict=True):
            stats[k].add(x, d)
        per_utt.append({"utt_id": utt, **{k: s.summary() for k, s in one.items()}})
    out = {
        "profile": profile,
        "subset": subset,
        "utterances": len(evalset.utt_ids),
        "speakers": len(set(evalset.speakers)),
        "per_speaker": per_speaker,
        "max_seconds": float(values["STUDY_MAX_SECONDS"]),
        "model": str(model_path),
        "model_sha256": sha256_file(model_path),
        "stft": {"n_fft": delta_bins.N_FFT, "hop": delta_bins.HOP, "window": "hann (periodic)"},
        "floor_db": delta_bins.FLOOR_DB,
        "noise_seed": NOISE_SEED,
        "seconds": round(time.perf_counter() - start, 1),
        "pooled": {k: s.summary() for k, s in stats.items()},
        "histogram": {
            "edges_db": delta_bins.edges().tolist(),
            **{
                k: {"bins": s.counts.tolist(), "delta_energy": s.delta_energy.tolist()}
                for k, s in stats.items()
            },
        },
        "per_utterance": per_utt,
    }
    folder = config.stage_dir(profile, "analysis")
    write_json(folder / "delta_bins.json", out)
    fig = delta_bins.figure(stats, f"{profile}: {len(evalset.utt_ids)} {subset} utterances")
    fig.savefig(folder / "delta_bins.png", dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--per-speaker", type=int, default=2)
    parser.add_argument("--subset", default="dev")
    args = parser.parse_args(argv)
    out = measure(args.profile, args.per_speaker, args.subset)
    print(
        f"{out['utterances']} utterances of {out['speakers']} {out['subset']} speakers, "
        f"{out['seconds']} s"
    )
    for name, summary in out["pooled"].items():
        print(name, {k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
