"""Class-agnostic training objects: a registry of object sources, each one module of this package.

A source takes a training crop (:class:`CropContext`) and returns an :class:`ObjectSample` (the crop image, possibly
with something painted in, and the object's mask), or None when it finds nothing usable in that crop. Register a
new source by adding a module here that decorates its function with :func:`register`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

HALF = 2  # sources that segment the image work on a half-resolution copy of the crop
# Objects span at least this fraction of the crop: the encoder sees 16^3-voxel patches, so an object much smaller
# than a few patches cannot be located in its 8^3 tokens. Smaller structures are met zoomed in (auto-zoom makes
# them fill 0.4 of the crop), which is where they are practised.
MIN_EXTENT = 0.2


def brighter_than_air(values: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Voxels of ``values`` above the air level: the 5th percentile of ``reference`` (default ``values``) plus a
    tenth of its 5-99 % range."""
    dark, bright = np.percentile(values if reference is None else reference, [5, 99])
    return values > dark + 0.1 * (bright - dark)


@dataclass
class CropContext:
    """One training crop: ``image`` (1, S, S, S), the anatomy masks cut from the same place (name -> (S, S, S) bool,
    computed on demand), the part of the crop inside the volume (low and high crop voxel, inclusive), and a
    half-resolution copy of the image with its tissue (non-air) mask."""

    image: torch.Tensor
    anatomy: Callable[[], dict[str, torch.Tensor]]
    inside: tuple[np.ndarray, np.ndarray]
    _half: np.ndarray | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return int(self.image.shape[-1])

    @property
    def half(self) -> np.ndarray:
        if self._half is None:
            self._half = F.avg_pool3d(self.image[None], HALF)[0, 0].numpy()
        return self._half

    def tissue(self) -> np.ndarray:
        """Half-resolution voxels inside the volume and brighter than its air (darkest 5 % plus a margin)."""
        inside = np.zeros(self.half.shape, dtype=bool)
        low, high = self.inside
        inside[tuple(slice(int(lo) // HALF, int(hi) // HALF + 1) for lo, hi in zip(low, high, strict=True))] = True
        if not inside.any():
            return inside
        return inside & brighter_than_air(self.half, self.half[inside])

    def seed_voxel(self, mask: np.ndarray, rng: np.random.Generator, central: float = 0.5) -> tuple[int, ...] | None:
        """A random voxel of ``mask`` inside the central ``central`` part of the grid (where clicks land)."""
        n = mask.shape[0]
        lo, hi = int(n * (1 - central) / 2), int(n * (1 + central) / 2)
        inner = np.zeros_like(mask)
        inner[lo:hi, lo:hi, lo:hi] = mask[lo:hi, lo:hi, lo:hi]
        voxels = np.flatnonzero(inner)
        if len(voxels) == 0:
            return None
        return tuple(int(v) for v in np.unravel_index(int(rng.choice(voxels)), mask.shape))


@dataclass
class ObjectSample:
    image: torch.Tensor  # (1, S, S, S)
    mask: torch.Tensor  # (S, S, S) bool


def full_resolution(mask: np.ndarray) -> torch.Tensor:
    """A half-resolution mask back on the crop grid (each voxel to its HALF^3 block)."""
    t = torch.from_numpy(np.ascontiguousarray(mask))
    for axis in range(3):
        t = t.repeat_interleave(HALF, dim=axis)
    return t


def large_enough(mask: np.ndarray | torch.Tensor) -> bool:
    """Whether the mask's bounding box spans at least ``MIN_EXTENT`` of the crop along its longest side."""
    index = np.argwhere(np.asarray(mask))
    return len(index) > 0 and int((index.max(0) - index.min(0) + 1).max()) >= MIN_EXTENT * mask.shape[0]


ObjectSource = Callable[[CropContext, np.random.Generator], ObjectSample | None]
OBJECT_SOURCES: dict[str, ObjectSource] = {}


def register(name: str) -> Callable[[ObjectSource], ObjectSource]:
    def add(source: ObjectSource) -> ObjectSource:
        OBJECT_SOURCES[name] = source
        return source

    return add


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
