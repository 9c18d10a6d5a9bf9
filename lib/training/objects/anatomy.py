"""Parts of the anatomy: a labelled structure in the crop (or the connected piece of it under a random voxel)."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from lib.training.objects import CropContext, ObjectSample, register


@register("anatomy")
def anatomy_object(ctx: CropContext, rng: np.random.Generator) -> ObjectSample | None:
    masks = {name: m for name, m in ctx.anatomy().items() if int(m.sum()) > 0}
    if not masks:
        return None
    mask = masks[str(rng.choice(sorted(masks)))].numpy()
    if rng.random() < 0.5:
        seed = ctx.seed_voxel(mask, rng)
        if seed is None:
            return None
        components, _ = ndimage.label(mask)
        mask = components == components[seed]
    return ObjectSample(ctx.image, torch.from_numpy(mask))
