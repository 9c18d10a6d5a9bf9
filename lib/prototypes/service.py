"""Keeps the prototype bank in step with the datastore's final labels and the served model version."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from monailabel.interfaces.datastore import Datastore

from lib.data.classes import add_new_names
from lib.datastore import FinalLabel, final_labels
from lib.engine.predictor import InteractivePredictor
from lib.prototypes.bank import PrototypeBank, image_entry
from lib.transforms.preprocess import VolumeCache

logger = logging.getLogger(__name__)


class PrototypeService:
    """The app's prototypes: ``sync`` adds saved labels one image at a time (seconds each), drops removed ones, and
    recomputes everything when the model version changes (new adapters)."""

    def __init__(self, path: Path, predictor: InteractivePredictor, volumes: VolumeCache,
                 datastore: Callable[[], Datastore], app_labels: dict[str, int]):
        self.bank = PrototypeBank(path)
        self.predictor = predictor
        self.volumes = volumes
        self.datastore = datastore
        self.app_labels = app_labels
        self.skipped: dict[tuple[str, object], str] = {}  # (image id, label ts) -> reason

    def label_map(self) -> dict[str, int]:
        """The app's label map plus every class the saved labels have introduced since."""
        return add_new_names(self.app_labels, self.bank.class_names())

    def sync(self) -> None:
        datastore = self.datastore()
        with self.bank.lock:
            version = self.predictor.models.current_version()
            changed = False
            if self.bank.model_version != version:
                if self.bank.entries:
                    logger.info("Model is now %s: recomputing %d prototype entries", version, len(self.bank.entries))
                self.bank.model_version, self.bank.entries, changed = version, {}, True
            labeled = final_labels(datastore)  # sorted by image id; each is checked only when it is new
            for image in set(self.bank.entries) - {label.image_id for label in labeled}:
                del self.bank.entries[image]
                changed = True
            for label in labeled:
                entry = self.bank.entries.get(label.image_id)
                if (entry is None or entry.label_ts != label.ts) and (label.image_id, label.ts) not in self.skipped:
                    changed |= self._add(label)
            if changed:
                self.bank.save()

    def _add(self, label: FinalLabel) -> bool:
        image = label.image_id
        reason = label.problem()
        if reason is None:
            try:
                volume = self.volumes.get(label.image_path)
                classes = label.classes(self.app_labels)
                entry = image_entry(self.predictor, volume, label.label_path, classes, label.ts, self.volumes.spacing)
                if entry.classes:
                    self.bank.entries[image] = entry
                    logger.info("Prototypes of %s: %s", image, sorted(entry.classes))
                    return True
                reason = f"none of its classes {sorted(classes)} has voxels"
            except (ValueError, RuntimeError) as e:
                reason = str(e)
        logger.warning("No prototypes from the label of %s: %s", image, reason)
        self.skipped[(image, label.ts)] = reason
        self.bank.entries.pop(image, None)
        return False
