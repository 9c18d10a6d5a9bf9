"""Per-object interactive state: the clicks so far and the prediction they produced."""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from lib.cache import BoundedCache
from lib.engine.predictor import Segmentation


@dataclass(frozen=True)
class ObjectState:
    foreground: np.ndarray
    background: np.ndarray
    segmentation: Segmentation
    masks: frozenset[str] = frozenset()  # digests of uploaded masks the session continues from (see mask_digest)
    result: np.ndarray | None = None  # the mask last returned, bit-packed (np.packbits), when the caller keeps it

    @property
    def nbytes(self) -> int:
        return self.segmentation.nbytes + (0 if self.result is None else self.result.nbytes)

    def returned(self, shape: tuple[int, ...]) -> np.ndarray | None:
        """The mask last returned, as a bool array of ``shape`` (None when it was not kept)."""
        if self.result is None:
            return None
        return np.unpackbits(self.result, count=int(np.prod(shape))).reshape(shape).astype(bool)


def _extends(previous: np.ndarray, current: np.ndarray) -> bool:
    return len(previous) <= len(current) and np.array_equal(previous, current[: len(previous)])


class ObjectSessions:
    """Remembers the last prediction per (image, object) so follow-up clicks refine it.

    Clients resend every click so far (3D Slicer and OHIF do); a request whose clicks extend the stored ones
    continues that object, anything else starts afresh.
    """

    def __init__(self, max_bytes: int = 256 << 20):
        self._states = BoundedCache(max_bytes)

    def previous(self, key: Hashable, foreground: np.ndarray, background: np.ndarray,
                 upload: str | None = None) -> Segmentation | None:
        """The stored prediction when the clicks extend the stored ones and the uploaded mask, if any (its
        :func:`mask_digest`), is one the session knows: the mask it started from or the last result it returned
        (a client correcting a label re-sends one or the other with every click)."""
        state: ObjectState | None = self._states.get(key)
        if (state and _extends(state.foreground, foreground) and _extends(state.background, background)
                and (upload is None or upload in state.masks)):
            return state.segmentation
        return None

    def state(self, key: Hashable) -> ObjectState | None:
        """What is stored for ``key``, if anything."""
        return self._states.get(key)

    def forget(self, key: Hashable) -> None:
        """Drop ``key``'s session: its next request starts afresh."""
        self._states.discard(lambda k: k == key)

    def store(self, key: Hashable, foreground: np.ndarray, background: np.ndarray, seg: Segmentation,
              masks: frozenset[str] = frozenset(), result: np.ndarray | None = None) -> None:
        """Remember the clicks and prediction of ``key``; ``result`` (the returned mask, optional) is kept
        bit-packed."""
        packed = None if result is None else np.packbits(np.asarray(result, dtype=bool))
        self._states.put(key, ObjectState(foreground.copy(), background.copy(), seg, masks, packed))


def mask_digest(mask: np.ndarray) -> str:
    """A short fingerprint of a binary mask's voxels."""
    return hashlib.blake2b(np.packbits(np.asarray(mask, dtype=bool)).tobytes(), digest_size=16).hexdigest()
