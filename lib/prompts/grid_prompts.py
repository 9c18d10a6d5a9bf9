"""A simulated annotator's box, lasso and scribble sessions on a training crop's grid, built by the serving code
(:mod:`lib.prompts.box`, :mod:`lib.prompts.lasso`, :mod:`lib.prompts.scribbles`), so the network learns the prompts
as the predictor sends them: the region's clicks in front of the annotator's own, its prior as the first mask prompt,
its dense channels (:mod:`lib.prompts.channels`), and its hard part imposed on the result the annotator sees.

As in ``bench.clicks``: a box is the object's bounding box grown by a few voxels and the session's first click stands
for it; a lasso is the object's outline on the slice through the first click; every scribble interaction paints a
stroke through the click the session places (:func:`lib.prompts.gestures.stroke_through`).
"""

from __future__ import annotations

import numpy as np
import torch

from lib.errors import InvalidRequest
from lib.prompts.box import box_prompt
from lib.prompts.channels import PromptChannels, crop_channels
from lib.prompts.clicks import Click
from lib.prompts.geometry import Crop
from lib.prompts.gestures import lasso_around, stroke_through
from lib.prompts.lasso import lasso_prompt, parse_lasso
from lib.prompts.regions import RegionPrompt, apply_regions
from lib.prompts.scribbles import Scribbles, scribble_prompt, stroke_points

PROMPT_KINDS = ("clicks", "box", "lasso", "scribbles")
MAX_BOX_MARGIN = 2  # grid voxels a simulated box adds around the object, drawn per session


class GridPrompts:
    """One session's prompts of ``kind`` on the grid of a binary ``target``."""

    def __init__(self, kind: str, target: np.ndarray, rng: np.random.Generator) -> None:
        if kind not in PROMPT_KINDS:
            raise ValueError(f"unknown prompt kind {kind!r}; known: {PROMPT_KINDS}")
        self.kind, self.target = kind, target.astype(bool)
        self.axis = int(rng.integers(3))  # the slice a lasso or the strokes are drawn on
        self.margin = int(rng.integers(0, MAX_BOX_MARGIN + 1))
        self.region: RegionPrompt | None = None
        self.strokes = {True: np.zeros(target.shape, dtype=bool), False: np.zeros(target.shape, dtype=bool)}
        self.stroke_clicks = {True: np.zeros((0, 3)), False: np.zeros((0, 3))}
        self.painted = 0  # annotator interactions already painted as strokes

    @property
    def paints(self) -> bool:
        """Whether each interaction is a painted stroke (judged as :func:`lib.prompts.simulation.took` does)."""
        return self.kind == "scribbles"

    def box(self) -> np.ndarray:
        """(3, 2) inclusive bounds: the object's bounding box grown by the session's margin, inside the grid."""
        voxels = np.argwhere(self.target)
        box = np.stack([voxels.min(0) - self.margin, voxels.max(0) + self.margin], axis=1)
        return np.clip(box, 0, np.asarray(self.target.shape)[:, None] - 1).astype(np.float64)

    def first_click(self) -> np.ndarray | None:
        """The click that stands for a box (its centre, which the box derives); None: the session's own."""
        return np.round(self.box().mean(axis=1)).astype(np.int64) if self.kind == "box" else None

    def network_clicks(self, clicks: list[Click], prediction: np.ndarray) -> list[Click]:
        """The clicks the network gets for the annotator's ``clicks`` so far (``prediction``: the result before
        the last one): the region's in front of those after the first (which stands for the region), or, for
        scribbles, the clicks of every stroke painted through them."""
        if self.kind == "clicks":
            return clicks
        if self.kind == "scribbles":
            return self._stroke_clicks(clicks, prediction)
        if self.region is None:
            try:
                self.region = self._region(clicks[0][0])
            except InvalidRequest:  # no lasso can be drawn around a one-voxel-thin slice: the annotator clicks
                self.kind = "clicks"
                return clicks
        region = [(p, True) for p in self.region.foreground] + [(p, False) for p in self.region.background]
        return region + clicks[1:]

    def _region(self, first: np.ndarray) -> RegionPrompt:
        shape = self.target.shape
        if self.kind == "box":
            return box_prompt(self.box(), shape)
        return lasso_prompt(parse_lasso(lasso_around(self.target, first, self.axis), shape), shape)

    def _stroke_clicks(self, clicks: list[Click], prediction: np.ndarray) -> list[Click]:
        for point, is_foreground in clicks[self.painted:]:
            self.strokes[is_foreground] |= stroke_through(prediction, self.target, point, self.axis)
        self.painted = len(clicks)
        for sign in (True, False):
            self.stroke_clicks[sign] = stroke_points(self.strokes[sign], self.stroke_clicks[sign])
        self.region = scribble_prompt(Scribbles(self.strokes[True].copy(), self.strokes[False].copy(), None))
        return [(p, sign) for sign in (True, False) for p in self.stroke_clicks[sign]]

    @property
    def prior(self) -> np.ndarray | None:
        """The region's mask prompt for the session's first prediction (bool on the grid), if it has one."""
        return None if self.region is None else self.region.prior

    def channels(self) -> torch.Tensor | None:
        """The (1, 3, n, n, n) dense channels on the grid; None for click sessions."""
        if self.region is None or self.region.channels is None:
            return None
        return grid_channels(self.region.channels, self.target.shape[0])

    def served(self, mask: torch.Tensor) -> torch.Tensor:
        """The result the annotator sees: ``mask`` with the region's hard part imposed, as the infer task does."""
        return mask if self.region is None else apply_regions(mask, [self.region])


def grid_channels(channels: PromptChannels, size: int) -> torch.Tensor:
    """``channels`` given on a ``size``^3 grid, rasterised on that same grid (1, 3, size, size, size)."""
    return crop_channels(channels, Crop((0.0, 0.0, 0.0), size), np.eye(4), size)
