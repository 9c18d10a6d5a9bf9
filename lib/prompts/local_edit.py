"""Local corrections: a click on a label being corrected changes only the region it points at (FocalClick's
progressive merge), so the rest of a good label survives a coarse model answer."""

from __future__ import annotations

import numpy as np
from skimage.measure import label as connected_components


def local_correction(base: np.ndarray, answer: np.ndarray, foreground: np.ndarray, background: np.ndarray,
                     radius: np.ndarray) -> np.ndarray:
    """``base`` (bool, the label being corrected) changed only where each click asks: a foreground click adds the
    connected region of ``answer & ~base`` that holds it, a background click removes that of ``base & ~answer``,
    each within ``radius`` voxels (per axis) of the click. ``foreground`` and ``background`` are (N, 3) voxel
    indices of ``base``'s grid."""
    out = np.array(base, dtype=bool, copy=True)
    answer = np.asarray(answer, dtype=bool)
    for clicks, positive in ((foreground, True), (background, False)):
        for click in np.asarray(clicks).reshape(-1, 3):
            point = np.round(click).astype(np.int64)
            window = tuple(slice(max(int(p - r), 0), min(int(p + r) + 1, n))
                           for p, r, n in zip(point, np.ceil(radius), out.shape, strict=True))
            local = tuple(int(p) - w.start for p, w in zip(point, window, strict=True))
            change = answer[window] & ~out[window] if positive else out[window] & ~answer[window]
            if not change[local]:
                continue
            components = connected_components(change, connectivity=1)
            region = components == components[local]
            out[window] = out[window] | region if positive else out[window] & ~region
    return out
