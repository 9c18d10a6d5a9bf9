"""When to start training on its own: after ``N`` usable final labels the published adapters have not seen."""

from __future__ import annotations

from typing import Any

from monailabel.interfaces.datastore import Datastore

from lib.datastore import final_labels, usable


def labels_seen(metadata: dict[str, Any] | None) -> set[tuple[str, Any]]:
    """(image id, label time stamp) of every label an adapter version was trained or validated on."""
    if not metadata:
        return set()
    items = metadata.get("trained_on", []) + metadata.get("validated_on", [])
    return {(item["id"], item.get("label_ts")) for item in items}


def unseen_labels(datastore: Datastore, metadata: dict[str, Any] | None) -> list[str]:
    """Image ids whose final label is new or changed since the adapter version described by ``metadata`` and passes
    the label check (only the new ones are read; unusable ones are logged and not counted)."""
    seen = labels_seen(metadata)
    return [label.image_id for label in usable([x for x in final_labels(datastore) if (x.image_id, x.ts) not in seen])]
