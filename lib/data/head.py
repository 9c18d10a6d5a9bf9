"""Synthetic head tissue around a skull-stripped brain: CSF, inner and outer skull tables, diploe, scalp fat and
skin as shells at random thicknesses and contrasts, so that models trained and evaluated on the (skull-stripped)
template also meet scans that are not."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

# (name, thickness range in mm, intensity range as a fraction of the way from background to bright brain tissue)
SHELLS = (
    ("csf", (1.0, 3.0), (0.05, 0.3)),
    ("inner_table", (1.0, 2.5), (0.0, 0.12)),
    ("diploe", (1.5, 4.0), (0.3, 0.8)),
    ("outer_table", (1.0, 2.5), (0.0, 0.12)),
    ("scalp_fat", (2.0, 6.0), (0.7, 1.3)),
    ("skin", (1.0, 3.0), (0.3, 0.7)),
)


def brain_mask(image: np.ndarray) -> np.ndarray:
    """The brain of a skull-stripped image: the largest bright component (Otsu on a smoothed copy), holes filled."""
    smooth = ndimage.gaussian_filter(image.astype(np.float32), 1.0)
    mask = smooth > threshold_otsu(smooth) * 0.5
    components, count = ndimage.label(mask)
    if count > 1:
        mask = components == (int(np.argmax(np.bincount(components.ravel())[1:])) + 1)
    return ndimage.binary_fill_holes(mask)


def add_head_tissue(image: np.ndarray, spacing: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """``image`` with head-tissue shells painted into the background around its brain (same grid and dtype).

    Intensities are set relative to the image's own background and bright-tissue levels, so this works on stored
    intensities and on z-normalised volumes alike. Needs room around the brain: about 20 mm of background.
    """
    brain = brain_mask(image)
    background = float(np.median(image[~brain]))
    bright = float(np.percentile(image[brain], 99))
    outside_mm = ndimage.distance_transform_edt(~brain, sampling=spacing)
    out = image.astype(np.float32, copy=True)
    texture = ndimage.gaussian_filter(rng.normal(0.0, 1.0, image.shape).astype(np.float32), 2.0)
    texture /= max(float(texture.std()), 1e-6)
    inner = 0.0
    for _, (t_low, t_high), (i_low, i_high) in SHELLS:
        outer = inner + rng.uniform(t_low, t_high)
        shell = (outside_mm > inner) & (outside_mm <= outer)
        level = background + rng.uniform(i_low, i_high) * (bright - background)
        out[shell] = level + 0.05 * (bright - background) * texture[shell]
        inner = outer
    noise = rng.normal(0.0, rng.uniform(0.005, 0.03) * (bright - background), image.shape)
    head = (outside_mm > 0) & (outside_mm <= inner)
    out[head] += noise[head].astype(np.float32)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        return np.clip(np.round(out), info.min, info.max).astype(image.dtype)
    return out.astype(image.dtype)
