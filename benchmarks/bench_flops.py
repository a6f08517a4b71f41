"""Item 3: FLOPs per second of audio of the generator, achieved GFLOP/s, and the ratio to a plain
float32 matrix product's GFLOP/s measured in the same process on the same threads.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-accumulate of
convolutions and matrix products; element-wise work such as activations is not counted), which
``tests/test_benchmarks.py`` checks against a hand count.
"""

from __future__ import annotations

from typing import Any

from benchmarks import common

AUDIO_SECONDS, QUICK_AUDIO_SECONDS = 10.0, 1.0
MATMUL_N, QUICK_MATMUL_N = 1024, 256


def count_flops(module, *inputs) -> int:
    """FLOPs of one forward pass of ``module(*inputs)`` (no gradients)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(*inputs)
    return int(counter.get_total_flops())


def matmul_gflops(n: int, repeat: int = 5) -> float:
    """GFLOP/s of ``a @ b`` for two n×n float32 matrices (best of ``repeat``)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    seconds = common.best_time(lambda: a @ b, repeat=repeat)
    return 2 * n**3 / seconds / 1e9


def run(quick: bool = False) -> dict[str, Any]:
    import torch

    model, source = common.default_model()
    generator = model.generator
    sr = common.SAMPLE_RATE
    flops_per_second = count_flops(generator, torch.zeros(1, sr)) / 1.0
    seconds = QUICK_AUDIO_SECONDS if quick else AUDIO_SECONDS
    x, _ = common.speech_signal(seconds)
    xt = torch.from_numpy(x).unsqueeze(0)
    flops = count_flops(generator, xt)

    def forward():
        with torch.inference_mode():
            generator(xt)

    t_gen = common.best_time(forward, repeat=3)
    ops = op_shares(forward)
    gen_gflops = flops / t_gen / 1e9
    mm = matmul_gflops(QUICK_MATMUL_N if quick else MATMUL_N)
    params = sum(p.numel() for p in generator.parameters())
    return {
        "model": source,
        "threads": torch.get_num_threads(),
        "generator_parameters": params,
        "generator_gflop_per_audio_second": flops_per_second / 1e9,
        "generator_forward_s": t_gen,
        "audio_seconds": seconds,
        "generator_gflops": gen_gflops,
        "matmul_n": QUICK_MATMUL_N if quick else MATMUL_N,
        "matmul_gflops": mm,
        "gflops_ratio_vs_matmul": gen_gflops / mm,
        "generator_self_cpu_share_by_op": ops,
    }


def op_shares(fn, top: int = 8) -> dict[str, float]:
    """Share of self CPU time of the ``top`` torch operators in one call of ``fn``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return {e.key: round(e.self_cpu_time_total / total, 4) for e in events[:top]}
