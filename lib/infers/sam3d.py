"""``sam3d``: interactive 3D SAM segmentation from foreground/background clicks (MONAI Label DeepGrow task)."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage
from monailabel.interfaces.tasks.infer_v2 import InferType

from lib.engine.predictor import InteractivePredictor
from lib.engine.sessions import ObjectSessions
from lib.errors import InvalidRequest, UnreadableImage
from lib.infers.base import ModelSpaceInferTask
from lib.prompts.clicks import check_inside, parse_points, parse_roi
from lib.prompts.geometry import apply_affine, mask_to_crop_logits, original_to_volume
from lib.request_files import is_upload
from lib.transforms.preprocess import ModelVolume, VolumeCache

logger = logging.getLogger(__name__)


class Sam3DInfer(ModelSpaceInferTask):
    """Click-prompted 3D SAM.

    Request parameters (as 3D Slicer and OHIF send them):

    - ``foreground`` / ``background``: ``[[i, j, k], ...]`` voxel indices of the stored image;
    - ``label``: name of the object being segmented (clicks on the same image and label refine one object; a class
      the decoder was trained on is served by it alone, anything else by the class-agnostic mask refiner);
    - ``roi`` (optional): ``[[i0, i1], [j0, j1], [k0, k1]]``, centres the crop and bounds the result;
    - an uploaded label file (optional, with the object name in ``label_name``): previous mask to refine.

    Returns a binary mask (1 = object) with the stored image's shape and affine.
    """

    def __init__(
        self,
        predictor: InteractivePredictor,
        volumes: VolumeCache,
        labels: dict[str, int],
        description: str = "Interactive 3D SAM: click inside (foreground) and outside (background) an object",
        sessions: ObjectSessions | None = None,
    ):
        super().__init__(predictor, volumes, labels, InferType.DEEPGROW, description)
        self.sessions = sessions or ObjectSessions()

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cuda") -> dict:
        volume: ModelVolume = data["volume"]
        shape = volume.original_shape
        foreground = parse_points(data.get("foreground"), "foreground")
        background = parse_points(data.get("background"), "background")
        check_inside(foreground, shape, "foreground")
        check_inside(background, shape, "background")
        roi = parse_roi(data.get("roi"), shape)
        previous_mask = self._previous_mask(data, shape)
        if len(foreground) == 0 and previous_mask is None:
            raise InvalidRequest("At least one 'foreground' click (or a previous mask to refine) is required")

        orig_to_vol = original_to_volume(volume.original_affine, volume.affine)
        fg_vol = apply_affine(orig_to_vol, foreground)
        bg_vol = apply_affine(orig_to_vol, background)
        if roi is not None:
            anchor = apply_affine(orig_to_vol, roi.mean(axis=1)[None])[0]
        elif previous_mask is not None and len(foreground) == 0:
            anchor = apply_affine(orig_to_vol, np.argwhere(previous_mask.numpy()).mean(axis=0)[None])[0]
        else:
            anchor = None

        name = str(data.get("label_name") or ("" if previous_mask is not None else data.get("label")) or "")
        object_key = (volume.source, name, data.get("client_id"))
        previous = None if previous_mask is not None else self.sessions.previous(object_key, foreground, background)
        previous_fine_logits = None
        if previous_mask is not None:
            crop = self.predictor.fine_crop(volume, fg_vol, anchor, None)
            resolution = self.predictor.model()[0].low_res_size
            previous_fine_logits = mask_to_crop_logits(previous_mask, crop, orig_to_vol, resolution)

        start = time.perf_counter()
        segmentation = self.predictor.segment(
            volume, fg_vol, bg_vol, previous=previous, previous_fine_logits=previous_fine_logits, anchor=anchor,
            label=name,
        )
        model_ms = (time.perf_counter() - start) * 1000
        self.sessions.store(object_key, foreground, background, segmentation)

        mask = self.predictor.to_original_mask(volume, segmentation).to(torch.uint8)
        if roi is not None:
            bounded = torch.zeros_like(mask)
            (i0, i1), (j0, j1), (k0, k1) = roi.astype(int)
            bounded[i0 : i1 + 1, j0 : j1 + 1, k0 : k1 + 1] = mask[i0 : i1 + 1, j0 : j1 + 1, k0 : k1 + 1]
            mask = bounded

        data[self.output_label_key] = MetaTensor(mask, affine=torch.as_tensor(volume.original_affine))
        data[self.output_json_key] = {
            "model_version": segmentation.model_version,
            "embedding_cached": segmentation.embedding_hits,
            "crops": [{"origin": list(p.crop.origin), "zoom": p.crop.zoom} for p in segmentation.passes],
            "refined": segmentation.fine.refined is not None,  # served by the mask refiner, not the decoder alone
            "model_ms": round(model_ms, 1),
            "voxels": int(mask.sum()),
        }
        return data

    @staticmethod
    def _previous_mask(data: dict[str, Any], shape: tuple[int, ...]) -> torch.Tensor | None:
        """An uploaded previous label (MONAI Label puts its temporary path under ``label``), if any. Any other
        ``label`` value is the object's name (3D Slicer sends it there), never a file to read."""
        path = data.get("label")
        if not isinstance(path, str) or not is_upload(path):
            return None
        try:
            mask = LoadImage(image_only=True)(path)
        except Exception as e:
            raise UnreadableImage(f"Cannot read the uploaded previous label: {e}") from e
        mask = torch.as_tensor(np.asarray(mask)).squeeze()
        if tuple(mask.shape) != tuple(shape):
            raise InvalidRequest(f"Previous label shape {list(mask.shape)} does not match the image {list(shape)}")
        if not mask.any():
            logger.info("Uploaded previous label is empty; ignoring it")
            return None
        return mask > 0
