"""Click prompts in requests: parsing and checking points and ROIs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from lib.errors import InvalidRequest


def parse_points(value: Any, name: str) -> np.ndarray:
    """Parse ``[[i, j, k], ...]`` (a list or its JSON text) into an (N, 3) float array; ``None``/``[]`` -> (0, 3)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return np.zeros((0, 3))
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise InvalidRequest(f"'{name}' must be a list of [i, j, k] voxel indices, got {value!r}") from e
    if not isinstance(value, (list, tuple)):
        raise InvalidRequest(f"'{name}' must be a list of [i, j, k] voxel indices, got {value!r}")
    points = []
    for p in value:
        if not isinstance(p, (list, tuple)) or len(p) != 3 or not all(_is_number(c) for c in p):
            raise InvalidRequest(f"'{name}' must be a list of [i, j, k] voxel indices; bad entry {p!r}")
        points.append([float(c) for c in p])
    return np.asarray(points, dtype=np.float64).reshape(-1, 3)


def _is_number(c: Any) -> bool:
    return isinstance(c, (int, float)) and not isinstance(c, bool) and np.isfinite(c)


def check_inside(points: np.ndarray, shape: Sequence[int], name: str) -> None:
    """Reject points outside an image of ``shape`` (voxel indices, half a voxel of tolerance at the border)."""
    limits = np.asarray(shape[:3], dtype=np.float64) - 0.5
    outside = [p for p in points if np.any(p < -0.5) or np.any(p > limits)]
    if outside:
        raise InvalidRequest(
            f"'{name}' point {[int(round(c)) for c in outside[0]]} is outside the image (shape {list(shape[:3])})"
        )


def parse_roi(value: Any, shape: Sequence[int]) -> np.ndarray | None:
    """Parse an ROI ``[[i0, i1], [j0, j1], [k0, k1]]`` (inclusive voxel bounds) into a (3, 2) array, or None."""
    if value is None or value == [] or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise InvalidRequest(f"'roi' must be [[i0, i1], [j0, j1], [k0, k1]], got {value!r}") from e
    roi = np.asarray(value, dtype=object)
    if roi.shape != (3, 2) or not all(_is_number(v) for v in roi.ravel()):
        raise InvalidRequest(f"'roi' must be [[i0, i1], [j0, j1], [k0, k1]], got {value!r}")
    roi = np.sort(roi.astype(np.float64), axis=1)
    high = np.asarray(shape[:3]) - 1
    if np.any(roi[:, 1] < 0) or np.any(roi[:, 0] > high):
        raise InvalidRequest(f"'roi' {value!r} does not overlap the image (shape {list(shape[:3])})")
    roi[:, 0] = np.maximum(roi[:, 0], 0)
    roi[:, 1] = np.minimum(roi[:, 1], high)
    return roi
