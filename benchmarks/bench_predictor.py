"""The amortised code (``spkadv.core.predictor``): protect cost with the predicted code against
today's optimised code, on one thread, and the predictor's training step.

On the default model (trained if notebook 20 ran, else freshly initialised: timing does not depend
on the weights), for a few lengths of speech: CPU seconds per audio second of the predicted code
stream, of protection with it (k = 0: predictor + generator), and of today's protection (the code
optimised for the model's ``code_steps`` steps + generator) on the shortest length. The code
stream predicted in pieces is checked to equal the whole file's. The predictor is the default
run's notebook 95 one when there, else a fresh one of the same size.

    python -m benchmarks.bench_predictor [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from benchmarks import common

LENGTHS, QUICK_LENGTHS = (10.0, 60.0), (2.0,)
FIT_STEPS, QUICK_FIT_STEPS = 50, 5
FIT_SEGMENTS = 2000  # about the default study's training set


def _cpu(fn) -> tuple[Any, float]:
    started = time.process_time()
    out = fn()
    return out, time.process_time() - started


def _predictor(model, predictor, config):
    """The default run's trained predictor, or a fresh one of the study's size."""
    path = config.stage_dir("default", "95_code_predictor", create=False) / "code_predictor.pt"
    try:
        return predictor.load_predictor(path, model), f"trained ({path})"
    except predictor.PredictorFileError:
        net = predictor.CodePredictor(predictor.PredictorConfig.for_model(model)).eval()
        return net, "freshly initialised (notebook 95 has not run on default)"


def run(quick: bool = False) -> dict[str, Any]:
    import torch

    predictor = common.require("spkadv.core.predictor", "the amortised code")
    from spkadv.base import config
    from spkadv.core import protect

    torch.set_num_threads(1)
    model, model_source = common.default_model()
    if "encoder" not in model.meta:  # a fresh model: today's protection as the profile sets it
        model.meta.update({"encoder": "campplus", "code_steps": 10, "code_radius": 0.5 * 128**0.5})
    net, net_source = _predictor(model, predictor, config)
    warm, _ = common.speech_signal(1.0)
    protect.protect(model, warm, code=predictor.amortised_code(model, net, warm))
    rows = []
    for seconds in QUICK_LENGTHS if quick else LENGTHS:
        x, audio = common.speech_signal(seconds)
        code, t_code = _cpu(lambda x=x: predictor.predict_codes(net, x))
        _, t_protect = _cpu(lambda x=x, code=code: protect.protect(model, x, code=code))
        pieced = predictor.predict_codes(net, lambda a, b, x=x: x[a:b], len(x), piece_seconds=5.0)
        rows.append(
            {
                "seconds": seconds,
                "rtf_predict": t_code / seconds,
                "rtf_protect_k0": (t_code + t_protect) / seconds,
                "rtf_generator": t_protect / seconds,
                "pieces_equal_whole": bool(np.array_equal(code, pieced)),
            }
        )
    shortest = (QUICK_LENGTHS if quick else LENGTHS)[0]
    x, _ = common.speech_signal(shortest)
    steps = int(model.meta.get("code_steps", 10))
    code, t_today = _cpu(lambda: protect.protection_code(model, x, steps=steps))
    _, t_gen = _cpu(lambda: protect.protect(model, x, code=code))
    today = (t_today + t_gen) / shortest
    fresh = predictor.CodePredictor(net.config)
    cfg = net.config
    feats = torch.randn(FIT_SEGMENTS, cfg.n_mels, cfg.frames)
    codes = torch.randn(FIT_SEGMENTS, cfg.code_dim)
    fit_steps = QUICK_FIT_STEPS if quick else FIT_STEPS
    _, t_fit = _cpu(lambda: predictor.fit(fresh, feats, codes, steps=fit_steps, batch_size=64))
    k0 = next(r for r in rows if r["seconds"] == shortest)["rtf_protect_k0"]
    return {
        "model": model_source,
        "predictor": net_source,
        "audio": audio,
        "threads": torch.get_num_threads(),
        "rows": rows,
        "rtf_protect_k0": k0,
        "rtf_protect_today": today,
        "today_code_steps": steps,
        "speedup_k0": today / k0,
        "fit_step_cpu_s": t_fit / fit_steps,
        "pieces_equal_whole": all(r["pieces_equal_whole"] for r in rows),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short length, a few fit steps")
    result = run(parser.parse_args().quick)
    print(json.dumps(result, indent=1))
    return 0 if result["pieces_equal_whole"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
