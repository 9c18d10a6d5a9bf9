"""Pseudo-subjects: the template under a random affine and elastic warp, bias field and noise, written on a
random voxel grid (spacing and orientation), with labels warped identically."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lib.data.mni import Template

ORIENTATIONS = ("RAS", "LPS", "LAS", "PIR", "RPI", "ASL")
SPACINGS = ((1.0, 1.0, 1.0), (1.0, 1.0, 1.5), (0.9, 0.9, 1.2), (1.2, 1.2, 1.2), (1.1, 1.1, 1.3), (1.0, 1.2, 1.0))
AXIS_OF = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


@dataclass(frozen=True)
class Subject:
    image: np.ndarray  # int16 intensities
    labels: np.ndarray  # uint8
    affine: np.ndarray
    orientation: str
    spacing: tuple[float, float, float]
    warp: np.ndarray  # template world -> subject world (before the elastic part)


def orientation_matrix(code: str) -> np.ndarray:
    """3x3 matrix whose column i is the world direction of voxel axis i (e.g. 'LPS': -x, -y, +z)."""
    matrix = np.zeros((3, 3))
    for i, letter in enumerate(code):
        axis, sign = AXIS_OF[letter]
        matrix[axis, i] = sign
    return matrix


def random_rigid_scale(rng: np.random.Generator, center: np.ndarray) -> np.ndarray:
    """World-to-world affine: rotation up to 10 degrees per axis, scaling 0.9-1.1, translation up to 8 mm."""
    angles = np.deg2rad(rng.uniform(-10, 10, size=3))
    rotation = np.eye(3)
    for axis, angle in enumerate(angles):
        c, s = np.cos(angle), np.sin(angle)
        r = np.eye(3)
        i, j = [a for a in range(3) if a != axis]
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        rotation = rotation @ r
    linear = rotation @ np.diag(rng.uniform(0.9, 1.1, size=3))
    matrix = np.eye(4)
    matrix[:3, :3] = linear
    matrix[:3, 3] = center - linear @ center + rng.uniform(-8, 8, size=3)
    return matrix


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], control: int, amplitude: float) -> np.ndarray:
    """A smooth random field: Gaussian noise on a coarse control grid, linearly upsampled to ``shape``."""
    coarse = rng.normal(0.0, amplitude, size=(control,) * 3)
    return ndimage.zoom(coarse, [s / control for s in shape], order=1, mode="nearest")[
        : shape[0], : shape[1], : shape[2]
    ]


def make_subject(template: Template, rng: np.random.Generator, margin_mm: float = 12.0) -> Subject:
    """One pseudo-subject; all randomness comes from ``rng``."""
    brain = np.argwhere(template.labels > 0)
    corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)])
    bounds = np.stack([brain.min(0), brain.max(0)])
    box_world = (template.affine[:3, :3] @ bounds[corners, range(3)].T + template.affine[:3, 3:4]).T
    center = box_world.mean(0)
    warp = random_rigid_scale(rng, center)
    subject_box = (warp[:3, :3] @ box_world.T + warp[:3, 3:4]).T
    low, high = subject_box.min(0) - margin_mm, subject_box.max(0) + margin_mm

    orientation = str(rng.choice(ORIENTATIONS))
    spacing = tuple(float(s) for s in SPACINGS[int(rng.integers(len(SPACINGS)))])
    directions = orientation_matrix(orientation)
    linear = directions @ np.diag(spacing)
    extent = np.abs(np.linalg.inv(linear) @ (high - low))
    shape = tuple(int(np.ceil(e)) + 1 for e in extent)
    # origin: the box corner that voxel (0, 0, 0) must sit on, given each axis' direction
    origin = np.where(directions.sum(axis=1) > 0, low, high)
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = linear, origin

    # output voxel -> world -> (inverse warp + elastic displacement) -> template voxel, in one map
    to_template = np.linalg.inv(template.affine) @ np.linalg.inv(warp) @ affine
    grid = np.indices(shape, dtype=np.float32).reshape(3, -1)
    coords = (to_template[:3, :3].astype(np.float32) @ grid + to_template[:3, 3:4].astype(np.float32))
    coords = coords.reshape((3, *shape))
    for axis in range(3):
        coords[axis] += smooth_field(rng, shape, control=6, amplitude=2.5).astype(np.float32)
    t1 = ndimage.map_coordinates(template.t1, coords, order=1, mode="constant", cval=0.0)
    labels = ndimage.map_coordinates(template.labels, coords, order=0, mode="constant", cval=0).astype(np.uint8)

    bias = np.exp(smooth_field(rng, shape, control=4, amplitude=0.12))
    sigma = rng.uniform(0.01, 0.04)
    noisy = np.sqrt((t1 * bias + rng.normal(0, sigma, shape)) ** 2 + rng.normal(0, sigma, shape) ** 2)
    image = np.clip(noisy * 1000.0, 0, 32767).astype(np.int16)
    return Subject(image=image, labels=labels, affine=affine, orientation=orientation, spacing=spacing, warp=warp)
