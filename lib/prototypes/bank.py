"""The prototype bank: per saved label, mask-level prototypes of its classes and of the background.

Each labelled volume contributes, for every class it contains, up to ``PER_VOLUME`` prototypes (k-means over the
features of the cells mostly inside the class, weighted by how much of each cell the class fills) and a few
background prototypes. Entries are kept per image with the label time stamp and the model version they were
computed with, persisted next to the model, updated one image at a time and recomputed when the weights change.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from lib.engine.predictor import InteractivePredictor
from lib.prototypes.features import cell_features, cell_fractions, cover_crops
from lib.transforms.preprocess import ModelVolume, load_model_label

logger = logging.getLogger(__name__)

PER_VOLUME = 2  # prototypes per class per volume
BACKGROUND_PER_VOLUME = 4
INSIDE = 0.5  # a cell belongs to a class when the class fills at least this fraction of it
OUTSIDE = 0.05  # ... and to the background when every class fills less than this
BANK_FORMAT = "seg3d-prototypes-1"


SOFT_ASSIGNMENT_TEMPERATURE = 0.05  # of the soft k-means over cosine similarities


def kmeans(points: torch.Tensor, weights: torch.Tensor, k: int, iterations: int = 15) -> torch.Tensor:
    """Weighted soft spherical k-means of unit vectors (N, C): k unit centres.

    Every step is a smooth function of the points: the start splits the weighted mean direction along the leading
    principal axes, and assignments are a softmax over cosine similarities. So features that differ by float
    rounding (another CPU, another thread count) give prototypes that differ by as little, where hard arg-max
    assignments and a farthest-point start picked other points and other prototypes.
    """
    k = min(k, len(points))
    w = weights.double() / weights.double().sum().clamp(min=1e-12)
    x = points.double()
    mean = (w[:, None] * x).sum(0)
    centred = x - mean
    values, vectors = torch.linalg.eigh((w[:, None] * centred).T @ centred)
    starts = [mean]
    if k > 1:  # mean + and - each leading axis, scaled by its spread
        spread = [vectors[:, -1 - i // 2] * values[-1 - i // 2].clamp(min=0).sqrt() for i in range(k)]
        starts = [mean + axis if i % 2 == 0 else mean - axis for i, axis in enumerate(spread)]
    centers = torch.nn.functional.normalize(torch.stack(starts), dim=1)
    for _ in range(iterations):
        responsibility = torch.softmax(x @ centers.T / SOFT_ASSIGNMENT_TEMPERATURE, dim=1) * w[:, None]
        centers = torch.nn.functional.normalize(responsibility.T @ x, dim=1)
    return centers.to(points.dtype)


@dataclass
class ImageEntry:
    """What one saved label contributes."""

    label_ts: object
    classes: dict[str, torch.Tensor]  # name -> (k, C) unit prototypes
    background: torch.Tensor  # (k, C)


def image_entry(predictor: InteractivePredictor, volume: ModelVolume, label_path: str,
                classes: dict[str, int], label_ts: object, spacing: float) -> ImageEntry:
    """Prototypes of one labelled volume (``classes`` maps names to voxel values of the label)."""
    label = load_model_label(label_path, spacing)
    if tuple(label.shape) != tuple(volume.image.shape[1:]):
        raise ValueError(f"label grid {tuple(label.shape)} differs from the image's {tuple(volume.image.shape[1:])}")
    masks = {name: label == value for name, value in classes.items() if bool((label == value).any())}
    for name in sorted(set(classes) - set(masks)):
        logger.warning("Skipping class %r of %s: the label has no voxel of value %d", name, label_path, classes[name])
    unnamed = sorted(set(torch.unique(label).tolist()) - {0} - set(classes.values()))
    if unnamed:
        logger.warning("Skipping values %s of %s: no class name for them in label_info or the app", unnamed, label_path)
    size = predictor.model()[0].img_size
    features, fractions = [], {name: [] for name in masks}
    for crop in cover_crops(tuple(label.shape), size):
        features.append(cell_features(predictor, volume, crop).features)
        for name, mask in masks.items():
            fractions[name].append(cell_fractions(mask, crop))
    features = torch.cat(features)
    protos = {}
    for name in masks:
        fraction = torch.cat(fractions[name])
        inside = fraction >= INSIDE
        if not inside.any():  # a thin or small class: its best-covered cells
            inside = fraction >= fraction.max() * 0.5
        protos[name] = kmeans(features[inside], fraction[inside], PER_VOLUME)
    any_class = torch.stack([torch.cat(f) for f in fractions.values()]).amax(0) if masks else torch.zeros(len(features))
    outside = any_class < OUTSIDE
    background = kmeans(features[outside], torch.ones(int(outside.sum())), BACKGROUND_PER_VOLUME)
    return ImageEntry(label_ts, protos, background)


class PrototypeBank:
    """Entries per image id for one model version, persisted at ``path`` (None: in memory only); thread-safe."""

    def __init__(self, path: Path | None):
        self.path = path
        self.lock = threading.RLock()
        self.model_version: str | None = None
        self.entries: dict[str, ImageEntry] = {}
        self.load_error: str | None = None
        self._load()

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            content = torch.load(self.path, map_location="cpu", weights_only=False)
            if content.get("format") != BANK_FORMAT:
                raise ValueError("not a seg3d prototype file")
            self.model_version = content["model_version"]
            self.entries = {k: ImageEntry(**v) for k, v in content["entries"].items()}
        except Exception as e:  # a damaged file is reported and rebuilt from the saved labels
            self.load_error = f"{type(e).__name__}: {e}"
            logger.error("Prototype file %s is unreadable (%s); it will be rebuilt from the saved labels",
                         self.path, self.load_error)
            self.model_version, self.entries = None, {}

    def subset(self, image_ids: set[str]) -> PrototypeBank:
        """A copy in memory, never saved, with the entries of ``image_ids`` only."""
        with self.lock:
            bank = PrototypeBank(None)
            bank.model_version = self.model_version
            bank.entries = {image: entry for image, entry in self.entries.items() if image in image_ids}
        return bank

    def save(self) -> None:
        """Atomically (temporary file, then rename)."""
        if self.path is None:
            raise ValueError("this prototype bank is kept in memory only")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        content = {"format": BANK_FORMAT, "model_version": self.model_version,
                   "entries": {k: vars(v) for k, v in self.entries.items()}}
        torch.save(content, tmp)
        os.replace(tmp, self.path)

    def class_names(self) -> list[str]:
        return sorted({name for entry in self.entries.values() for name in entry.classes})

    def prototypes(self, names: list[str]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per requested class its prototypes (k_i, C), and all background prototypes (K, C)."""
        per_class = [torch.cat([e.classes[n] for e in self.entries.values() if n in e.classes]) for n in names]
        background = torch.cat([e.background for e in self.entries.values()])
        return per_class, background
