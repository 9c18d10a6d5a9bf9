"""Classical click-seeded baseline: scikit-image's random walker on the model-space image at twice the spacing."""

from __future__ import annotations

import numpy as np
import torch
from skimage.segmentation import random_walker

from lib.prompts.geometry import Crop, apply_affine, original_to_volume, paste_crop_mask, sample_crop
from lib.transforms.preprocess import ModelVolume

ZOOM = 2.0  # 3 mm for the 1.5 mm model space: random walker on the full grid takes minutes per click


def whole_volume_crop(volume: ModelVolume) -> Crop:
    shape = np.asarray(volume.image.shape[1:])
    size = int(np.ceil(shape.max() / ZOOM))
    low_edge = (shape - size * ZOOM) / 2.0 - 0.5
    return Crop(origin=tuple(low_edge + 0.5), size=size, zoom=ZOOM)


def random_walker_mask(volume: ModelVolume, clicks: list[tuple[np.ndarray, bool]], beta: float = 130.0) -> np.ndarray:
    """Segment with clicks (stored-image voxels) as seeds: foreground clicks label 1; background clicks and the
    border of the field of view label 2. Returns a mask on the stored image's grid."""
    crop = whole_volume_crop(volume)
    image = sample_crop(volume.image, crop)[0].numpy().astype(np.float64)
    orig_to_vol = original_to_volume(volume.original_affine, volume.affine)
    seeds = np.zeros(image.shape, dtype=np.int32)
    seeds[[0, -1], :, :] = seeds[:, [0, -1], :] = seeds[:, :, [0, -1]] = 2
    for point, is_foreground in clicks:
        c = np.round(apply_affine(crop.volume_to_crop @ orig_to_vol, point[None])[0]).astype(int)
        c = np.clip(c, 1, np.asarray(image.shape) - 2)
        seeds[c[0] - 1 : c[0] + 2, c[1] - 1 : c[1] + 2, c[2] - 1 : c[2] + 2] = 1 if is_foreground else 2
    if not (seeds == 1).any():
        return np.zeros(volume.original_shape, dtype=bool)
    probability = random_walker(image, seeds, beta=beta, mode="cg_j", return_full_prob=True, tol=1e-3)[0]
    out = torch.zeros(volume.original_shape, dtype=torch.bool)
    paste_crop_mask(torch.as_tensor(probability > 0.5), crop, orig_to_vol, volume.original_shape, out)
    return out.numpy()
