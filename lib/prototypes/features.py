"""Encoder features on a regular grid of cells over a model-space volume, and label fractions per cell."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lib.engine.predictor import InteractivePredictor
from lib.prompts.geometry import Crop, apply_affine, place_crop, sample_crop
from lib.transforms.preprocess import ModelVolume

FEATURE_GRID = 16  # cells per crop side: the 8^3 embedding upsampled to 12 mm cells at 1.5 mm spacing


def cover_crops(shape: tuple[int, ...], size: int) -> list[Crop]:
    """Crops of ``size``^3 (zoom 1) that together cover the volume, evenly spaced, overlapping where needed."""
    centers = []
    for n in shape:
        count = max(1, int(np.ceil(n / size)))
        centers.append(np.linspace(size / 2.0 - 0.5, n - size / 2.0 - 0.5, count) if count > 1 else [(n - 1) / 2.0])
    grid = np.stack(np.meshgrid(*centers, indexing="ij"), axis=-1).reshape(-1, 3)
    return [place_crop(center, tuple(shape), size=size) for center in grid]


@dataclass(frozen=True)
class CellFeatures:
    """Unit-length encoder features (N, C) of the cells of one crop and the cells' centres in volume voxels (N, 3)."""

    crop: Crop
    features: torch.Tensor
    centers: np.ndarray


def cell_features(predictor: InteractivePredictor, volume: ModelVolume, crop: Crop) -> CellFeatures:
    """Features of ``crop``'s cells from its (cached) image embedding."""
    model, version = predictor.model()
    embedding, _ = predictor.embedding(model, version, volume, crop)
    grid = F.interpolate(embedding.float().cpu(), size=(FEATURE_GRID,) * 3, mode="trilinear", align_corners=False)
    features = F.normalize(grid[0].flatten(1).T, dim=1)
    step = crop.size / FEATURE_GRID
    cells = np.stack(np.meshgrid(*[np.arange(FEATURE_GRID)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    centers = apply_affine(crop.crop_to_volume, (cells + 0.5) * step - 0.5)
    return CellFeatures(crop, features, centers)


def cell_fractions(mask: torch.Tensor, crop: Crop) -> torch.Tensor:
    """Fraction of each cell of ``crop`` inside ``mask`` (a model-space (X, Y, Z) mask): (N,)."""
    inside = sample_crop(mask[None].float(), crop)[None]
    return F.adaptive_avg_pool3d(inside, FEATURE_GRID)[0, 0].flatten()
