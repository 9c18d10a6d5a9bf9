"""Loading official SAM-Med3D / FastSAM3D files and the project's own checkpoints."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from lib.model.click_refiner import refiner_kind
from lib.model.sam3d import VARIANTS, Sam3D, build_sam3d, class_key

ENCODER_PREFIX = "image_encoder."
StateSource = str | os.PathLike | dict


MULTIMASK_KEY = "multimask_first_click"
DECODER_CLASSES_KEY = "decoder_classes"


def _read(source: StateSource) -> dict[str, Any]:
    if isinstance(source, dict):
        return source
    # map to CPU first: files saved on a GPU must load on machines without one
    return torch.load(source, map_location="cpu", weights_only=False)


def unwrap_state_dict(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict inside an official (``model_state_dict``), Lightning-style (``state_dict``) or bare file."""
    for key in ("model_state_dict", "state_dict", "model"):
        if isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    return checkpoint


def detect_variant(state: dict[str, torch.Tensor]) -> str:
    """Name the variant whose encoder has these keys: depth, width and the student layout tell them apart."""
    keys = {k[len(ENCODER_PREFIX):] if k.startswith(ENCODER_PREFIX) else k for k in state}
    width = state.get("image_encoder.pos_embed", state.get("pos_embed"))
    if width is None:
        raise ValueError(f"not a 3D SAM checkpoint: no image encoder 'pos_embed' key among its {len(state)} keys "
                         f"{sorted(state)[:5]}")
    depth = len({k.split(".")[1] for k in keys if k.startswith("blocks.")})
    student = "blocks.0.mlp.lin1.weight" in keys and "blocks.0.attn.qkv.weight" not in keys
    for name, config in VARIANTS.items():
        enc = config["encoder"]
        if (enc["embed_dim"], enc["depth"], "student_skip_layers" in enc) == (width.shape[-1], depth, student):
            return name
    raise ValueError(f"unknown 3D SAM layout: encoder width {width.shape[-1]}, {depth} blocks, student={student}")


def _describe_mismatch(model: Sam3D, state: dict[str, torch.Tensor]) -> str:
    own = model.state_dict()
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    shapes = sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
    return (f"{len(missing)} missing {missing[:5]}, {len(unexpected)} unexpected {unexpected[:5]}, "
            f"{len(shapes)} with other shapes {shapes[:5]}")


def load_sam3d(checkpoint: StateSource, encoder_checkpoint: StateSource | None = None,
               device: str | torch.device = "cpu") -> Sam3D:
    """Load a 3D SAM strictly from a path or state dict, in eval mode on ``device``.

    ``checkpoint`` is a SAM-Med3D file (``{'model_state_dict': ...}``, ``{'state_dict': ...}`` or bare), a FastSAM3D
    full model, or one of ours (its ``variant`` entry names the variant; otherwise keys and shapes tell). Files are
    read with ``map_location="cpu"`` first. ``encoder_checkpoint`` is a FastSAM3D student encoder file (keys without
    ``image_encoder.``; of a full model only the encoder is used): it replaces the checkpoint's encoder, and the
    checkpoint supplies the prompt encoder and mask decoder. Layouts that match no variant raise ``ValueError``.
    """
    raw = _read(checkpoint)
    state = dict(unwrap_state_dict(raw))
    variant = raw.get("variant")
    if encoder_checkpoint is not None:
        encoder = unwrap_state_dict(_read(encoder_checkpoint))
        if any(k.startswith(ENCODER_PREFIX) for k in encoder):  # a full model: take its encoder
            encoder = {k[len(ENCODER_PREFIX):]: v for k, v in encoder.items() if k.startswith(ENCODER_PREFIX)}
        state = {k: v for k, v in state.items() if not k.startswith(ENCODER_PREFIX)}
        state.update({ENCODER_PREFIX + k: v for k, v in encoder.items()})
        variant = None  # the checkpoint's own variant no longer describes the encoder
    elif "pos_embed" in state:
        raise ValueError("this looks like a bare image-encoder file (e.g. the FastSAM3D student): pass it as "
                         "encoder_checkpoint, with a SAM-Med3D checkpoint for the prompt encoder and mask decoder")
    # the refiner's keys name its kind; a starter saved before the mask refiner existed loads without one
    refiner = refiner_kind(state) or ("edges" if any(k.startswith("mask_refiner.") for k in state) else "none")
    model = build_sam3d(variant if isinstance(variant, str) else detect_variant(state), refiner=refiner)
    # only checkpoints trained with ambiguity-aware first clicks say so; every other layout uses the single mask
    model.multimask_first_click = bool(raw.get(MULTIMASK_KEY, False))
    model.decoder_classes = frozenset(class_key(name) for name in raw.get(DECODER_CLASSES_KEY, ()))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(
            f"checkpoint does not match the {model.variant} layout: {_describe_mismatch(model, state)}"
        ) from e
    return model.to(device).eval()


def save_sam3d(model: Sam3D, path: str | os.PathLike, half: bool = False, **metadata: Any) -> Path:
    """Write ``{'model_state_dict': ..., 'variant': ..., **metadata}``; ``half`` stores float16 weights."""
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu()
             for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state_dict": state, "variant": model.variant, MULTIMASK_KEY: model.multimask_first_click,
                DECODER_CLASSES_KEY: sorted(model.decoder_classes), **metadata}, path)
    return path
