"""``sam3d_uncertainty``: how unsure the model is about a volume's automatic result, from the model that serves each
class: the published head's class probabilities for the classes in its channels, jittered automatic predictions
for the classes the prototypes alone know (all of them before a head exists)."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from fastapi import HTTPException
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod

from lib.engine.predictor import InteractivePredictor
from lib.prototypes.auto import class_logits
from lib.prototypes.service import PrototypeService
from lib.segmentation.head import HeadStore
from lib.segmentation.resample import to_original_probabilities
from lib.segmentation.served import ServedSegmentation, serve_automatically
from lib.transforms.preprocess import ModelVolume, VolumeCache

logger = logging.getLogger(__name__)

SCORE_KEY = "sam3d_uncertainty"
PLAUSIBLE = 0.05  # voxels where the mean foreground probability exceeds this count towards a class's score


JITTER_UNIT = "predictive entropy of jittered prototype predictions, bits, max over classes"
HEAD_UNIT = ("normalised predictive entropy of the head's class probabilities averaged over the image and its "
             "left-right mirror (classes in its channels; at least 1 - their probability of a class the prototypes "
             "serve); predictive entropy of jittered prototype predictions, bits, elsewhere")


@dataclass
class Uncertainty:
    """A per-voxel uncertainty map (0 to 1, ``unit``) on the stored image's grid and its summaries: ``per_class``
    and their mean ``score``."""

    voxels: torch.Tensor
    score: float
    per_class: dict[str, float]
    unit: str = JITTER_UNIT


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-6, 1 - 1e-6)
    return -(p * torch.log2(p) + (1 - p) * torch.log2(1 - p))


def jittered_probabilities(predictor: InteractivePredictor, volume: ModelVolume, per_class: dict[str, torch.Tensor],
                           background: torch.Tensor, samples: int, seed: int = 0
                           ) -> Iterator[tuple[int, str, torch.Tensor]]:
    """``samples`` automatic predictions with jittered prompts, one class at a time: (sample, class name, foreground
    probability on the stored image's grid, zeros where the class is not found)."""
    rng = np.random.default_rng(seed)
    for sample in range(samples):
        for name, logits, _ in class_logits(predictor, volume, per_class, background, rng=rng):
            yield sample, name, torch.zeros(volume.original_shape) if logits is None else torch.sigmoid(logits)


def soft_dice_error(p: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - soft Dice between probabilities ``p`` and a mask: the mask's expected error if ``p`` were right."""
    total = float(p.sum() + mask.sum())
    return 1.0 - 2.0 * float((p * mask).sum()) / total if total else 0.0


def summarise(mean: dict[str, torch.Tensor], shape: tuple[int, ...]) -> Uncertainty:
    """The entropy map and scores of per-class mean foreground probabilities (each class: its mean entropy where its
    mean probability exceeds :data:`PLAUSIBLE`)."""
    entropy = torch.zeros(shape)
    per_class = {}
    for name, p in mean.items():
        class_entropy = binary_entropy(p)
        plausible = p > PLAUSIBLE
        per_class[name] = round(float(class_entropy[plausible].mean()) if plausible.any() else 0.0, 4)
        entropy = torch.maximum(entropy, class_entropy)
    return Uncertainty(entropy, round(float(np.mean(list(per_class.values()))), 4), per_class)


def volume_uncertainty(predictor: InteractivePredictor, volume: ModelVolume, per_class: dict[str, torch.Tensor],
                       background: torch.Tensor, samples: int, seed: int = 0) -> Uncertainty:
    """``samples`` predictions with jittered prompts; entropy of the mean foreground probability per class."""
    mean: dict[str, torch.Tensor] = {}
    for _, name, probability in jittered_probabilities(predictor, volume, per_class, background, samples, seed):
        mean[name] = mean.get(name, 0) + probability / samples
    return summarise(mean, volume.original_shape)


def normalised_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """Entropy of class distributions (channels first), divided by its maximum: 0 (sure) to 1 (uniform)."""
    p = probabilities.clamp_min(1e-8)
    return -(p * torch.log(p)).sum(0) / float(np.log(probabilities.shape[0]))


def head_uncertainty(served: ServedSegmentation, volume: ModelVolume, label_map: dict[str, int],
                     names: list[str]) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """From the head's class probabilities averaged with its pass on the mirrored image
    (:meth:`lib.segmentation.head.SegmentationHead.mirror_averaged`): per voxel their :func:`normalised_entropy`,
    and per class of ``names`` in the head's channels the expected error of its served mask (:func:`soft_dice_error`
    of the probabilities without the loss's class weights, ``SegmentationHead.prior_corrected``, so that it
    estimates the error in level and their mean the volume's 1 - mean Dice). Where a class in the head's channels is
    served by its prototypes, a voxel's value is at least 1 - the head's probability of that class. Also returned:
    the voxels whose served label has no channel (a class newer than the head), where the map says nothing."""
    channels: dict[str, int] = served.head.metadata["channels"]
    probabilities = to_original_probabilities(volume, served.head.mirror_averaged(volume, served.probabilities))
    label = served.label
    voxels = normalised_entropy(probabilities)
    unweighted = served.head.prior_corrected(probabilities)
    uncovered = torch.zeros(label.shape, dtype=torch.bool)
    per_class = {}
    for name, value in label_map.items():
        mask = label == value
        if name not in channels:
            uncovered |= mask
            continue
        if name not in served.by_network:
            voxels[mask] = torch.maximum(voxels[mask], 1.0 - probabilities[channels[name]][mask])
        if name in names:
            per_class[name] = round(soft_dice_error(unweighted[channels[name]], mask.float()), 4)
    return voxels, per_class, uncovered


def served_uncertainty(service: PrototypeService, heads: HeadStore | None, volume: ModelVolume, names: list[str],
                       samples: int, seed: int = 0) -> Uncertainty:
    """The uncertainty of the automatic result ``protosam3d`` serves for ``names``: where a published head serves
    classes, :func:`head_uncertainty` for the classes in its channels; jittered prototype predictions
    (:func:`volume_uncertainty`) for the others, and for all of them before there is a head."""
    current = heads.load() if heads else None
    served = serve_automatically(service, current, volume, names) if current else None
    if served is None or served.probabilities is None:
        per_class, background = service.bank.prototypes(names)
        return volume_uncertainty(service.predictor, volume, dict(zip(names, per_class, strict=True)), background,
                                  samples, seed)
    voxels, scores, uncovered = head_uncertainty(served, volume, service.label_map(), names)
    others = [name for name in names if name not in scores]
    if others:
        per_class, background = service.bank.prototypes(others)
        jittered = volume_uncertainty(service.predictor, volume, dict(zip(others, per_class, strict=True)),
                                      background, samples, seed)
        voxels[uncovered] = jittered.voxels[uncovered]
        scores.update(jittered.per_class)
    return Uncertainty(voxels, round(float(np.mean(list(scores.values()))), 4), dict(sorted(scores.items())),
                       HEAD_UNIT)


class Sam3DUncertaintyScoring(ScoringMethod):
    """Scores the unlabeled volumes (``image info[sam3d_uncertainty]``), recomputing only stale or missing ones."""

    def __init__(self, prototypes: PrototypeService, volumes: VolumeCache, samples: int = 4,
                 heads: HeadStore | None = None):
        super().__init__("Uncertainty of the automatic result, per volume and class (the head's probabilities where "
                         "it serves; else entropy of jittered prototype predictions)")
        self.prototypes = prototypes
        self.volumes = volumes
        self.samples = samples
        self.heads = heads

    def signature(self) -> str:
        """What a score depends on: the model version, the labels the prototypes come from and the head."""
        bank = self.prototypes.bank
        entries = sorted((k, str(v.label_ts)) for k, v in bank.entries.items())
        head = self.heads.load() if self.heads else None
        published = (head.version, head.metadata.get("published")) if head else None
        return hashlib.sha256(repr((bank.model_version, entries, published)).encode()).hexdigest()[:16]

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        self.prototypes.sync()
        names = self.prototypes.bank.class_names()
        if not names:
            logger.info("Nothing scored: no prototypes yet (save a final label first)")
            return {"scored": 0, "skipped": {}, "reason": "no prototypes yet"}
        signature = self.signature()
        scored, skipped = 0, {}
        for image in sorted(datastore.get_unlabeled_images()):
            if (datastore.get_image_info(image).get(SCORE_KEY) or {}).get("signature") == signature:
                continue
            try:
                volume = self.volumes.get(datastore.get_image_uri(image))
            except HTTPException as e:
                skipped[image] = e.detail
                logger.warning("Not scoring %s: %s", image, e.detail)
                continue
            start = time.perf_counter()
            result = served_uncertainty(self.prototypes, self.heads, volume, names, self.samples)
            datastore.update_image_info(image, {SCORE_KEY: {
                "score": result.score,
                "per_class": result.per_class,
                "signature": signature,
                "model_version": self.prototypes.bank.model_version,
                "samples": self.samples,
                "unit": result.unit,
                "seconds": round(time.perf_counter() - start, 1),
                "ts": int(time.time()),
            }})
            scored += 1
            logger.info("Scored %s: %.4f %s", image, result.score, result.per_class)
        return {"scored": scored, "skipped": skipped, "signature": signature}
