"""Model-space preprocessing: RAS orientation, model spacing and z-normalisation, cached per image file."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    Spacingd,
)

from lib.cache import BoundedCache
from lib.errors import NotFound, UnreadableImage


@dataclass(frozen=True)
class ModelVolume:
    """An image in model space plus what is needed to map results back to the stored image."""

    image: torch.Tensor  # (1, X, Y, Z) float32, RAS, model spacing, z-normalised over voxels > 0
    affine: np.ndarray  # model-space voxel -> world (mm)
    original_affine: np.ndarray  # stored-image voxel -> world (mm)
    original_shape: tuple[int, int, int]
    source: str  # identity of the stored file: path, size and modification time

    @property
    def nbytes(self) -> int:
        return self.image.element_size() * self.image.nelement()


def file_identity(path: str) -> str:
    """A key that changes when the file at ``path`` is replaced or rewritten."""
    st = os.stat(path)
    return f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}"


def model_space_transforms(spacing: float) -> Compose:
    """MONAI transforms taking ``{"image": path}`` to the model-space tensor."""
    return Compose(
        [
            LoadImaged(keys="image", image_only=True),
            EnsureChannelFirstd(keys="image"),
            Orientationd(keys="image", axcodes="RAS", labels=None),
            Spacingd(keys="image", pixdim=spacing, mode="bilinear"),
            NormalizeIntensityd(keys="image", nonzero=True),
        ]
    )


def load_model_volume(path: str, spacing: float) -> ModelVolume:
    """Read ``path`` and bring it to model space.

    The transforms run on a fresh ``{"image": path}`` dict: MONAI 1.6's ``Spacingd`` fails on the string
    ``image_path`` entry that ``BasicInferTask`` adds to request dicts.
    """
    if not path or not os.path.isfile(path):
        raise NotFound(f"Image not found: {path!r}")
    source = file_identity(path)
    try:
        image = model_space_transforms(spacing)({"image": path})["image"]
    except Exception as e:  # the readers raise many types for corrupt files
        raise UnreadableImage(f"Cannot read image {os.path.basename(path)!r} as a 3D volume: {_root_cause(e)}") from e
    if image.ndim != 4 or image.shape[0] != 1:
        name = os.path.basename(path)
        raise UnreadableImage(f"Image {name!r} is not a single-channel 3D volume: {tuple(image.shape)}")
    original_affine = np.asarray(image.meta["original_affine"], dtype=np.float64)
    original_shape = tuple(int(s) for s in image.meta["spatial_shape"])
    return ModelVolume(
        image=image.as_tensor().float().contiguous(),
        affine=np.asarray(image.affine, dtype=np.float64),
        original_affine=original_affine,
        original_shape=original_shape,
        source=source,
    )


def _root_cause(error: BaseException) -> str:
    while error.__cause__ is not None:
        error = error.__cause__
    return f"{type(error).__name__}: {error}"


class VolumeCache:
    """Model-space volumes keyed by file identity, so follow-up clicks skip loading and resampling."""

    def __init__(self, spacing: float, max_bytes: int):
        self.spacing = spacing
        self._cache = BoundedCache(max_bytes)

    def get(self, path: str) -> ModelVolume:
        if not path or not os.path.isfile(path):
            raise NotFound(f"Image not found: {path!r}")
        volume, _ = self._cache.get_or_compute(
            (file_identity(path), self.spacing), lambda: load_model_volume(path, self.spacing)
        )
        return volume


class LoadModelVolumed(MapTransform):
    """Pre-transform for infer tasks: puts the cached :class:`ModelVolume` of ``data[key]`` under ``volume``."""

    def __init__(self, cache: VolumeCache, key: str = "image", output_key: str = "volume"):
        super().__init__(keys=[key])
        self.cache = cache
        self.output_key = output_key

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        d[self.output_key] = self.cache.get(d[self.keys[0]])
        return d


def model_space_label_transforms(spacing: float) -> Compose:
    """MONAI transforms taking ``{"label": path}`` to a model-space label map (nearest neighbour)."""
    return Compose(
        [
            LoadImaged(keys="label", image_only=True),
            EnsureChannelFirstd(keys="label"),
            Orientationd(keys="label", axcodes="RAS", labels=None),
            Spacingd(keys="label", pixdim=spacing, mode="nearest"),
        ]
    )


def load_model_label(path: str, spacing: float) -> torch.Tensor:
    """A stored label map in model space, (X, Y, Z) uint8, on the same grid as :func:`load_model_volume`."""
    label = model_space_label_transforms(spacing)({"label": path})["label"]
    return label.as_tensor()[0].round().to(torch.uint8)
