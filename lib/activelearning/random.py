"""``random``: MONAI Label's recency-weighted random pick without its crash when every volume was just served."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

logger = logging.getLogger(__name__)


class RecencyWeightedRandom(Strategy):
    """A random unlabeled volume, weighted by the seconds since this strategy last served it (as MONAI Label's
    ``Random``). Weights start at 1 so volumes all served within the last second (several annotators pressing
    "Next sample" together) still get a pick instead of MONAI Label's "weights must be greater than zero" 500."""

    def __init__(self, seed: int | None = None):
        super().__init__("Random unlabeled volume, the least recently served most likely")
        self.random = random.Random(seed)

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        images = sorted(datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels")))
        if not images:
            return None
        strategy, now = request.get("strategy", "random"), int(time.time())
        served = [(datastore.get_image_info(image).get("strategy") or {}).get(strategy) or {} for image in images]
        weights = [1 + max(0, now - info.get("ts", 0)) for info in served]
        index = self.random.choices(range(len(images)), weights=weights)[0]
        logger.info("Random: %s (weight %d of %d)", images[index], weights[index], sum(weights))
        return {"id": images[index], "weight": weights[index]}
