"""Classical click-seeded baseline: scikit-image's random walker at the image's native resolution, in a box derived
from the clicks (the foreground clicks' bounding box grown by ``MARGIN_MM`` on every side, as a user of a classical
tool would draw an ROI around what they clicked)."""

from __future__ import annotations

import numpy as np
from skimage.segmentation import random_walker

from lib.prompts.simulation import Click, Segmenter, split_clicks

MARGIN_MM = 25.0
BETA = 130.0  # scikit-image scales it by the image's standard deviation, so it holds for any intensity unit


def click_box(clicks: list[Click], shape: tuple[int, ...], spacing: np.ndarray) -> tuple[slice, ...]:
    """The foreground clicks' bounding box grown by ``MARGIN_MM`` (in the image's voxels), clipped to the image."""
    foreground, _ = split_clicks(clicks)
    margin = np.ceil(MARGIN_MM / spacing)
    low = np.maximum(np.floor(foreground.min(0) - margin), 0).astype(int)
    high = np.minimum(np.ceil(foreground.max(0) + margin) + 1, shape).astype(int)
    return tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))


def random_walker_segmenter(image: np.ndarray, spacing: np.ndarray) -> Segmenter:
    """Clicks (stored-image voxels) -> the random walker's mask on ``image``'s grid. Foreground clicks seed label 1;
    background clicks and the faces of the box seed label 2 (nothing outside the box is foreground)."""
    image = np.asarray(image, dtype=np.float64)

    def segment(clicks: list[Click]) -> np.ndarray:
        out = np.zeros(image.shape, dtype=bool)
        if not any(fg for _, fg in clicks):
            return out
        box = click_box(clicks, image.shape, spacing)
        low = np.asarray([s.start for s in box])
        seeds = np.zeros(tuple(s.stop - s.start for s in box), dtype=np.int32)
        seeds[[0, -1], :, :] = seeds[:, [0, -1], :] = seeds[:, :, [0, -1]] = 2
        for point, is_foreground in clicks:
            c = np.asarray(point, dtype=int) - low
            if np.all(c >= 0) and np.all(c < seeds.shape):
                ball = tuple(slice(max(v - 1, 0), v + 2) for v in c)
                seeds[ball] = 1 if is_foreground else 2
        probability = random_walker(image[box], seeds, beta=BETA, mode="cg_j", return_full_prob=True, tol=1e-3)[0]
        out[box] = probability > 0.5
        return out

    return segment
