"""The active network: loaded lazily, reloaded when its base checkpoint or published adapters change."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import torch

from lib.engine.adapter_registry import AdapterRegistry
from lib.model import Sam3D, load_sam3d
from lib.model.adapter_file import apply_adapters, file_sha256, read_adapter_file

logger = logging.getLogger(__name__)

ADAPTER_INFO = ("classes", "metrics", "published", "trained_on", "iterations", "optimizer_steps", "seconds",
                "trainable_parameters")


class ModelStore:
    """Holds one loaded :class:`Sam3D` (base plus current adapters); ``version`` changes whenever the weights do.

    ``adapter_root`` (``model/adapters``) enables fine-tuned adapters: the newest version published for this base,
    or ``adapter_version`` when pinned (0 serves the bare base).
    """

    def __init__(self, checkpoint: str | Path, encoder_checkpoint: str | Path | None = None, device: str = "cpu",
                 adapter_root: Path | None = None, keep_adapters: int = 5, adapter_version: int | None = None):
        self.checkpoint = Path(checkpoint)
        self.encoder_checkpoint = Path(encoder_checkpoint) if encoder_checkpoint else None
        self.device = device
        self.adapter_root = adapter_root
        self.keep_adapters = keep_adapters
        self.adapter_version = adapter_version
        self._lock = threading.Lock()
        self._loaded: tuple[str, Sam3D] | None = None
        self._sha: tuple[str, str] | None = None  # (base version, sha256)
        self._metadata_cache: tuple[tuple[Path, int], dict[str, Any]] | None = None

    def files(self) -> list[Path]:
        return [p for p in (self.checkpoint, self.encoder_checkpoint) if p is not None]

    def base_version(self) -> str:
        """A string naming the base weights on disk (file names, sizes and modification times)."""
        parts = []
        for path in self.files():
            st = os.stat(path)
            parts.append(f"{path.name}@{st.st_size}:{st.st_mtime_ns}")
        return "+".join(parts)

    def base_sha256(self) -> str:
        """sha256 of the base files, computed once per base version."""
        version = self.base_version()
        if self._sha is None or self._sha[0] != version:
            self._sha = (version, file_sha256(self.files()))
        return self._sha[1]

    def registry(self) -> AdapterRegistry | None:
        if self.adapter_root is None:
            return None
        return AdapterRegistry(self.adapter_root, self.base_sha256(), self.keep_adapters, self.adapter_version)

    def adapter(self) -> int | None:
        """The adapter version served now (None: the bare base)."""
        registry = self.registry()
        return registry.current() if registry else None

    def current_version(self) -> str:
        return self._version(self.adapter())

    def _version(self, adapter: int | None) -> str:
        return self.base_version() + (f"+adapters-v{adapter}" if adapter else "")

    def load_base(self) -> Sam3D:
        return load_sam3d(self.checkpoint, self.encoder_checkpoint, device=self.device)

    def get(self) -> tuple[Sam3D, str]:
        """The network for the weights on disk now, and their version."""
        with self._lock:
            adapter = self.adapter()
            version = self._version(adapter)
            if self._loaded is None or self._loaded[0] != version:
                logger.info("Loading model %s", version)
                model = self.load_base()
                if adapter:
                    state, metadata = self.registry().read(adapter)
                    apply_adapters(model, state, metadata, self.base_sha256()).to(self.device)
                model.requires_grad_(False)
                self._loaded = (version, model.eval())
            return self._loaded[1], self._loaded[0]

    def _metadata(self, path: Path) -> dict[str, Any]:
        key = (path, os.stat(path).st_mtime_ns)
        if self._metadata_cache is None or self._metadata_cache[0] != key:
            self._metadata_cache = (key, read_adapter_file(path)[1])
        return self._metadata_cache[1]

    def info(self) -> dict[str, Any]:
        """What is served, for ``/info``: base files and hash, adapter version and its record."""
        info: dict[str, Any] = {"base": [str(p) for p in self.files()], "base_sha256": self.base_sha256()}
        registry = self.registry()
        adapter = registry.current() if registry else None
        info["adapter_version"] = adapter
        if registry:
            info["adapter_versions"] = registry.versions()
        if adapter:
            metadata = self._metadata(registry.path(adapter))
            info["adapter"] = {k: metadata.get(k) for k in ADAPTER_INFO}
        return info


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
