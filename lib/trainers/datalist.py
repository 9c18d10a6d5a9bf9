"""Training datalist from a datastore's usable final labels (:func:`lib.datastore.usable_final_labels`)."""

from __future__ import annotations

from typing import Any

from monailabel.interfaces.datastore import Datastore

from lib.datastore import usable_final_labels


def training_datalist(datastore: Datastore, app_labels: dict[str, int]) -> list[dict[str, Any]]:
    """``[{"id", "image", "label", "classes", "label_ts"}]`` for every usable final label, sorted by id; the others
    are skipped with the reason in the log."""
    return [
        {"id": label.image_id, "image": label.image_path, "label": label.label_path,
         "classes": label.classes(app_labels), "label_ts": label.ts}
        for label in usable_final_labels(datastore)
    ]
