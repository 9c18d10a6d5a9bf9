"""Pretrain the ``starter`` 3D SAM from scratch on the sample data with simulated interactive clicks.

    python -m lib.training.pretrain --data data/sample/train --out model/starter.pt --minutes 40

``--data`` is a MONAI Label studies folder with ``labels/final``. Classes listed in ``--hold-out`` are never used
as targets, so fine-tuning can later be measured on a class the starter has not seen.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.utils import set_determinism

from lib.data.classes import read_class_names
from lib.engine.model_store import ModelStore
from lib.engine.predictor import InteractivePredictor
from lib.engine.runtime import MODEL_SPACING_MM
from lib.model import Sam3D, build_sam3d, save_sam3d
from lib.training.crops import sample_crop_pair
from lib.training.evaluate import click_trials, mean_dice_table
from lib.training.interactive import simulated_click_loss
from lib.training.studies import labeled_pairs
from lib.transforms.preprocess import load_model_label, load_model_volume

logger = logging.getLogger("pretrain")

EVAL_CLICKS = (1, 5, 10)


@dataclass
class TrainingVolume:
    image: torch.Tensor  # (1, X, Y, Z) model space
    targets: dict[str, torch.Tensor]  # name -> (X, Y, Z) bool


def training_targets(label: torch.Tensor, classes: dict[int, str], hold_out: set[str]) -> dict[str, torch.Tensor]:
    """Objects to learn from one label map: each class, and the whole labelled brain (the union of the classes)."""
    targets = {name: label == index for index, name in classes.items() if name not in hold_out}
    kept = [i for i, n in classes.items() if n not in hold_out]
    targets["brain"] = torch.isin(label, torch.as_tensor(kept, dtype=label.dtype)) if kept else label > 0
    return {k: v for k, v in targets.items() if v.sum() > 100}


def load_training_volumes(data: Path, hold_out: set[str]) -> list[TrainingVolume]:
    classes = read_class_names(data)
    volumes = []
    for image_path, label_path in labeled_pairs(data):
        volume = load_model_volume(str(image_path), MODEL_SPACING_MM)
        label = load_model_label(str(label_path), MODEL_SPACING_MM)
        volumes.append(TrainingVolume(volume.image, training_targets(label, classes, hold_out)))
        logger.info("loaded %s: %s targets %s", image_path.name, tuple(label.shape), sorted(volumes[-1].targets))
    return volumes


def train(model: Sam3D, volumes: list[TrainingVolume], minutes: float, max_clicks: int, lr: float,
          rng: np.random.Generator) -> dict:
    """Train until the time budget is spent, with warm-up and a cosine learning-rate decay over wall time
    (so the budget holds on a busy machine too)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    loss_fn = DiceCELoss(sigmoid=True)
    budget = minutes * 60.0
    start = time.perf_counter()
    step, recent = 0, []
    model.train()
    while (elapsed := time.perf_counter() - start) < budget:
        warmup = min(1.0, (step + 1) / 100)
        for group in optimizer.param_groups:
            group["lr"] = lr * warmup * 0.5 * (1.0 + math.cos(math.pi * elapsed / budget))
        volume = volumes[int(rng.integers(len(volumes)))]
        image, target, _ = sample_crop_pair(volume.image, volume.targets, model.img_size, rng)
        outcome = simulated_click_loss(model, image, target, int(rng.integers(1, max_clicks + 1)), loss_fn, rng)
        loss, dices = outcome.loss, outcome.dices
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        recent.append((loss.item(), dices[0], dices[-1]))
        step += 1
        if step % 50 == 0:
            mean = np.mean(recent[-50:], axis=0)
            logger.info("step %d loss %.3f dice@1 %.3f dice@last %.3f (%.0f s)", step, *mean, elapsed)
    model.eval()
    return {"steps": step, "train_seconds": round(time.perf_counter() - start, 1)}


def evaluate(checkpoint: Path, eval_data: Path) -> dict:
    """Dice at 1, 5 and 10 simulated clicks per class on held-out volumes, through the serving predictor."""
    start = time.perf_counter()
    pairs = labeled_pairs(eval_data)
    predictor = InteractivePredictor(ModelStore(checkpoint))
    trials = list(click_trials(predictor, pairs, read_class_names(eval_data), max(EVAL_CLICKS)))
    return {"eval_data": str(eval_data), "eval_volumes": len(pairs),
            "dice_at_clicks": mean_dice_table(trials, EVAL_CLICKS),
            "eval_seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/sample/train"))
    parser.add_argument("--eval-data", type=Path, default=Path("data/sample/eval"))
    parser.add_argument("--out", type=Path, default=Path("model/starter.pt"))
    parser.add_argument("--minutes", type=float, default=40.0)
    parser.add_argument("--max-clicks", type=int, default=5)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hold-out", default="lateral_ventricles", help="comma-separated class names not trained")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--evaluate-only", action="store_true", help="only (re)evaluate --out and update its record")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    set_determinism(args.seed)
    rng = np.random.default_rng(args.seed)
    hold_out = {n for n in args.hold_out.split(",") if n}
    record_path = args.out.with_suffix(".json")
    if args.evaluate_only:
        record = json.loads(record_path.read_text())
        record.update(evaluate(args.out, args.eval_data))
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        logger.info("evaluated %s: %s", args.out, record["dice_at_clicks"])
        return

    wall = time.perf_counter()
    volumes = load_training_volumes(args.data, hold_out)
    model = build_sam3d("starter")
    stats = train(model, volumes, args.minutes, args.max_clicks, args.lr, rng)
    record = {
        "command": "python -m lib.training.pretrain " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in {"threads", "evaluate_only"}
        ),
        "data": str(args.data),
        "training_volumes": len(volumes),
        "held_out_classes": sorted(hold_out),
        "seed": args.seed,
        **stats,
        "wall_seconds": round(time.perf_counter() - wall, 1),
        "torch_threads": args.threads,
    }
    save_sam3d(model, args.out, half=True, record=record)
    record.update(evaluate(args.out, args.eval_data))
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    logger.info("saved %s: %s", args.out, record)


if __name__ == "__main__":
    main()
