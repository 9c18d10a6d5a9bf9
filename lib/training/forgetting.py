"""No forgetting: per-class Dice after 1 and 5 simulated clicks on the validation crops, for the state being
served and for a fine-tuned one; a fine-tune that loses more than :data:`TOLERANCE` on any class is not published."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from monai.losses import DiceCELoss

from lib.model import Sam3D
from lib.prompts.simulation import simulated_click_loss
from lib.trainers.click_steps import VALIDATION_CLICKS

TOLERANCE = 0.02  # the most Dice a class may lose at any validated click count


def class_click_dice(model: Sam3D, batches: Iterable[dict[str, Any]], refines: Callable[[str], bool],
                     seed: int = 0, clicks: tuple[int, ...] = VALIDATION_CLICKS,
                     only: Callable[[str], bool] | None = None) -> dict[str, dict[int, float]]:
    """Mean Dice per object class after each of ``clicks`` on validation batches (``image``, ``label`` and
    ``object`` per crop): the first click in the object's interior, the same simulated clicks for any model, each
    class served as ``refines`` says (by the click refiner, or by the decoder alone); ``only``: the classes to
    evaluate (all by default)."""
    model.eval()
    rng = np.random.default_rng(seed)
    loss = DiceCELoss(sigmoid=True)
    device = next(model.parameters()).device
    scores: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    with torch.no_grad():
        for batch in batches:
            images, targets, names = batch["image"].to(device), batch["label"].to(device), batch["object"]
            for i in range(images.shape[0]):
                if only is not None and not only(names[i]):
                    continue
                outcome = simulated_click_loss(model, images[i : i + 1], targets[i : i + 1], max(clicks), loss, rng,
                                               random_first_click=0.0, refine=refines(names[i]))
                for n in clicks:
                    scores[names[i]][n].append(outcome.dices[min(n, len(outcome.dices)) - 1])
    return {name: {n: round(float(np.mean(v)), 4) for n, v in per_click.items()} for name, per_click in scores.items()}


def forgotten(served: dict[str, dict[int, float]], candidate: dict[str, dict[int, float]],
              tolerance: float = TOLERANCE) -> dict[str, dict[int, float]]:
    """The Dice drops beyond ``tolerance`` of ``candidate`` against ``served``, per class and click count."""
    drops: dict[str, dict[int, float]] = {}
    for name, per_click in served.items():
        for n, before in per_click.items():
            after = candidate.get(name, {}).get(n)
            if after is not None and before - after > tolerance:
                drops.setdefault(name, {})[n] = round(after - before, 4)
    return drops
