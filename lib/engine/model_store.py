"""The active network: loaded lazily, reloaded when its checkpoint changes, identified by a version string."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import torch

from lib.model import Sam3D, load_sam3d

logger = logging.getLogger(__name__)


class ModelStore:
    """Holds one loaded :class:`Sam3D` per checkpoint state; ``version`` changes whenever the weights do."""

    def __init__(self, checkpoint: str | Path, encoder_checkpoint: str | Path | None = None, device: str = "cpu"):
        self.checkpoint = Path(checkpoint)
        self.encoder_checkpoint = Path(encoder_checkpoint) if encoder_checkpoint else None
        self.device = device
        self._lock = threading.Lock()
        self._loaded: tuple[str, Sam3D] | None = None

    def files(self) -> list[Path]:
        return [p for p in (self.checkpoint, self.encoder_checkpoint) if p is not None]

    def current_version(self) -> str:
        """A string naming the weights on disk (file names, sizes and modification times)."""
        parts = []
        for path in self.files():
            st = os.stat(path)
            parts.append(f"{path.name}@{st.st_size}:{st.st_mtime_ns}")
        return "+".join(parts)

    def get(self) -> tuple[Sam3D, str]:
        """The network for the weights on disk now, and their version."""
        version = self.current_version()
        with self._lock:
            if self._loaded is None or self._loaded[0] != version:
                logger.info("Loading model %s", version)
                model = load_sam3d(self.checkpoint, self.encoder_checkpoint, device=self.device)
                model.requires_grad_(False)
                self._loaded = (version, model)
            return self._loaded[1], self._loaded[0]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
