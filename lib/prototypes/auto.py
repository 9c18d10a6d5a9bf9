"""Automatic multi-class segmentation: prototype similarity -> point prompts -> mask decoder -> one label map."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from lib.engine.predictor import InteractivePredictor
from lib.prompts.regions import spread_points
from lib.prototypes.features import cell_features, cover_crops
from lib.transforms.preprocess import ModelVolume

TEMPERATURE = 0.1  # softmax temperature over cosine similarities
POINTS_PER_CLASS = 3
TOP_FRACTION = 0.2  # positives come from this most confident part of a class's cells
NEGATIVE_POINTS = 3
NEGATIVE_CONFIDENCE = 0.9
JITTER_VOXELS = 4.0  # half a feature cell
# Decisions (which cell wins, which cells are the most confident) are taken on probabilities rounded to this many
# decimals, with ties broken by cell order: float rounding differs between CPUs and thread counts, and most
# confident cells saturate near 1, so an unrounded arg-max picked a different cell on every machine.
DECIMALS = 2


def class_probabilities(
    features: torch.Tensor, per_class: list[torch.Tensor], background: torch.Tensor
) -> torch.Tensor:
    """(1 + classes, N) probabilities of background and each class per cell: softmax over each one's best
    prototype similarity."""
    scores = [(features @ background.T).amax(1)] + [(features @ p.T).amax(1) for p in per_class]
    return torch.round(torch.softmax(torch.stack(scores) / TEMPERATURE, dim=0), decimals=DECIMALS)


@dataclass
class ClassPrompts:
    foreground: np.ndarray  # (n, 3) model-space voxels
    background: np.ndarray
    confidence: float  # mean probability of the cells the class was found in


@dataclass
class AutoSegmentation:
    label: torch.Tensor  # original grid, uint8 class indices
    found: dict[str, dict] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


def class_prompts(
    centers: np.ndarray, probabilities: torch.Tensor, index: int, threshold: float,
    rng: np.random.Generator | None = None,
) -> ClassPrompts | None:
    """Point prompts for class ``index`` (row of ``probabilities``): positives spread over its most confident
    cells, negatives at the nearest cells that very confidently belong to the background or another class.

    With ``rng`` the positives are instead drawn at random among the most confident cells and moved by up to half
    a cell (prompt jitter, for sampling predictions).
    """
    winner = torch.argmax(probabilities, dim=0).numpy()
    best = probabilities.amax(0).numpy()
    score = probabilities[index].numpy()
    mine = np.flatnonzero((winner == index) & (score >= threshold))
    if len(mine) == 0:
        return None
    top = mine[np.argsort(-score[mine], kind="stable")][: max(POINTS_PER_CLASS, int(len(mine) * TOP_FRACTION))]
    if rng is None:
        foreground = spread_points(centers[top], score[top], POINTS_PER_CLASS)
    else:
        drawn = rng.choice(top, size=min(POINTS_PER_CLASS, len(top)), replace=False)
        foreground = centers[drawn] + rng.uniform(-JITTER_VOXELS, JITTER_VOXELS, size=(len(drawn), 3))
    others = np.flatnonzero((winner != index) & (best >= NEGATIVE_CONFIDENCE))
    background = np.zeros((0, 3))
    if len(others):
        nearest = np.round(np.linalg.norm(centers[others][:, None] - centers[top][None], axis=2).min(1), 6)
        close = others[np.argsort(nearest, kind="stable")[: 8 * NEGATIVE_POINTS]]
        background = spread_points(centers[close], best[close], NEGATIVE_POINTS)
    return ClassPrompts(foreground, background, float(score[mine].mean()))


def class_logits(
    predictor: InteractivePredictor,
    volume: ModelVolume,
    per_class: dict[str, torch.Tensor],
    background: torch.Tensor,
    threshold: float = 0.5,
    clicks: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    rng: np.random.Generator | None = None,
) -> Iterator[tuple[str, torch.Tensor | None, dict]]:
    """For each class of ``per_class`` (name -> prototypes): its mask logits on the stored image's grid (None when
    the class is not found) and the prompts used. ``clicks`` adds (foreground, background) model-space clicks per
    class; ``rng`` jitters the automatic prompts (see :func:`class_prompts`)."""
    size = predictor.model()[0].img_size
    cells = [cell_features(predictor, volume, crop) for crop in cover_crops(tuple(volume.image.shape[1:]), size)]
    features = torch.cat([c.features for c in cells])
    centers = np.concatenate([c.centers for c in cells])
    names = list(per_class)
    probabilities = class_probabilities(features, [per_class[n] for n in names], background)
    none = np.zeros((0, 3))
    for row, name in enumerate(names, start=1):
        prompts = class_prompts(centers, probabilities, row, threshold, rng)
        extra_fg, extra_bg = (clicks or {}).get(name, (none, none))
        if prompts is None and len(extra_fg) == 0:
            yield name, None, {}
            continue
        foreground = np.concatenate([prompts.foreground if prompts else none, extra_fg])
        negatives = np.concatenate([prompts.background if prompts else none, extra_bg])
        segmentation = predictor.segment(volume, foreground, negatives, label=name)
        yield name, predictor.to_original_logits(volume, segmentation), {
            "positive_prompts": len(foreground),
            "negative_prompts": len(negatives),
            "confidence": round(prompts.confidence, 3) if prompts else None,
        }


def segment_automatically(
    predictor: InteractivePredictor,
    volume: ModelVolume,
    per_class: dict[str, torch.Tensor],
    background: torch.Tensor,
    indices: dict[str, int],
    threshold: float = 0.5,
    clicks: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> AutoSegmentation:
    """Label every class of ``per_class`` found in ``volume`` with its value in ``indices``; where classes overlap,
    the one with the higher mask logit wins."""
    best_logits = torch.full(volume.original_shape, float("-inf"))
    label = torch.zeros(volume.original_shape, dtype=torch.uint8)
    result = AutoSegmentation(label)
    for name, logits, prompts in class_logits(predictor, volume, per_class, background, threshold, clicks):
        if logits is None:
            result.missing.append(name)
            continue
        wins = (logits > 0) & (logits > best_logits)
        label[wins] = indices[name]
        best_logits = torch.where(wins, logits, best_logits)
        result.found[name] = prompts
    for name in result.found:
        result.found[name]["voxels"] = int((label == indices[name]).sum())
    return result
