"""Synthetic objects painted into the real image with their own contrast: smooth irregular blobs (lesions) and
tubes (vessel-like curved paths of varying radius)."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from lib.training.objects import MIN_EXTENT, CropContext, ObjectSample, register


def paint(ctx: CropContext, inside: np.ndarray, rng: np.random.Generator) -> ObjectSample:
    """Paint ``inside`` (full crop grid) with a contrast of its own: brighter or darker than its surroundings by
    0.5 to 3 standard deviations of the crop, with texture and a soft edge."""
    image = ctx.image[0].numpy().copy()
    scale = float(image.std()) or 1.0
    level = float(image[inside].mean()) + rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 3.0) * scale
    box = tuple(slice(max(s.start - 4, 0), s.stop + 4) for s in ndimage.find_objects(inside.astype(np.uint8))[0])
    texture = ndimage.gaussian_filter(rng.normal(0.0, 1.0, image[box].shape).astype(np.float32), 1.5)
    alpha = ndimage.gaussian_filter(inside[box].astype(np.float32), float(rng.uniform(0.3, 1.0)))
    value = level + rng.uniform(0.0, 0.5) * scale * texture / max(float(texture.std()), 1e-6)
    image[box] = image[box] * (1.0 - alpha) + value * alpha
    mask = np.zeros_like(inside)
    mask[box] = alpha > 0.5
    return ObjectSample(torch.from_numpy(image[None]), torch.from_numpy(mask))


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


@register("blobs")
def blob_object(ctx: CropContext, rng: np.random.Generator) -> ObjectSample | None:
    n = ctx.size
    radius = np.exp(rng.uniform(np.log(MIN_EXTENT * n / 2), np.log(n / 3.0))) * rng.uniform(0.7, 1.3, size=3)
    center = rng.uniform(0.3, 0.7, size=3) * n
    reach = 1.5 * radius.max()
    low = np.clip(np.floor(center - reach), 0, n).astype(int)
    high = np.clip(np.ceil(center + reach) + 1, 0, n).astype(int)
    axes = [np.arange(lo, hi, dtype=np.float32) for lo, hi in zip(low, high, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1) - center.astype(np.float32)
    local = grid @ random_rotation(rng).astype(np.float32)
    distance = np.sqrt(((local / radius.astype(np.float32)) ** 2).sum(-1))
    wobble = ndimage.zoom(rng.normal(0.0, 1.0, (4, 4, 4)).astype(np.float32), np.asarray(distance.shape) / 4, order=1)
    inside = np.zeros((n, n, n), dtype=bool)
    inside[tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))] = (
        distance + rng.uniform(0.0, 0.4) * wobble[: distance.shape[0], : distance.shape[1], : distance.shape[2]] < 1.0)
    return paint(ctx, inside, rng) if inside.any() else None


@register("tubes")
def tube_object(ctx: CropContext, rng: np.random.Generator) -> ObjectSample | None:
    n = ctx.size
    position = rng.uniform(0.3, 0.7, size=3) * n
    direction = rng.normal(size=3)
    path = []
    for _ in range(int(rng.integers(int(MIN_EXTENT * n), n))):
        direction = direction / np.linalg.norm(direction) + rng.normal(0.0, 0.15, size=3)
        position = position + direction / np.linalg.norm(direction)
        path.append(position.copy())
    points = np.clip(np.round(np.asarray(path)).astype(int), 0, n - 1)
    radius = rng.uniform(MIN_EXTENT * n / 6, MIN_EXTENT * n / 2)
    low = np.maximum(points.min(0) - int(radius) - 2, 0)
    high = np.minimum(points.max(0) + int(radius) + 3, n)
    centreline = np.ones(tuple(high - low), dtype=bool)
    centreline[tuple((points - low).T)] = False
    inside = np.zeros((n, n, n), dtype=bool)
    inside[tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))] = (
        ndimage.distance_transform_edt(centreline) <= radius)
    return paint(ctx, inside, rng)
