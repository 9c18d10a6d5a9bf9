"""lib.shutdown in a small process of its own: SIGTERM ends its child process tree (a child that ignores SIGTERM is
killed after the grace period) and then the process; a normal exit does not wait for a thread's subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]

PROGRAM = textwrap.dedent("""
    import subprocess, sys, threading, time
    from lib import shutdown

    shutdown.GRACE_S = 1.0
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
    # as MONAI Label's task threads do: Popen from a (non-daemon) thread, which then waits for the subprocess
    def task(args):
        subprocess.Popen(args).wait()
    for args in (["sleep", "120"], [sys.executable, "-c", stubborn]):
        threading.Thread(target=task, args=(args,)).start()
    assert shutdown.install() and shutdown.install()  # a second install changes nothing
    while len(shutdown.children()) < 2:
        time.sleep(0.05)
    print(" ".join(str(p.pid) for p in shutdown.children()), flush=True)
    if sys.argv[1] == "wait":
        time.sleep(120)
""")


def run(mode: str) -> tuple[subprocess.Popen, list[int]]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen([sys.executable, "-c", PROGRAM, mode], stdout=subprocess.PIPE, text=True, env=env,
                               cwd=str(REPO_ROOT))
    pids = [int(pid) for pid in process.stdout.readline().split()]
    assert len(pids) == 2
    return process, pids  # in "exit" mode the children may already be gone by the time the pids are read


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def test_sigterm_ends_the_children_then_the_process():
    process, workers = run("wait")
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == -signal.SIGTERM  # ended as the signal ends it, after stopping the children
    assert all(gone(w) for w in workers)
    assert time.monotonic() - started < 5  # the stubborn child was killed after the 1 s grace


def test_normal_exit_does_not_wait_for_the_subprocesses():
    process, workers = run("exit")
    assert process.wait(timeout=10) == 0
    assert all(gone(w) for w in workers)
