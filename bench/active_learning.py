"""Simulated annotation: does the ``uncertainty`` strategy teach the model faster than ``random``?

    python -m bench.active_learning --data data/sample/studies --truth data/sample/studies_gt \\
        --eval-data data/sample/eval --out out/active_learning.json --plot out/active_learning.png

Each run starts from the first labelled volume of ``--data``; each round the strategy picks an unlabeled volume,
its ground truth (from ``labels/final`` or ``--truth``) is saved as the annotation, the adapters are fine-tuned
for about ``--train-steps`` optimiser steps (a step budget, not a time budget, so runs repeat), and
``protosam3d`` Dice (prototypes from the labels so far) is measured on ``--eval-data``. Reported: Dice against the
number of labelled volumes, and the area under that curve (normalised to the range of labelled counts) per strategy
and seed.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monailabel.datastore.local import LocalDatastore

from bench.common import REPO_ROOT, emit, machine, parser, studies_with_classes, work_folder
from lib.activelearning.uncertainty import UncertaintyStrategy
from lib.engine.model_store import ModelStore
from lib.engine.predictor import InteractivePredictor
from lib.engine.runtime import MODEL_SPACING_MM
from lib.prompts.simulation import dice
from lib.prototypes.auto import segment_automatically
from lib.prototypes.service import PrototypeService
from lib.scoring.uncertainty import Sam3DUncertaintyScoring
from lib.trainers.sam3d_adapters import Sam3DAdapterTrain
from lib.training.studies import IMAGE_SUFFIXES, image_id
from lib.transforms.preprocess import VolumeCache

logger = logging.getLogger("active_learning")
CROPS_PER_VOLUME = 4


def pool_truth(data: Path, truth: Path) -> dict[str, Path]:
    """Ground truth per pool image id: ``labels/final`` first, then ``--truth``."""
    found = {}
    for folder in (truth, data / "labels" / "final"):
        for path in sorted(folder.glob("*")) if folder.is_dir() else []:
            if path.name.endswith(IMAGE_SUFFIXES):
                found[image_id(path)] = path
    return found


def evaluate(service: PrototypeService, eval_pairs, classes: dict[int, str]) -> float:
    """Mean protosam3d Dice over classes and eval volumes."""
    service.sync()
    names = service.bank.class_names()
    per_class, background = service.bank.prototypes(names)
    indices = {name: index for index, name in classes.items()}
    scores = []
    for image, label in eval_pairs:
        volume = service.volumes.get(str(image))
        truth = np.asarray(nib.load(str(label)).dataobj)
        result = segment_automatically(service.predictor, volume, dict(zip(names, per_class, strict=True)),
                                       background, indices)
        scores += [dice(result.label.numpy() == indices[n], truth == indices[n]) for n in names]
    return float(np.mean(scores))


def simulate(args, strategy: str, seed: int, pool: dict[str, Path], truth: dict[str, Path], eval_pairs,
             classes: dict[int, str]) -> list[float]:
    work = work_folder(f"seg3d-al-{strategy}-{seed}-")
    studies = work / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    for path in pool.values():
        shutil.copy(path, studies / path.name)
    label_info = {"label_info": [{"name": n, "idx": i} for i, n in classes.items()]}
    datastore = LocalDatastore(str(studies), auto_reload=False)
    first = sorted(pool)[0]
    datastore.save_label(first, str(truth[first]), "final", dict(label_info))
    models = ModelStore(args.checkpoint, adapter_root=work / "state" / "adapters")
    predictor = InteractivePredictor(models)
    volumes = VolumeCache(MODEL_SPACING_MM, 2 << 30)
    labels = {name: index for index, name in classes.items()}
    service = PrototypeService(work / "state" / "bank.pt", predictor, volumes, lambda: datastore, labels)
    scoring = Sam3DUncertaintyScoring(service, volumes, samples=args.samples)
    chooser = UncertaintyStrategy(window_s=0)
    trainer = Sam3DAdapterTrain(str(work / "state" / "train"), models, labels, MODEL_SPACING_MM)
    rng = random.Random(seed)
    curve = [evaluate(service, eval_pairs, classes)]
    for round_index in range(args.rounds):
        if strategy == "uncertainty":
            scoring({}, datastore)
            pick = chooser({"strategy": "uncertainty"}, datastore)["id"]
        else:
            pick = rng.choice(sorted(datastore.get_unlabeled_images()))
        datastore.save_label(pick, str(truth[pick]), "final", dict(label_info))
        torch.manual_seed(seed)
        labelled = len(datastore.get_labeled_images())
        epochs = max(1, math.ceil(args.train_steps / (labelled * CROPS_PER_VOLUME)))
        trainer({"model": "sam3d", "name": f"round{round_index}", "device": "cpu", "val_split": 0.0,
                 "max_minutes": args.train_minutes, "max_epochs": epochs, "crops_per_volume": CROPS_PER_VOLUME,
                 "seed": seed}, datastore)
        curve.append(evaluate(service, eval_pairs, classes))
        logger.info("%s seed %d round %d picked %s: Dice %.4f", strategy, seed, round_index + 1, pick, curve[-1])
    shutil.rmtree(work, ignore_errors=True)
    return curve


def area(curve: list[float]) -> float:
    """Area under Dice vs labelled volumes, divided by the span of labelled counts (a mean Dice)."""
    return float((np.sum(curve) - (curve[0] + curve[-1]) / 2.0) / (len(curve) - 1))


def plot(curves: dict[str, list[list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for strategy, runs in curves.items():
        runs_array = np.asarray(runs)
        x = np.arange(1, runs_array.shape[1] + 1)
        ax.plot(x, runs_array.mean(0), marker="o", label=f"{strategy} (mean of {len(runs)})")
        ax.fill_between(x, runs_array.min(0), runs_array.max(0), alpha=0.2)
    ax.set_xlabel("labelled volumes")
    ax.set_ylabel("protosam3d Dice on held-out volumes")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    p = parser(__doc__, "data/sample/studies")
    p.add_argument("--truth", type=Path, default=REPO_ROOT / "data" / "sample" / "studies_gt")
    p.add_argument("--eval-data", type=Path, default=REPO_ROOT / "data" / "sample" / "eval")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train-steps", type=int, default=120, help="optimiser steps per round (one per crop)")
    p.add_argument("--train-minutes", type=float, default=5.0, help="a cap on each round's training time")
    p.add_argument("--samples", type=int, default=2, help="jittered predictions per volume for the score")
    p.add_argument("--plot", type=Path, default=REPO_ROOT / "out" / "active_learning.png")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logger.setLevel(logging.INFO)
    _, classes = studies_with_classes(args.data)
    eval_pairs, _ = studies_with_classes(args.eval_data)
    truth = pool_truth(args.data, args.truth)
    pool = {image_id(p): p for p in sorted(args.data.iterdir())
            if p.name.endswith(IMAGE_SUFFIXES) and image_id(p) in truth}
    start = time.perf_counter()
    curves = {s: [simulate(args, s, seed, pool, truth, eval_pairs, classes) for seed in args.seeds]
              for s in ("uncertainty", "random")}
    areas = {s: [round(area(c), 4) for c in runs] for s, runs in curves.items()}
    plot(curves, args.plot)
    emit({
        "benchmark": "active_learning",
        "data": str(args.data),
        "pool_volumes": len(pool),
        "eval_volumes": len(eval_pairs),
        "settings": {"rounds": args.rounds, "seeds": args.seeds, "train_steps": args.train_steps,
                     "train_minutes_cap": args.train_minutes,
                     "score_samples": args.samples, "start": "first labelled volume of --data"},
        "dice_curves": {s: [[round(v, 4) for v in c] for c in runs] for s, runs in curves.items()},
        "area_under_curve": areas,
        "mean_area": {s: round(float(np.mean(v)), 4) for s, v in areas.items()},
        "uncertainty_above_random": bool(np.mean(areas["uncertainty"]) > np.mean(areas["random"])),
        "plot": str(args.plot),
        "seconds": round(time.perf_counter() - start, 1),
        "machine": machine(),
    }, args.out)


if __name__ == "__main__":
    main()
