"""Training datalist from a datastore's final labels: named classes per label, unusable pairs skipped."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag

from lib.data.classes import class_key, parse_label_info
from lib.datastore import fetch_remote_labels, final_label_path, read_volume
from lib.errors import UnreadableImage

logger = logging.getLogger(__name__)


def label_classes(info: dict[str, Any], app_labels: dict[str, int]) -> dict[str, int]:
    """``{class name: voxel value}`` of one saved label: the names its ``label_info`` gives, spelled as in the app's
    label map when they match it (case and ``-``/``_``/space aside); the app's label map when it gives none."""
    canonical = {class_key(name): name for name in app_labels}
    named = parse_label_info(info)
    if not named:
        return dict(app_labels)
    return {canonical.get(class_key(name), name): value for value, name in named.items()}


def skip_reason(image_path: str, label_path: str) -> str | None:
    """Why a pair cannot train (unreadable, other shape or affine, empty), or None."""
    try:
        label, label_affine = read_volume(label_path, "label")
        image, image_affine = read_volume(image_path, "image")
    except UnreadableImage as e:
        return str(e)
    if label.shape != image.shape:
        return f"label shape {list(label.shape)} differs from image shape {list(image.shape)}"
    if not np.allclose(label_affine, image_affine, atol=1e-3):
        return "label affine (orientation/spacing/origin) differs from the image's"
    if not np.any(label > 0):
        return "label is empty"
    return None


def training_datalist(datastore: Datastore, app_labels: dict[str, int]) -> list[dict[str, Any]]:
    """``[{"id", "image", "label", "classes", "label_ts"}]`` for every usable final label, sorted by id."""
    items = []
    fetch_remote_labels(datastore)
    for name in sorted(datastore.get_labeled_images(DefaultLabelTag.FINAL)):
        image = datastore.get_image_uri(name)
        label = final_label_path(datastore, name)
        reason = skip_reason(image, label)
        if reason:
            logger.warning("Skipping label of %s: %s", name, reason)
            continue
        info = datastore.get_label_info(name, DefaultLabelTag.FINAL) or {}
        classes = label_classes(info, app_labels)
        items.append({"id": name, "image": image, "label": label, "classes": classes, "label_ts": info.get("ts")})
    return items
