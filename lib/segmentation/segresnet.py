"""A MONAI SegResNet trained from scratch on saved labels: the network, its model-space data and transforms, and
sliding-window inference. The app's ``segmentation`` trainer (:mod:`lib.trainers.segmentation`) trains and publishes
it; :func:`train` is the plain time-budgeted loop ``bench/auto.py`` measures ``protosam3d`` against.

Training and inference run in the app's model space (RAS, ``MODEL_SPACING_MM``, z-normalised over the non-zero
voxels: :func:`lib.transforms.preprocess.load_model_volume`); the labels are the arg-max of the class probabilities
interpolated onto the stored grid (:mod:`lib.segmentation.resample`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.networks.nets import SegResNet
from monai.transforms import (
    ClassesToIndicesd,
    Compose,
    RandCropByLabelClassesd,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    SpatialPadd,
)

from lib.model.fast_conv import use_fast_convolutions
from lib.segmentation.resample import to_original_argmax
from lib.transforms.preprocess import ModelVolume, load_model_label, load_model_volume


@dataclass(frozen=True)
class SegResNetConfig:
    """Network size, crops and optimiser of the baseline (defaults sized for a few CPU minutes)."""

    init_filters: int = 8
    crop: int = 64  # training crop edge, model-space voxels
    crops_per_step: int = 2  # batch: crops cut from one volume per optimiser step
    learning_rate: float = 2e-3  # Adam, cosine-decayed over the time budget to 5 % of it
    weight_decay: float = 1e-5
    # Sliding-window edge at inference; None: the training crop. Larger windows are cheaper but change the group-norm
    # statistics the network saw in training (on a synthetic cube: Dice 0.99 at the crop size, 0.76 at twice it).
    infer_roi: int | None = None
    infer_overlap: float = 0.25
    seed: int = 0


@dataclass
class TrainedSegResNet:
    """A trained network and what describes the run: optimiser steps, seconds, and the loss curve."""

    network: SegResNet
    config: SegResNetConfig
    classes: int  # output channels: background plus labelled classes
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        window = self.losses[-20:] or [float("nan")]
        return {
            "steps": self.steps,
            "train_seconds": round(self.seconds, 1),
            "crops_seen": self.steps * self.config.crops_per_step,
            "first_loss": round(self.losses[0], 4) if self.losses else None,
            "last_loss_mean20": round(float(np.mean(window)), 4),
            "parameters": sum(p.numel() for p in self.network.parameters()),
            "init_filters": self.config.init_filters,
            "crop": self.config.crop,
            "crops_per_step": self.config.crops_per_step,
            "learning_rate": self.config.learning_rate,
            "infer_roi": self.config.infer_roi or self.config.crop,
            "seed": self.config.seed,
        }


def build_network(classes: int, init_filters: int = 8) -> SegResNet:
    """A 3D SegResNet with one input channel and ``classes`` output channels (background included), its
    convolutions on faster CPU kernels at inference (:mod:`lib.model.fast_conv`)."""
    network = SegResNet(spatial_dims=3, in_channels=1, out_channels=classes, init_filters=init_filters)
    return use_fast_convolutions(network)


MAX_CLASS_WEIGHT = 10.0


def class_weights(counts: Sequence[int]) -> torch.Tensor:
    """Cross-entropy weights per output channel from its voxel count in the training labels: the median count over
    the channel's, between 1 and :data:`MAX_CLASS_WEIGHT` (1 for a channel without voxels). A rare class gets up to
    10 times the weight of the common ones. Measured on the sample (4 minutes, about 250 steps, seed 0, held-out
    volumes): without weights the network never finds the lateral ventricles (0.2 % of the voxels; Dice 0.00, their
    probability stays at 0.13 everywhere); with these (1, 1.36, 1, 10) it reaches 0.80 from 3 labels and 0.83 from
    one, while grey matter falls from 0.87 to 0.82-0.84. The square root of the same ratio (7.6 for the ventricles)
    found none of them either: how fast a rare class is learned depends steeply on its weight."""
    counts = np.asarray(counts, dtype=np.float64)
    weights = np.ones(len(counts))
    present = counts > 0
    if present.any():
        weights[present] = np.clip(np.median(counts[present]) / counts[present], 1.0, MAX_CLASS_WEIGHT)
    return torch.as_tensor(weights, dtype=torch.float32)


def loss_function(weights: torch.Tensor) -> DiceCELoss:
    """Dice over each batch's crops together (a crop without a class does not reward predicting none of it) plus
    cross-entropy weighted by :func:`class_weights`."""
    return DiceCELoss(to_onehot_y=True, softmax=True, batch=True, weight=weights)


def model_space_pair(image_path: str, label_path: str, spacing: float,
                     values: dict[int, int] | None = None) -> dict[str, torch.Tensor]:
    """``{"image": (1, X, Y, Z) float, "label": (1, X, Y, Z) float}`` on the model-space grid; ``values`` maps the
    label file's voxel values to output channels (others become background), default: kept as they are."""
    image = load_model_volume(image_path, spacing).image
    label = load_model_label(label_path, spacing)
    if tuple(label.shape) != tuple(image.shape[1:]):
        raise ValueError(f"{label_path}: label grid {tuple(label.shape)} differs from image {tuple(image.shape[1:])}")
    if values is not None:
        mapped = torch.zeros_like(label)
        for value, channel in values.items():
            mapped[label == value] = channel
        label = mapped
    return {"image": image, "label": label[None].float()}


def cosine_learning_rate(initial: float, fraction: float) -> float:
    """The rate after ``fraction`` (0 to 1) of the budget: cosine decay from ``initial`` to 5 % of it."""
    return initial * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(max(fraction, 0.0), 1.0))))


def preparation_transforms(config: SegResNetConfig, classes: int) -> list:
    """Pad a pair to at least one crop and add the voxel indices of each class (deterministic: computed once and
    cached, not per step)."""
    return [
        SpatialPadd(keys=["image", "label"], spatial_size=(config.crop,) * 3),
        ClassesToIndicesd(keys="label", num_classes=classes, indices_postfix="_indices"),
    ]


def augmentation_transforms(config: SegResNetConfig, classes: int) -> list:
    """Class-balanced random crops (every class, background included, equally often at the crop centre), a
    left-right flip (the volumes are RAS) and intensity scale, shift and noise; input from
    :func:`preparation_transforms`."""
    size = (config.crop,) * 3
    return [
        RandCropByLabelClassesd(
            keys=["image", "label"], label_key="label", spatial_size=size, num_classes=classes,
            ratios=[1.0] * classes, num_samples=config.crops_per_step, indices_key="label_indices", warn=False,
        ),
        RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=0),
        RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
        RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
        RandGaussianNoised(keys="image", prob=0.2, std=0.05),
    ]


def train(
    pairs: Sequence[dict[str, torch.Tensor]],
    classes: int,
    seconds: float,
    config: SegResNetConfig = SegResNetConfig(),
    max_steps: int | None = None,
) -> TrainedSegResNet:
    """Train a fresh SegResNet with :func:`loss_function` on model-space ``pairs`` (:func:`model_space_pair`) until
    ``seconds`` of wall clock have passed (checked before each step) or ``max_steps`` steps are done. Each step takes
    ``crops_per_step`` crops of one volume, volumes drawn in turn from a seeded shuffle; one of ``seconds`` and
    ``max_steps`` must be finite.

    ``config.seed`` fixes everything random: the initial weights (drawn under a forked torch generator, so the
    caller's global random state is left alone), the crops and augmentations (the transforms' own random states)
    and the volume order. The network has no dropout, so nothing else draws random numbers."""
    rng = np.random.default_rng(config.seed)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        network = build_network(classes, config.init_filters)
    optimiser = torch.optim.Adam(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    transforms = Compose(augmentation_transforms(config, classes)).set_random_state(seed=config.seed)
    prepare = Compose(preparation_transforms(config, classes))
    prepared = [prepare(dict(pair)) for pair in pairs]
    loss = loss_function(class_weights([sum(len(p["label_indices"][c]) for p in prepared) for c in range(classes)]))
    network.train()
    losses: list[float] = []
    order: list[int] = []
    start = time.perf_counter()
    steps = 0
    while (max_steps is None or steps < max_steps) and (elapsed := time.perf_counter() - start) < seconds:
        if not order:
            order = list(rng.permutation(len(pairs)))
        crops = transforms(dict(prepared[order.pop()]))
        image = torch.stack([c["image"].as_tensor() for c in crops])
        label = torch.stack([c["label"].as_tensor() for c in crops])
        fraction = elapsed / seconds if math.isfinite(seconds) else steps / max(max_steps or 1, 1)
        for group in optimiser.param_groups:
            group["lr"] = cosine_learning_rate(config.learning_rate, fraction)
        optimiser.zero_grad(set_to_none=True)
        value = loss(network(image), label)
        value.backward()
        optimiser.step()
        losses.append(float(value.detach()))
        steps += 1
    network.eval()
    return TrainedSegResNet(network, config, classes, steps, time.perf_counter() - start, losses)


@torch.no_grad()
def predict_model_space(network: torch.nn.Module, image: torch.Tensor, roi: int, overlap: float = 0.25) -> torch.Tensor:
    """Class probabilities (C, X, Y, Z) of a (1, X, Y, Z) model-space image by Gaussian-weighted sliding windows."""
    network.eval()
    logits = sliding_window_inference(image[None], roi_size=(roi,) * 3, sw_batch_size=1, predictor=network,
                                      overlap=overlap, mode="gaussian")
    return torch.softmax(torch.as_tensor(logits)[0], dim=0)


def segment(trained: TrainedSegResNet, volume: ModelVolume) -> torch.Tensor:
    """Class indices on the stored grid of ``volume`` (0 background)."""
    config = trained.config
    probabilities = predict_model_space(trained.network, volume.image, config.infer_roi or config.crop,
                                        config.infer_overlap)
    return to_original_argmax(volume, probabilities)
