"""The server's own temporary folder.

MONAI Label writes uploads, results, DICOM conversions and its subprocesses' log configurations to the temporary
folder, and removes an upload only after a successful response: the uploads of refused requests, and the files of
requests a stop interrupted, stayed in the system's /tmp. :func:`use_own_temp_folder` points Python's temporary
folder (and ``TMPDIR``, which training and scoring subprocesses inherit) at a folder of the server's own, named
after its process id. A normal exit removes it; uvicorn ends a server on SIGTERM by the signal itself, which runs no
exit hooks, so each server start also removes the folders of servers that no longer run.

The server holds an exclusive ``flock`` on a file in its folder for as long as it runs, and the kernel releases it
when the process ends, however it ends. A folder whose lock can be taken has no server: this holds for servers in
other pid namespaces sharing the folder (containers), where the pid in the name means nothing, and after a pid was
reused. Folders without the lock file fall back to the pid.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

PREFIX = "seg3d-server-"
LOCK_NAME = ".server.lock"
_OWNER = re.compile(rf"{PREFIX}(\d+)-")
_FOLDER: tempfile.TemporaryDirectory | None = None
_LOCK: int | None = None  # the descriptor that holds this server's lock, open while the process runs


def hold_lock(folder: Path) -> int | None:
    """Take the exclusive lock of ``folder`` for this process and return its descriptor (kept open); None, with a
    warning, on a file system without ``flock`` (the folder's pid then tells)."""
    lock = folder / LOCK_NAME
    descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return descriptor
    except OSError as error:
        os.close(descriptor)
        lock.unlink(missing_ok=True)
        logger.warning("No lock on %s (%s): other servers will go by its pid", folder, error)
        return None


def pid_runs(folder: Path) -> bool:
    """Whether the process the folder's name gives runs (in this pid namespace)."""
    owner = _OWNER.match(folder.name)
    return owner is not None and psutil.pid_exists(int(owner.group(1)))


def has_server(folder: Path) -> bool:
    """Whether a running process holds ``folder``: its lock is taken, or, without a usable lock file, its pid runs."""
    try:
        descriptor = os.open(folder / LOCK_NAME, os.O_RDWR)
    except FileNotFoundError:
        return pid_runs(folder)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return pid_runs(folder)
    finally:
        os.close(descriptor)  # releases the lock this check took, if it took it


def remove_orphaned_folders(parent: Path) -> list[Path]:
    """Remove the server folders in ``parent`` that no running process holds; returns them."""
    removed = []
    for folder in parent.glob(f"{PREFIX}*"):
        if folder.is_dir() and _OWNER.match(folder.name) and not has_server(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def use_own_temp_folder() -> Path:
    """Make a new folder inside the current temporary folder this process's temporary folder and its subprocesses'
    (removed at a normal exit, after :mod:`lib.shutdown` stopped the subprocesses); once per process, later calls
    return it."""
    global _FOLDER, _LOCK
    if _FOLDER is None:
        parent = Path(tempfile.gettempdir())
        removed = remove_orphaned_folders(parent)
        if removed:
            logger.info("Removed the temporary folders of servers that no longer run: %s", [p.name for p in removed])
        _FOLDER = tempfile.TemporaryDirectory(prefix=f"{PREFIX}{os.getpid()}-", dir=parent,
                                              ignore_cleanup_errors=True)
        _LOCK = hold_lock(Path(_FOLDER.name))
        tempfile.tempdir = _FOLDER.name
        os.environ["TMPDIR"] = _FOLDER.name
    return Path(_FOLDER.name)
