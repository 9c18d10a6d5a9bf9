"""Adapter fine-tuning of the served 3D SAM on the datastore's final labels (MONAI Label ``BasicTrainTask``).

The base weights stay frozen; spatial adapters (plus, by default, encoder norms, prompt encoder and mask decoder)
learn from simulated interactive sessions on each saved class. The best-validated state is published as the next
adapter version, which the infers pick up on their next request, unless it loses Dice on a class the served model
already segments (:mod:`lib.training.forgetting`): then the served state stays.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import MeanDice, StatsHandler, ValidationHandler, from_engine
from monai.inferers import SimpleInferer
from monai.losses import DiceCELoss
from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.basic_train import BasicTrainTask, Context

from lib.engine.model_store import ModelStore
from lib.model.adapter_file import apply_adapters
from lib.model.adapters import add_adapters, set_trainable, trainable_state
from lib.settings import TrainSettings, parse_bool
from lib.trainers.click_steps import (
    VALIDATION_CLICKS,
    ClassDifficulty,
    ClickTrainingModule,
    ClickTrainingStep,
    ClickValidationStep,
)
from lib.trainers.datalist import training_datalist
from lib.trainers.run_control import TimeBudget, held_out_split, run_alone
from lib.training.forgetting import TOLERANCE, class_click_dice, forgotten
from lib.transforms.training import LoadTrainingPaird, ObjectCropsd, RandClickCropd

logger = logging.getLogger(__name__)

KEY_METRIC = f"val_dice_{max(VALIDATION_CLICKS)}clicks"

DEFAULTS: dict[str, Any] = TrainSettings().options()  # ``--conf train_<option>`` changes them (lib.settings)


def request_flag(request: dict, key: str) -> bool:
    """A yes/no training option as a request sends it: JSON true/false or the strings the settings accept
    (``"false"`` is false, where ``bool("false")`` was true)."""
    value = request.get(key, True)
    return value if isinstance(value, bool) else parse_bool(key, str(value))


class NoTrainingData(ValueError):
    """No usable final label in the datastore."""


class Sam3DAdapterTrain(BasicTrainTask):
    """Fine-tunes adapters on the weights a :class:`ModelStore` serves and publishes them to its registry."""

    def __init__(self, model_dir: str, models: ModelStore, labels: dict[str, int], spacing: float,
                 defaults: dict[str, Any] | None = None,
                 description: str = "Fine-tune 3D SAM adapters on saved final labels (simulated clicks)"):
        self.models = models
        self.spacing = spacing
        self.outcome: dict[str, Any] = {}
        super().__init__(
            model_dir=model_dir,
            description=description,
            config=dict(defaults or DEFAULTS),
            amp=False,
            publish_path=None,
            stats_path=os.path.join(model_dir, "train_stats.json"),
            key_metric_filename="adapters_best.pt",
            final_filename="adapters_final.pt",
            n_saved=1,
            labels=labels,
            tracking=None,
        )

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        """One run at a time per state folder (:func:`run_alone`); the stats say what was published."""
        def run() -> dict[str, Any]:
            self.outcome = {}
            return {**super(Sam3DAdapterTrain, self).__call__(request, datastore), "publication": self.outcome}
        return run_alone(self._model_dir, run)

    # data
    def pre_process(self, request: dict[str, Any], datastore: Datastore) -> list[dict[str, Any]]:
        datalist = training_datalist(datastore, self._labels)
        if not datalist:
            raise NoTrainingData("No usable final labels to train on: save a final label (labels/final) first")
        logger.info("Training on %d final labels: %s", len(datalist), [d["id"] for d in datalist])
        return datalist

    def partition_datalist(self, context: Context, shuffle: bool = False) -> tuple[list, list]:
        """Hold out ``val_split`` of the labels (at least one when there are two or more), the same ones each run."""
        request = context.request
        return held_out_split(context.datalist, float(request.get("val_split", 0.0)), int(request.get("seed", 0)))

    def train_pre_transforms(self, context: Context) -> list:
        size = context.network_size
        crops = RandClickCropd(size, int(context.request["crops_per_volume"]), weights=context.difficulty.weights)
        return [LoadTrainingPaird(self.spacing), crops]

    def train_post_transforms(self, context: Context) -> None:
        return None

    def val_pre_transforms(self, context: Context) -> list:
        return [LoadTrainingPaird(self.spacing), ObjectCropsd(context.network_size)]

    # network and optimisation
    def network(self, context: Context) -> ClickTrainingModule:
        request = context.request
        sam = self.models.load_base()
        registry = self.models.registry()
        published = registry.current() if registry else None
        if published and request_flag(request, "continue_from_published"):
            state, metadata = registry.read(published)
            apply_adapters(sam, state, metadata, self.models.base_sha256())
            logger.info("Continuing from adapter version %d", published)
        else:
            add_adapters(sam, bottleneck=int(request["bottleneck"]))
        context.trainable_parameters = set_trainable(
            sam,
            norms=request_flag(request, "train_norms"),
            prompt_encoder=request_flag(request, "train_prompt_encoder"),
            mask_decoder=request_flag(request, "train_mask_decoder"),
        )
        context.network_size = sam.img_size
        context.difficulty = ClassDifficulty()
        context.published_before = published
        logger.info("Trainable parameters: %d (%s)", context.trainable_parameters, sam.variant)
        return ClickTrainingModule(sam, seed=int(request["seed"]))

    def _create_network_and_optimizer(self, context: Context):
        torch.manual_seed(int(context.request["seed"]))
        return super()._create_network_and_optimizer(context)

    def optimizer(self, context: Context) -> torch.optim.Optimizer:
        trainable = [p for p in context.network.parameters() if p.requires_grad]
        return torch.optim.AdamW(trainable, lr=float(context.request["lr"]), weight_decay=0.01)

    def loss_function(self, context: Context) -> DiceCELoss:
        return DiceCELoss(sigmoid=True)

    def lr_scheduler_handler(self, context: Context) -> None:
        return None

    def load_path(self, output_dir: str, pretrained: bool = True) -> None:
        return None  # the published adapters are the starting point (see ``network``), not MONAI's checkpoints

    def train_inferer(self, context: Context) -> SimpleInferer:
        return SimpleInferer()

    def val_inferer(self, context: Context) -> SimpleInferer:
        return SimpleInferer()

    def train_iteration_update(self, context: Context) -> ClickTrainingStep:
        seed = int(context.request["seed"]) + context.local_rank
        context.click_step = ClickTrainingStep(int(context.request["max_clicks"]), seed, context.difficulty)
        return context.click_step

    def val_iteration_update(self, context: Context) -> ClickValidationStep:
        return ClickValidationStep()

    # handlers: MONAI Label's defaults minus TensorBoard (not installed) and tracking (off)
    def train_handlers(self, context: Context) -> list:
        handlers: list = []
        if context.local_rank == 0:
            handlers.append(StatsHandler(tag_name="train_loss", output_transform=from_engine(["loss"], first=True)))
        if context.evaluator:
            handlers.append(ValidationHandler(self._val_interval, validator=context.evaluator, epoch_level=True))
        return handlers

    def val_handlers(self, context: Context) -> list | None:
        return [StatsHandler(output_transform=lambda _: None, iteration_log=False)] if context.local_rank == 0 else None

    # metrics
    def train_key_metric(self, context: Context) -> dict[str, MeanDice]:
        return {"train_dice": MeanDice(output_transform=from_engine(["pred", "label"]), include_background=True)}

    def val_key_metric(self, context: Context) -> dict[str, MeanDice]:
        n = max(VALIDATION_CLICKS)
        return {KEY_METRIC: MeanDice(output_transform=from_engine([f"pred_{n}", "label"]), include_background=True)}

    def val_additional_metrics(self, context: Context) -> dict[str, MeanDice]:
        return {
            f"val_dice_{n}click{'s' if n > 1 else ''}": MeanDice(
                output_transform=from_engine([f"pred_{n}", "label"]), include_background=True
            )
            for n in VALIDATION_CLICKS
            if n != max(VALIDATION_CLICKS)
        }

    # publishing
    def finalize(self, context: Context) -> None:
        super().finalize(context)
        context.trainer.add_event_handler(Events.ITERATION_COMPLETED, TimeBudget(float(context.request["max_minutes"])))
        if context.local_rank == 0:
            AdapterPublisher(self.models, context, self.outcome).attach(context.trainer, context.evaluator)


class AdapterPublisher:
    """Keeps the trainable state of the best validation and publishes it once when training ends."""

    def __init__(self, models: ModelStore, context: Context, outcome: dict[str, Any]):
        self.models = models
        self.context = context
        self.outcome = outcome  # what happened at the end: the version published (None: kept) and the check
        self.best: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
        self.published = False

    def attach(self, trainer: Engine, evaluator: Engine | None) -> None:
        if evaluator is not None:
            evaluator.add_event_handler(Events.EPOCH_COMPLETED, self.on_validation)
        trainer.add_event_handler(Events.COMPLETED, self.publish)

    def _sam(self):
        network = self.context.network
        return (network.module if hasattr(network, "module") else network).sam

    def on_validation(self, evaluator: Engine) -> None:
        if evaluator.state.best_metric_epoch == evaluator.state.epoch:
            metrics = {k: round(float(v), 4) for k, v in evaluator.state.metrics.items()}
            self.best = (trainable_state(self._sam()), {**metrics, "epoch": evaluator.state.epoch})
            logger.info("Best validation so far: %s", self.best[1])

    def trained_classes(self) -> list[str]:
        return sorted({name for item in self.context.train_datalist for name in item["classes"]})

    def forgetting_check(self, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Per-class validation Dice of the served model and of ``state``, the route that serves each trained class
        best with ``state`` (the decoder it fine-tuned, or the click refiner it kept serving), and the classes
        ``state`` forgets."""
        evaluator = self.context.evaluator
        if not request_flag(self.context.request, "keep_known_classes"):
            return {"checked": False, "reason": "keep_known_classes is off"}
        if evaluator is None:
            return {"checked": False, "reason": "no validation labels (val_split 0 or a single label)"}
        seed = int(self.context.request["seed"])
        served_model, served_version = self.models.get()
        served = class_click_dice(served_model, evaluator.data_loader, served_model.refines, seed)
        self.context.network.load_state_dict(state)
        sam = self._sam()
        candidate = class_click_dice(sam, evaluator.data_loader, lambda name: False, seed)
        refiner_classes = []
        if sam.mask_refiner is not None:
            # the decoder's own classes were just measured on their only route
            refined = class_click_dice(sam, evaluator.data_loader, sam.refines, seed, only=sam.refines)
            for name, per_click in refined.items():
                if np.mean(list(per_click.values())) > np.mean(list(candidate[name].values())):
                    candidate[name] = per_click
                    refiner_classes.append(name)
        return {"checked": True, "served_version": served_version, "served": served, "candidate": candidate,
                "refiner_classes": sorted(refiner_classes), "tolerance": TOLERANCE,
                "forgotten": forgotten(served, candidate)}

    def publish(self, trainer: Engine) -> None:
        if self.published:
            return
        self.published = True
        state, metrics = self.best or (trainable_state(self._sam()), {"epoch": trainer.state.epoch})
        metrics["train_dice"] = round(float(trainer.state.metrics.get("train_dice", float("nan"))), 4)
        check = self.forgetting_check(state)
        self.outcome.update(forgetting=check, published=None)
        if check.get("forgotten"):
            logger.warning("Not publishing: the fine-tune loses more than %.2f Dice on %s; %s stays served",
                           TOLERANCE, check["forgotten"], check["served_version"])
            return
        sam = self._sam()
        context = self.context
        registry = self.models.registry()
        version = registry.publish(state, {
            "variant": sam.variant,
            "bottleneck": sam.image_encoder.adapters[0].down.out_features,
            "base_name": "+".join(p.name for p in self.models.files()),
            # the classes the fine-tuned decoder serves from now on (validation may keep some on the click refiner)
            "classes": [c for c in self.trained_classes() if c not in check.get("refiner_classes", ())],
            "trained_on": [{"id": item["id"], "label_ts": item.get("label_ts")} for item in context.train_datalist],
            "validated_on": [{"id": item["id"], "label_ts": item.get("label_ts")} for item in context.val_datalist],
            "metrics": metrics,
            "iterations": trainer.state.iteration,
            "optimizer_steps": context.click_step.steps,
            "class_train_dice": {k: round(v, 4) for k, v in context.difficulty.dice.items()},
            "seconds": round(time.time() - context.start_ts, 1),
            "trainable_parameters": context.trainable_parameters,
            "continued_from": context.published_before,
            "forgetting": check,
        })
        self.outcome["published"] = version
        logger.info("Adapter version %d published (metrics %s)", version, metrics)
