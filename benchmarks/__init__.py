"""Benchmarks of spkadv (issue 7): protection/restoration speed and memory, the generator against
an iterative attack, FLOPs, training throughput, evaluation and the whole pipeline.

Run all of them with ``make bench`` (``python -m benchmarks.run_all``); ``--quick`` for a reduced
run, ``--only protect,pgd,...`` to select items. Figures go to ``runs/bench/*.json``.
"""
