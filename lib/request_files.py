"""Which files an infer request may name: only files inside the studies folder or written by MONAI Label itself for
the request (an upload saved to the temp dir, a session's image), never any other path on the server."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable


def is_path_like(value: str) -> bool:
    return os.sep in value or value.startswith(".")


def _inside(path: str, root: str) -> bool:
    root = os.path.realpath(root)
    return os.path.commonpath([path, root]) == root


def is_upload(path: str) -> bool:
    """A file MONAI Label's ``/infer`` wrote from an upload: a ``tmp*`` file directly in the temp dir."""
    real = os.path.realpath(path)
    return (os.path.dirname(real) == os.path.realpath(tempfile.gettempdir())
            and os.path.basename(real).startswith("tmp") and os.path.isfile(real))


def allowed_file(path: str, roots: Iterable[str]) -> bool:
    """``path`` is an upload or an existing file under one of ``roots`` (the studies folder, the session store)."""
    real = os.path.realpath(path)
    return os.path.isfile(real) and (is_upload(real) or any(_inside(real, root) for root in roots if root))
