"""Training crops: a random object, a random zoom and position around it, with intensity jitter."""

from __future__ import annotations

import numpy as np
import torch

from lib.prompts.geometry import place_crop, sample_crop

ZOOMS = (1.0, 1.0, 1.0, 1.5, 2.0)  # mostly full resolution; some coarse passes, as the predictor uses them
MIN_TARGET_VOXELS = 20


def sample_crop_pair(
    image: torch.Tensor, targets: dict[str, torch.Tensor], size: int, rng: np.random.Generator,
    weights: dict[str, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(image (1, 1, S, S, S), binary target (1, 1, S, S, S), object name) around a random voxel of a random object.

    ``image`` is (1, X, Y, Z) in model space and ``targets`` maps object names to (X, Y, Z) masks on its grid;
    objects are drawn uniformly, or in proportion to ``weights`` (default 1 for names it lacks).
    """
    names = sorted(targets)
    p = np.asarray([weights.get(n, 1.0) for n in names], dtype=np.float64) if weights else None
    for _ in range(100):
        name = str(rng.choice(names) if p is None else rng.choice(names, p=p / p.sum()))
        mask = targets[name]
        voxels = torch.nonzero(mask)
        center = voxels[int(rng.integers(len(voxels)))].numpy().astype(np.float64)
        zoom = float(rng.choice(ZOOMS))
        center += rng.uniform(-0.2, 0.2, size=3) * size * zoom
        crop = place_crop(center, tuple(mask.shape), size=size, zoom=zoom)
        target = (sample_crop(mask[None].float(), crop) > 0.5).float()
        if target.sum() >= MIN_TARGET_VOXELS:
            crop_image = sample_crop(image, crop) * float(rng.uniform(0.9, 1.1)) + float(rng.uniform(-0.1, 0.1))
            return crop_image[None], target[None], name
    raise ValueError(f"no crop with at least {MIN_TARGET_VOXELS} target voxels in 100 tries")
