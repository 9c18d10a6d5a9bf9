"""``uncertainty``: the highest-scoring unlabeled volume that no other annotator was just given."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from lib.scoring.uncertainty import SCORE_KEY

logger = logging.getLogger(__name__)


def handed_to_another(info: dict[str, Any], strategy: str, client_id: Any, window_s: float, now: float) -> bool:
    """Whether MONAI Label's record (``info["strategy"][strategy]``) shows this volume went to another client
    within the window."""
    served = (info.get("strategy") or {}).get(strategy) or {}
    return bool(served) and served.get("client_id") != client_id and now - served.get("ts", 0) < window_s


class UncertaintyStrategy(Strategy):
    """Picks by ``sam3d_uncertainty`` score; volumes handed to another client in the last ``window_s`` seconds are
    skipped; without any score it falls back to a random volume and says why in the log."""

    def __init__(self, window_s: float = 600.0, seed: int | None = None):
        super().__init__("Highest sam3d_uncertainty score not given to another annotator recently")
        self.window_s = window_s
        self.random = random.Random(seed)

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        strategy, client_id, now = request.get("strategy", "uncertainty"), request.get("client_id"), time.time()
        infos = {image: datastore.get_image_info(image) for image in datastore.get_unlabeled_images()}
        free = {image: info for image, info in infos.items()
                if not handed_to_another(info, strategy, client_id, self.window_s, now)}
        if not free:
            logger.info("No unlabeled volume is free (%d unlabeled, all recently given to others)", len(infos))
            return None
        scored = {image: info[SCORE_KEY]["score"] for image, info in free.items() if info.get(SCORE_KEY)}
        if not scored:
            image = self.random.choice(sorted(free))
            logger.info("Uncertainty: no volume has a %s score yet; random choice %s", SCORE_KEY, image)
            return {"id": image, "score": None, "reason": "no uncertainty scores yet: random"}
        image = max(scored, key=scored.get)
        logger.info("Uncertainty: %s (score %.4f, %d scored, %d free)", image, scored[image], len(scored), len(free))
        return {"id": image, "score": scored[image]}
