"""Published adapter versions of one base checkpoint: ``model/adapters/<base sha256[:16]>/v0001.pt`` and on.

Publishing writes the next version atomically and prunes all but the newest ``keep`` files, so a bad run is
rolled back by deleting its file (or pinning ``--conf adapter_version N``); the base checkpoint is never touched.

    python -m lib.engine.adapter_registry --model-dir model list
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import torch

from lib.model.adapter_file import read_adapter_file, save_adapter_file

logger = logging.getLogger(__name__)

VERSION_FILE = re.compile(r"^v(\d{4,})\.pt$")


class AdapterRegistry:
    """The adapter files trained on one base (identified by its sha256)."""

    def __init__(self, root: Path, base_sha256: str, keep: int = 5, pinned: int | None = None):
        self.base_sha256 = base_sha256
        self.folder = root / base_sha256[:16]
        self.keep = keep
        self.pinned = pinned

    def versions(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.folder.iterdir() if (m := VERSION_FILE.match(p.name)))

    def path(self, version: int) -> Path:
        return self.folder / f"v{version:04d}.pt"

    def current(self) -> int | None:
        """The version infers use: the pinned one if set (0 means the bare base), else the newest."""
        if self.pinned is not None:
            if self.pinned and self.pinned not in self.versions():
                raise FileNotFoundError(f"adapter version {self.pinned} is not in {self.folder}")
            return self.pinned or None
        versions = self.versions()
        return versions[-1] if versions else None

    def read(self, version: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return read_adapter_file(self.path(version))

    def publish(self, state: dict[str, torch.Tensor], metadata: dict[str, Any]) -> int:
        """Write the next version (atomically) and prune old ones; returns the new version number."""
        versions = self.versions()
        version = (versions[-1] if versions else 0) + 1
        metadata = {**metadata, "version": version, "base_sha256": self.base_sha256, "published": time.time()}
        save_adapter_file(self.path(version), state, metadata)
        logger.info("Published adapter version %d to %s", version, self.path(version))
        for old in self.versions()[: -self.keep] if self.keep > 0 else []:
            self.path(old).unlink(missing_ok=True)
            logger.info("Pruned adapter version %d (keeping %d)", old, self.keep)
        return version


def main() -> None:
    parser = argparse.ArgumentParser(description="List the published adapter versions in a model folder.")
    parser.add_argument("--model-dir", type=Path, default=Path("model"))
    args = parser.parse_args()
    for folder in sorted((args.model_dir / "adapters").glob("*")):
        registry = AdapterRegistry(args.model_dir / "adapters", folder.name)
        for version in registry.versions():
            _, meta = registry.read(version)
            print(json.dumps({"base": folder.name, **{k: meta.get(k) for k in ("version", "classes", "metrics")}}))


if __name__ == "__main__":
    main()
