"""How many CPU threads torch uses, and how its idle threads wait.

On a machine shared with other jobs, torch's default (one OpenMP thread per core, idle threads
spinning while they wait for work) degrades badly: a spinning worker whose core is taken by
another process holds up every parallel region. Measured on the 2-core development VM (CAM++ on
8 × 5 s, see ``benchmarks/bench_busy.py``): 1.70 batches/s alone, 0.57 beside one busy
single-threaded process, 1.01 with ``OMP_WAIT_POLICY=PASSIVE``, 1.14 with one thread.

Sleeping costs on a quiet machine, though: a joint-training step of the default model (batch
4 × 1 s, two threads, float32, AVX2 VM) took 1.76 s with ``OMP_WAIT_POLICY=PASSIVE`` and 0.95 s
with libgomp's default waiting (spin a while, then sleep), where one thread took 1.26 s: the many
small parallel regions of a step each pay a futex wake-up. Beside one busy process the same step
took 3.05 s spinning, 1.37 s passive, 1.18 s on one thread.

The policy applied by :func:`configure` (the ``spkadv`` command, and every notebook kernel the
pipeline starts), decided from the load when the process starts:

* the thread count, first found of: ``SPKADV_THREADS`` (a number, or ``auto``), an explicit
  ``OMP_NUM_THREADS``, else ``auto``: the cores this process may run on
  (``os.sched_getaffinity``) minus the cores other processes keep busy right now (CPU time
  over a short sample of ``/proc/stat``; ``os.getloadavg`` where that is missing), at least 1.
* the waiting policy: libgomp's default (``OMP_WAIT_POLICY`` left unset) when the threads fit on
  the cores free at start, else ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep instead of
  spinning, so a thread whose core another process holds does not stall every parallel region).
  OpenMP reads it once, when torch starts its thread pool, so it must be in the environment
  before torch is imported; an explicit value in the environment is kept. A machine that becomes
  busy only after a process started is not seen: that process keeps spinning.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from typing import Any

ENV_THREADS = "SPKADV_THREADS"
ENV_EMBED_WORKERS = "SPKADV_EMBED_WORKERS"  # read by spkadv.encoders.embed.embed_files
WAIT_POLICY = "PASSIVE"  # when the threads do not all fit on the free cores
SPIN = "spin"  # ThreadPlan.wait_policy for libgomp's default (OMP_WAIT_POLICY unset)
SAMPLE_SECONDS = 0.25  # how long /proc/stat is sampled to find the busy cores


@dataclasses.dataclass(frozen=True)
class ThreadPlan:
    """The thread count chosen, why, and the OpenMP waiting policy."""

    threads: int
    source: str  # "SPKADV_THREADS", "OMP_NUM_THREADS" or "auto (...)"
    wait_policy: str  # an OMP_WAIT_POLICY value, or SPIN: leave it unset (libgomp's default)

    def describe(self) -> str:
        wait = (
            "OMP_WAIT_POLICY unset (threads fit on the free cores: spin, then sleep)"
            if self.wait_policy == SPIN
            else f"OMP_WAIT_POLICY={self.wait_policy}"
        )
        return f"torch threads {self.threads} ({self.source}), {wait}"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _cpu_times() -> tuple[float, float, float] | None:
    """(busy, niced, total) jiffies of all CPUs from ``/proc/stat``, or None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [float(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    user, nice, system, idle, iowait, irq, softirq, steal = values + [0.0] * (8 - len(values))
    total = user + nice + system + idle + iowait + irq + softirq + steal
    return user + system + irq + softirq + steal, nice, total


def busy_cores(sample_seconds: float = SAMPLE_SECONDS) -> tuple[float, str]:
    """How many cores other processes keep busy now, and how that was measured.

    CPU time of niced processes (``nice`` > 0) counts only when this process is niced as well:
    a process at normal priority takes their cores whenever it needs them.
    """
    before = _cpu_times()
    if before is not None and sample_seconds > 0:
        time.sleep(sample_seconds)
        after = _cpu_times()
        total = after[2] - before[2]
        if total > 0:
            busy = after[0] - before[0]
            if os.nice(0) > 0:
                busy += after[1] - before[1]
            cores = os.cpu_count() or 1
            return busy / total * cores, f"/proc/stat over {sample_seconds:g} s"
    try:
        return os.getloadavg()[0], "1-minute load average"
    except OSError:
        return 0.0, "no load information"


def free_cores(cores: int, busy: float) -> int:
    """Cores not kept busy by other processes, ``round(cores - busy)``, between 0 and ``cores``."""
    return int(min(cores, max(0, int(cores - busy + 0.5))))


def auto_threads(
    cores: int | None = None, busy: float | None = None, how: str = "given"
) -> tuple[int, str]:
    """Threads for the cores free now: ``round(cores - busy)``, between 1 and ``cores``
    (``how``: how a given ``busy`` was measured, for the description)."""
    cores = usable_cores() if cores is None else cores
    if busy is None:
        busy, how = busy_cores()
    threads = max(1, free_cores(cores, busy))
    return threads, f"auto: {busy:.1f} of {cores} cores busy ({how})"


def wait_policy(threads: int, cores: int, busy: float) -> str:
    """SPIN (libgomp's default waiting) when more than one thread runs and all of them fit on the
    cores free now, else PASSIVE (one thread has nobody to wait for; PASSIVE changes nothing)."""
    return SPIN if 1 < threads <= free_cores(cores, busy) else WAIT_POLICY


def _positive_int(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name}={text!r}: expected a whole number of threads >= 1, or 'auto'")
    return value


def plan(env: MutableMapping[str, str] | None = None) -> ThreadPlan:
    """The thread count and waiting policy for ``env`` (default: this process's environment).

    Raises:
        ValueError: ``SPKADV_THREADS`` or ``OMP_NUM_THREADS`` is not a positive whole number.
    """
    env = os.environ if env is None else env
    explicit_wait = env.get("OMP_WAIT_POLICY", "").strip()
    setting = env.get(ENV_THREADS, "").strip()
    explicit = env.get("OMP_NUM_THREADS", "").strip()
    if setting and setting.lower() != "auto":
        count, source = _positive_int(ENV_THREADS, setting), ENV_THREADS
    elif explicit and not setting:
        count, source = _positive_int("OMP_NUM_THREADS", explicit), "OMP_NUM_THREADS"
    else:
        count, source = None, ""
    if explicit_wait and count is not None:
        return ThreadPlan(count, source, explicit_wait)
    if count == 1:
        return ThreadPlan(1, source, WAIT_POLICY)  # one thread: the waiting policy is moot
    busy, how = busy_cores()
    cores = usable_cores()
    if count is None:
        count, source = auto_threads(cores, busy, how)
    return ThreadPlan(count, source, explicit_wait or wait_policy(count, cores, busy))


def configure(env: MutableMapping[str, str] | None = None) -> ThreadPlan:
    """Apply the policy: put it in the environment and, if torch is loaded already, set its threads.

    Call it before ``import torch`` so that the waiting policy takes effect; afterwards only the
    thread count can still change.
    """
    env = os.environ if env is None else env
    chosen = plan(env)
    if chosen.wait_policy == SPIN:
        env.pop("OMP_WAIT_POLICY", None)
    else:
        env["OMP_WAIT_POLICY"] = chosen.wait_policy
    env["OMP_NUM_THREADS"] = str(chosen.threads)
    env["MKL_NUM_THREADS"] = str(chosen.threads)
    if env is os.environ and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(chosen.threads)
    return chosen


@contextlib.contextmanager
def kernel_environment(log: Callable[[str], None] | None = None) -> Iterator[ThreadPlan]:
    """The policy in ``os.environ`` for the child processes started inside (notebook kernels),
    decided afresh from the load at entry; the environment is restored on exit. Kernels also get
    ``SPKADV_EMBED_WORKERS=auto`` (unless set): CAM++ embedding in one-thread worker processes."""
    keys = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", ENV_EMBED_WORKERS)
    saved = {k: os.environ.get(k) for k in keys}
    child_env = dict(os.environ)
    chosen = configure(child_env)
    child_env.setdefault(ENV_EMBED_WORKERS, "auto")  # kernels embed in worker processes
    try:
        for key in keys:
            if key in child_env:
                os.environ[key] = child_env[key]
            else:  # the spinning default: OMP_WAIT_POLICY unset
                os.environ.pop(key, None)
        if log is not None:
            log(f"  {chosen.describe()}")
        yield chosen
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def worker_count(workers: int, items: int, parallel: bool = True) -> int:
    """Processes for ``items`` tasks: ``workers`` as given (1: in this process), or for 0 one per
    torch thread of this process when ``parallel`` (the work is on the CPU and worth sharing),
    else 1; never more than the tasks, at least 1. Raises ValueError for a negative count."""
    if workers < 0:
        raise ValueError(f"workers={workers}: expected 0 (automatic), 1 or more processes")
    if workers == 0:
        import torch  # here, not at the top: configure() must set OMP_* before torch loads

        workers = torch.get_num_threads() if parallel else 1
    return max(1, min(workers, items))


def process_map(
    fn: Callable[[Any, Any], Any],
    items: Sequence[Any],
    workers: int,
    state: Any = None,
    setup: tuple[Callable[..., Any], tuple] | None = None,
) -> Iterator[tuple[int, Any]]:
    """``(i, fn(state, items[i]))`` for every item: the one worker-process pattern of the package.

    ``workers`` <= 1: in this process, in the items' order, with ``state``. Otherwise in
    ``workers`` spawned processes of one torch thread each, yielded as they complete: each process
    builds its own state once, after its thread count is set, with ``factory(*args)`` for
    ``setup = (factory, args)`` (default: ``state`` itself, pickled), then calls ``fn`` on the
    items it is given. ``fn`` and ``factory`` must be module-level functions. On an error or an
    interrupt the calls not started are cancelled.
    """
    if workers <= 1:
        for i, item in enumerate(items):
            yield i, fn(state, item)
        return
    factory, args = setup if setup is not None else (_same, (state,))
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_process_start,
        initargs=(fn, factory, args),
    ) as pool:
        futures = {pool.submit(_process_call, item): i for i, item in enumerate(items)}
        try:
            for future in concurrent.futures.as_completed(futures):
                yield futures[future], future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _same(state: Any) -> Any:
    return state


# What a worker process of process_map holds: its function and the state it built once.
_PROCESS_FN: Callable[[Any, Any], Any] | None = None
_PROCESS_STATE: Any = None


def _process_start(fn: Callable[[Any, Any], Any], factory: Callable[..., Any], args: tuple) -> None:
    global _PROCESS_FN, _PROCESS_STATE
    import torch  # here, not at the top: configure() must set OMP_* before torch loads

    torch.set_num_threads(1)
    _PROCESS_FN, _PROCESS_STATE = fn, factory(*args)


def _process_call(item: Any) -> Any:
    assert _PROCESS_FN is not None, "process_map worker started without its function"
    return _PROCESS_FN(_PROCESS_STATE, item)
