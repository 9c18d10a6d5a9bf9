"""Click-by-click evaluation on stored images, through the same predictor the server uses."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from monai.transforms import LoadImage

from lib.engine.predictor import InteractivePredictor, Segmentation
from lib.engine.runtime import MODEL_SPACING_MM
from lib.prompts.clicks import next_click
from lib.prompts.geometry import apply_affine, original_to_volume
from lib.transforms.preprocess import ModelVolume, load_model_volume


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


@dataclass
class ClickTrial:
    """One simulated interaction: an object in a labelled volume and what ``num_clicks`` clicks achieved."""

    image: str
    class_name: str
    volume: ModelVolume
    target: np.ndarray
    dices: list[float]
    clicks: list[Click]


def click_trials(
    predictor: InteractivePredictor, pairs: list[tuple[Path, Path]], classes: dict[int, str], num_clicks: int
) -> Iterator[ClickTrial]:
    """Run :func:`click_curve` for every class present in every (image, label) pair."""
    for image_path, label_path in pairs:
        volume = load_model_volume(str(image_path), MODEL_SPACING_MM)
        label = np.asarray(LoadImage(image_only=True)(str(label_path))).squeeze().astype(np.int64)
        for index, name in classes.items():
            target = label == index
            if target.any():
                dices, clicks = click_curve(predictor, volume, target, num_clicks)
                yield ClickTrial(image_path.name, name, volume, target, dices, clicks)


def mean_dice_table(trials: list[ClickTrial], reported: tuple[int, ...]) -> dict[str, dict[str, float]]:
    """Mean Dice per class (and over classes) after each reported click count."""
    per_class: dict[str, list[list[float]]] = {}
    for t in trials:
        per_class.setdefault(t.class_name, []).append([t.dices[n - 1] for n in reported])
    table = {name: dict(zip(map(str, reported), np.mean(v, axis=0).round(4).tolist(), strict=True))
             for name, v in per_class.items()}
    table["mean"] = {str(n): round(float(np.mean([c[str(n)] for c in table.values()])), 4) for n in reported}
    return table
