"""Scribble prompts as 3D Slicer's MONAI Label module sends them to an ``InferType.SCRIBBLES`` model.

Slicer exports every segment of the segmentation (the annotator's labels, ``foreground_scribbles`` and
``background_scribbles``) into one label volume on the image's grid, uploads it, and names the segments in
``label_info`` (``[{"name": ..., "id": ...}, ...]``) and the one being refined in ``selected_label_name``. Without
``label_info``, the scribble indices follow MONAI Label's scribbles convention: background ``len(labels) + 1``,
foreground ``len(labels) + 2``.

Each stroke becomes ``POINTS_PER_STROKE`` clicks spread along it, the current label (with the strokes painted in)
the mask prior, and the strokes themselves hold in the result: painted foreground stays in, painted background stays
out. A stroke corrects the label near it: beyond ``REACH_VOXELS`` of the strokes' bounding box the current label
stays as it was. Rounds of strokes on one label are one session (:func:`continues`): the clicks of the strokes
already sent come first, in the order they were sent, and the new strokes' clicks follow, so the network refines
its previous answer as it does between clicks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from lib.errors import InvalidRequest
from lib.prompts.channels import PromptChannels
from lib.prompts.clicks import decoded
from lib.prompts.regions import RegionPrompt, sample_voxels

FOREGROUND_SCRIBBLES = "foreground_scribbles"
BACKGROUND_SCRIBBLES = "background_scribbles"
POINTS_PER_STROKE = 8  # on unseen_001, 8 per stroke gave Dice 0.63 after 10 strokes; 3, 5 and 12 gave less
REACH_VOXELS = 15


@dataclass(frozen=True)
class Scribbles:
    foreground: np.ndarray  # bool, painted foreground strokes
    background: np.ndarray  # bool, painted background strokes
    current: np.ndarray | None  # bool, the selected label's current mask (None when it has none)


def parse_label_info(value: Any) -> dict[str, int]:
    """``label_info`` (a list of ``{"name", "id"}``, or its JSON text) as name -> index; absent: empty."""
    if value is None or value == "" or value == []:
        return {}
    value = decoded(value, "'label_info' must be a list of {'name': str, 'id': int}")
    if not isinstance(value, list) or not all(
            isinstance(v, dict) and isinstance(v.get("name"), str) and type(v.get("id")) is int for v in value):
        raise InvalidRequest(f"'label_info' must be a list of {{'name': str, 'id': int}}, got {value!r}")
    return {v["name"]: v["id"] for v in value}


def read_scribbles(labelmap: np.ndarray, label_info: dict[str, int], selected: str | None,
                   app_labels: dict[str, int]) -> Scribbles:
    """The strokes and the selected label's mask in Slicer's exported label volume."""
    background_id = label_info.get(BACKGROUND_SCRIBBLES, len(app_labels) + 1)
    foreground_id = label_info.get(FOREGROUND_SCRIBBLES, len(app_labels) + 2)
    current_id = label_info.get(selected) if selected else None
    current = labelmap == current_id if current_id is not None else None
    scribbles = Scribbles(labelmap == foreground_id, labelmap == background_id,
                          current if current is not None and current.any() else None)
    if not scribbles.foreground.any() and not scribbles.background.any():
        raise InvalidRequest(f"No scribbles in the uploaded label volume: paint {FOREGROUND_SCRIBBLES} (index "
                             f"{foreground_id}) or {BACKGROUND_SCRIBBLES} (index {background_id}) strokes")
    if not scribbles.foreground.any() and scribbles.current is None:
        raise InvalidRequest("Nothing to refine: paint a foreground scribble, or select a label that has a mask "
                             "('selected_label_name' naming an entry of 'label_info')")
    return scribbles


def near_strokes(strokes: np.ndarray) -> np.ndarray:
    """The strokes' bounding box grown by ``REACH_VOXELS`` on every side."""
    painted = np.argwhere(strokes)
    low = np.maximum(painted.min(0) - REACH_VOXELS, 0)
    high = painted.max(0) + REACH_VOXELS + 1
    near = np.zeros(strokes.shape, dtype=bool)
    near[tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))] = True
    return near


def stroke_points(strokes: np.ndarray, sent: np.ndarray) -> np.ndarray:
    """Clicks for ``strokes`` (bool) as an (N, 3) array: ``sent`` (the clicks of an earlier round) first when each
    still lies on a stroke, then ``POINTS_PER_STROKE`` spread along each stroke (26-connected component) that holds
    none of them. A new stroke that touches an earlier one joins it and adds no clicks; when a stroke was erased,
    every stroke's clicks are made afresh."""
    voxels = np.round(sent).astype(np.int64).reshape(-1, 3)
    kept = sent.reshape(-1, 3) if all(strokes[tuple(v)] for v in voxels) else np.zeros((0, 3))
    components, _ = ndimage.label(strokes, structure=np.ones((3, 3, 3)))
    sent_on = {int(components[tuple(v)]) for v in np.round(kept).astype(np.int64)}
    new = [sample_voxels(components[box] == c, POINTS_PER_STROKE) + [b.start for b in box]
           for c, box in enumerate(ndimage.find_objects(components), start=1) if c not in sent_on]
    return np.concatenate([kept, *new]).reshape(-1, 3)


def continues(scribbles: Scribbles, returned: np.ndarray | None) -> bool:
    """Whether the uploaded label is the session's last result (``returned``) under the strokes: Slicer exports
    the strokes over the label, so only the voxels no stroke covers are compared."""
    if returned is None:
        return False
    painted = scribbles.foreground | scribbles.background
    current = np.zeros_like(painted) if scribbles.current is None else scribbles.current
    return bool(np.array_equal(current & ~painted, returned & ~painted))


def scribble_prompt(scribbles: Scribbles) -> RegionPrompt:
    """The strokes as a region prompt: the prior and what holds in the result (the clicks: :func:`stroke_points`)."""
    prior, editable = None, None
    if scribbles.current is not None:
        prior = (scribbles.current | scribbles.foreground) & ~scribbles.background
        editable = near_strokes(scribbles.foreground | scribbles.background)
    return RegionPrompt(
        "scribbles",
        np.zeros((0, 3)),
        np.zeros((0, 3)),
        prior=prior,
        include=scribbles.foreground,
        exclude=scribbles.background,
        editable=editable,
        channels=PromptChannels(foreground=(scribbles.foreground,), background=(scribbles.background,)),
    )
