"""Auto-zoom: the crop follows the object's scale. A new object is first segmented in a crop zoomed in on the
clicks, so that a small structure spans many logit voxels; while its mask reaches a crop face the crop zooms out,
up to the model spacing, where the predictor's coarse pass follows objects larger than the crop (nnInteractive's
autozoom works the same way). Pretraining draws crops across the same range of zooms."""

from __future__ import annotations

MIN_ZOOM = 1.0 / 3.0  # crop voxel = a third of a model-space voxel (0.5 mm at 1.5 mm spacing)
ZOOM_LADDER = (MIN_ZOOM, 2.0 / 3.0)  # tried in order before the model spacing (zoom 1)
