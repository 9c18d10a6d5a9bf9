"""What every trainer of the app shares: one run at a time per state folder, the wall-clock budget, and the
labels held out for validation."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from filelock import FileLock, Timeout
from ignite.engine import Engine

logger = logging.getLogger(__name__)


def run_alone(folder: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``run()`` under a lock file in ``folder``: a second run at the same time fails at once, even if two requests
    slip past MONAI Label's 429 check together."""
    os.makedirs(folder, exist_ok=True)
    try:
        with FileLock(os.path.join(folder, ".train.lock"), timeout=0):
            return run()
    except Timeout as e:
        raise RuntimeError("Another training run is in progress for this model; try again when it ends") from e


def held_out_split(datalist: list[dict[str, Any]], fraction: float, seed: int) -> tuple[list, list]:
    """(train, validation): ``fraction`` of the labels held out (at least one when there are two or more), the same
    ones for the same labels and seed."""
    if fraction <= 0 or len(datalist) < 2:
        return list(datalist), []
    order = np.random.default_rng(seed).permutation(len(datalist))
    count = min(len(datalist) - 1, max(1, round(len(datalist) * fraction)))
    return [datalist[i] for i in order[count:]], [datalist[i] for i in order[:count]]


class TimeBudget:
    """Ends training once ``minutes`` have passed (the run then publishes as if it had reached ``max_epochs``);
    :meth:`fraction` is the share of the budget used so far."""

    def __init__(self, minutes: float):
        self.seconds = minutes * 60.0
        self.start = time.monotonic()

    def fraction(self) -> float:
        return (time.monotonic() - self.start) / self.seconds if self.seconds > 0 else 1.0

    def __call__(self, engine: Engine) -> None:
        if self.fraction() >= 1.0:
            logger.info("Training time budget reached at epoch %d iteration %d", engine.state.epoch,
                        engine.state.iteration)
            engine.terminate()
