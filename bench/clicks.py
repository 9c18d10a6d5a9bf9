"""Dice after 1, 3, 5 and 10 simulated clicks per class: the 3D SAM checkpoint vs a random-walker baseline.

    python bench/clicks.py --data data/sample/eval --checkpoint model/starter.pt --out out/clicks.json

Clicks follow the reference protocol (each at the most interior voxel of the largest error region, accumulated,
previous logits fed back). The baseline is fed exactly the clicks the model received.
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import torch
from monai.transforms import LoadImage

from bench.common import emit, machine, parser, studies_with_classes
from bench.random_walker import random_walker_mask
from lib.engine.model_store import ModelStore
from lib.engine.predictor import InteractivePredictor
from lib.engine.runtime import MODEL_SPACING_MM
from lib.training.evaluate import click_curve, dice
from lib.transforms.preprocess import load_model_volume

REPORTED_CLICKS = (1, 3, 5, 10)


def main() -> None:
    p = parser(__doc__, "data/sample/eval")
    p.add_argument("--encoder-checkpoint", default=None)
    p.add_argument("--clicks", type=int, default=max(REPORTED_CLICKS))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    pairs, classes = studies_with_classes(args.data)
    predictor = InteractivePredictor(ModelStore(args.checkpoint, args.encoder_checkpoint))
    reported = [n for n in REPORTED_CLICKS if n <= args.clicks]
    model_dice: dict[str, list[list[float]]] = defaultdict(list)
    baseline_dice: dict[str, list[list[float]]] = defaultdict(list)
    seconds = {"model": 0.0, "baseline": 0.0}
    for image_path, label_path in pairs:
        volume = load_model_volume(str(image_path), MODEL_SPACING_MM)
        label = np.asarray(LoadImage(image_only=True)(str(label_path))).squeeze().astype(np.int64)
        for index, name in classes.items():
            target = label == index
            if not target.any():
                continue
            start = time.perf_counter()
            curve, clicks = click_curve(predictor, volume, target, args.clicks)
            seconds["model"] += time.perf_counter() - start
            start = time.perf_counter()
            baseline = [dice(random_walker_mask(volume, clicks[:n]), target) for n in reported]
            seconds["baseline"] += time.perf_counter() - start
            model_dice[name].append([curve[n - 1] for n in reported])
            baseline_dice[name].append(baseline)
            print(f"{image_path.name} {name}: model {np.round(model_dice[name][-1], 3)} "
                  f"random walker {np.round(baseline, 3)}", flush=True)

    def table(results: dict[str, list[list[float]]]) -> dict:
        per_class = {name: dict(zip(map(str, reported), np.mean(v, axis=0).round(4).tolist(), strict=True))
                     for name, v in results.items()}
        per_class["mean"] = {str(n): round(float(np.mean([c[str(n)] for c in per_class.values()])), 4)
                             for n in reported}
        return per_class

    model_table, baseline_table = table(model_dice), table(baseline_dice)
    at5 = "5" if "5" in model_table["mean"] else str(reported[-1])
    emit({
        "benchmark": "clicks",
        "data": str(args.data),
        "checkpoint": str(args.checkpoint),
        "volumes": len(pairs),
        "dice": {"model": model_table, "random_walker": baseline_table},
        "model_beats_baseline_at_5_clicks": model_table["mean"][at5] > baseline_table["mean"][at5],
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "machine": machine(),
    }, args.out)


if __name__ == "__main__":
    main()
