"""Dice after 1, 3, 5 and 10 simulated clicks per class: the 3D SAM checkpoint vs a random-walker baseline.

    python -m bench.clicks --data data/sample/eval --checkpoint model/starter.pt --out out/clicks.json

Clicks follow the reference protocol (each at the most interior voxel of the largest error region, accumulated,
previous logits fed back). The baseline is fed exactly the clicks the model received.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from bench.common import emit, machine, parser, studies_with_classes
from bench.random_walker import random_walker_mask
from lib.engine.model_store import ModelStore
from lib.engine.predictor import InteractivePredictor
from lib.training.evaluate import click_trials, dice, mean_dice_table

REPORTED_CLICKS = (1, 3, 5, 10)


def main() -> None:
    p = parser(__doc__, "data/sample/eval")
    p.add_argument("--encoder-checkpoint", default=None)
    p.add_argument("--clicks", type=int, default=max(REPORTED_CLICKS))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    pairs, classes = studies_with_classes(args.data)
    predictor = InteractivePredictor(ModelStore(args.checkpoint, args.encoder_checkpoint))
    reported = tuple(n for n in REPORTED_CLICKS if n <= args.clicks)
    trials, baseline_trials = [], []
    seconds = {"model": 0.0, "baseline": 0.0}
    start = time.perf_counter()
    for trial in click_trials(predictor, pairs, classes, args.clicks):
        seconds["model"] += time.perf_counter() - start
        start = time.perf_counter()
        baseline = [dice(random_walker_mask(trial.volume, trial.clicks[:n]), trial.target) if n in reported
                    else float("nan") for n in range(1, args.clicks + 1)]
        seconds["baseline"] += time.perf_counter() - start
        trials.append(trial)
        baseline_trials.append(replace(trial, dices=baseline))
        print(f"{trial.image} {trial.class_name}: model {np.round([trial.dices[n - 1] for n in reported], 3)} "
              f"random walker {np.round([baseline[n - 1] for n in reported], 3)}", flush=True)
        start = time.perf_counter()
    model_table, baseline_table = mean_dice_table(trials, reported), mean_dice_table(baseline_trials, reported)
    at5 = "5" if "5" in model_table["mean"] else str(reported[-1])
    emit({
        "benchmark": "clicks",
        "data": str(args.data),
        "checkpoint": str(args.checkpoint),
        "volumes": len(pairs),
        "protocol": "next click at the most interior voxel of the largest error region; the random walker "
                    "baseline gets the same clicks the model received",
        "dice": {"model": model_table, "random_walker": baseline_table},
        "model_beats_baseline_at_5_clicks": model_table["mean"][at5] > baseline_table["mean"][at5],
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "machine": machine(),
    }, args.out)


if __name__ == "__main__":
    main()
