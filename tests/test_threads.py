"""The thread policy: SPKADV_THREADS / OMP_NUM_THREADS honoured, auto count, OpenMP waiting policy;
the worker-process helper."""

from __future__ import annotations

import json
import operator
import os
import subprocess
import sys
from pathlib import Path

import pytest
from spkadv.base import threads

ROOT = Path(__file__).resolve().parents[1]


def _child(code: str, **env: str) -> dict:
    full = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    full.pop(threads.ENV_THREADS, None)
    full.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=full,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


REPORT = (
    "import json, os, torch; print(json.dumps({'threads': torch.get_num_threads(), "
    "'wait': os.environ.get('OMP_WAIT_POLICY')}))"
)


@pytest.mark.parametrize("count", [1, 2])
def test_spkadv_threads_is_honoured_before_torch_starts(count):
    code = "from spkadv.base import threads; threads.configure(); " + REPORT
    got = _child(code, SPKADV_THREADS=str(count), OMP_NUM_THREADS="3")  # SPKADV_THREADS wins
    assert got["threads"] == count
    # one thread: passive; two: passive unless both cores were free when it started (unset)
    assert got["wait"] == "PASSIVE" if count == 1 else got["wait"] in ("PASSIVE", None)
    got = _child(code, SPKADV_THREADS=str(count), OMP_WAIT_POLICY="ACTIVE")
    assert got == {"threads": count, "wait": "ACTIVE"}  # an explicit policy is kept


def test_the_cli_applies_the_setting_before_loading_the_model(tmp_path):
    code = (
        "from spkadv.cli import main as cli; "
        f"rc = cli.main(['protect', 'x.wav', '-o', '{tmp_path}/y.wav', '--model', '{tmp_path}/none.pt']); "
        "assert rc == 2; " + REPORT
    )
    assert _child(code, SPKADV_THREADS="1") == {"threads": 1, "wait": "PASSIVE"}
    code = code.replace("'--model'", "'--threads', '2', '--model'")
    assert _child(code, SPKADV_THREADS="1")["threads"] == 2  # the command-line option wins


def test_explicit_wait_policy_and_omp_threads_are_kept():
    chosen = threads.plan({"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "ACTIVE"})
    assert (chosen.threads, chosen.source, chosen.wait_policy) == (1, "OMP_NUM_THREADS", "ACTIVE")


def test_auto_count_follows_the_free_cores():
    assert threads.auto_threads(cores=2, busy=0.2)[0] == 2
    assert threads.auto_threads(cores=2, busy=1.0)[0] == 1
    assert threads.auto_threads(cores=2, busy=7.0)[0] == 1  # never below one
    assert threads.auto_threads(cores=8, busy=2.4)[0] == 6
    got, why = threads.auto_threads()
    assert 1 <= got <= threads.usable_cores() and "cores busy" in why


def test_bad_settings_say_what_to_write():
    with pytest.raises(ValueError, match="SPKADV_THREADS='two'"):
        threads.plan({"SPKADV_THREADS": "two"})
    with pytest.raises(ValueError, match="OMP_NUM_THREADS='0'"):
        threads.plan({"OMP_NUM_THREADS": "0"})


def test_kernel_environment_is_seen_by_children_and_restored(monkeypatch):
    monkeypatch.setenv(threads.ENV_THREADS, "1")
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv(threads.ENV_EMBED_WORKERS, raising=False)
    with threads.kernel_environment() as chosen:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                "import os; print(os.environ['OMP_NUM_THREADS'], os.environ['OMP_WAIT_POLICY'],"
                " os.environ['SPKADV_EMBED_WORKERS'])",
            ],
            capture_output=True,
            text=True,
        ).stdout.split()
    assert chosen.threads == 1 and out == ["1", "PASSIVE", "auto"]
    assert os.environ["OMP_NUM_THREADS"] == "3" and "OMP_WAIT_POLICY" not in os.environ
    assert threads.ENV_EMBED_WORKERS not in os.environ
    monkeypatch.setenv(threads.ENV_EMBED_WORKERS, "1")  # an explicit setting is kept
    with threads.kernel_environment():
        assert os.environ[threads.ENV_EMBED_WORKERS] == "1"


def test_threads_spin_only_when_they_fit_on_the_free_cores():
    assert threads.wait_policy(2, cores=2, busy=0.0) == threads.SPIN
    assert threads.wait_policy(2, cores=2, busy=0.4) == threads.SPIN  # rounds to 2 free cores
    assert threads.wait_policy(2, cores=2, busy=0.6) == "PASSIVE"  # one core taken
    assert threads.wait_policy(1, cores=2, busy=0.0) == "PASSIVE"  # nobody to wait for
    assert threads.wait_policy(6, cores=8, busy=2.4) == threads.SPIN
    assert threads.wait_policy(7, cores=8, busy=2.4) == "PASSIVE"


@pytest.mark.parametrize(("busy", "expected"), [(0.0, None), (1.0, "PASSIVE")])
def test_plan_and_kernel_environment_follow_the_load_at_start(monkeypatch, busy, expected):
    monkeypatch.setattr(threads, "busy_cores", lambda *a, **k: (busy, "test"))
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setenv(threads.ENV_THREADS, "2")  # two threads, explicitly: only the wait changes
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    chosen = threads.plan()
    assert chosen.threads == 2 and chosen.wait_policy == (expected or threads.SPIN)
    assert ("unset" in chosen.describe()) == (expected is None)
    monkeypatch.delenv(threads.ENV_THREADS)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.plan().threads == (2 if busy == 0 else 1)  # auto: the free cores
    monkeypatch.setenv(threads.ENV_THREADS, "2")
    with threads.kernel_environment():
        out = subprocess.run(
            [sys.executable, "-c", "import os; print(os.environ.get('OMP_WAIT_POLICY'))"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    assert out == str(expected)
    assert "OMP_WAIT_POLICY" not in os.environ  # restored


def test_process_map_in_this_process_keeps_the_order():
    assert list(threads.process_map(operator.getitem, [2, 0, 1], 1, state="abc")) == [
        (0, "c"),
        (1, "a"),
        (2, "b"),
    ]


def test_process_map_workers_build_their_state_and_answer_every_item():
    items = [3, 1, 4, 1, 5]
    answers = threads.process_map(operator.getitem, items, 2, setup=(str.upper, ("abcdef",)))
    assert sorted(answers) == [(i, "abcdef".upper()[k]) for i, k in enumerate(items)]
