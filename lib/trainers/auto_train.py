"""When to start training on its own: once ``N`` usable final labels are new to what a trainer last published
(``--conf train_after_labels N``, for the trainers of ``--conf auto_train``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.utils.async_tasks.utils import tasks

from lib.datastore import FinalLabel, final_labels, usable


def labels_seen(metadata: dict[str, Any] | None) -> set[tuple[str, Any]]:
    """(image id, label time stamp) of every label a published version was trained or validated on."""
    if not metadata:
        return set()
    items = metadata.get("trained_on", []) + metadata.get("validated_on", [])
    return {(item["id"], item.get("label_ts")) for item in items}


def unseen_labels(datastore: Datastore, metadata: dict[str, Any] | None,
                  labels: list[FinalLabel] | None = None) -> list[str]:
    """Image ids whose final label (of ``labels``, by default the datastore's) is new or changed since the version
    described by ``metadata`` and passes the label check (only the new ones are read; unusable ones are logged and
    not counted)."""
    seen = labels_seen(metadata)
    labels = final_labels(datastore) if labels is None else labels
    return [label.image_id for label in usable([x for x in labels if (x.image_id, x.ts) not in seen])]


def due_trainers(datastore: Datastore, published: Mapping[str, dict[str, Any] | None], after: int
                 ) -> dict[str, list[str]]:
    """``{trainer: its new labels}`` for each trainer of ``published`` (its name and the metadata of the version it
    serves, None before the first) with at least ``after`` new labels."""
    labels = final_labels(datastore)
    due = {}
    for name, metadata in published.items():
        new = unseen_labels(datastore, metadata, labels)
        if len(new) >= after:
            due[name] = new
    return due


def active_trainers() -> set[str]:
    """Trainers with a run submitted or running in this server (MONAI Label's background ``train`` tasks)."""
    return {str(task["request"].get("model")) for task in tasks("train")
            if task.get("status") in ("SUBMITTED", "RUNNING")}
