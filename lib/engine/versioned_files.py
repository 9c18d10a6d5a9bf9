"""Numbered, atomically written model files in one folder (``v0001.pt`` and on): what adapters and segmentation
heads are published as. Publishing writes the next version and prunes all but the newest ``keep``; a bad run is
rolled back by deleting its file or pinning a version."""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

VERSION_FILE = re.compile(r"^v(\d{4,})\.pt$")


def atomic_torch_save(path: Path, content: Any) -> Path:
    """``torch.save`` to a temporary file in the same folder, flushed, then renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(content, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class VersionedFiles:
    """The version files of one folder; subclasses say how a version is written (:meth:`write`) and read."""

    def __init__(self, folder: Path, keep: int = 5, pinned: int | None = None):
        self.folder = folder
        self.keep = keep
        self.pinned = pinned

    def versions(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.folder.iterdir() if (m := VERSION_FILE.match(p.name)))

    def path(self, version: int) -> Path:
        return self.folder / f"v{version:04d}.pt"

    def current(self) -> int | None:
        """The version to serve: the pinned one if set (0 means none), else the newest."""
        if self.pinned is not None:
            if self.pinned and self.pinned not in self.versions():
                raise FileNotFoundError(f"version {self.pinned} is not in {self.folder}")
            return self.pinned or None
        versions = self.versions()
        return versions[-1] if versions else None

    def write(self, path: Path, state: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        raise NotImplementedError

    def publish(self, state: dict[str, torch.Tensor], metadata: dict[str, Any]) -> int:
        """Write the next version (atomically) and prune old ones; returns the new version number. ``metadata``
        gains ``version`` and ``published`` (epoch seconds)."""
        versions = self.versions()
        version = (versions[-1] if versions else 0) + 1
        self.write(self.path(version), state, {**metadata, "version": version, "published": time.time()})
        logger.info("Published version %d to %s", version, self.path(version))
        for old in self.versions()[: -self.keep] if self.keep > 0 else []:
            self.path(old).unlink(missing_ok=True)
            logger.info("Pruned version %d of %s (keeping %d)", old, self.folder, self.keep)
        return version
