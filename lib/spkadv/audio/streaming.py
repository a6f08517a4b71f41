"""Process audio files of any length in bounded memory: read a block, process it, write it.

Files are read through :class:`spkadv.audio.io.AudioSource`, which returns any window of a file
exactly as :func:`spkadv.audio.io.load_audio` returns that part of the whole file (up to float
rounding where it resamples). Windows can be read in any order and more than once, so a first pass
over the file (for instance to compute a per-file conditioning vector) costs only a second read.

:func:`block_bounds` cuts a signal into blocks (starts aligned to the model's ``alignment``,
``overlap`` samples of context on each side); :func:`spkadv.core.protect.chunked` cuts an array
with it and :func:`process_file` a file. :func:`process_file` calls a per-block function on each
block with its context and writes the centre of the result. For a 16 kHz file and a local model
the written file is bit for bit the one whole-file processing writes (tests/test_streaming.py);
peak memory depends on the block size, not the file length.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from spkadv.audio.io import AudioSource, format_for
from spkadv.base.fileio import atomic_path


def block_bounds(total: int, chunk: int, overlap: int, alignment: int) -> list[tuple[int, int]]:
    """The ``(start, stop)`` of each block of ``total`` samples, to be processed with ``overlap``
    samples of context on each side.

    Block starts are multiples of ``alignment`` (so strided layers see the same sample grid as in
    one pass), blocks are ``chunk`` samples rounded down to the alignment (at least one
    alignment), and ``overlap`` must be a multiple of the alignment too. A single block
    ``(0, total)`` means one pass over the whole signal (it is shorter than a block and its
    context).
    """
    if overlap % alignment:
        raise ValueError(f"overlap {overlap} must be a multiple of the alignment {alignment}")
    chunk = max(alignment, chunk // alignment * alignment)
    if total <= chunk + 2 * overlap:
        return [(0, total)]
    return [(a, min(total, a + chunk)) for a in range(0, total, chunk)]


class StreamResult:
    """What :func:`process_file` did: samples written and the largest absolute output sample."""

    def __init__(self, samples: int, peak_out: float, input_peak: float, blocks: int):
        self.samples, self.peak_out, self.input_peak, self.blocks = (
            samples,
            peak_out,
            input_peak,
            blocks,
        )


def write_blocks(
    source: AudioSource,
    out_path: str | os.PathLike,
    block_fn: Callable[[np.ndarray, int], np.ndarray],
    chunk: int,
    overlap: int,
    alignment: int,
    subtype: str = "FLOAT",
    progress: bool = False,
    desc: str = "",
) -> StreamResult:
    """:func:`process_file` writing straight into ``out_path`` (not atomically: for a temporary
    file that the caller renames into place, see :func:`spkadv.base.fileio.atomic_paths`)."""
    total = len(source)
    bounds = block_bounds(total, chunk, overlap, alignment)
    if len(bounds) == 1:
        overlap = 0  # one pass over the whole signal
    peak_out = 0.0
    out_path = Path(out_path)
    with sf.SoundFile(
        str(out_path),
        "w",
        samplerate=source.sr,
        channels=1,
        subtype=subtype,
        format=format_for(out_path),
    ) as out:
        for a, b in tqdm(bounds, desc=desc, disable=not progress, unit="block"):
            s, e = max(0, a - overlap), min(total, b + overlap)
            x = source.read(s, e)
            y = np.asarray(block_fn(x, s), dtype=np.float32)
            if y.shape != x.shape:
                raise ValueError(f"block function returned shape {y.shape} for {x.shape}")
            y = y[a - s : b - s]
            if not np.isfinite(y).all():
                raise RuntimeError(
                    f"{source.path}: the model produced NaN/Inf samples after {a / source.sr:.1f} s; nothing written"
                )
            if len(y):
                peak_out = max(peak_out, float(np.abs(y).max()))
            if subtype.startswith("PCM"):
                y = np.clip(y, -1.0, 1.0)
            out.write(y)
    return StreamResult(total, peak_out, source.peak, len(bounds))


def process_file(
    source: AudioSource,
    dst: str | os.PathLike,
    block_fn: Callable[[np.ndarray, int], np.ndarray],
    chunk: int,
    overlap: int,
    alignment: int,
    subtype: str = "FLOAT",
    progress: bool = False,
    desc: str = "",
) -> StreamResult:
    """Write ``block_fn`` applied block by block to ``source`` into ``dst`` (atomically).

    ``block_fn(x, start)`` maps a block with its context (a float32 array starting at sample
    ``start`` of the file) to an array of the same length;
    only the block's own samples are kept, so ``block_fn`` must be local with a reach of at most
    ``overlap`` samples (a protection model with ``overlap=model.overlap``). A NaN/Inf output
    raises ``RuntimeError`` and leaves nothing at ``dst``. 16-bit output is clipped to [-1, 1]
    (``StreamResult.peak_out`` tells how far it reached).
    """
    with atomic_path(dst) as tmp:
        return write_blocks(
            source, tmp, block_fn, chunk, overlap, alignment, subtype, progress, desc
        )
