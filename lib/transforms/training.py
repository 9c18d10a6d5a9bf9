"""Training transforms: a saved label's named classes in model space, and click-training crops of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, Randomizable, Transform

from lib.prompts.geometry import place_crop, sample_crop
from lib.prompts.simulation import first_click
from lib.training.crops import sample_crop_pair
from lib.transforms.preprocess import load_model_label, load_model_volume

MIN_OBJECT_VOXELS = 100


class LoadTrainingPaird(MapTransform):
    """``{"image": path, "label": path, "classes": {name: value}}`` -> model-space ``image`` (1, X, Y, Z) and
    ``targets`` ``{name: (X, Y, Z) bool}`` for each class with at least ``MIN_OBJECT_VOXELS`` voxels."""

    def __init__(self, spacing: float):
        super().__init__(keys=["image", "label"])
        self.spacing = spacing

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        image = load_model_volume(data["image"], self.spacing).image
        label = load_model_label(data["label"], self.spacing)
        targets = {name: label == value for name, value in data["classes"].items()}
        return {
            "id": data.get("id"),
            "image": image,
            "targets": {name: mask for name, mask in targets.items() if int(mask.sum()) >= MIN_OBJECT_VOXELS},
        }


class RandClickCropd(Randomizable, Transform):
    """``num_samples`` random crops (see :func:`sample_crop_pair`): a list of ``{"image", "label", "object"}``
    (1, S, S, S); ``weights`` (a callable giving ``{object: weight}`` now) steers which objects are drawn."""

    def __init__(self, size: int, num_samples: int, weights: Callable[[], dict[str, float]] | None = None):
        self.size = size
        self.num_samples = num_samples
        self.weights = weights
        self.rng = np.random.default_rng()

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandClickCropd:
        super().set_random_state(seed, state)
        self.rng = np.random.default_rng(int(self.R.randint(0, 2**31)))
        return self

    def randomize(self, data: Any = None) -> None:
        pass

    def __call__(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        if not data["targets"]:
            raise ValueError(f"label of {data.get('id')} has no class with {MIN_OBJECT_VOXELS}+ voxels")
        crops = []
        for _ in range(self.num_samples):
            weights = self.weights() if self.weights else None
            image, target, name = sample_crop_pair(data["image"], data["targets"], self.size, self.rng, weights)
            crops.append({"image": image[0], "label": target[0], "object": name})
        return crops


class ObjectCropsd(Transform):
    """One fixed crop per class, centred on its most interior voxel (validation): a list of ``{"image", "label"}``."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        crops = []
        for name, mask in sorted(data["targets"].items()):
            target = mask.numpy()
            center = first_click(target)
            crop = place_crop(center.astype(np.float64), target.shape, size=self.size)
            crops.append({
                "image": sample_crop(data["image"], crop),
                "label": (sample_crop(torch.as_tensor(target[None], dtype=torch.float32), crop) > 0.5).float(),
                "object": name,
            })
        return crops
