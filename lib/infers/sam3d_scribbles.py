"""``sam3d_scribbles``: 3D SAM refinement from 3D Slicer's scribbles (MONAI Label ``InferType.SCRIBBLES``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monailabel.interfaces.tasks.infer_v2 import InferType

from lib.engine.predictor import InteractivePredictor
from lib.engine.sessions import ObjectSessions
from lib.errors import InvalidRequest
from lib.infers.sam3d import Sam3DInfer
from lib.prompts.box import outside_box, parse_box
from lib.prompts.regions import RegionPrompt
from lib.prompts.scribbles import parse_label_info, read_scribbles, scribble_prompt
from lib.transforms.preprocess import ModelVolume, VolumeCache


class Sam3DScribblesInfer(Sam3DInfer):
    """Scribbles on the selected label, as Slicer's scribbles section sends them (:mod:`lib.prompts.scribbles`):
    the uploaded label volume, ``label_info``, ``selected_label_name`` and an optional ``roi``. Returns the selected
    label's refined binary mask."""

    def __init__(self, predictor: InteractivePredictor, volumes: VolumeCache, labels: dict[str, int],
                 sessions: ObjectSessions | None = None):
        super().__init__(predictor, volumes, labels,
                         description="Interactive 3D SAM: paint foreground and background scribbles on a label",
                         sessions=sessions, type=InferType.SCRIBBLES)

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cuda") -> dict:
        volume: ModelVolume = data["volume"]
        shape = volume.original_shape
        labelmap = self._uploaded_label(data, shape, "scribbles label volume")
        if labelmap is None:
            raise InvalidRequest("sam3d_scribbles needs the scribbles label volume uploaded as the label file "
                                 "(3D Slicer's scribbles section sends it)")
        selected = data.get("selected_label_name")
        if selected is not None and not isinstance(selected, str):
            raise InvalidRequest(f"'selected_label_name' must be a label name, got {selected!r}")
        scribbles = read_scribbles(labelmap, parse_label_info(data.get("label_info")), selected, self.labels)
        regions = [scribble_prompt(scribbles)]
        box = parse_box(data.get("roi"), shape, "roi")
        if box is not None:  # Slicer's scribbles ROI: the region being refined, nothing outside it
            regions.append(RegionPrompt("roi", np.zeros((0, 3)), np.zeros((0, 3)), exclude=outside_box(box, shape)))
        previous_mask = None if regions[0].prior is None else torch.from_numpy(regions[0].prior)
        return self.segment_object(data, volume, np.zeros((0, 3)), np.zeros((0, 3)), regions, previous_mask,
                                   selected or "", box)
