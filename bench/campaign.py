"""A simulated annotation campaign: the annotator's clicks per volume, with and without learning from the saves.

    python -m bench.campaign --data data/sample/studies --truth data/sample/studies_gt --out out/campaign.json \\
        --plot out/campaign.png
    python -m bench.campaign --quick --out out/campaign_quick.json  # 2 volumes, 1 seed: a smoke test

With ``--records DIR`` every finished run (one arm, one seed) is written to ``DIR/<arm>-<seed>.json``, and a later
call with the same settings reuses it instead of running it again: a campaign of several hours can be run a few
arms or seeds at a time, and resumes after an interruption at the run it was in.

The pool is every volume of ``--data`` with ground truth (``labels/final`` first, then ``--truth``); a campaign
starts with no label saved. In the order its strategy picks, the simulated annotator corrects every class of each
volume, from ``protosam3d``'s automatic result where the arm has prototypes for the class and from nothing
otherwise, with the shared click simulation (:mod:`lib.prompts.simulation`) through the ``sam3d`` infer's own code
(the automatic mask uploaded with every click, as Slicer and OHIF send a correction), until Dice reaches
``--stop-dice`` or ``--max-clicks``; then it saves the ground truth as the volume's final label. Arms:

- ``none``: the model as shipped, nothing learnt, volumes in random order;
- ``prototypes``: prototypes from every save, so later volumes start from an automatic result; random order;
- ``learning-<strategy>``: what the app learns with ``train_after_labels``: prototypes, plus, after every
  ``--train-every`` saves, adapter fine-tuning and the ``segmentation`` head, each with a step budget
  so runs repeat; the automatic result then serves each class from its better source, clicks on a head-served class
  are local corrections, and the uncertainty comes from the head. Volumes picked by ``uncertainty``, ``random`` or
  ``foreground`` (foreground-aware random: drawn with probability proportional to the automatic result's foreground
  volume).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monailabel.datastore.local import LocalDatastore

from bench.active_learning import pool_truth
from bench.common import REPO_ROOT, emit, machine, parser, studies_with_classes, work_folder
from lib.activelearning.uncertainty import UncertaintyStrategy
from lib.engine.model_store import ModelStore
from lib.engine.predictor import InteractivePredictor
from lib.engine.runtime import MODEL_SPACING_MM
from lib.infers.sam3d import Sam3DInfer
from lib.model.adapter_file import file_sha256
from lib.prompts.simulation import Click, Segmenter, dice, run_session, split_clicks
from lib.prototypes.service import PrototypeService
from lib.scoring.uncertainty import Sam3DUncertaintyScoring
from lib.segmentation.head import HeadStore
from lib.segmentation.served import serve_automatically
from lib.settings import SegmentationTrainSettings
from lib.trainers.run_control import held_out_split
from lib.trainers.sam3d_adapters import Sam3DAdapterTrain
from lib.trainers.segmentation import SegmentationTrain
from lib.training.studies import IMAGE_SUFFIXES, image_id
from lib.transforms.preprocess import ModelVolume, VolumeCache

logger = logging.getLogger("campaign")
CROPS_PER_VOLUME = 4


@dataclass(frozen=True)
class Arm:
    name: str
    prototypes: bool  # automatic results from the saves' prototypes
    trains: bool  # adapter fine-tuning and the segmentation head every ``--train-every`` saves
    strategy: str  # "random", "uncertainty" or "foreground"


ARMS = {arm.name: arm for arm in (
    Arm("none", False, False, "random"),
    Arm("prototypes", True, False, "random"),
    Arm("learning-uncertainty", True, True, "uncertainty"),
    Arm("learning-random", True, True, "random"),
    Arm("learning-foreground", True, True, "foreground"),
)}


def correction_segmenter(task: Sam3DInfer, volume: ModelVolume, name: str, start: np.ndarray | None,
                         client: str) -> Segmenter:
    """Clicks -> the ``sam3d`` infer's mask for ``name``, every click so far sent with ``start`` (the automatic
    result) uploaded as the label to refine, as Slicer and OHIF send a correction; without ``start``, the clicks
    continue the infer's own session."""
    previous = None if start is None or not start.any() else torch.from_numpy(start)

    def segment(clicks: list[Click]) -> np.ndarray:
        foreground, background = split_clicks(clicks)
        mask, _ = task.segment_prompts(volume, foreground, background, [], previous, name, None, client)
        return mask.numpy()

    return segment


class Campaign:
    """One arm and seed: a fresh datastore of the pool's images, model state and prototypes, in a temporary folder."""

    def __init__(self, args, arm: Arm, seed: int, pool: dict[str, Path], truth: dict[str, Path],
                 classes: dict[int, str]):
        self.args, self.arm, self.seed, self.truth, self.classes = args, arm, seed, truth, classes
        self.work = work_folder(f"seg3d-campaign-{arm.name}-{seed}-")
        studies = self.work / "studies"
        (studies / "labels" / "final").mkdir(parents=True)
        for path in pool.values():
            shutil.copy(path, studies / path.name)
        self.datastore = LocalDatastore(str(studies), auto_reload=False)
        self.labels = {name: index for index, name in classes.items()}
        self.label_info = {"label_info": [{"name": n, "idx": i} for i, n in classes.items()]}
        self.models = ModelStore(args.checkpoint, adapter_root=self.work / "state" / "adapters")
        self.predictor = InteractivePredictor(self.models)
        self.volumes = VolumeCache(MODEL_SPACING_MM, 2 << 30)
        self.heads = HeadStore(self.work / "state" / "segmentation")
        self.task = Sam3DInfer(self.predictor, self.volumes, self.labels, heads=self.heads,
                               correction_radius_mm=args.correction_radius_mm)
        self.prototypes = PrototypeService(self.work / "state" / "bank.pt", self.predictor, self.volumes,
                                           lambda: self.datastore, self.labels)
        self.scoring = Sam3DUncertaintyScoring(self.prototypes, self.volumes, samples=args.samples, heads=self.heads)
        self.chooser = UncertaintyStrategy(window_s=0, seed=seed)
        self.trainer = Sam3DAdapterTrain(str(self.work / "state" / "train"), self.models, self.labels,
                                         MODEL_SPACING_MM)
        self.head_trainer = SegmentationTrain(str(self.work / "state" / "train_segmentation"), self.heads,
                                              self.prototypes, MODEL_SPACING_MM, SegmentationTrainSettings().options())
        self.rng = np.random.default_rng(seed)
        self.automatic_cache: dict[tuple[str, str], dict[str, np.ndarray]] = {}

    def volume(self, image: str) -> ModelVolume:
        return self.volumes.get(self.datastore.get_image_uri(image))

    def automatic(self, image: str) -> tuple[dict[str, np.ndarray], float]:
        """``protosam3d``'s masks per class as the app serves them from the saves so far (none without any), and the
        seconds they took (0 when the same model, saves and head already gave them)."""
        if not self.arm.prototypes:
            return {}, 0.0
        self.prototypes.sync()
        names = self.prototypes.bank.class_names()
        if not names:
            return {}, 0.0
        key = (image, self.scoring.signature())
        if key in self.automatic_cache:
            return self.automatic_cache[key], 0.0
        start = time.perf_counter()
        indices = self.prototypes.label_map()
        label = serve_automatically(self.prototypes, self.heads.load(), self.volume(image), names).label.numpy()
        self.automatic_cache[key] = {name: label == indices[name] for name in names}
        return self.automatic_cache[key], time.perf_counter() - start

    def pick(self) -> str:
        unlabeled = sorted(self.datastore.get_unlabeled_images())
        if self.arm.strategy == "uncertainty":
            self.scoring({}, self.datastore)
            return self.chooser({"strategy": "uncertainty"}, self.datastore)["id"]
        if self.arm.strategy == "foreground":
            weights = np.array([sum(int(m.sum()) for m in self.automatic(image)[0].values()) for image in unlabeled],
                               dtype=np.float64)
            if weights.sum() > 0:
                return unlabeled[int(self.rng.choice(len(unlabeled), p=weights / weights.sum()))]
        return unlabeled[int(self.rng.integers(len(unlabeled)))]

    def annotate(self, image: str, learn: bool = True) -> dict[str, Any]:
        """Correct every class of ``image``, save its ground truth as final, and (``learn``) train from it when the
        arm trains and the save completes ``--train-every``."""
        volume = self.volume(image)
        truth = np.asarray(nib.load(str(self.truth[image])).dataobj)
        automatic, automatic_s = self.automatic(image)
        record: dict[str, Any] = {"id": image, "automatic_seconds": round(automatic_s, 2), "classes": {}}
        for index, name in sorted(self.classes.items()):
            target = truth == index
            start = automatic.get(name)
            segment = correction_segmenter(self.task, volume, name, start, f"{self.arm.name}-{self.seed}")
            session = run_session(segment, target, self.args.max_clicks, stop_dice=self.args.stop_dice, start=start)
            start_dice = dice(start, target) if start is not None else 0.0
            record["classes"][name] = {
                "clicks": len(session.clicks),
                "start_dice": round(start_dice, 4),
                "dice": round(session.dices[-1] if session.dices else start_dice, 4),
                "seconds": round(sum(session.seconds), 2),
            }
        record["clicks"] = sum(c["clicks"] for c in record["classes"].values())
        record["model_seconds"] = round(automatic_s + sum(c["seconds"] for c in record["classes"].values()), 2)
        self.datastore.save_label(image, str(self.truth[image]), "final", dict(self.label_info))
        saves = len(self.datastore.get_labeled_images())
        if learn and self.arm.trains and saves % self.args.train_every == 0:
            record["fine_tune"] = self.fine_tune(saves)
            record["head"] = self.train_head(saves)
        return record

    def fine_tune(self, saves: int) -> dict[str, Any]:
        torch.manual_seed(self.seed)
        epochs = max(1, math.ceil(self.args.train_steps / (saves * CROPS_PER_VOLUME)))
        start = time.perf_counter()
        stats = self.trainer({"model": "sam3d", "name": f"save{saves}", "device": "cpu",
                              "val_split": self.args.val_split, "max_minutes": self.args.train_minutes,
                              "max_epochs": epochs, "crops_per_volume": CROPS_PER_VOLUME, "seed": self.seed},
                             self.datastore)
        publication = stats.get("publication") or {}
        return {"seconds": round(time.perf_counter() - start, 1), "published": publication.get("published"),
                "forgotten": (publication.get("forgetting") or {}).get("forgotten")}

    def train_head(self, saves: int) -> dict[str, Any]:
        """The ``segmentation`` trainer for about ``--head-steps`` optimiser steps (whole epochs)."""
        trained, _ = held_out_split(list(range(saves)), self.args.val_split, self.seed)
        start = time.perf_counter()
        stats = self.head_trainer({"model": "segmentation", "name": f"head{saves}", "device": "cpu",
                                   "val_split": self.args.val_split, "max_minutes": self.args.train_minutes,
                                   "max_epochs": max(1, math.ceil(self.args.head_steps / len(trained))),
                                   "seed": self.seed}, self.datastore)
        publication = stats.get("publication") or {}
        return {"seconds": round(time.perf_counter() - start, 1), "published": publication.get("published"),
                "sources": publication.get("sources"), "validation": publication.get("validation")}

    def run(self, volumes: int) -> dict[str, Any]:
        start = time.perf_counter()
        records = []
        for done in range(volumes):
            records.append(self.annotate(self.pick(), learn=done < volumes - 1))  # nothing uses a model after the last
            logger.info("%s seed %d: %s took %d clicks %s", self.arm.name, self.seed, records[-1]["id"],
                        records[-1]["clicks"], {n: c["dice"] for n, c in records[-1]["classes"].items()})
        shutil.rmtree(self.work, ignore_errors=True)
        clicks = [r["clicks"] for r in records]
        return {"arm": self.arm.name, "seed": self.seed, "order": [r["id"] for r in records],
                "clicks_per_volume": clicks, "total_clicks": int(sum(clicks)),
                "model_seconds": round(sum(r["model_seconds"] for r in records), 1),
                "volumes": records, "seconds": round(time.perf_counter() - start, 1)}


def campaign_run(args, arm: Arm, seed: int, pool: dict[str, Path], truth: dict[str, Path], classes: dict[int, str],
                 volumes: int) -> dict[str, Any]:
    return Campaign(args, arm, seed, pool, truth, classes).run(volumes)


def recorded_run(records: Path | None, settings: dict[str, Any], run: Callable[[], dict[str, Any]],
                 name: str) -> dict[str, Any]:
    """``run()``, or the record of the same run with the same ``settings`` in ``records``; a new run is written
    there (atomically) before the next one starts."""
    path = records / f"{name}.json" if records else None
    if path and path.exists():
        earlier = json.loads(path.read_text())
        if earlier["settings"] == settings:
            logger.info("%s: reusing %s", name, path)
            return earlier["run"]
    result = run()
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        unfinished = path.with_suffix(".partial")
        unfinished.write_text(json.dumps({"settings": settings, "run": result}, indent=1))
        unfinished.replace(path)
    return result


def last_third(clicks: list[int]) -> float:
    """Mean clicks per volume over the last third of a campaign (at least its last volume)."""
    return float(np.mean(clicks[-max(1, len(clicks) // 3):]))


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    by_arm: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_arm.setdefault(run["arm"], []).append(run)
    return {arm: {
        "total_clicks": [r["total_clicks"] for r in arm_runs],
        "mean_total_clicks": round(float(np.mean([r["total_clicks"] for r in arm_runs])), 1),
        "spread_total_clicks": int(np.ptp([r["total_clicks"] for r in arm_runs])),
        "mean_clicks_per_volume": [round(float(v), 1) for v in np.mean([r["clicks_per_volume"] for r in arm_runs], 0)],
        "last_third_clicks_per_volume": round(float(np.mean([last_third(r["clicks_per_volume"])
                                                             for r in arm_runs])), 2),
        # what the clicks reached, and what the annotator started from (mean over volumes and classes)
        "mean_final_dice": round(float(np.mean([mean_class(r, "dice") for r in arm_runs])), 4),
        "mean_start_dice": round(float(np.mean([mean_class(r, "start_dice") for r in arm_runs])), 4),
        "model_seconds": round(float(np.mean([r["model_seconds"] for r in arm_runs])), 1),
    } for arm, arm_runs in by_arm.items()}


def mean_class(run: dict[str, Any], key: str) -> float:
    """The mean of a per-class value (``dice``, ``start_dice``) over a run's volumes and classes."""
    return float(np.mean([c[key] for v in run["volumes"] for c in v["classes"].values()]))


def targets(summary: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's two targets where the arms for them ran: learning halves the late clicks, and picking by
    uncertainty needs fewer clicks than both random orders."""
    found: dict[str, Any] = {}
    if "none" in summary and "learning-uncertainty" in summary:
        found["learning_halves_late_clicks"] = (summary["learning-uncertainty"]["last_third_clicks_per_volume"]
                                                <= 0.5 * summary["none"]["last_third_clicks_per_volume"])
    others = [a for a in ("learning-random", "learning-foreground") if a in summary]
    if "learning-uncertainty" in summary and others:
        found["uncertainty_fewest_clicks"] = all(summary["learning-uncertainty"]["mean_total_clicks"]
                                                 < summary[a]["mean_total_clicks"] for a in others)
    return found


def plot(summary: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for arm, row in summary.items():
        values = row["mean_clicks_per_volume"]
        ax.plot(range(1, len(values) + 1), values, marker="o", label=arm)
    ax.set_xlabel("volume, in the order annotated")
    ax.set_ylabel("clicks (all classes, mean of seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = parser(__doc__, "data/sample/studies")
    p.add_argument("--truth", type=Path, default=REPO_ROOT / "data" / "sample" / "studies_gt")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    p.add_argument("--volumes", type=int, default=None, help="volumes per campaign (default: the whole pool)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--quick", action="store_true", help="2 volumes and seed 0 (a smoke test)")
    p.add_argument("--max-clicks", type=int, default=20, help="most clicks per class")
    p.add_argument("--stop-dice", type=float, default=0.9, help="the annotator saves once Dice reaches this")
    p.add_argument("--train-every", type=int, default=2, help="fine-tune the adapters after every k saves")
    p.add_argument("--train-steps", type=int, default=120, help="optimiser steps per fine-tune (one per crop)")
    p.add_argument("--train-minutes", type=float, default=5.0, help="a cap on each fine-tune's and head's time")
    p.add_argument("--head-steps", type=int, default=240, help="optimiser steps per segmentation head run")
    p.add_argument("--correction-radius-mm", type=float, default=15.0,
                   help="local corrections of head-served classes (the app's correction_radius_mm; 0: off)")
    p.add_argument("--val-split", type=float, default=0.2, help="saved labels held out by each fine-tune")
    p.add_argument("--samples", type=int, default=2, help="jittered predictions per uncertainty score")
    p.add_argument("--plot", type=Path, default=REPO_ROOT / "out" / "campaign.png")
    p.add_argument("--records", type=Path, default=None,
                   help="write each finished run (arm, seed) here, and reuse those of the same settings")
    args = p.parse_args()
    if args.quick:
        args.volumes, args.seeds = 2, [0]
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logger.setLevel(logging.INFO)
    arms = [ARMS[name] for name in args.arms.split(",")]
    _, classes = studies_with_classes(args.data)
    truth = pool_truth(args.data, args.truth)
    pool = {image_id(p): p for p in sorted(args.data.iterdir())
            if p.name.endswith(IMAGE_SUFFIXES) and image_id(p) in truth}
    volumes = min(args.volumes or len(pool), len(pool))
    start = time.perf_counter()
    settings = {k: getattr(args, k) for k in ("max_clicks", "stop_dice", "train_every", "train_steps", "train_minutes",
                                               "head_steps", "correction_radius_mm", "val_split", "samples")}
    # what the runs depend on, not where this clone keeps it: the pool's volumes and the checkpoint's content
    settings |= {"volumes": volumes, "pool": sorted(pool), "checkpoint_sha256": file_sha256([args.checkpoint])}
    runs = [recorded_run(args.records, settings, partial(campaign_run, args, arm, seed, pool, truth, classes, volumes),
                         f"{arm.name}-{seed}") for seed in args.seeds for arm in arms]
    summary = summarise(runs)
    plot(summary, args.plot)
    emit({
        "benchmark": "campaign",
        "data": str(args.data),
        "checkpoint": str(args.checkpoint),
        "pool_volumes": len(pool),
        "settings": settings | {"seeds": args.seeds, "arms": [a.name for a in arms]},
        "summary": summary,
        "targets": targets(summary),
        "runs": runs,
        "plot": str(args.plot),
        "seconds": round(time.perf_counter() - start, 1),
        "machine": machine(),
    }, args.out)


if __name__ == "__main__":
    main()
