"""Eval-set protection in worker processes: ``spkadv.protect.write_conditions`` in one process with
a torch thread per core against one worker process per core with one thread each.

What notebook 20 does for every eval utterance: the per-utterance code optimisation, protection,
the matched noise, one-shot restoration and refinement. The code optimisation runs small
convolutions (the generator's decoder and CAM++, forward and backward) that a second thread barely
speeds up, so on a 2-core machine two processes should get through the set nearly twice as fast.

Figures: ``seconds_1_process``, ``seconds_workers``, ``workers_speedup`` (ratio measured in one run,
the worker start-up included), and the mean SNRs of both runs (the code optimisation is not
bit-reproducible across thread counts, so they agree within noise, not exactly).

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


def run(quick: bool = False) -> dict[str, Any]:
    import pandas as pd
    import torch

    protect = common.require("spkadv.protect", "eval-set protection")
    model, source = common.default_model()
    if model.config.code_film and not model.meta.get("code_steps"):
        model.meta.update(code_steps=5, encoder="campplus")  # the untrained stand-in: the same work
    paths, audio = common.speech_files(QUICK_UTTERANCES if quick else UTTERANCES)
    rows = pd.DataFrame({"utt_id": [p.stem for p in paths], "path": [str(p) for p in paths]})
    from spkadv.threads import usable_cores

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
                table = protect.write_conditions(
                    model, rows, folders, 3, 0, progress=False, workers=count
                )
                out[f"seconds_{name}"] = round(time.perf_counter() - t0, 2)
                out[f"snr_adv_db_{name}"] = round(protect.mean_db(table["snr_adv_db"]), 3)
                out[f"snr_rst_db_{name}"] = round(protect.mean_db(table["snr_rst_db"]), 3)
                out[f"order_kept_{name}"] = list(table["utt_id"]) == list(rows["utt_id"])
    finally:  # the caller's thread count, even when a run fails
        torch.set_num_threads(previous)
    out["workers_speedup"] = round(out["seconds_1_process"] / out["seconds_workers"], 2)
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=1))
