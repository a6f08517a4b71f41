"""Eval-set protection in worker processes: ``spkadv.core.conditions.write_conditions`` in one process with
a torch thread per core against one worker process per core with one thread each.

What notebook 20 does for every eval utterance: the per-utterance code optimisation, protection,
the matched noise, one-shot restoration and refinement. The code optimisation runs small
convolutions (the generator's decoder and CAM++, forward and backward) that a second thread barely
speeds up, so on a 2-core machine two processes should get through the set nearly twice as fast.

Figures: ``seconds_1_process``, ``seconds_workers``, ``workers_speedup`` (ratio measured in one run,
the worker start-up included), and the mean SNRs of both runs (the code optimisation is not
bit-reproducible across thread counts, so they agree within noise, not exactly).

Second part, the same comparison for CAM++ embedding of whole files
(``spkadv.encoders.embed.embed_files``, cache off): utterances of different lengths make batches of one,
which a second thread barely speeds up either. Figures: ``embed_seconds_1_process``,
``embed_seconds_workers``, ``embed_workers_speedup``, ``embed_max_abs_diff`` (thread counts differ,
so the embeddings agree to float32 noise, not bit for bit).

Model: the default profile's trained model; else a freshly initialised one of its architecture
with 5 code steps against CAM++ (timing does not depend on the weights).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import common

UTTERANCES, QUICK_UTTERANCES = 40, 6
EMBED_FILES, QUICK_EMBED_FILES = 480, 24


def run(quick: bool = False) -> dict[str, Any]:
    import pandas as pd
    import torch

    common.require("spkadv.core.protect", "eval-set protection")
    model, source = common.default_model()
    if model.config.code_film and not model.meta.get("code_steps"):
        model.meta.update(code_steps=5, encoder="campplus")  # the untrained stand-in: the same work
    paths, audio = common.speech_files(QUICK_UTTERANCES if quick else UTTERANCES)
    rows = pd.DataFrame({"utt_id": [p.stem for p in paths], "path": [str(p) for p in paths]})
    from spkadv.base.threads import usable_cores
    from spkadv.evaluation import conditions

    workers = max(2, min(usable_cores(), 4))
    previous = torch.get_num_threads()
    out: dict[str, Any] = {
        "model": source,
        "audio": audio,
        "utterances": len(rows),
        "threads_1_process": workers,  # the same cores: one process with a thread per core
        "workers": workers,
    }
    try:
        for name, count in (("1_process", 1), ("workers", workers)):
            torch.set_num_threads(workers if count == 1 else previous)
            with tempfile.TemporaryDirectory() as tmp:
                folders = {c: Path(tmp) / c for c in ("adv", "gn", "rst", "rst_refined")}
                for folder in folders.values():
                    folder.mkdir()
                t0 = time.perf_counter()
                table = conditions.write_conditions(
                    model, rows, folders, 3, 0, progress=False, workers=count
                )
                out[f"seconds_{name}"] = round(time.perf_counter() - t0, 2)
                out[f"snr_adv_db_{name}"] = round(conditions.mean_db(table["snr_adv_db"]), 3)
                out[f"snr_rst_db_{name}"] = round(conditions.mean_db(table["snr_rst_db"]), 3)
                out[f"order_kept_{name}"] = list(table["utt_id"]) == list(rows["utt_id"])
    finally:  # the caller's thread count, even when a run fails
        torch.set_num_threads(previous)
    out["workers_speedup"] = round(out["seconds_1_process"] / out["seconds_workers"], 2)
    out.update(embed_speed(workers, QUICK_EMBED_FILES if quick else EMBED_FILES))
    return out


def embed_speed(workers: int, files: int) -> dict[str, Any]:
    """CAM++ embedding of ``files`` eval files: one process of ``workers`` threads, then
    ``workers`` one-thread processes (their start-up included)."""
    import numpy as np
    import torch
    from spkadv.encoders import embed
    from spkadv.encoders import speaker as encoders

    paths, audio = common.speech_files(files)
    encoder = encoders.load("campplus")
    previous = torch.get_num_threads()
    out: dict[str, Any] = {"embed_files": len(paths), "embed_audio": audio}
    embeddings = {}
    try:
        for name, count in (("1_process", 1), ("workers", workers)):
            torch.set_num_threads(workers if count == 1 else previous)
            t0 = time.perf_counter()
            embeddings[name] = embed.embed_files(
                encoder, paths, cache_dir=False, progress=False, workers=count
            )
            out[f"embed_seconds_{name}"] = round(time.perf_counter() - t0, 2)
    finally:
        torch.set_num_threads(previous)
    out["embed_workers_speedup"] = round(
        out["embed_seconds_1_process"] / out["embed_seconds_workers"], 2
    )
    out["embed_max_abs_diff"] = float(np.abs(embeddings["1_process"] - embeddings["workers"]).max())
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=1))
