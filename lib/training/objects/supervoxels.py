"""Supervoxels at a random scale (scikit-image SLIC), alone or merged with some of their neighbours."""

from __future__ import annotations

import numpy as np
from skimage.segmentation import slic

from lib.training.objects import CropContext, ObjectSample, full_resolution, register


def neighbours(segments: np.ndarray, label: int) -> np.ndarray:
    """Labels of the segments that touch segment ``label`` (6-connectivity)."""
    found = []
    for axis in range(3):
        a = np.moveaxis(segments, axis, 0)
        pairs = np.stack([a[:-1].ravel(), a[1:].ravel()], axis=1)
        pairs = pairs[(pairs[:, 0] != pairs[:, 1])]
        found.append(pairs[pairs[:, 0] == label, 1])
        found.append(pairs[pairs[:, 1] == label, 0])
    touching = np.unique(np.concatenate(found))
    return touching[touching > 0]


@register("supervoxels")
def supervoxel_object(ctx: CropContext, rng: np.random.Generator) -> ObjectSample | None:
    tissue = ctx.tissue()
    if tissue.mean() < 0.05:
        return None
    count = int(np.exp(rng.uniform(np.log(4), np.log(80))))
    # on the whole half-resolution crop (SLIC's masked start is several times slower); seeds lie in tissue
    segments = slic(ctx.half, n_segments=count, compactness=float(rng.uniform(0.02, 0.3)), channel_axis=None,
                    start_label=1, max_num_iter=4)
    seed = ctx.seed_voxel(tissue, rng)
    if seed is None:
        return None
    chosen = {int(segments[seed])}
    for _ in range(int(rng.integers(0, 3))):  # grow by up to two touching segments
        touching = np.setdiff1d(np.concatenate([neighbours(segments, c) for c in chosen]), list(chosen))
        if len(touching) == 0:
            break
        chosen.add(int(rng.choice(touching)))
    return ObjectSample(ctx.image, full_resolution(np.isin(segments, list(chosen))))
