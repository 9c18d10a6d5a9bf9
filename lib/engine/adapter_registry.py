"""Published adapter versions of one base checkpoint: ``model/adapters/<base sha256[:16]>/v0001.pt`` and on.

Publishing writes the next version atomically and prunes all but the newest ``keep`` files, so a bad run is
rolled back by deleting its file (or pinning ``--conf adapter_version N``); the base checkpoint is never touched.

    python -m lib.engine.adapter_registry --model-dir model list
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from lib.engine.versioned_files import VersionedFiles
from lib.model.adapter_file import read_adapter_file, save_adapter_file


class AdapterRegistry(VersionedFiles):
    """The adapter files trained on one base (identified by its sha256)."""

    def __init__(self, root: Path, base_sha256: str, keep: int = 5, pinned: int | None = None):
        super().__init__(root / base_sha256[:16], keep, pinned)
        self.base_sha256 = base_sha256

    def read(self, version: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return read_adapter_file(self.path(version))

    def write(self, path: Path, state: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        save_adapter_file(path, state, {**metadata, "base_sha256": self.base_sha256})


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
