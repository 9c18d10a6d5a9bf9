"""Where the simulated annotator draws: a stroke along an error region, a lasso around the object, on one slice."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.measure import find_contours
from skimage.morphology import medial_axis

from lib.prompts.regions import axis_slice


def region_through(mask: np.ndarray, point: np.ndarray, axis: int) -> np.ndarray:
    """On the slice (normal to ``axis``) through ``point``, the connected region of ``mask`` that holds it (2D)."""
    components, _ = ndimage.label(mask.astype(bool)[axis_slice(axis, int(point[axis]))])
    return components == components[tuple(int(point[a]) for a in range(3) if a != axis)]


def stroke_through(prediction: np.ndarray, target: np.ndarray, point: np.ndarray, axis: int = 2) -> np.ndarray:
    """The stroke an annotator paints at the wrong voxel ``point``: on its slice (normal to ``axis``), the medial
    axis of the error region there that holds it (a bool mask)."""
    stroke = np.zeros(target.shape, dtype=bool)
    error = prediction.astype(bool) ^ target.astype(bool)
    stroke[axis_slice(axis, int(point[axis]))] = medial_axis(region_through(error, point, axis), rng=0)  # seeded
    stroke[tuple(point)] = True  # a one-voxel region skeletonises to itself; the click voxel is always painted
    return stroke


def lasso_around(target: np.ndarray, point: np.ndarray, axis: int = 2, vertices: int = 40) -> list[list[float]]:
    """The lasso an annotator draws around the object on the slice (normal to ``axis``) through ``point``: the
    outline of the object's region there that holds the point, as up to ``vertices`` ``[i, j, k]`` points."""
    region = np.pad(region_through(target, point, axis), 1)
    outline = max(find_contours(region.astype(np.float32), 0.5), key=len) - 1.0  # undo the padding
    outline = outline[:: max(1, len(outline) // vertices)]
    return [[float(v) for v in np.insert(p, axis, point[axis])] for p in outline]
