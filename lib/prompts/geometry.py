"""Coordinate mapping between the original image grid, the model-space volume and a model crop.

Three grids take part in every request:

- the original image as stored in the datastore (voxel ``ijk``, affine ``A_orig``), in which clients send clicks;
- the model-space volume: the image reoriented to RAS and resampled to the model spacing (affine ``A_vol``);
- a crop of ``size`` voxels cut from the model-space volume with stride ``zoom`` (``zoom > 1`` is a coarser pass).

All maps are affine, so they compose into single 4x4 matrices and are applied once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def to_homogeneous(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    return np.concatenate([points, np.ones((len(points), 1))], axis=1)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 affine to an (N, 3) array of points."""
    return (to_homogeneous(points) @ np.asarray(matrix, dtype=np.float64).T)[:, :3]


def original_to_volume(original_affine: np.ndarray, volume_affine: np.ndarray) -> np.ndarray:
    """Matrix taking original voxel indices to model-space volume voxel coordinates."""
    return np.linalg.inv(np.asarray(volume_affine, np.float64)) @ np.asarray(original_affine, np.float64)


@dataclass(frozen=True)
class Crop:
    """A ``size``^3 crop of the model-space volume: crop voxel ``c`` sits at volume voxel ``origin + zoom * c``
    (voxel centres, so a crop voxel of a coarse pass covers ``zoom`` volume voxels along each axis)."""

    origin: tuple[float, float, float]
    size: int = 128
    zoom: float = 1.0

    @property
    def crop_to_volume(self) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3] *= self.zoom
        m[:3, 3] = np.asarray(self.origin) + (self.zoom - 1.0) / 2.0
        return m

    @property
    def volume_to_crop(self) -> np.ndarray:
        """The inverse of :attr:`crop_to_volume` (a scale and a shift, inverted in closed form)."""
        m = np.eye(4)
        m[:3, :3] /= self.zoom
        m[:3, 3] = -(np.asarray(self.origin) + (self.zoom - 1.0) / 2.0) / self.zoom
        return m

    def extent(self) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest volume voxel coordinates covered by the crop (voxel edges)."""
        low = np.asarray(self.origin) - 0.5
        return low, low + self.size * self.zoom

    def contains(self, volume_points: np.ndarray, margin: float = 0.0) -> bool:
        low, high = self.extent()
        pts = np.asarray(volume_points).reshape(-1, 3)
        return bool(np.all(pts >= low + margin) and np.all(pts <= high - margin))


def place_crop(center: np.ndarray, volume_shape: tuple[int, int, int], size: int = 128, zoom: float = 1.0) -> Crop:
    """A crop centred on ``center`` (volume voxels), shifted to stay inside the volume where the volume is larger
    than the crop and centred on the volume along axes where it is not. Origins are integers at ``zoom == 1`` so the
    crop samples voxels exactly (and repeated clicks map to the same cached crop)."""
    span = size * zoom
    origin = []
    for c, n in zip(np.asarray(center, np.float64), volume_shape, strict=True):
        # voxel edges of the volume run from -0.5 to n - 0.5; the crop's edges from origin - 0.5 to origin - 0.5 + span
        low_edge = (n - span) / 2.0 - 0.5 if span >= n else float(np.clip(c - span / 2.0, -0.5, n - 0.5 - span))
        origin.append(low_edge + 0.5)
    if zoom == 1.0:
        origin = [float(round(o)) for o in origin]
    return Crop(origin=tuple(origin), size=size, zoom=zoom)


def _normalised_grid(matrix: np.ndarray, out_shape: tuple[int, int, int], in_shape: tuple[int, int, int],
                     out_offset: tuple[int, int, int] = (0, 0, 0)) -> torch.Tensor:
    """grid_sample grid for output voxels (offset by ``out_offset``) mapped by ``matrix`` into an input grid.

    Uses align_corners=False semantics: input voxel ``x`` sits at normalised ``(2x + 1) / n - 1``.
    """
    axes = [torch.arange(o, o + s, dtype=torch.float32) for o, s in zip(out_offset, out_shape, strict=True)]
    mesh = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (X, Y, Z, 3)
    m = torch.as_tensor(matrix, dtype=torch.float32)
    coords = mesh @ m[:3, :3].T + m[:3, 3]
    size = torch.tensor(in_shape, dtype=torch.float32)
    normalised = (2.0 * coords + 1.0) / size - 1.0
    # grid_sample wants (x, y, z) = (last, middle, first) input axis
    return normalised.flip(-1)[None]


def sample_crop(volume: torch.Tensor, crop: Crop) -> torch.Tensor:
    """Cut ``crop`` out of a (C, X, Y, Z) model-space volume; outside the volume is zero. Returns (C, s, s, s)."""
    if crop.zoom == 1.0:
        return _slice_crop(volume, crop)
    grid = _normalised_grid(crop.crop_to_volume, (crop.size,) * 3, tuple(volume.shape[1:]))
    return F.grid_sample(volume[None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def _slice_crop(volume: torch.Tensor, crop: Crop) -> torch.Tensor:
    out = volume.new_zeros((volume.shape[0],) + (crop.size,) * 3)
    src, dst = [], []
    for o, n in zip(crop.origin, volume.shape[1:], strict=True):
        o = int(o)
        lo, hi = max(o, 0), min(o + crop.size, n)
        src.append(slice(lo, max(hi, lo)))
        dst.append(slice(lo - o, lo - o + max(hi - lo, 0)))
    out[(slice(None), *dst)] = volume[(slice(None), *src)]
    return out


def crop_bounds_in_original(crop: Crop, original_to_vol: np.ndarray, original_shape: tuple[int, ...]) -> tuple:
    """Bounding box (low, high) of original voxels whose centres fall inside ``crop``."""
    low, high = crop.extent()
    corners = np.array([[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])])
    in_original = apply_affine(np.linalg.inv(original_to_vol), corners)
    lo = np.clip(np.floor(in_original.min(0)).astype(int), 0, np.asarray(original_shape))
    hi = np.clip(np.ceil(in_original.max(0)).astype(int) + 1, 0, np.asarray(original_shape))
    return lo, hi


def _axis_permutation(matrix: np.ndarray) -> list[int] | None:
    """For a map whose 3x3 part only permutes, flips and scales axes: the source axis of each output axis."""
    linear = np.asarray(matrix)[:3, :3]
    nonzero = np.abs(linear) > 1e-6 * np.abs(linear).max()
    if not (nonzero.sum(axis=0) == 1).all() or not (nonzero.sum(axis=1) == 1).all():
        return None
    return [int(np.argmax(nonzero[:, a])) for a in range(3)]


def axis_coordinates(matrix: np.ndarray, low: Sequence[int], high: Sequence[int]
                     ) -> tuple[list[int], list[np.ndarray]] | None:
    """For a map that only permutes, flips and scales axes (an orthogonal grid): the target axis behind each source
    axis, and per source axis the target coordinates of its indices ``low`` to ``high`` (exclusive); None for an
    oblique map."""
    target_axes = _axis_permutation(matrix)
    if target_axes is None:
        return None
    return target_axes, [matrix[t, a] * np.arange(low[a], high[a]) + matrix[t, 3] for a, t in enumerate(target_axes)]


def _index_range(nearest: list[np.ndarray], bounds: list[tuple[int, int]]) -> tuple[slice, ...] | None:
    """Per output axis, the slice of positions whose nearest source index lies in ``[low, high)`` (contiguous,
    because each axis map is monotonic); None when an axis has none."""
    target = []
    for index, (low, high) in zip(nearest, bounds, strict=True):
        inside = np.flatnonzero((index >= low) & (index < high))
        if len(inside) == 0:
            return None
        target.append(slice(int(inside[0]), int(inside[-1]) + 1))
    return tuple(target)


def true_bounds(mask: torch.Tensor) -> list[tuple[int, int]] | None:
    """Per axis, the half-open index range holding every True voxel of ``mask``; None when it has none."""
    values = mask.view(torch.uint8)  # amax over bytes is many times faster than any() over bools
    bounds = []
    for axis in range(mask.ndim):
        hits = torch.nonzero(values.amax(dim=tuple(d for d in range(mask.ndim) if d != axis))).flatten()
        if len(hits) == 0:
            return None
        bounds.append((int(hits[0]), int(hits[-1]) + 1))
    return bounds


Box = tuple[slice, slice, slice]


def _nearest_lookup(crop: Crop, original_to_vol: np.ndarray, original_shape: tuple[int, ...]
                    ) -> tuple[np.ndarray, list[int], list[np.ndarray], Box] | None:
    """For an orthogonal grid: the original-voxel box's low corner, the crop axis behind each original axis, the
    nearest crop index of each original position of the box, and the part of the box (relative to its low corner)
    whose nearest index lies inside the crop. None for an oblique grid or when the crop covers no voxel."""
    lo, hi = crop_bounds_in_original(crop, original_to_vol, original_shape)
    if min(int(h - low) for low, h in zip(lo, hi, strict=True)) <= 0:
        return None
    found = axis_coordinates(crop.volume_to_crop @ original_to_vol, lo, hi)
    if found is None:
        return None
    source_axes, coordinates = found
    nearest = [np.floor(coordinate + 0.5).astype(np.int64) for coordinate in coordinates]
    target = _index_range(nearest, [(0, crop.size)] * 3)
    return None if target is None else (lo, source_axes, nearest, target)


def crop_cover(crop: Crop, original_to_vol: np.ndarray, original_shape: tuple[int, ...]) -> Box | None:
    """The box of original voxels that :func:`paste_crop_mask` writes for ``crop`` (all of them, whatever the
    mask); None for an oblique grid, where the written voxels form no box."""
    lookup = _nearest_lookup(crop, original_to_vol, original_shape)
    if lookup is None:
        return None
    lo, _, _, target = lookup
    return tuple(slice(int(low) + t.start, int(low) + t.stop) for low, t in zip(lo, target, strict=True))


def _box_minus(box: Box, keep: Box | None) -> list[Box]:
    """``box`` without the voxels of ``keep``, as disjoint boxes."""
    if keep is None:
        return [box]
    pieces, rest = [], list(box)
    for a in range(3):
        low, high = max(keep[a].start, rest[a].start), min(keep[a].stop, rest[a].stop)
        if low >= high:
            return [*pieces, tuple(rest)]
        if rest[a].start < low:
            pieces.append(tuple(rest[:a] + [slice(rest[a].start, low)] + rest[a + 1:]))
        if high < rest[a].stop:
            pieces.append(tuple(rest[:a] + [slice(high, rest[a].stop)] + rest[a + 1:]))
        rest[a] = slice(low, high)
    return pieces


def paste_crop_mask(
    mask: torch.Tensor, crop: Crop, original_to_vol: np.ndarray, original_shape: tuple[int, ...], out: torch.Tensor,
    keep: Box | None = None,
) -> None:
    """Write a crop-resolution mask (``crop.size``^3, bool) into ``out`` (the original grid) by nearest neighbour,
    at the original voxels the crop covers, except those of ``keep`` (a box of original voxels, for example the
    :func:`crop_cover` of a finer pass pasted next).

    Orthogonal grids (reorientation and spacing only, the usual case) take a separable index lookup; oblique ones
    fall back to ``grid_sample`` (and ignore ``keep``).
    """
    lookup = _nearest_lookup(crop, original_to_vol, original_shape)
    if lookup is not None:
        lo, source_axes, nearest, target = lookup
        offset = [int(v) for v in lo]
        local_keep = None if keep is None else tuple(
            slice(k.start - o, k.stop - o) for k, o in zip(keep, offset, strict=True))
        values_box = None  # where mask values are looked up: for bool masks only the mask's bounding box
        if mask.dtype == torch.bool:
            bounds = true_bounds(mask)
            values_box = None if bounds is None else _index_range(nearest, [bounds[p] for p in source_axes])
        permuted = mask.permute(*source_axes)
        region = out[tuple(slice(o, o + len(n)) for o, n in zip(offset, nearest, strict=True))]
        for piece in _box_minus(target, local_keep):
            if mask.dtype == torch.bool:  # clear what the crop covers, then look up only the mask's bounding box
                region[piece] = False
                if values_box is None:
                    continue
                piece = tuple(slice(max(p.start, v.start), min(p.stop, v.stop))
                              for p, v in zip(piece, values_box, strict=True))
                if any(p.start >= p.stop for p in piece):
                    continue
            values = permuted
            for a, (index, part) in enumerate(zip(nearest, piece, strict=True)):
                values = values.index_select(a, torch.as_tensor(index[part]))
            region[piece] = values
        return
    lo, hi = crop_bounds_in_original(crop, original_to_vol, original_shape)
    shape = tuple(int(h - low) for low, h in zip(lo, hi, strict=True))
    if min(shape) <= 0 or _axis_permutation(crop.volume_to_crop @ original_to_vol) is not None:
        return
    region = out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    grid = _normalised_grid(crop.volume_to_crop @ original_to_vol, shape, (crop.size,) * 3, tuple(int(v) for v in lo))
    sampled = F.grid_sample(mask[None, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    inside = (grid.abs() <= 1.0).all(dim=-1)[0]
    region[inside] = sampled[0, 0][inside].to(region.dtype)


def mask_to_crop_logits(
    mask: torch.Tensor, crop: Crop, original_to_vol: np.ndarray, resolution: int, scale: float = 8.0
) -> torch.Tensor:
    """A binary mask on the original grid as (1, 1, r, r, r) logits inside ``crop`` (a previous-mask prompt)."""
    step = crop.size / resolution
    low_res_to_crop = np.diag([step, step, step, 1.0])
    low_res_to_crop[:3, 3] = (step - 1.0) / 2.0
    matrix = np.linalg.inv(original_to_vol) @ crop.crop_to_volume @ low_res_to_crop
    grid = _normalised_grid(matrix, (resolution,) * 3, tuple(mask.shape))
    fraction = F.grid_sample(mask[None, None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (fraction - 0.5) * 2.0 * scale
