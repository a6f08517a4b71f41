"""Clean executed notebooks in batch runs: progress bars and warnings go to the log, not the notebook.

The pipeline starts each notebook's kernel with :func:`kernel_arguments`, which makes the kernel
call :func:`install` before the first cell runs. From then on, in that kernel:

- ``tqdm.auto`` draws plain text bars (no widgets whose state a stored notebook cannot show);
- whatever Python code writes to ``sys.stderr`` (those bars, ``warnings``, ``logging``) is written
  to the stage's ``log.txt`` and echoed to the terminal that runs the pipeline, never stored in
  the executed notebook.

A failing cell's traceback is an error message, not stderr, so it stays in the notebook. Nothing
changes in JupyterLab: there ``tqdm.auto`` shows ipywidgets bars as usual.
"""

from __future__ import annotations

import io
import os
import sys
import warnings
from pathlib import Path

from tqdm.asyncio import tqdm as text_tqdm
from tqdm.asyncio import trange

ENV_LOG = "SPKADV_BATCH_LOG"  # set by install(): where this kernel's stderr goes


class TeeStream(io.TextIOBase):
    """A text stream writing to every stream it holds (errors of one never stop the others)."""

    def __init__(self, *streams: io.TextIOBase):
        super().__init__()
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            try:
                stream.write(text)
                stream.flush()
            except (OSError, ValueError):  # a closed terminal must not stop the notebook
                pass
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            try:
                stream.flush()
            except (OSError, ValueError):
                pass

    def fileno(self) -> int:  # subprocesses given sys.stderr write to the log
        return self.streams[0].fileno()

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


def _terminal_stream() -> io.TextIOBase | None:
    """The kernel's original stderr (the pipeline's terminal), or None when there is none."""
    try:  # ipykernel's captured stderr reports the original descriptor as its fileno()
        fd = sys.stderr.fileno()
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return sys.__stderr__
    return open(os.dup(fd), "w", encoding="utf-8", errors="replace", closefd=True)  # noqa: SIM115


def install(log_path: str | os.PathLike, terminal: bool = True) -> TeeStream:
    """Route this process's ``sys.stderr`` (and so progress bars and warnings) to ``log_path``.

    Also makes ``tqdm.auto`` the plain text bar. Returns the new ``sys.stderr``.
    """
    # imported here, in the kernel only: tqdm.autonotebook imports IPython and ipywidgets, which
    # the pipeline process (it imports this module for kernel_arguments) does not need
    with warnings.catch_warnings():  # tqdm.autonotebook warns at import when ipywidgets is absent
        warnings.simplefilter("ignore")
        import tqdm.auto
        import tqdm.autonotebook

    for module in (tqdm.auto, tqdm.autonotebook):
        module.tqdm = text_tqdm
        module.trange = trange
    log = open(log_path, "a", encoding="utf-8", errors="replace", buffering=1)  # noqa: SIM115
    streams = [log]
    if terminal and (term := _terminal_stream()) is not None:
        streams.append(term)
    sys.stderr = TeeStream(*streams)
    os.environ[ENV_LOG] = str(log_path)
    return sys.stderr


def kernel_arguments(log_path: str | os.PathLike, terminal: bool = True) -> list[str]:
    """ipykernel command-line arguments that call :func:`install` before the first cell."""
    line = (
        f"import spkadv.run.batchlog as _spkadv_batchlog; "
        f"_spkadv_batchlog.install({str(Path(log_path))!r}, terminal={bool(terminal)}); "
        f"del _spkadv_batchlog"
    )
    return [f"--IPKernelApp.exec_lines={line}"]
