"""Intensity-homogeneous connected components: the smoothed crop quantised into a few levels at random quantiles,
and the connected region of one level under a random voxel."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from lib.training.objects import CropContext, ObjectSample, full_resolution, register


@register("components")
def component_object(ctx: CropContext, rng: np.random.Generator) -> ObjectSample | None:
    tissue = ctx.tissue()
    if tissue.mean() < 0.05:
        return None
    smooth = ndimage.gaussian_filter(ctx.half, float(rng.uniform(0.5, 1.5)))
    cuts = np.sort(np.quantile(smooth[tissue], rng.uniform(0.05, 0.95, size=int(rng.integers(2, 7)))))
    levels = np.digitize(smooth, cuts)
    seed = ctx.seed_voxel(tissue, rng)
    if seed is None:
        return None
    region = levels == levels[seed]
    if rng.random() < 0.5:  # cut thin bridges between regions
        region = ndimage.binary_opening(region)
    components, _ = ndimage.label(region)
    if components[seed] == 0:
        return None
    return ObjectSample(ctx.image, full_resolution(components == components[seed]))
