"""Dense prompt channels, nnInteractive's way of giving a network boxes and strokes: a filled box, painted foreground
voxels (scribble strokes, a lasso's area) and painted background voxels (strokes, a lasso's ring), rasterised on the
``prompts`` refiner's grid (half the crop size) of each crop the predictor runs (:data:`PROMPT_INPUTS`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from lib.model.click_refiner import PROMPT_INPUTS
from lib.prompts.geometry import Crop, apply_affine


@dataclass(frozen=True)
class PromptChannels:
    """What the dense channels hold, on the stored image's grid. The painted voxels are the prompts' own bool masks
    (not copied), read only when a ``prompts`` refiner runs."""

    box: np.ndarray | None = None  # (3, 2) inclusive voxel bounds
    foreground: tuple[np.ndarray, ...] = ()  # bool masks of painted foreground
    background: tuple[np.ndarray, ...] = ()


def combined(channels: Iterable[PromptChannels | None]) -> PromptChannels | None:
    """One set of channels from several region prompts (the first box; every painted mask), or None for none."""
    given = [c for c in channels if c is not None]
    if not given:
        return None
    return PromptChannels(
        box=next((c.box for c in given if c.box is not None), None),
        foreground=tuple(m for c in given for m in c.foreground),
        background=tuple(m for c in given for m in c.background),
    )


def _grid_matrix(crop: Crop, original_to_vol: np.ndarray, size: int) -> np.ndarray:
    """Stored-grid voxel -> continuous index on a ``size``^3 grid spanning ``crop`` (voxel ``j``'s centre at ``j``)."""
    to_grid = np.diag([size / crop.size] * 3 + [1.0])
    to_grid[:3, 3] = 0.5 * size / crop.size - 0.5
    return to_grid @ crop.volume_to_crop @ original_to_vol


def _paint(out: torch.Tensor, masks: tuple[np.ndarray, ...], matrix: np.ndarray) -> None:
    """Sets every grid voxel a painted voxel of ``masks`` overlaps (sampled at sub-voxel points when a stored voxel
    spans several grid voxels, so a stroke stays unbroken at any zoom)."""
    voxels = np.concatenate([np.zeros((0, 3), dtype=np.int64), *(np.argwhere(m) for m in masks)])
    if len(voxels) == 0:
        return
    steps = int(np.ceil(np.max(np.linalg.norm(matrix[:3, :3], axis=0))))
    offsets = (np.arange(steps) + 0.5) / steps - 0.5
    sub = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), -1).reshape(-1, 3)
    points = (voxels[:, None, :].astype(np.float64) + sub[None]).reshape(-1, 3)
    index = np.round(apply_affine(matrix, points)).astype(np.int64)
    index = index[np.all((index >= 0) & (index < out.shape[-1]), axis=1)]
    out[index[:, 0], index[:, 1], index[:, 2]] = 1.0


def crop_channels(channels: PromptChannels, crop: Crop, original_to_vol: np.ndarray, size: int) -> torch.Tensor:
    """The (1, 3, size, size, size) :data:`PROMPT_INPUTS` of ``channels`` over ``crop``."""
    matrix = _grid_matrix(crop, original_to_vol, size)
    out = torch.zeros((len(PROMPT_INPUTS), size, size, size))
    if channels.box is not None:  # the grid voxels whose centres lie inside the box's voxels
        edges = np.stack(np.meshgrid(*[(lo - 0.5, hi + 0.5) for lo, hi in channels.box], indexing="ij"), -1)
        corners = apply_affine(matrix, edges.reshape(-1, 3))
        low = np.clip(np.ceil(corners.min(axis=0)).astype(int), 0, size)
        high = np.clip(np.floor(corners.max(axis=0)).astype(int) + 1, 0, size)
        out[(0, *(slice(lo, max(hi, lo)) for lo, hi in zip(low, high, strict=True)))] = 1.0
    _paint(out[1], channels.foreground, matrix)
    _paint(out[2], channels.background, matrix)
    return out[None]
