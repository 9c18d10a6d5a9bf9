"""The ``segmentation`` trainer: a MONAI SegResNet trained on the datastore's final labels (MONAI Label
``BasicTrainTask``, as the radiology app's ``segmentation``), published as a head of ``protosam3d``.

When the run ends, the network and the prototypes of the training labels both segment the held-out labels (with a
single label, that label) on their stored grid; each class goes to whichever has the higher Dice
(:func:`lib.segmentation.sources.choose_sources`), and the head is published with that choice. ``protosam3d``
serves it from its next request.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import nibabel as nib
import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import MeanDice, StatsHandler, from_engine
from monai.inferers import SimpleInferer, SlidingWindowInferer
from monai.transforms import Activationsd, AsDiscreted, Compose, MapTransform
from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.basic_train import BasicTrainTask, Context

from lib.prompts.simulation import dice
from lib.prototypes.auto import segment_automatically
from lib.prototypes.bank import PrototypeBank
from lib.prototypes.service import PrototypeService
from lib.segmentation.head import HeadStore, SegmentationHead
from lib.segmentation.segresnet import (
    SegResNetConfig,
    augmentation_transforms,
    build_network,
    class_weights,
    cosine_learning_rate,
    loss_function,
    model_space_pair,
    preparation_transforms,
)
from lib.segmentation.sources import NETWORK, PROTOTYPES, choose_sources
from lib.settings import SegmentationTrainSettings
from lib.trainers.datalist import training_datalist
from lib.trainers.run_control import TimeBudget, held_out_split, run_alone

logger = logging.getLogger(__name__)


class NoTrainingData(ValueError):
    """No usable final label in the datastore."""


class LoadSegmentationPaird(MapTransform):
    """``{"image": path, "label": path, "values": {voxel value: channel}}`` -> model-space ``image`` and ``label``
    (1, X, Y, Z), the label in output channels."""

    def __init__(self, spacing: float):
        super().__init__(keys=["image", "label"])
        self.spacing = spacing

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        return model_space_pair(data["image"], data["label"], self.spacing, data["values"])


def channel_counts(datalist: list[dict[str, Any]], channels: int) -> np.ndarray:
    """Voxels of each output channel over the datalist's labels (their ``values`` map voxel values to channels)."""
    counts = np.zeros(channels, dtype=np.int64)
    for item in datalist:
        voxels = np.clip(np.rint(np.asarray(nib.load(item["label"]).dataobj)), 0, None).astype(np.int64)
        per_value = np.bincount(voxels.ravel())
        for value, count in enumerate(per_value):
            counts[item["values"].get(value, 0)] += count
    return counts


class SegmentationTrain(BasicTrainTask):
    """Trains a fresh SegResNet for ``max_minutes`` and publishes it to a :class:`HeadStore` with the source of
    each class."""

    def __init__(self, model_dir: str, heads: HeadStore, prototypes: PrototypeService, spacing: float,
                 defaults: dict[str, Any] | None = None,
                 description: str = "Train a SegResNet on saved final labels for protosam3d's large classes"):
        self.heads = heads
        self.prototypes = prototypes
        self.spacing = spacing
        self.outcome: dict[str, Any] = {}
        super().__init__(
            model_dir=model_dir,
            description=description,
            config=dict(defaults or SegmentationTrainSettings().options()),
            amp=False,
            publish_path=None,
            stats_path=os.path.join(model_dir, "train_stats.json"),
            train_save_interval=10**9,  # the published head is the record; no periodic checkpoints
            key_metric_filename="segmentation_best.pt",
            final_filename="segmentation_final.pt",
            n_saved=1,
            labels=prototypes.app_labels,
            tracking=None,
        )

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            self.outcome = {}
            return {**super(SegmentationTrain, self).__call__(request, datastore), "publication": self.outcome}
        return run_alone(self._model_dir, run)

    # data
    def pre_process(self, request: dict[str, Any], datastore: Datastore) -> list[dict[str, Any]]:
        self.prototypes.sync()
        channels = self.prototypes.label_map()
        datalist = training_datalist(datastore, channels)
        if not datalist:
            raise NoTrainingData("No usable final labels to train on: save a final label (labels/final) first")
        for item in datalist:
            item["values"] = {value: channels[name] for name, value in item["classes"].items()}
        request["channels"] = channels
        logger.info("Segmentation head on %d final labels: %s", len(datalist), [d["id"] for d in datalist])
        return datalist

    def partition_datalist(self, context: Context, shuffle: bool = False) -> tuple[list, list]:
        """Training labels only: the held-out ones (``context.held_out``) choose the sources when the run ends,
        on the stored grid, instead of MONAI Label's per-epoch validation."""
        request = context.request
        train, context.held_out = held_out_split(context.datalist, float(request["val_split"]),
                                                 int(request["seed"]))
        return train, []

    def config_of(self, request: dict[str, Any]) -> SegResNetConfig:
        return SegResNetConfig(init_filters=int(request["init_filters"]), crop=int(request["crop"]),
                               crops_per_step=int(request["crops_per_step"]), learning_rate=float(request["lr"]),
                               seed=int(request["seed"]))

    def output_channels(self, request: dict[str, Any]) -> int:
        return max(request["channels"].values()) + 1

    def train_pre_transforms(self, context: Context) -> Compose:
        config, classes = self.config_of(context.request), self.output_channels(context.request)
        transforms = [LoadSegmentationPaird(self.spacing), *preparation_transforms(config, classes),
                      *augmentation_transforms(config, classes)]
        return Compose(transforms).set_random_state(seed=config.seed)

    def train_data_loader(self, context: Context, num_workers: int = 0, shuffle: bool = True) -> Any:
        """MONAI Label's loader, made after seeding torch's global generator: MONAI's loader seeds the crops and
        augmentations from it and the shuffle draws from it, so without this they depended on what the process had
        drawn before the run (two runs of the same request already differed at the first step)."""
        torch.manual_seed(int(context.request["seed"]))
        return super().train_data_loader(context, num_workers, shuffle)

    def train_post_transforms(self, context: Context) -> list:
        classes = self.output_channels(context.request)
        return [Activationsd(keys="pred", softmax=True),
                AsDiscreted(keys=("pred", "label"), argmax=(True, False), to_onehot=(classes, classes))]

    def val_pre_transforms(self, context: Context) -> list:
        return []

    # network and optimisation
    def network(self, context: Context) -> torch.nn.Module:
        config = self.config_of(context.request)
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            return build_network(self.output_channels(context.request), config.init_filters)

    def optimizer(self, context: Context) -> torch.optim.Optimizer:
        return torch.optim.Adam(context.network.parameters(), lr=float(context.request["lr"]), weight_decay=1e-5)

    def loss_function(self, context: Context) -> torch.nn.Module:
        """:func:`lib.segmentation.segresnet.loss_function`, weighted by the training labels' class voxels (the
        held-out labels are not counted)."""
        counts = channel_counts(context.train_datalist, self.output_channels(context.request))
        context.class_weights = class_weights(counts)  # published with the head (its probabilities' prior)
        return loss_function(context.class_weights)

    def lr_scheduler_handler(self, context: Context) -> None:
        return None  # cosine over the time budget (:class:`CosineOverBudget`)

    def load_path(self, output_dir: str, pretrained: bool = True) -> None:
        return None  # every run starts from fresh weights

    def train_inferer(self, context: Context) -> SimpleInferer:
        return SimpleInferer()

    def val_inferer(self, context: Context) -> SlidingWindowInferer:
        return SlidingWindowInferer(roi_size=(int(context.request["infer_window"]),) * 3, mode="gaussian")

    def train_handlers(self, context: Context) -> list:
        if context.local_rank != 0:
            return []
        return [StatsHandler(tag_name="train_loss", output_transform=from_engine(["loss"], first=True))]

    def train_key_metric(self, context: Context) -> dict[str, MeanDice]:
        return {"train_dice": MeanDice(output_transform=from_engine(["pred", "label"]), include_background=False)}

    def finalize(self, context: Context) -> None:
        super().finalize(context)
        budget = TimeBudget(float(context.request["max_minutes"]))
        context.trainer.add_event_handler(Events.ITERATION_STARTED, CosineOverBudget(context, budget))
        context.trainer.add_event_handler(Events.ITERATION_COMPLETED, budget)
        if context.local_rank == 0:
            publisher = HeadPublisher(self.heads, self.prototypes, self.config_of(context.request), context,
                                      self.outcome)
            context.trainer.add_event_handler(Events.COMPLETED, publisher)


class CosineOverBudget:
    """Sets the learning rate from the share of the run done, by time or by epochs, whichever is further (cosine
    to 5 %, :func:`lib.segmentation.segresnet.cosine_learning_rate`)."""

    def __init__(self, context: Context, budget: TimeBudget):
        self.optimizer = context.optimizer
        self.initial = float(context.request["lr"])
        self.budget = budget

    def __call__(self, engine: Engine) -> None:
        state = engine.state
        by_epochs = (state.iteration - 1) / max(state.max_epochs * (state.epoch_length or 1), 1)
        for group in self.optimizer.param_groups:
            group["lr"] = cosine_learning_rate(self.initial, max(self.budget.fraction(), by_epochs))


class HeadPublisher:
    """When training ends: held-out Dice per class of the network and of the training labels' prototypes, the
    source of each class, and the head published with them."""

    def __init__(self, heads: HeadStore, prototypes: PrototypeService, config: SegResNetConfig, context: Context,
                 outcome: dict[str, Any]):
        self.heads = heads
        self.prototypes = prototypes
        self.config = config
        self.context = context
        self.outcome = outcome

    def training_bank(self) -> PrototypeBank:
        """The app's prototypes of the training labels only (a copy in memory)."""
        self.prototypes.sync()
        return self.prototypes.bank.subset({item["id"] for item in self.context.train_datalist})

    def validate(self, head: SegmentationHead, labels: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
        """``{class: {"segresnet": Dice, "prototypes": Dice, "volumes": n}}`` over the ``labels`` that hold the
        class, on the stored grid."""
        channels: dict[str, int] = head.metadata["channels"]
        bank = self.training_bank()
        names = bank.class_names()
        per_class, background = bank.prototypes(names) if names else ([], None)
        scores: dict[str, dict[str, list[float]]] = {}
        for item in labels:
            volume = self.prototypes.volumes.get(item["image"])
            truth = np.asarray(nib.load(item["label"]).dataobj)
            network = head.segment(volume).numpy()
            automatic = (segment_automatically(self.prototypes.predictor, volume,
                                               dict(zip(names, per_class, strict=True)), background, channels)
                         .label.numpy() if names else np.zeros_like(network))
            for name, value in item["classes"].items():
                target = truth == value
                if not target.any():
                    continue
                entry = scores.setdefault(name, {NETWORK: [], PROTOTYPES: []})
                entry[NETWORK].append(dice(network == channels[name], target))
                entry[PROTOTYPES].append(dice(automatic == channels[name], target))
        return {name: {NETWORK: round(float(np.mean(s[NETWORK])), 4),
                       PROTOTYPES: round(float(np.mean(s[PROTOTYPES])), 4), "volumes": len(s[NETWORK])}
                for name, s in sorted(scores.items())}

    def __call__(self, trainer: Engine) -> None:
        context = self.context
        state = {k: v.detach().clone() for k, v in context.network.state_dict().items()}
        channels = context.request["channels"]
        trained = sorted({name for item in context.train_datalist for name in item["classes"]})
        metadata: dict[str, Any] = {
            "channels": channels, "init_filters": self.config.init_filters,
            "infer_window": int(context.request["infer_window"]),
            "class_weights": [round(float(w), 4) for w in context.class_weights],
            "trained_classes": trained,
            "trained_on": [{"id": item["id"], "label_ts": item.get("label_ts")} for item in context.train_datalist],
            "validated_on": [{"id": item["id"], "label_ts": item.get("label_ts")} for item in context.held_out],
            "iterations": trainer.state.iteration, "epochs": trainer.state.epoch,
            "train_dice": round(float(trainer.state.metrics.get("train_dice", float("nan"))), 4),
            "seconds": round(time.time() - context.start_ts, 1),
            "prototype_model_version": self.prototypes.bank.model_version,
            "config": dict(vars(self.config)),
        }
        head = SegmentationHead(context.network.eval(), {**metadata, "version": 0})
        # nothing held out (a single label, or val_split 0): both sources are checked on the training labels; both
        # were fitted to them, so this cannot say which generalises better, but it refuses a network that learned
        # nothing
        validation = self.validate(head, context.held_out or context.train_datalist)
        metadata["validation"] = validation
        metadata["validated_on_training_labels"] = not context.held_out
        metadata["sources"] = choose_sources(validation, set(trained), sorted(channels))
        version = self.heads.publish(state, metadata)
        self.outcome.update(published=version, sources=metadata["sources"], validation=validation)
        logger.info("Segmentation head version %d published: sources %s, held-out Dice %s", version,
                    metadata["sources"], validation)
