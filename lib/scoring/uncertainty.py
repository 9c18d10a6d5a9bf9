"""``sam3d_uncertainty``: how unsure the model is about a volume, from jittered automatic predictions."""

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
from lib.transforms.preprocess import ModelVolume, VolumeCache

logger = logging.getLogger(__name__)

SCORE_KEY = "sam3d_uncertainty"
PLAUSIBLE = 0.05  # voxels where the mean foreground probability exceeds this count towards a class's score


@dataclass
class Uncertainty:
    """Per-voxel predictive entropy (bits, max over classes) on the stored image's grid and its summaries."""

    entropy: torch.Tensor
    score: float  # mean over classes of each class's mean entropy in its plausible region
    per_class: dict[str, float]


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


def summarise(mean: dict[str, torch.Tensor], shape: tuple[int, ...]) -> Uncertainty:
    """The entropy map and scores of per-class mean foreground probabilities."""
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


class Sam3DUncertaintyScoring(ScoringMethod):
    """Scores the unlabeled volumes (``image info[sam3d_uncertainty]``), recomputing only stale or missing ones."""

    def __init__(self, prototypes: PrototypeService, volumes: VolumeCache, samples: int = 4):
        super().__init__("Uncertainty of jittered automatic 3D SAM predictions (entropy, per volume and class)")
        self.prototypes = prototypes
        self.volumes = volumes
        self.samples = samples

    def signature(self) -> str:
        """What a score depends on: the model version and the labels the prototypes come from."""
        bank = self.prototypes.bank
        entries = sorted((k, str(v.label_ts)) for k, v in bank.entries.items())
        return hashlib.sha256(repr((bank.model_version, entries)).encode()).hexdigest()[:16]

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        self.prototypes.sync()
        names = self.prototypes.bank.class_names()
        if not names:
            logger.info("Nothing scored: no prototypes yet (save a final label first)")
            return {"scored": 0, "skipped": {}, "reason": "no prototypes yet"}
        per_class, background = self.prototypes.bank.prototypes(names)
        prototypes = dict(zip(names, per_class, strict=True))
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
            result = volume_uncertainty(self.prototypes.predictor, volume, prototypes, background, self.samples)
            datastore.update_image_info(image, {SCORE_KEY: {
                "score": result.score,
                "per_class": result.per_class,
                "signature": signature,
                "model_version": self.prototypes.bank.model_version,
                "samples": self.samples,
                "seconds": round(time.perf_counter() - start, 1),
                "ts": int(time.time()),
            }})
            scored += 1
            logger.info("Scored %s: %.4f %s", image, result.score, result.per_class)
        return {"scored": scored, "skipped": skipped, "signature": signature}
