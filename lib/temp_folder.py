"""The server's own temporary folder.

MONAI Label writes uploads, results, DICOM conversions and its subprocesses' log configurations to the temporary
folder, and removes an upload only after a successful response: the uploads of refused requests, and the files of
requests a stop interrupted, stayed in the system's /tmp. :func:`use_own_temp_folder` points Python's temporary
folder (and ``TMPDIR``, which training and scoring subprocesses inherit) at a folder of the server's own, named
after its process id. A normal exit removes it; uvicorn ends a server on SIGTERM by the signal itself, which runs no
exit hooks, so each server start also removes the folders of servers that no longer run.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

PREFIX = "seg3d-server-"
_OWNER = re.compile(rf"{PREFIX}(\d+)-")
_FOLDER: tempfile.TemporaryDirectory | None = None


def remove_orphaned_folders(parent: Path) -> list[Path]:
    """Remove the server folders in ``parent`` whose process no longer runs; returns them."""
    removed = []
    for folder in parent.glob(f"{PREFIX}*"):
        owner = _OWNER.match(folder.name)
        if owner and folder.is_dir() and not psutil.pid_exists(int(owner.group(1))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def use_own_temp_folder() -> Path:
    """Make a new folder inside the current temporary folder this process's temporary folder and its subprocesses'
    (removed at a normal exit, after :mod:`lib.shutdown` stopped the subprocesses); once per process, later calls
    return it."""
    global _FOLDER
    if _FOLDER is None:
        parent = Path(tempfile.gettempdir())
        removed = remove_orphaned_folders(parent)
        if removed:
            logger.info("Removed the temporary folders of servers that no longer run: %s", [p.name for p in removed])
        _FOLDER = tempfile.TemporaryDirectory(prefix=f"{PREFIX}{os.getpid()}-", dir=parent,
                                              ignore_cleanup_errors=True)
        tempfile.tempdir = _FOLDER.name
        os.environ["TMPDIR"] = _FOLDER.name
    return Path(_FOLDER.name)
