"""Click-by-click evaluation on stored images, through the same predictor the server uses."""

from __future__ import annotations

import numpy as np

from lib.engine.predictor import InteractivePredictor, Segmentation
from lib.prompts.clicks import next_click
from lib.prompts.geometry import apply_affine, original_to_volume
from lib.transforms.preprocess import ModelVolume


def dice(prediction: np.ndarray, target: np.ndarray) -> float:
    total = prediction.sum() + target.sum()
    return float(2.0 * np.logical_and(prediction, target).sum() / total) if total else 1.0


Click = tuple[np.ndarray, bool]


def click_curve(
    predictor: InteractivePredictor, volume: ModelVolume, target: np.ndarray, num_clicks: int
) -> tuple[list[float], list[Click]]:
    """Dice after each of ``num_clicks`` simulated clicks on the stored image's grid, and the clicks made.

    Every click goes to the most interior voxel of the largest error region (foreground or background by the
    target there); clicks accumulate and the previous prediction is fed back, as in the reference evaluation.
    """
    orig_to_vol = original_to_volume(volume.original_affine, volume.affine)
    prediction = np.zeros(target.shape, dtype=bool)
    foreground: list[np.ndarray] = []
    background: list[np.ndarray] = []
    previous: Segmentation | None = None
    dices: list[float] = []
    clicks: list[Click] = []
    for _ in range(num_clicks):
        click = next_click(prediction, target)
        if click is None:
            dices.append(1.0)
            continue
        clicks.append(click)
        point, is_foreground = click
        (foreground if is_foreground else background).append(point)
        previous = predictor.segment(
            volume,
            apply_affine(orig_to_vol, np.asarray(foreground).reshape(-1, 3)),
            apply_affine(orig_to_vol, np.asarray(background).reshape(-1, 3)),
            previous=previous,
        )
        prediction = predictor.to_original_mask(volume, previous).numpy()
        dices.append(dice(prediction, target))
    return dices, clicks
