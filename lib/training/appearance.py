"""Appearance randomisation of training crops, so the model learns edges rather than T1 grey values: intensity
remapping (monotonic or not), gamma, bias field, blur or lower resolution, and noise (MONAI's random intensity
transforms where they exist), then the crop's own mean and spread restored."""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import (
    RandAdjustContrast,
    RandBiasField,
    RandGaussianNoise,
    RandGaussianSmooth,
    RandSimulateLowResolution,
)
from monai.utils import convert_to_tensor


def remap_intensities(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A random piecewise-linear lookup over the crop's 1-99 % range: increasing with probability 0.8, otherwise
    with control values in random order (a non-monotonic contrast, such as T1 versus T2)."""
    low, high = np.percentile(image.numpy(), [1, 99])
    knots = np.linspace(low, high, int(rng.integers(3, 8)))
    values = rng.uniform(low, high, size=len(knots))
    if rng.random() < 0.8:
        values = np.sort(values)
    return torch.from_numpy(np.interp(image.numpy(), knots, values).astype(np.float32))


class AppearanceRandomizer:
    """Callable on a (1, S, S, S) crop; all randomness from the ``rng`` given at each call."""

    def __init__(self) -> None:
        self.gamma = RandAdjustContrast(prob=1.0, gamma=(0.5, 2.0))
        self.bias = RandBiasField(prob=1.0, coeff_range=(0.1, 0.5))
        self.blur = RandGaussianSmooth(prob=1.0, sigma_x=(0.5, 1.5), sigma_y=(0.5, 1.5), sigma_z=(0.5, 1.5))
        self.low_resolution = RandSimulateLowResolution(prob=1.0, zoom_range=(0.4, 0.8))
        self.noise = RandGaussianNoise(prob=1.0, std=0.3)

    def __call__(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        mean, std = float(image.mean()), float(image.std()) or 1.0
        out = image.float()
        steps = [(0.4, lambda x: remap_intensities(x, rng)), (0.3, self.gamma), (0.3, self.bias),
                 (0.1, self.blur), (0.1, self.low_resolution), (0.3, self.noise)]
        for probability, step in steps:
            if rng.random() < probability:
                if hasattr(step, "set_random_state"):
                    step.set_random_state(int(rng.integers(2**31)))
                out = convert_to_tensor(step(out), track_meta=False).float()
        out = (out - out.mean()) / out.std().clamp(min=1e-6) * std + mean
        return out * float(rng.uniform(0.9, 1.1)) + float(rng.uniform(-0.1, 0.1)) * std
