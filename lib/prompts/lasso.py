"""Lasso prompts: a closed contour drawn around the object on one slice (nnInteractive's lasso).

``lasso`` is a polygon of at least three ``[i, j, k]`` voxel indices sharing one coordinate (the slice). The filled
polygon is a strong foreground prompt: clicks spread over it, a rounded body grown from it as the mask prior, and on
its slice nothing outside it belongs to the object; background clicks go on a ring just outside it. The lasso also
gives the object's scale: the result stays within half the lasso's largest in-plane size of it, on every side and
along the slice axis.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.draw import polygon

from lib.errors import InvalidRequest
from lib.prompts.box import outside_box
from lib.prompts.channels import PromptChannels
from lib.prompts.clicks import check_inside, parse_points
from lib.prompts.regions import RegionPrompt, axis_slice, rounded_extrusion, sample_voxels

FOREGROUND_POINTS = 3
BACKGROUND_POINTS = 4
RING_VOXELS = 2  # background clicks this far outside the contour
REACH = 0.5  # the object may extend this fraction of the lasso's largest in-plane size beyond it, on every side


@dataclass(frozen=True)
class Lasso:
    axis: int  # the axis the slice is normal to
    index: int  # the slice
    area: np.ndarray  # bool, the filled polygon on the slice (the image's shape without ``axis``)


def parse_lasso(value: Any, shape: Sequence[int]) -> Lasso | None:
    """The request's ``lasso``, or None when absent; a malformed, off-image or empty one is a 422."""
    points = parse_points(value, "lasso")
    if len(points) == 0:
        return None
    check_inside(points, shape, "lasso")
    points = np.round(points)
    if len(points) < 3:
        raise InvalidRequest(f"'lasso' needs at least 3 points of a closed contour, got {len(points)}")
    flat = [axis for axis in range(3) if np.all(points[:, axis] == points[0, axis])]
    if len(flat) != 1:
        raise InvalidRequest("'lasso' points must lie on one slice: share exactly one of i, j, k"
                             if not flat else "'lasso' points lie on a line and enclose no area")
    axis = flat[0]
    plane = [a for a in range(3) if a != axis]
    area = np.zeros(tuple(int(shape[a]) for a in plane), dtype=bool)
    rows, cols = polygon(points[:, plane[0]], points[:, plane[1]], shape=area.shape)
    area[rows, cols] = True
    if not area.any():
        raise InvalidRequest("'lasso' encloses no voxel")
    return Lasso(axis, int(points[0, axis]), area)


def on_slice(lasso: Lasso, area: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A 2D mask of the lasso's slice placed in a 3D volume of ``shape``."""
    out = np.zeros(tuple(int(s) for s in shape[:3]), dtype=bool)
    out[axis_slice(lasso.axis, lasso.index)] = area
    return out


def reach_box(lasso: Lasso, shape: Sequence[int]) -> np.ndarray:
    """(3, 2) inclusive bounds around the lasso grown by ``REACH`` times its largest in-plane size."""
    rows, cols = np.nonzero(lasso.area)
    size = max(np.ptp(rows), np.ptp(cols)) + 1
    margin = np.ceil(REACH * size)
    plane = [a for a in range(3) if a != lasso.axis]
    box = np.zeros((3, 2))
    box[plane[0]] = rows.min() - margin, rows.max() + margin
    box[plane[1]] = cols.min() - margin, cols.max() + margin
    box[lasso.axis] = lasso.index - margin, lasso.index + margin
    return np.clip(box, 0, np.asarray(shape[:3])[:, None] - 1)


def lasso_prompt(lasso: Lasso, shape: Sequence[int]) -> RegionPrompt:
    shape = tuple(int(s) for s in shape[:3])
    grown = ndimage.binary_dilation(lasso.area, iterations=RING_VOXELS)
    ring = grown & ~ndimage.binary_dilation(lasso.area, iterations=RING_VOXELS - 1)
    area, ring = on_slice(lasso, lasso.area, shape), on_slice(lasso, ring, shape)
    return RegionPrompt(
        "lasso",
        sample_voxels(area, FOREGROUND_POINTS),
        sample_voxels(ring, BACKGROUND_POINTS),
        prior=rounded_extrusion(lasso.area, lasso.axis, lasso.index, shape),
        exclude=on_slice(lasso, ~lasso.area, shape) | outside_box(reach_box(lasso, shape), shape),
        key=(lasso.axis, lasso.index, hashlib.sha1(np.packbits(lasso.area).tobytes()).hexdigest()),
        channels=PromptChannels(foreground=(area,), background=(ring,)),
    )
