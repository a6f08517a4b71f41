"""spkadv: generation and removal of speaker adversarial perturbation for voice privacy.

A thin library behind the notebooks in ``notebooks/``; see README.md.
"""

__version__ = "0.1.0"
SAMPLE_RATE = 16_000
