"""Which weights the app serves: ``--conf checkpoint``, official files in ``model/``, then the bundled starter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lib.settings import Settings

STARTER_NAME = "starter.pt"
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt")


@dataclass(frozen=True)
class CheckpointChoice:
    checkpoint: Path
    encoder_checkpoint: Path | None
    reason: str


def _official(model_dir: Path, marker: str) -> list[Path]:
    return sorted(
        p for p in model_dir.iterdir() if p.suffix in CHECKPOINT_SUFFIXES and marker in p.name.lower().replace("-", "_")
    )


def choose_checkpoint(model_dir: Path, settings: Settings) -> CheckpointChoice:
    """Resolve the checkpoint (and FastSAM3D encoder) to serve.

    Order: ``--conf checkpoint PATH`` (with optional ``--conf encoder_checkpoint PATH``); official files dropped into
    ``model/`` (a FastSAM3D student encoder ``*fastsam3d*`` together with a ``*sam_med3d*`` file for its prompt encoder
    and decoder, else a ``*sam_med3d*`` file alone); then ``model/starter.pt``.
    """
    if settings.checkpoint:
        return CheckpointChoice(settings.checkpoint, settings.encoder_checkpoint, "--conf checkpoint")
    sam_med3d = _official(model_dir, "sam_med3d") if model_dir.is_dir() else []
    fastsam3d = _official(model_dir, "fastsam3d") if model_dir.is_dir() else []
    if sam_med3d and fastsam3d:
        return CheckpointChoice(sam_med3d[0], fastsam3d[0], "official FastSAM3D encoder + SAM-Med3D in model/")
    if sam_med3d:
        return CheckpointChoice(sam_med3d[0], None, "official SAM-Med3D in model/")
    return CheckpointChoice(model_dir / STARTER_NAME, None, "bundled starter")
