"""Power-noised orders of scored volumes ("stochastic batch acquisition" instead of top-k)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def power_noised_order(scores: Sequence[float], beta: float = 1.0, rng: np.random.Generator | None = None) -> list[int]:
    """Indices of ``scores`` in an order drawn without replacement with probability proportional to
    ``score ** beta`` (Kirsch et al., "Stochastic Batch Acquisition", power acquisition): the Gumbel-top-k trick,
    sorting ``beta * log(score) + Gumbel noise``. The first k are a batch of k. Scores of 0 come after all others,
    in random order; ``beta = 0`` is a uniform shuffle and a large ``beta`` tends to the descending order (top-k).
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or not np.isfinite(values).all() or (values < 0).any():
        raise ValueError("scores must be a flat sequence of finite, non-negative numbers")
    if beta < 0:
        raise ValueError("beta must be non-negative")
    rng = rng or np.random.default_rng()
    noise = rng.gumbel(size=len(values))
    positive = (values > 0) | (beta == 0)
    with np.errstate(divide="ignore"):
        keys = np.where(positive, beta * np.log(np.where(values > 0, values, 1.0)) + noise, noise)
    return [int(i) for i in np.lexsort((-keys, ~positive))]
