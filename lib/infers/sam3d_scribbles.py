"""``sam3d_scribbles``: 3D SAM refinement from 3D Slicer's scribbles (MONAI Label ``InferType.SCRIBBLES``)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from monailabel.interfaces.tasks.infer_v2 import InferType

from lib.engine.predictor import InteractivePredictor, Segmentation
from lib.engine.sessions import ObjectSessions
from lib.errors import InvalidRequest
from lib.infers.sam3d import Sam3DInfer
from lib.prompts.box import outside_box, parse_box
from lib.prompts.regions import RegionPrompt
from lib.prompts.scribbles import Scribbles, continues, parse_label_info, read_scribbles, scribble_prompt, stroke_points
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
        box = parse_box(data.get("roi"), shape, "roi")
        start = time.perf_counter()
        mask, segmentation = self.segment_scribbles(volume, scribbles, selected or "", box, data.get("client_id"))
        return self.put_result(data, volume, mask, segmentation, ["scribbles"] + (["roi"] if box is not None else []),
                               time.perf_counter() - start)

    def segment_scribbles(self, volume: ModelVolume, scribbles: Scribbles, name: str, box: np.ndarray | None,
                          client: Any = None) -> tuple[torch.Tensor, Segmentation]:
        """The uint8 mask of ``name`` refined by ``scribbles`` (inside ``box``, Slicer's scribbles ROI, when given).
        Rounds on one label continue one session while the uploaded label is the last result
        (:func:`lib.prompts.scribbles.continues`); otherwise the label, with the strokes painted in, is the mask
        prompt of a new one."""
        regions = [scribble_prompt(scribbles)]
        if box is not None:  # the region being refined: nothing outside it
            outside = outside_box(box, volume.original_shape)
            regions.append(RegionPrompt("roi", np.zeros((0, 3)), np.zeros((0, 3)), exclude=outside))
        key = self.object_key(volume, name, client, regions)
        state = self.sessions.state(key)
        if state is not None and not continues(scribbles, state.returned(volume.original_shape)):
            self.sessions.forget(key)
            state = None
        foreground = stroke_points(scribbles.foreground, np.zeros((0, 3)) if state is None else state.foreground)
        background = stroke_points(scribbles.background, np.zeros((0, 3)) if state is None else state.background)
        prior = regions[0].prior
        previous_mask = None if state is not None or prior is None else torch.from_numpy(prior)
        return self.segment_prompts(volume, foreground, background, regions, previous_mask, name, box, client,
                                    keep_result=True)
