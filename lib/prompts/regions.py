"""Region prompts (a box, a lasso, scribbles) in the form the interactive network takes: clicks derived from the
region, a mask prior for an object without a previous mask, and voxels the result must include or exclude.

Every checkpoint gets each region as clicks plus a mask prompt (SAM-Med3D's previous-mask input), and its hard part
(the box's bounds, the painted strokes, the outside of the lasso on its slice) is imposed on the result. A ``prompts``
refiner also sees the region itself, as dense channels (:mod:`lib.prompts.channels`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from lib.prompts.channels import PromptChannels


@dataclass(frozen=True)
class RegionPrompt:
    """What one region prompt asks of a segmentation; masks are bool arrays on the stored image's grid."""

    kind: str  # "box", "lasso" or "scribbles"
    foreground: np.ndarray  # (N, 3) voxel indices, placed before the annotator's own clicks
    background: np.ndarray  # (M, 3)
    prior: np.ndarray | None = None  # the mask prompt when the object has no previous mask
    include: np.ndarray | None = None  # voxels the result must contain
    exclude: np.ndarray | None = None  # voxels the result must not contain
    editable: np.ndarray | None = None  # where the result may depart from ``prior`` (None: everywhere)
    key: tuple = ()  # what identifies the prompt: requests resending it continue one object's session
    channels: PromptChannels | None = None  # the region as a ``prompts`` refiner's dense channels


def spread_points(points: np.ndarray, weights: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` points: the one nearest the ``weights``-weighted centroid (which moves only a little when
    the weights do), then each the farthest from those already chosen (the first of equally far ones)."""
    centroid = (points * weights[:, None]).sum(0) / max(float(weights.sum()), 1e-12)
    chosen = [int(np.argmin(np.round(np.linalg.norm(points - centroid, axis=1), 6)))]
    distance = np.round(np.linalg.norm(points - points[chosen[0]], axis=1), 6)
    while len(chosen) < min(count, len(points)):
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.round(np.linalg.norm(points - points[chosen[-1]], axis=1), 6))
    return points[chosen]


def sample_voxels(mask: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` voxels of ``mask`` spread over it (:func:`spread_points`), as an (N, 3) float array."""
    voxels = np.argwhere(mask).astype(np.float64)
    if len(voxels) == 0:
        return np.zeros((0, 3))
    return spread_points(voxels, np.ones(len(voxels)), count)


def axis_slice(axis: int, index: int) -> tuple[slice | int, ...]:
    """The 3D index of slice ``index`` normal to ``axis``."""
    return tuple(index if a == axis else slice(None) for a in range(3))


def rounded_extrusion(area: np.ndarray, axis: int, index: int, shape: tuple[int, ...]) -> np.ndarray:
    """The 2D ``area`` on slice ``index`` of ``axis`` grown into a rounded 3D body: a point at in-plane depth ``d``
    (voxels from the area's edge, ``R`` at its deepest) reaches ``sqrt(d (2R - d))`` slices to either side, so a
    disc becomes a ball."""
    depth = ndimage.distance_transform_edt(np.pad(area, 1))[1:-1, 1:-1]
    deepest = float(depth.max())
    reach = np.sqrt(np.clip(depth * (2.0 * deepest - depth), 0.0, None))
    out = np.zeros(shape, dtype=bool)
    for offset in range(-int(np.ceil(deepest)), int(np.ceil(deepest)) + 1):
        k = index + offset
        if 0 <= k < shape[axis]:
            out[axis_slice(axis, k)] = area & (reach > abs(offset) - 0.5)
    return out


def apply_regions(mask: torch.Tensor, regions: list[RegionPrompt]) -> torch.Tensor:
    """``mask`` with every region's ``prior`` kept outside its ``editable`` voxels, its ``exclude`` voxels cleared
    and its ``include`` voxels set (``mask`` itself when there are none)."""
    if not regions:
        return mask
    out = mask.clone()
    for region in regions:
        if region.editable is not None and region.prior is not None:
            fixed = torch.from_numpy(~region.editable)
            out[fixed] = torch.from_numpy(region.prior)[fixed].to(out.dtype)
        if region.exclude is not None:
            out[torch.from_numpy(region.exclude)] = 0
        if region.include is not None:
            out[torch.from_numpy(region.include)] = 1
    return out
