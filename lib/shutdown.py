"""Stop the server's worker subprocesses when the server stops.

MONAI Label runs training, scoring and batch inference as subprocesses (``python -m monailabel.interfaces.utils.app
-m train|scoring ...``), started by ``subprocess.Popen`` from its task threads, in the server's process group. When
the server gets SIGTERM (a service manager, ``kill``) uvicorn shuts down and the process ends, but nothing ends those
subprocesses: they kept running, orphaned (a scoring run at 100 % CPU until it finished). On SIGINT or a normal exit
the interpreter would instead wait, in its exit, for the task threads, which wait for the subprocesses.

:func:`install` chains a handler in front of uvicorn's for SIGTERM and SIGINT: it terminates the server's whole
child process tree, kills what is left after a grace period, then lets uvicorn's own shutdown run. Tasks MONAI Label
had queued are cancelled and a watcher ends any subprocess that still starts during the shutdown; the same stop runs
on a normal interpreter exit, before the interpreter waits for threads. An interrupted training publishes nothing
(adapter files are written to a temporary file and renamed); an interrupted scoring leaves the datastore index whole
(:mod:`lib.datastore_file`).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import psutil

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
GRACE_S = 3.0  # SIGTERM first: a subprocess gets this long to end before it is killed
WATCH_INTERVAL_S = 0.2

_stopping = threading.Event()
_lock = threading.Lock()
_exit_hook_registered = False


def _ended(process: psutil.Process) -> bool:
    """Gone, or a zombie waiting for its parent (MONAI Label's task thread) to collect its exit status."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def children() -> list[psutil.Process]:
    """Every running process below this one (subprocesses and theirs)."""
    with contextlib.suppress(psutil.Error):
        return [p for p in psutil.Process().children(recursive=True) if not _ended(p)]
    return []


def _wait(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """The processes still running after up to ``timeout`` seconds. No process is reaped here: the ``Popen`` that
    started each one collects its status (reaping it here would make it report success)."""
    deadline = time.monotonic() + timeout
    alive = [p for p in processes if not _ended(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if not _ended(p)]
    return alive


def _signal_all(processes: list[psutil.Process], kill: bool) -> None:
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill() if kill else process.terminate()


def stop_children(grace_s: float | None = None) -> list[int]:
    """Terminate the child process tree, kill what still runs after ``grace_s`` (:data:`GRACE_S`); returns the pids
    found."""
    grace_s = GRACE_S if grace_s is None else grace_s
    processes = children()
    if not processes:
        return []
    _signal_all(processes, kill=False)
    alive = _wait(processes, grace_s)
    if alive:
        logger.warning("Killing %s: still running %.0f s after SIGTERM", [p.pid for p in alive], grace_s)
        _signal_all(alive, kill=True)
        _wait(alive, 2.0)
    return [p.pid for p in processes]


def _cancel_queued_tasks() -> None:
    """Drop the tasks MONAI Label queued behind a running one (each would start a subprocess when it ends)."""
    tasks = sys.modules.get("monailabel.utils.async_tasks.utils")  # nothing to cancel when it was never imported
    for executor in list(getattr(tasks, "background_executors", {}).values()):
        executor.shutdown(wait=False, cancel_futures=True)


def _watch() -> None:
    """During the shutdown: cancel queued tasks (outside the signal handler, which may have interrupted the main
    thread inside the executor's lock), then end every subprocess that still appears, until the process exits."""
    _cancel_queued_tasks()
    while True:
        stop_children(grace_s=1.0)
        time.sleep(WATCH_INTERVAL_S)


def begin_shutdown(reason: str) -> None:
    """Stop the subprocesses now; the first call also starts the watcher."""
    with _lock:
        first = not _stopping.is_set()
        _stopping.set()
    started = time.monotonic()
    stopped = stop_children()
    if first:
        threading.Thread(target=_watch, name="seg3d-shutdown-watch", daemon=True).start()
    if stopped or first:
        logger.info("%s: stopped subprocesses %s in %.1f s", reason, stopped, time.monotonic() - started)


def stopping() -> bool:
    """Whether the server is shutting down."""
    return _stopping.is_set()


def _chained(previous: Any) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        begin_shutdown(signal.Signals(signum).name)
        if callable(previous):  # uvicorn's handler: starts its own graceful shutdown
            previous(signum, frame)
        elif previous == signal.SIG_DFL:  # no server to shut down: end as the signal would have
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    handler.seg3d_stops_children = True
    return handler


def _at_exit() -> None:
    _stopping.set()
    _cancel_queued_tasks()
    stopped = stop_children()
    if stopped:
        logger.info("exit: stopped subprocesses %s", stopped)


def _register_exit_hook() -> None:
    """Run at interpreter exit, before the interpreter joins threads (MONAI Label's task threads wait for their
    subprocesses); plain ``atexit`` would run after that join."""
    global _exit_hook_registered
    if _exit_hook_registered:
        return
    register = getattr(threading, "_register_atexit", None)
    try:
        register(_at_exit) if register else atexit.register(_at_exit)
    except RuntimeError:  # the interpreter is already shutting down
        return
    _exit_hook_registered = True


def install() -> bool:
    """Chain the handler in front of the current SIGTERM and SIGINT handlers (uvicorn's, in the server) and register
    the exit hook. Only the main thread may set signal handlers: elsewhere (MONAI Label's ``/reload`` rebuilds the
    app in a worker thread) nothing changes and False is returned; installing twice changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        return False
    for signum in SIGNALS:
        previous = signal.getsignal(signum)
        if not getattr(previous, "seg3d_stops_children", False):
            signal.signal(signum, _chained(previous))
    _register_exit_hook()
    return True
