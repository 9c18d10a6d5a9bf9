"""MONAI Label's datastore index (``datastore_v2.json``: image and label info, scores), written atomically.

MONAI Label 0.8.5 truncates the file and then writes it (``LocalDatastore._update_datastore_file``). The server and
its scoring and training subprocesses all write it, so a process ended in between (the server stopping its scoring
subprocess, a crash, a full disk) left a truncated file, and a server refuses to start on one. Here the new index
is written to a temporary file beside it, flushed to disk, and renamed over it: readers see the old index or the
new one, never a part.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile

from filelock import FileLock


def write_atomically(path: str, text: str) -> None:
    """Replace ``path`` by ``text`` in one rename (the file keeps its permissions; a new one gets 0644)."""
    folder, name = os.path.split(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class AtomicDatastoreFile:
    """Mixin for :class:`monailabel.datastore.local.LocalDatastore` and its subclasses (the DICOMweb datastore keeps
    its index the same way): the index is written with :func:`write_atomically`, under MONAI Label's file lock.

    MONAI Label marks its own write so that its file watcher skips the modify event it causes; a rename causes none,
    so no mark is set (a reload the watcher might still start finds the file's time stamp unchanged and reads
    nothing). MONAI Label's watcher reloads the index on modify events only; a rename by another process (scores
    written by the scoring subprocess) is a move event, so :meth:`watch_renames` makes it reload on those too."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.watch_renames()

    def watch_renames(self) -> None:
        """Reload the index when another process renames a new one over it (no-op without a file watcher)."""
        handler = getattr(self, "_handler", None)
        if handler is not None:
            handler.on_moved = self._on_index_moved

    def _on_index_moved(self, event) -> None:
        if getattr(event, "dest_path", None) == self._datastore_config_path:
            self._init_from_datastore_file()

    def _update_datastore_file(self, lock: bool = True) -> None:
        if not lock:
            self._write_datastore_file()
            return
        with FileLock(self._lock_file):
            self._write_datastore_file()

    def _write_datastore_file(self) -> None:
        text = json.dumps(self._datastore.model_dump(exclude={"base_path"}), indent=2, default=str)
        write_atomically(self._datastore_config_path, text)
        self._config_ts = os.stat(self._datastore_config_path).st_mtime
