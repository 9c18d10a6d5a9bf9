"""The automatic result as ``protosam3d`` serves it: each class from its source (the published head's network or
the prototypes, :mod:`lib.segmentation.sources`), one label map on the stored grid. The uncertainty scoring reads
the same result."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lib.prototypes.auto import segment_automatically
from lib.prototypes.service import PrototypeService
from lib.segmentation.head import SegmentationHead
from lib.segmentation.sources import combine
from lib.transforms.preprocess import ModelVolume


@dataclass
class ServedSegmentation:
    """One volume's automatic result: ``label`` (values of the label map), what each prototype class's prompts found
    (``found``, ``missing``), the classes the head's network served and the head's class probabilities (model
    space, (channels, X, Y, Z); None when the network served no class)."""

    label: torch.Tensor
    found: dict[str, dict]
    missing: list[str]
    by_network: list[str]
    head: SegmentationHead | None
    probabilities: torch.Tensor | None


def serve_automatically(service: PrototypeService, head: SegmentationHead | None, volume: ModelVolume,
                        names: list[str], threshold: float = 0.5,
                        clicks: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> ServedSegmentation:
    """Segment ``names`` in ``volume``: the head's network for the classes it serves (unless the class comes with
    ``clicks``), the prototypes for the rest, combined by :func:`lib.segmentation.sources.combine`."""
    clicks = clicks or {}
    label_map = service.label_map()
    served = set(head.served_classes()) if head else set()
    by_network = [name for name in names if name in served and name not in clicks]
    by_prototypes = [name for name in names if name not in by_network]
    per_class, background = service.bank.prototypes(by_prototypes)
    result = segment_automatically(service.predictor, volume, dict(zip(by_prototypes, per_class, strict=True)),
                                   background, label_map, threshold, clicks)
    if not by_network:
        return ServedSegmentation(result.label, result.found, result.missing, [], head, None)
    probabilities = head.probabilities(volume)
    new = [name for name in by_prototypes if name not in head.metadata["trained_classes"]]
    label = combine(head.to_labels(volume, probabilities), head.metadata["channels"], by_network, result.label,
                    label_map, new)
    for name in by_network:
        result.found[name] = {"voxels": int((label == label_map[name]).sum())}
    for name in by_prototypes:
        if name in result.found:
            result.found[name]["voxels"] = int((label == label_map[name]).sum())
    return ServedSegmentation(label, result.found, result.missing, by_network, head, probabilities)
