"""When to start training on its own: after ``N`` final labels the published adapters have not seen."""

from __future__ import annotations

from typing import Any

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag


def labels_seen(metadata: dict[str, Any] | None) -> set[tuple[str, Any]]:
    """(image id, label time stamp) of every label an adapter version was trained or validated on."""
    if not metadata:
        return set()
    items = metadata.get("trained_on", []) + metadata.get("validated_on", [])
    return {(item["id"], item.get("label_ts")) for item in items}


def unseen_labels(datastore: Datastore, metadata: dict[str, Any] | None) -> list[str]:
    """Image ids whose final label is new or changed since the adapter version described by ``metadata``."""
    seen = labels_seen(metadata)
    return [
        image for image in sorted(datastore.get_labeled_images(DefaultLabelTag.FINAL))
        if (image, (datastore.get_label_info(image, DefaultLabelTag.FINAL) or {}).get("ts")) not in seen
    ]
