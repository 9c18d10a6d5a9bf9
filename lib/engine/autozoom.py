"""Auto-zoom: the crop follows the object's scale. A first pass at the model spacing measures the object; a small
one is segmented again in a crop zoomed in on it, so that it spans many logit voxels (nnInteractive's autozoom is
the model for this; objects larger than the crop are followed by the predictor's coarse pass instead)."""

from __future__ import annotations

import numpy as np
import torch

MIN_ZOOM = 1.0 / 3.0  # crop voxel = a third of a model-space voxel (0.5 mm at 1.5 mm spacing)
OBJECT_FILL = 0.4  # a zoomed-in object spans this fraction of the crop
ZOOM_IN_BELOW = 0.75  # zoom in only when the object would be at least this much smaller than the crop


def object_extent(logits: torch.Tensor, crop_size: int, zoom: float) -> tuple[float, np.ndarray] | None:
    """The largest bounding-box side of the mask predicted in a crop, in model-space voxels, and the box centre in
    crop voxels (None when the mask is empty). ``logits`` (1, 1, r, r, r) cover the ``crop_size``^3 crop."""
    mask = logits[0, 0] > 0
    if not bool(mask.any()):
        return None
    index = torch.nonzero(mask).numpy()
    cell = crop_size / mask.shape[-1]
    low, high = index.min(0), index.max(0) + 1
    return float((high - low).max()) * cell * zoom, (low + high) / 2.0 * cell - 0.5


def zoom_for(extent_voxels: float, size: int) -> float | None:
    """The zoom at which an object of ``extent_voxels`` fills ``OBJECT_FILL`` of a ``size`` crop, or None when the
    object is too large for zooming in to help."""
    zoom = float(np.clip(extent_voxels / (OBJECT_FILL * size), MIN_ZOOM, 1.0))
    return zoom if zoom < ZOOM_IN_BELOW else None
