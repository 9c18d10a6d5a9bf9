"""Pseudo-subjects: the template under a random affine and elastic warp, bias field and noise, written on a
random voxel grid (spacing and orientation), with labels warped identically, all in one resampling."""

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
    labels: np.ndarray  # uint8, same grid
    affine: np.ndarray  # voxel -> RAS+ world (mm), NIfTI convention
    orientation: str  # axis codes of the voxel grid, as nibabel.aff2axcodes reports them
    spacing: tuple[float, float, float]
    warp: np.ndarray  # template world -> subject world (the elastic part comes on top, a few mm)


def orientation_matrix(code: str) -> np.ndarray:
    """3x3 matrix whose column i is the RAS+ world direction of voxel axis i (e.g. 'LPS': -x, -y, +z)."""
    if len(code) != 3 or sorted(AXIS_OF[c][0] for c in code if c in AXIS_OF) != [0, 1, 2]:
        raise ValueError(f"Orientation {code!r} must name each of R/L, A/P, S/I once")
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


def _linear_weights(position: np.ndarray, control: int) -> np.ndarray:
    """(n, control) linear interpolation weights of positions given in control-grid units (clipped to the grid)."""
    position = np.clip(position, 0, control - 1)
    low = np.minimum(np.floor(position).astype(int), control - 2)
    weights = np.zeros((len(position), control))
    weights[np.arange(len(position)), low] = 1 - (position - low)
    weights[np.arange(len(position)), low + 1] = position - low
    return weights


def smooth_field(rng: np.random.Generator, affine: np.ndarray, shape: tuple[int, ...], low: np.ndarray,
                 high: np.ndarray, control: int, amplitude: float) -> np.ndarray:
    """A smooth random field on the voxel grid (``affine``, ``shape``; axes along world axes): Gaussian noise on a
    ``control``^3 grid spanning the world box ``low``..``high``, linearly interpolated. Defined in world space, so
    it is the same field whatever the voxel grid."""
    coarse = rng.normal(0.0, amplitude, size=(control,) * 3)
    world_axes = np.abs(affine[:3, :3]).argmax(axis=0)  # the world axis each voxel axis runs along
    weights = []
    for i, n in enumerate(shape):
        a = world_axes[i]
        world = affine[a, 3] + affine[a, i] * np.arange(n)
        weights.append(_linear_weights((world - low[a]) / (high[a] - low[a]) * (control - 1), control))
    return np.einsum("ia,jb,kc,abc->ijk", *weights, coarse.transpose(world_axes), optimize=True)


def make_subject(template: Template, rng: np.random.Generator, orientation: str | None = None,
                 spacing: tuple[float, float, float] | None = None, margin_mm: float = 12.0) -> Subject:
    """One pseudo-subject; all randomness comes from ``rng``. ``orientation``/``spacing`` replace the random grid
    (drawn anyway): the same seed gives the same brain in world space on any grid."""
    brain = np.argwhere(template.labels > 0)
    corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)])
    bounds = np.stack([brain.min(0), brain.max(0)])
    box_world = (template.affine[:3, :3] @ bounds[corners, range(3)].T + template.affine[:3, 3:4]).T
    warp = random_rigid_scale(rng, box_world.mean(0))
    subject_box = (warp[:3, :3] @ box_world.T + warp[:3, 3:4]).T
    low, high = subject_box.min(0) - margin_mm, subject_box.max(0) + margin_mm

    drawn_orientation = str(rng.choice(ORIENTATIONS))
    drawn_spacing = SPACINGS[int(rng.integers(len(SPACINGS)))]
    orientation = orientation or drawn_orientation
    spacing = tuple(float(s) for s in (spacing or drawn_spacing))
    directions = orientation_matrix(orientation)
    linear = directions @ np.diag(spacing)
    shape = tuple(int(np.ceil(e)) + 1 for e in np.abs(np.linalg.inv(linear) @ (high - low)))
    affine = np.eye(4)
    # voxel (0, 0, 0) sits on the box corner its axes point away from: the low end of a world axis it runs along
    # positively, the high end otherwise
    affine[:3, :3], affine[:3, 3] = linear, np.where(directions.sum(axis=1) > 0, low, high)

    # output voxel -> subject world -> template world (inverse warp) -> template voxel, plus the elastic field
    to_template = (np.linalg.inv(template.affine) @ np.linalg.inv(warp) @ affine).astype(np.float32)
    grid = np.indices(shape, dtype=np.float32).reshape(3, -1)
    coords = (to_template[:3, :3] @ grid + to_template[:3, 3:4]).reshape((3, *shape))
    for axis in range(3):  # elastic part: a smooth displacement (template voxels = mm) along each template axis
        coords[axis] += smooth_field(rng, affine, shape, low, high, control=6, amplitude=2.5)
    t1 = ndimage.map_coordinates(template.t1, coords, order=1, mode="constant", cval=0.0)
    labels = ndimage.map_coordinates(template.labels, coords, order=0, mode="constant", cval=0).astype(np.uint8)

    bias = np.exp(smooth_field(rng, affine, shape, low, high, control=4, amplitude=0.12))
    sigma = rng.uniform(0.01, 0.04)
    noisy = np.sqrt((t1 * bias + rng.normal(0, sigma, shape)) ** 2 + rng.normal(0, sigma, shape) ** 2)  # Rician
    image = np.clip(noisy * 1000.0, 0, 32767).astype(np.int16)
    return Subject(image=image, labels=labels, affine=affine, orientation=orientation, spacing=spacing, warp=warp)
