"""``protosam3d``: automatic multi-class segmentation of the saved classes, each from its better source: the
prototypes of the saved labels (no training; a new class from one label), or a SegResNet head trained on them
where held-out labels showed it better (:mod:`lib.segmentation.sources`)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monailabel.interfaces.tasks.infer_v2 import InferType

from lib.engine.predictor import InteractivePredictor
from lib.errors import InvalidRequest, NotReady
from lib.infers.base import ModelSpaceInferTask
from lib.prompts.clicks import check_inside, decoded, parse_points
from lib.prompts.geometry import apply_affine, original_to_volume
from lib.prototypes.service import PrototypeService
from lib.scoring.uncertainty import served_uncertainty
from lib.segmentation.head import HeadStore
from lib.segmentation.served import serve_automatically
from lib.segmentation.sources import NETWORK, PROTOTYPES
from lib.transforms.preprocess import ModelVolume, VolumeCache


class ProtoSam3DInfer(ModelSpaceInferTask):
    """Pre-annotates every class the team has saved a final label for, as one label map; ``label_names`` in the
    result names the values (the app's classes plus every class saved labels have added), ``sources`` says which
    source segmented each class (the published head's choice; a class sent with ``clicks`` uses its prototypes).

    Request parameters (all optional):

    - ``classes``: names to segment (list or comma-separated), default all classes with prototypes;
    - ``threshold``: how sure the prototype match must be before it becomes a prompt (0 to 1, default 0.5);
    - ``clicks``: ``{class: {"foreground": [[i, j, k], ...], "background": [...]}}`` extra voxel clicks per class;
    - ``uncertainty``: true returns the voxel uncertainty map of the automatic result instead, in percent, with the
      volume's score (:func:`lib.scoring.uncertainty.served_uncertainty`: the head's probabilities where it serves,
      else the entropy of ``samples`` jittered predictions, default 4).
    """

    def __init__(self, predictor: InteractivePredictor, volumes: VolumeCache, prototypes: PrototypeService,
                 heads: HeadStore | None = None,
                 description: str = "Automatic segmentation of every saved class: prototypes, or a SegResNet trained "
                                    "on the saved labels where it validated better"):
        super().__init__(predictor, volumes, prototypes.app_labels, InferType.SEGMENTATION, description)
        self.prototypes = prototypes
        self.heads = heads

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["labels"] = self.prototypes.label_map()
        info["prototype_classes"] = self.prototypes.bank.class_names()
        head = self.heads.load() if self.heads else None
        info["segmentation_head"] = {"version": head.version, "segresnet_classes": head.served_classes()} if head \
            else None
        return info

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cuda") -> dict:
        volume: ModelVolume = data["volume"]
        self.prototypes.sync()
        available = self.prototypes.bank.class_names()
        if not available:
            raise NotReady("No prototypes yet: save a final label (with label_info names) for at least one volume "
                           "first; protosam3d segments the classes the saved labels contain")
        names = _parse_classes(data.get("classes"), available)
        threshold = _parse_threshold(data.get("threshold", 0.5))
        clicks = _parse_clicks(data.get("clicks"), names, volume)
        label_map = self.prototypes.label_map()
        self.labels = label_map  # MONAI Label reports the task's labels as the result's ``label_names``
        start = time.perf_counter()
        if str(data.get("uncertainty", "")).lower() in ("1", "true", "yes"):
            return self._uncertainty(data, volume, names, start)
        head = self.heads.load() if self.heads else None
        result = serve_automatically(self.prototypes, head, volume, names, threshold, clicks)
        label = result.label
        data[self.output_label_key] = MetaTensor(label, affine=torch.as_tensor(volume.original_affine))
        data[self.output_json_key] = {
            "classes": {name: label_map[name] for name in names},
            "found": result.found,
            "missing": result.missing,
            "sources": {name: NETWORK if name in result.by_network else PROTOTYPES for name in names},
            "segmentation_head_version": head.version if head else None,
            "model_version": self.prototypes.bank.model_version,
            "prototype_volumes": len(self.prototypes.bank.entries),
            "model_ms": round((time.perf_counter() - start) * 1000, 1),
        }
        return data

    def _uncertainty(self, data: dict[str, Any], volume: ModelVolume, names: list[str], start: float) -> dict:
        samples = data.get("samples", 4)
        if not isinstance(samples, int) or isinstance(samples, bool) or not 2 <= samples <= 16:
            raise InvalidRequest(f"'samples' must be an integer from 2 to 16, got {samples!r}")
        result = served_uncertainty(self.prototypes, self.heads, volume, names, samples)
        percent = (result.voxels * 100).round().to(torch.uint8)
        data[self.output_label_key] = MetaTensor(percent, affine=torch.as_tensor(volume.original_affine))
        head = self.heads.load() if self.heads else None
        data[self.output_json_key] = {
            "uncertainty": {"score": result.score, "per_class": result.per_class, "samples": samples,
                            "unit": f"percent; {result.unit}"},
            "model_version": self.prototypes.bank.model_version,
            "segmentation_head_version": head.version if head else None,
            "model_ms": round((time.perf_counter() - start) * 1000, 1),
        }
        return data


def _parse_classes(value: Any, available: list[str]) -> list[str]:
    if value in (None, "", []):
        return available
    names = [n.strip() for n in value.split(",")] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InvalidRequest(f"'classes' must be a list of class names, got {value!r}")
    unknown = [n for n in names if n not in available]
    if unknown:
        raise InvalidRequest(f"No prototypes for {unknown}; classes with prototypes: {available}")
    return list(dict.fromkeys(names))


def _parse_threshold(value: Any) -> float:
    try:
        threshold = float(value)
    except (TypeError, ValueError) as e:
        raise InvalidRequest(f"'threshold' must be a number between 0 and 1, got {value!r}") from e
    if not 0.0 <= threshold <= 1.0:
        raise InvalidRequest(f"'threshold' must be between 0 and 1, got {threshold}")
    return threshold


def _parse_clicks(value: Any, names: list[str], volume: ModelVolume) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-class (foreground, background) clicks, mapped from stored-image voxels to model space."""
    if value in (None, "", {}):
        return {}
    value = decoded(value, "'clicks' must be a JSON object")
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise InvalidRequest("'clicks' must be {class: {'foreground': [[i, j, k]], 'background': [...]}}")
    unknown = [n for n in value if n not in names]
    if unknown:
        raise InvalidRequest(f"'clicks' names classes that are not segmented: {unknown}")
    orig_to_vol = original_to_volume(volume.original_affine, volume.affine)
    clicks = {}
    for name, entry in value.items():
        points = []
        for side in ("foreground", "background"):
            parsed = parse_points(entry.get(side), f"clicks.{name}.{side}")
            check_inside(parsed, volume.original_shape, f"clicks.{name}.{side}")
            points.append(apply_affine(orig_to_vol, parsed))
        clicks[name] = (points[0], points[1])
    return clicks
