"""Class-agnostic training crops: a random volume, zoom and place, an object from a random source, a random
appearance. The zoom range is the one the predictor's auto-zoom uses, so every object size is practised."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lib.data.head import add_head_tissue
from lib.engine.autozoom import MIN_ZOOM
from lib.prompts.geometry import Crop, place_crop, sample_crop
from lib.training.appearance import AppearanceRandomizer
from lib.training.objects import OBJECT_SOURCES, CropContext, brighter_than_air, large_enough

MIN_OBJECT_VOXELS = 300  # on the crop grid: about 2.5 logit voxels across
MAX_OBJECT_FRACTION = 0.5  # of the crop
HEAD_PADDING_MM = 24.0
DEFAULT_SOURCE_WEIGHTS = {"anatomy": 0.25, "supervoxels": 0.25, "components": 0.2, "blobs": 0.25, "tubes": 0.05}
MAX_TRAINING_ZOOM = 2.0  # coarser passes only follow borders of objects already found at zoom 1


@dataclass
class PretrainVolume:
    """A model-space volume, its anatomy masks (name -> (X, Y, Z) bool) and its tissue voxels (where crops go)."""

    name: str
    image: torch.Tensor  # (1, X, Y, Z)
    anatomy: dict[str, torch.Tensor]
    tissue: np.ndarray  # (N, 3) voxel indices


def make_volume(name: str, image: torch.Tensor, anatomy: dict[str, torch.Tensor]) -> PretrainVolume:
    return PretrainVolume(name, image, anatomy, np.argwhere(brighter_than_air(image[0].numpy())))


def with_head_tissue(volume: PretrainVolume, spacing: float, rng: np.random.Generator) -> PretrainVolume:
    """The volume padded by ``HEAD_PADDING_MM`` with scalp and skull shells around the brain, re-normalised."""
    pad = int(np.ceil(HEAD_PADDING_MM / spacing))
    image = volume.image[0].numpy()
    padded = np.pad(image, pad, mode="constant", constant_values=float(np.percentile(image, 1)))
    head = add_head_tissue(padded, (spacing,) * 3, rng)
    head = (head - head.mean()) / head.std()
    anatomy = {k: torch.nn.functional.pad(v, (pad,) * 6) for k, v in volume.anatomy.items()}
    return make_volume(volume.name + "+head", torch.from_numpy(head[None].astype(np.float32)), anatomy)


def anatomy_crop(volume: PretrainVolume, crop: Crop) -> dict[str, torch.Tensor]:
    """The volume's anatomy masks cut out of ``crop`` (one resampling for all of them)."""
    names = sorted(volume.anatomy)
    if not names:
        return {}
    stacked = sample_crop(torch.stack([volume.anatomy[n] for n in names]).float(), crop) > 0.5
    return dict(zip(names, stacked, strict=True))


def inside_volume(crop: Crop, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest crop voxel (per axis, inclusive) whose centre lies inside the volume."""
    origin, zoom = np.asarray(crop.origin), crop.zoom
    centre_offset = (zoom - 1.0) / 2.0
    low = np.ceil((-0.5 - origin - centre_offset) / zoom)
    high = np.floor((np.asarray(shape) - 0.5 - origin - centre_offset) / zoom)
    return np.clip(low, 0, crop.size - 1), np.clip(high, 0, crop.size - 1)


class ObjectCropSampler:
    """Draws (image (1, 1, S, S, S), binary target (1, 1, S, S, S), source name) training crops."""

    def __init__(self, volumes: list[PretrainVolume], size: int, weights: dict[str, float] | None = None):
        self.volumes = volumes
        self.size = size
        weights = weights or DEFAULT_SOURCE_WEIGHTS
        unknown = set(weights) - set(OBJECT_SOURCES)
        if unknown:
            raise ValueError(f"unknown object sources {sorted(unknown)}; known: {sorted(OBJECT_SOURCES)}")
        self.sources = sorted(weights)
        self.p = np.asarray([weights[s] for s in self.sources], dtype=np.float64)
        self.p /= self.p.sum()
        self.appearance = AppearanceRandomizer()

    def __call__(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, str]:
        for _ in range(100):
            volume = self.volumes[int(rng.integers(len(self.volumes)))]
            source = str(rng.choice(self.sources, p=self.p))
            zoom = float(np.exp(rng.uniform(np.log(MIN_ZOOM), np.log(MAX_TRAINING_ZOOM))))
            center = volume.tissue[int(rng.integers(len(volume.tissue)))].astype(np.float64)
            crop = place_crop(center, tuple(volume.image.shape[1:]), size=self.size, zoom=zoom)
            image = sample_crop(volume.image, crop)
            context = CropContext(image, lambda v=volume, c=crop: anatomy_crop(v, c),
                                  inside_volume(crop, tuple(volume.image.shape[1:])))
            sample = OBJECT_SOURCES[source](context, rng)
            if sample is None:
                continue
            count = int(sample.mask.sum())
            if not MIN_OBJECT_VOXELS <= count <= MAX_OBJECT_FRACTION * self.size**3 or not large_enough(sample.mask):
                continue
            image = self.appearance(sample.image, rng)
            return image[None], sample.mask[None, None].float(), source
        raise ValueError("no usable object in 100 tries")
