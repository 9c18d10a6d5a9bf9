"""Click-by-click evaluation on stored images, through the same predictor the server uses."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from monai.transforms import LoadImage

from lib.engine.predictor import InteractivePredictor
from lib.engine.runtime import MODEL_SPACING_MM
from lib.prompts.simulation import Click, predictor_segmenter, run_session
from lib.transforms.preprocess import ModelVolume, load_model_volume


@dataclass
class ClickTrial:
    """One simulated interaction: an object in a labelled volume and what the clicks achieved."""

    image: str
    class_name: str
    volume: ModelVolume
    target: np.ndarray
    dices: list[float]
    clicks: list[Click]
    seconds: list[float]


def labelled_objects(pairs: list[tuple[Path, Path]], classes: dict[int, str]
                     ) -> Iterator[tuple[Path, str, ModelVolume, np.ndarray]]:
    """(image path, class name, model-space volume, target on the stored grid) for every class in every pair."""
    for image_path, label_path in pairs:
        volume = load_model_volume(str(image_path), MODEL_SPACING_MM)
        label = np.asarray(LoadImage(image_only=True)(str(label_path))).squeeze().astype(np.int64)
        for index, name in classes.items():
            target = label == index
            if target.any():
                yield image_path, name, volume, target


def click_trials(predictor: InteractivePredictor, pairs: list[tuple[Path, Path]], classes: dict[int, str],
                 num_clicks: int, min_clicks: int | None = None, stop_dice: float | None = None
                 ) -> Iterator[ClickTrial]:
    """A simulated click session through ``predictor`` for every class present in every (image, label) pair (see
    :func:`lib.prompts.simulation.run_session` for ``min_clicks`` and ``stop_dice``)."""
    for image, name, volume, target in labelled_objects(pairs, classes):
        session = run_session(predictor_segmenter(predictor, volume, name), target, num_clicks,
                              num_clicks if min_clicks is None else min_clicks, stop_dice)
        yield ClickTrial(image.name, name, volume, target, session.dices, session.clicks, session.seconds)


def mean_dice_table(trials: list[ClickTrial], reported: tuple[int, ...]) -> dict[str, dict[str, float]]:
    """Mean Dice per class (and over classes) after each reported click count."""
    per_class: dict[str, list[list[float]]] = {}
    for t in trials:
        per_class.setdefault(t.class_name, []).append([t.dices[n - 1] for n in reported])
    table = {name: dict(zip(map(str, reported), np.mean(v, axis=0).round(4).tolist(), strict=True))
             for name, v in per_class.items()}
    table["mean"] = {str(n): round(float(np.mean([c[str(n)] for c in table.values()])), 4) for n in reported}
    return table
