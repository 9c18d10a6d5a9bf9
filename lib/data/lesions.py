"""Synthetic white-matter lesions for the unseen-object evaluation, painted into the template before a subject is
synthesised (so they share its warp, bias field and noise), with appearances that pretraining's painted objects
never have: those are uniform levels 0.5 to 3 standard deviations from their surroundings with faint smooth texture
(``lib.training.objects.painted``). Here: a bright rim around a dark core, a ramp through the surrounding tissue's
level, and coarse bright-and-dark speckle around a level close to the tissue's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

VOLUME_ML = (0.5, 20.0)  # log-uniform
RIM_MM = 2.0
MIN_GAP_MM = 4.0

Appearance = Callable[[np.ndarray, np.ndarray, float, float, np.random.Generator], np.ndarray]


def ring(inside: np.ndarray, depth_mm: np.ndarray, white: float, grey: float, rng: np.random.Generator) -> np.ndarray:
    """Rim-enhancing: a bright shell (``RIM_MM`` thick) around a core darker than grey matter."""
    contrast = white - grey
    rim, core = white + rng.uniform(0.8, 1.2) * contrast, grey - rng.uniform(0.6, 1.0) * contrast
    return np.where(depth_mm <= RIM_MM, rim, core)


def graded(inside: np.ndarray, depth_mm: np.ndarray, white: float, grey: float, rng: np.random.Generator) -> np.ndarray:
    """A linear ramp across the lesion from darker than grey matter to brighter than white matter, so part of it
    matches its surroundings."""
    index = np.argwhere(inside).astype(np.float64)
    direction = rng.normal(size=3)
    position = index @ (direction / np.linalg.norm(direction))
    t = (position - position.min()) / max(float(np.ptp(position)), 1e-6)
    contrast = white - grey
    values = np.zeros(inside.shape, dtype=np.float32)
    values[inside] = grey - 0.5 * contrast + t * 2.0 * contrast
    return values


def speckled(inside: np.ndarray, depth_mm: np.ndarray, white: float, grey: float,
             rng: np.random.Generator) -> np.ndarray:
    """Coarse bright-and-dark speckle (1.5 grey-white contrasts peak to peak) around a level between the tissues."""
    texture = ndimage.gaussian_filter(rng.normal(0.0, 1.0, inside.shape), 1.0)
    texture /= max(float(texture[inside].std()), 1e-6)
    return (grey + white) / 2.0 + 0.5 * (white - grey) * np.clip(texture, -1.5, 1.5)


LESION_KINDS: dict[str, Appearance] = {"lesion_ring": ring, "lesion_graded": graded, "lesion_speckled": speckled}


def lesion_shape(volume_ml: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth irregular ellipsoid of about ``volume_ml`` on a 1 mm grid, in its own bounding box."""
    radius = (3.0 * volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    axes = rng.uniform(0.75, 1.3, size=3)
    axes = radius * axes / np.prod(axes) ** (1.0 / 3.0)
    half = int(np.ceil(axes.max() * 1.3)) + 2
    grid = np.mgrid[-half : half + 1, -half : half + 1, -half : half + 1].reshape(3, -1).T.astype(np.float64)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    distance = np.sqrt((((grid @ q) / axes) ** 2).sum(1)).reshape((2 * half + 1,) * 3)
    wobble = ndimage.zoom(rng.normal(0.0, 1.0, (4, 4, 4)), (2 * half + 1) / 4.0, order=1)[: 2 * half + 1] * 0.12
    return distance + wobble[: 2 * half + 1, : 2 * half + 1, : 2 * half + 1] < 1.0


def paint_lesions(t1: np.ndarray, labels: np.ndarray, white_matter: np.ndarray, first_index: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """One lesion of every kind in ``white_matter`` of a 1 mm template, away from each other and from labelled
    structures; returns the painted image, the labels with the lesions as ``first_index``, ``first_index + 1`` ...
    and their names."""
    t1, labels = t1.copy(), labels.copy()
    white, grey = float(np.median(t1[white_matter])), float(np.median(t1[(labels > 0) & ~white_matter]))
    free = white_matter & (labels == 0)
    names = {}
    for offset, (name, appearance) in enumerate(LESION_KINDS.items()):
        shape = lesion_shape(float(np.exp(rng.uniform(*np.log(VOLUME_ML)))), rng)
        half = shape.shape[0] // 2
        depth = ndimage.distance_transform_edt(free)
        candidates = np.argwhere(depth > half + MIN_GAP_MM)
        if len(candidates) == 0:
            candidates = np.argwhere(depth == depth.max())
        center = candidates[int(rng.integers(len(candidates)))]
        box = tuple(slice(c - half, c + half + 1) for c in center)
        inside = shape & free[box]
        values = appearance(inside, ndimage.distance_transform_edt(inside), white, grey, rng)
        region = t1[box]
        region[inside] = values[inside]
        index = first_index + offset
        labels[box][inside] = index
        names[index] = name
        free[tuple(slice(max(c - half - int(MIN_GAP_MM), 0), c + half + int(MIN_GAP_MM) + 1) for c in center)] = False
    return t1, labels, names
