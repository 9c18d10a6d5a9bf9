"""Adapter files: only the fine-tuned tensors plus the metadata that ties them to one base checkpoint."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from lib.engine.versioned_files import atomic_torch_save
from lib.model.adapters import add_adapters
from lib.model.sam3d import Sam3D, class_key

FORMAT = "seg3d-adapters-1"


def file_sha256(paths: list[Path]) -> str:
    """Hash of the base weights' files (a FastSAM3D base is two files): what an adapter file is bound to."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def save_adapter_file(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    """Write atomically (:func:`atomic_torch_save`)."""
    return atomic_torch_save(path, {"format": FORMAT, "metadata": metadata, "state_dict": state})


def read_adapter_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of an adapter file; ``ValueError`` when it is not one."""
    content = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise ValueError(f"{path} is not a seg3d adapter file")
    return content["state_dict"], content["metadata"]


def apply_adapters(model: Sam3D, state: dict[str, torch.Tensor], metadata: dict[str, Any], base_sha256: str) -> Sam3D:
    """Load adapter tensors into ``model`` (adding adapters first) and add their classes to the ones its decoder
    serves alone; refuses files made for another base."""
    if metadata.get("base_sha256") != base_sha256:
        raise ValueError(
            f"adapter version {metadata.get('version')} was trained on base {str(metadata.get('base_sha256'))[:12]} "
            f"({metadata.get('base_name')}), not on the loaded base {base_sha256[:12]}"
        )
    if metadata.get("variant") != model.variant:
        raise ValueError(f"adapters for variant {metadata.get('variant')!r} cannot load into {model.variant!r}")
    if not hasattr(model.image_encoder, "adapters"):
        add_adapters(model, bottleneck=int(metadata["bottleneck"]))
    own = model.state_dict()
    unknown = sorted(k for k in state if k not in own or own[k].shape != state[k].shape)
    if unknown:
        raise ValueError(f"adapter tensors do not fit the model: {unknown[:5]}")
    model.load_state_dict(state, strict=False)
    # the adapters taught the decoder these classes: it serves them on its own from now on
    model.decoder_classes |= {class_key(name) for name in metadata.get("classes", ())}
    return model
