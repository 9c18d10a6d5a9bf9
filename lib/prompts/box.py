"""Box prompts: 3D Slicer's ROI (``roi``) or an explicit ``box``, alone or with clicks.

A box becomes the ellipsoid inscribed in it as the mask prior, bounds on the result and a foreground click at its
centre, kept in front of the annotator's own clicks while the box stays (``bench.clicks --protocols box`` measured
the alternatives: dropping it at the annotator's first click, or first foreground click, lowered mean Dice after 5
and 10 interactions on the unseen set). The centre of a box around a hollow or two-part object (the lateral
ventricles) lies outside it, and there the centre click works against the corrections.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lib.errors import InvalidRequest
from lib.prompts.channels import PromptChannels
from lib.prompts.clicks import decoded, is_number
from lib.prompts.regions import RegionPrompt

BOX_FORMS = "[[i0, i1], [j0, j1], [k0, k1]] or [i0, i1, j0, j1, k0, k1]"


def parse_box(value: Any, shape: Sequence[int], name: str = "box") -> np.ndarray | None:
    """Inclusive voxel bounds as a (3, 2) array clipped to the image, or None for ``None``/``[]``/``""``.

    Takes ``[[i0, i1], [j0, j1], [k0, k1]]`` or the flat ``[i0, i1, j0, j1, k0, k1]`` 3D Slicer's MONAI Label
    module sends (from its ROI node, in IJK); the bounds of each axis may come in either order."""
    if value is None or value == [] or value == "":
        return None
    value = decoded(value, f"'{name}' must be {BOX_FORMS}")
    box = np.asarray(value, dtype=object)
    if box.shape == (6,):
        box = box.reshape(3, 2)
    if box.shape != (3, 2) or not all(is_number(v) for v in box.ravel()):
        raise InvalidRequest(f"'{name}' must be {BOX_FORMS}, got {value!r}")
    box = np.sort(box.astype(np.float64), axis=1)
    high = np.asarray(shape[:3]) - 1
    if np.any(box[:, 1] < 0) or np.any(box[:, 0] > high):
        raise InvalidRequest(f"'{name}' {value!r} does not overlap the image (shape {list(shape[:3])})")
    box[:, 0] = np.maximum(box[:, 0], 0)
    box[:, 1] = np.minimum(box[:, 1], high)
    return box


def request_box(data: dict[str, Any], shape: Sequence[int]) -> np.ndarray | None:
    """The request's box: ``box`` or ``roi`` (the same prompt under two names; a request gives at most one)."""
    box, roi = parse_box(data.get("box"), shape, "box"), parse_box(data.get("roi"), shape, "roi")
    if box is not None and roi is not None:
        raise InvalidRequest("Give a 'box' or an 'roi', not both (they are the same prompt)")
    return box if box is not None else roi


def box_slices(box: np.ndarray) -> tuple[slice, ...]:
    return tuple(slice(int(np.floor(lo)), int(np.floor(hi)) + 1) for lo, hi in box)


def outside_box(box: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Every voxel of an image of ``shape`` outside ``box``."""
    out = np.ones(tuple(int(s) for s in shape[:3]), dtype=bool)
    out[box_slices(box)] = False
    return out


def box_prompt(box: np.ndarray, shape: Sequence[int]) -> RegionPrompt:
    """The centre click, the inscribed ellipsoid as prior and everything outside the box excluded."""
    region = box_slices(box)
    centre = box.mean(axis=1)
    radii = (box[:, 1] - box[:, 0]) / 2.0 + 0.5
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(np.ogrid[region], centre, radii, strict=True)) <= 1.0
    prior = np.zeros(tuple(int(s) for s in shape[:3]), dtype=bool)
    prior[region] = inside
    return RegionPrompt("box", np.round(centre)[None], np.zeros((0, 3)), prior=prior, exclude=outside_box(box, shape),
                        key=tuple(box.ravel().tolist()), channels=PromptChannels(box=box))
