"""Adapter fine-tuning: wall time, Dice at 1 and 5 clicks per class on held-out volumes before and after, and
whether the trainer's no-forgetting check published the fine-tune.

    python -m bench.finetune --data data/sample/studies --eval-data data/sample/eval --out out/finetune.json

``--data`` is the studies folder whose final labels the trainer learns from (the app's trainer, run in-process on a
MONAI Label datastore, with the app's defaults unless overridden); ``--eval-data`` holds the held-out volumes.
The adapters go to ``--state DIR/adapters`` (default a temporary folder): the checkpoint and ``model/`` are not
touched.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from monailabel.datastore.local import LocalDatastore

from bench.common import REPO_ROOT, emit, machine, parser, studies_with_classes, work_folder
from lib.engine.model_store import ModelStore
from lib.engine.predictor import InteractivePredictor
from lib.engine.runtime import MODEL_SPACING_MM
from lib.trainers.sam3d_adapters import Sam3DAdapterTrain
from lib.training.evaluate import click_trials, mean_dice_table
from lib.training.forgetting import forgotten

REPORTED_CLICKS = (1, 5)


def dice_table(models: ModelStore, eval_data: Path) -> dict[str, dict[str, float]]:
    pairs, classes = studies_with_classes(eval_data)
    trials = list(click_trials(InteractivePredictor(models), pairs, classes, max(REPORTED_CLICKS)))
    return mean_dice_table(trials, REPORTED_CLICKS)


def main() -> None:
    p = parser(__doc__, "data/sample/studies")
    p.add_argument("--eval-data", type=Path, default=REPO_ROOT / "data" / "sample" / "eval")
    p.add_argument("--minutes", type=float, default=8.0, help="training time budget")
    p.add_argument("--val-split", type=float, default=0.2,
                   help="part of --data held out for validation (0: no validation, so no forgetting check)")
    p.add_argument("--state", type=Path, default=None, help="where the adapters go (default: a temporary folder)")
    p.add_argument("--option", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                   help="a trainer request option (lib.settings.TrainSettings) as JSON, e.g. --option max_epochs 100")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    pairs, classes = studies_with_classes(args.data)
    labels = {name: index for index, name in sorted(classes.items())}
    state = args.state or work_folder("seg3d-finetune-")
    models = ModelStore(args.checkpoint, adapter_root=state / "adapters")

    start = time.perf_counter()
    before = dice_table(models, args.eval_data)
    eval_seconds = time.perf_counter() - start

    trainer = Sam3DAdapterTrain(str(state / "train"), models, labels, MODEL_SPACING_MM)
    start = time.perf_counter()
    options = {key: json.loads(value) for key, value in args.option}  # 100, 5e-4, false: as a request sends them
    request = {"model": "sam3d", "name": "bench", "device": "cpu", "max_minutes": args.minutes,
               "val_split": args.val_split, **options}
    stats = trainer(request, LocalDatastore(str(args.data), auto_reload=False))
    train_seconds = time.perf_counter() - start
    after = dice_table(models, args.eval_data)
    info = models.info()

    delta = {name: {n: round(after[name][n] - before[name][n], 4) for n in before[name]} for name in before}
    emit({
        "benchmark": "finetune",
        "data": str(args.data),
        "labeled_volumes": len(pairs),
        "eval_data": str(args.eval_data),
        "checkpoint": str(args.checkpoint),
        "options": options,
        "state": str(state),
        "train_seconds": round(train_seconds, 1),
        "iterations": info["adapter"]["iterations"],
        "optimizer_steps": info["adapter"]["optimizer_steps"],
        "epochs": stats.get("epoch"),
        "trainable_parameters": info["adapter"]["trainable_parameters"],
        "dice_before": before,
        "dice_after": after,
        "dice_change": delta,
        "forgotten_on_eval": forgotten(before, after),  # classes losing more than the tolerance, held-out volumes
        "publication": stats.get("publication"),
        "eval_seconds_each": round(eval_seconds, 1),
        "machine": machine(),
    }, args.out)


if __name__ == "__main__":
    main()
