"""Local corrections: a click on a label being corrected changes only the region it points at (FocalClick's
progressive merge), so the rest of a good label survives a coarse model answer."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.measure import label as connected_components

REACH_FACTOR = 2.0  # a click changes voxels up to this many times its distance from the label's edge ...
MIN_REACH_MM = 2.0  # ... and at least this far


def click_reach(label: np.ndarray, point: tuple[int, ...], inside: bool, spacing: np.ndarray) -> float:
    """How far (mm) a click at ``point`` of the window ``label`` may change it: :data:`REACH_FACTOR` times its
    distance to the nearest voxel on the label's other side (outside the label for a click ``inside`` it), at least
    :data:`MIN_REACH_MM`; infinite when the window holds no such voxel. A click in a thin error next to the label's
    edge changes little, one in the middle of a large missed or wrong region changes much."""
    other = ~label if inside else label
    if not other.any():
        return float("inf")
    distance = ndimage.distance_transform_edt(~other, sampling=spacing)[point]
    return max(REACH_FACTOR * float(distance), MIN_REACH_MM)


def local_correction(base: np.ndarray, answer: np.ndarray, foreground: np.ndarray, background: np.ndarray,
                     spacing: np.ndarray, radius_mm: float) -> np.ndarray:
    """``base`` (bool, the label being corrected) changed only where each click asks: a foreground click adds the
    connected region of ``answer & ~base`` that holds it, a background click removes that of ``base & ~answer``,
    each within ``radius_mm`` of the click (a box) and its :func:`click_reach` (a ball). ``foreground`` and
    ``background`` are (N, 3) voxel indices of ``base``'s grid, whose voxels measure ``spacing`` mm."""
    out = np.array(base, dtype=bool, copy=True)
    answer = np.asarray(answer, dtype=bool)
    spacing = np.asarray(spacing, dtype=np.float64)
    radius = np.ceil(radius_mm / spacing)
    for clicks, positive in ((foreground, True), (background, False)):
        for click in np.asarray(clicks).reshape(-1, 3):
            point = np.round(click).astype(np.int64)
            window = tuple(slice(max(int(p - r), 0), min(int(p + r) + 1, n))
                           for p, r, n in zip(point, radius, out.shape, strict=True))
            local = tuple(int(p) - w.start for p, w in zip(point, window, strict=True))
            change = answer[window] & ~out[window] if positive else out[window] & ~answer[window]
            if not change[local]:
                continue
            reach = click_reach(out[window], local, not positive, spacing)
            if np.isfinite(reach):
                offsets = np.ogrid[tuple(slice(-c, n - c) for c, n in zip(local, change.shape, strict=True))]
                change &= sum((o * s) ** 2 for o, s in zip(offsets, spacing, strict=True)) <= reach**2
            components = connected_components(change, connectivity=1)
            region = components == components[local]
            out[window] = out[window] | region if positive else out[window] & ~region
    return out
