"""Click prompts in requests: parsing and checking points, and decoding parameters sent as JSON text."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from lib.errors import InvalidRequest

Click = tuple[np.ndarray, bool]  # (voxel index, is_foreground)


def decoded(value: Any, expected: str) -> Any:
    """A request parameter as a value: clients send lists and objects either as they are or as JSON text. Text that
    is not JSON is a 422 saying what was ``expected`` (for example ``"'roi' must be [[i0, i1], ...]"``)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        raise InvalidRequest(f"{expected}, got {value!r}") from e


def parse_points(value: Any, name: str) -> np.ndarray:
    """Parse ``[[i, j, k], ...]`` (a list or its JSON text) into an (N, 3) float array; ``None``/``[]`` -> (0, 3)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return np.zeros((0, 3))
    value = decoded(value, f"'{name}' must be a list of [i, j, k] voxel indices")
    if not isinstance(value, (list, tuple)):
        raise InvalidRequest(f"'{name}' must be a list of [i, j, k] voxel indices, got {value!r}")
    points = []
    for p in value:
        if not isinstance(p, (list, tuple)) or len(p) != 3 or not all(is_number(c) for c in p):
            raise InvalidRequest(f"'{name}' must be a list of [i, j, k] voxel indices; bad entry {p!r}")
        points.append([float(c) for c in p])
    return np.asarray(points, dtype=np.float64).reshape(-1, 3)


def is_number(c: Any) -> bool:
    return isinstance(c, (int, float)) and not isinstance(c, bool) and np.isfinite(c)


def check_inside(points: np.ndarray, shape: Sequence[int], name: str) -> None:
    """Reject points outside an image of ``shape`` (voxel indices, half a voxel of tolerance at the border)."""
    limits = np.asarray(shape[:3], dtype=np.float64) - 0.5
    outside = [p for p in points if np.any(p < -0.5) or np.any(p > limits)]
    if outside:
        raise InvalidRequest(
            f"'{name}' point {[int(round(c)) for c in outside[0]]} is outside the image (shape {list(shape[:3])})"
        )
